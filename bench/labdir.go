package bench

import (
	"os"

	"golang.org/x/sys/unix"
)

// RAMDir is where the real mode keeps the nodes' disks when they fit:
// a tmpfs, so that eight containerds unpacking the same image at the same
// moment do not all wait on the one disk of the machine running the
// bench. In a cluster every node has its own disk; on a shared one, the
// nodes that shoal brings to the end together would measure that disk,
// while the direct baseline, whose nodes finish one after the other, would
// not.
const RAMDir = "/dev/shm"

// labDirNeed is the space a session needs for an image of imageBytes on
// nodes nodes: per node the image in shoal's store, in containerd's
// content store and unpacked, plus the registry's copy, with room to spare.
func labDirNeed(nodes int, imageBytes int64) uint64 {
	return uint64(2 * (3*int64(nodes) + 1) * imageBytes)
}

// AutoDir returns RAMDir when it is a tmpfs with room for a session of
// nodes nodes pulling an image of imageBytes, and "" (the default temp
// dir) otherwise.
func AutoDir(nodes int, imageBytes int64) string {
	var fs unix.Statfs_t
	if err := unix.Statfs(RAMDir, &fs); err != nil || fs.Type != unix.TMPFS_MAGIC {
		return ""
	}
	if free := fs.Bavail * uint64(fs.Bsize); free < labDirNeed(nodes, imageBytes) {
		return ""
	}
	if st, err := os.Stat(RAMDir); err != nil || !st.IsDir() {
		return ""
	}
	return RAMDir
}
