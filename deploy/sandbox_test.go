package deploy_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// sandboxEnv carries a sandboxSpec to the re-executed test binary.
const sandboxEnv = "SHOAL_DEPLOY_TEST_SANDBOX"

// sandboxSpec is one container as a container runtime would run it: its
// own root filesystem holding the image's binary and the pod's volumes, and
// the container's securityContext applied. The network namespace is the
// caller's (`ip netns exec`), as hostNetwork pods share the node's.
type sandboxSpec struct {
	// Root is an empty host directory that becomes the container's /.
	Root string
	// Binary is the host file mounted read-only at BinaryAt, the path the
	// image keeps its executable at.
	Binary, BinaryAt string
	// Mounts are the pod's volumes, each a host file or directory.
	Mounts []sandboxMount
	// ReadOnlyRoot remounts the root read-only once it is populated.
	ReadOnlyRoot bool
	// Caps are the capabilities kept; all others leave the bounding set.
	Caps []string
	// NoNewPrivs is allowPrivilegeEscalation: false.
	NoNewPrivs bool
	// UID and GID to run as.
	UID, GID int
	// Argv and Env are what the container's process gets; Argv[0] is
	// resolved against PATH in Env when it has no slash, as runc does.
	Argv, Env []string
}

type sandboxMount struct {
	Source, Target string
	ReadOnly       bool
}

// runSandbox builds the container's root in the private mount namespace
// that `ip netns exec` gave this process, enters it and execs the
// container's process. It returns only on failure.
func runSandbox(specJSON string) error {
	var s sandboxSpec
	if err := json.Unmarshal([]byte(specJSON), &s); err != nil {
		return err
	}
	// Nothing made here may reach the host's namespace.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	root := s.Root
	if err := unix.Mount("shoal-sandbox", root, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"); err != nil {
		return fmt.Errorf("root tmpfs: %w", err)
	}
	at := func(p string) string { return filepath.Join(root, p) }
	bind := func(src, dst string, ro, dir bool) error {
		if dir {
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return err
			}
		} else {
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(dst, os.O_CREATE|os.O_RDONLY, 0o644)
			if err != nil {
				return err
			}
			f.Close()
		}
		if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s on %s: %w", src, dst, err)
		}
		if ro {
			if err := unix.Mount("", dst, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
				return fmt.Errorf("read-only %s: %w", dst, err)
			}
		}
		return nil
	}

	// What any container has: /proc, a few devices, a read-only /sys,
	// and /etc/hosts and /etc/resolv.conf from the runtime.
	if err := os.MkdirAll(at("proc"), 0o555); err != nil {
		return err
	}
	if err := unix.Mount("proc", at("proc"), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("proc: %w", err)
	}
	for _, dev := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
		if err := bind("/dev/"+dev, at("dev/"+dev), false, false); err != nil {
			return err
		}
	}
	if err := bind("/sys", at("sys"), true, true); err != nil {
		return err
	}
	if err := os.MkdirAll(at("etc"), 0o755); err != nil {
		return err
	}
	for _, f := range []string{"hosts", "resolv.conf"} {
		b, err := os.ReadFile("/etc/" + f)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if err := os.WriteFile(at("etc/"+f), b, 0o644); err != nil {
			return err
		}
	}
	if err := bind(s.Binary, at(s.BinaryAt), true, false); err != nil {
		return err
	}
	// Parents before children, as runtimes mount them.
	sort.SliceStable(s.Mounts, func(i, j int) bool {
		return strings.Count(filepath.Clean(s.Mounts[i].Target), "/") < strings.Count(filepath.Clean(s.Mounts[j].Target), "/")
	})
	for _, m := range s.Mounts {
		fi, err := os.Stat(m.Source)
		if err != nil {
			return err
		}
		if err := bind(m.Source, at(m.Target), m.ReadOnly, fi.IsDir()); err != nil {
			return err
		}
	}
	if s.ReadOnlyRoot {
		if err := unix.Mount("", root, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
			return fmt.Errorf("read-only root: %w", err)
		}
	}
	last, err := lastCap()
	if err != nil {
		return err
	}
	keep, err := capSet(s.Caps)
	if err != nil {
		return err
	}
	argv0, err := lookPath(root, s.Argv[0], s.Env)
	if err != nil {
		return err
	}

	if err := unix.Chdir(root); err != nil {
		return err
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	// Capabilities and no_new_privs belong to the thread that execs.
	runtime.LockOSThread()
	for c := 0; c <= last; c++ {
		if keep&(1<<uint(c)) != 0 {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			return fmt.Errorf("drop capability %d: %w", c, err)
		}
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	if s.NoNewPrivs {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("no_new_privs: %w", err)
		}
	}
	if s.GID != 0 {
		if err := unix.Setresgid(s.GID, s.GID, s.GID); err != nil {
			return err
		}
	}
	if s.UID != 0 {
		if err := unix.Setresuid(s.UID, s.UID, s.UID); err != nil {
			return err
		}
	}
	// Root regains every capability left in the bounding set at exec;
	// clearing the inheritable set keeps none beyond it.
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	data := [2]unix.CapUserData{
		{Effective: uint32(keep), Permitted: uint32(keep)},
		{Effective: uint32(keep >> 32), Permitted: uint32(keep >> 32)},
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	return syscall.Exec(argv0, s.Argv, s.Env)
}

func lastCap() (int, error) {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// capNumbers are the capabilities a pod may add, by their Kubernetes names.
var capNumbers = map[string]int{
	"CHOWN": unix.CAP_CHOWN, "DAC_OVERRIDE": unix.CAP_DAC_OVERRIDE, "DAC_READ_SEARCH": unix.CAP_DAC_READ_SEARCH,
	"FOWNER": unix.CAP_FOWNER, "SETUID": unix.CAP_SETUID, "SETGID": unix.CAP_SETGID,
	"NET_BIND_SERVICE": unix.CAP_NET_BIND_SERVICE, "NET_ADMIN": unix.CAP_NET_ADMIN, "NET_RAW": unix.CAP_NET_RAW,
	"SYS_ADMIN": unix.CAP_SYS_ADMIN, "SYS_CHROOT": unix.CAP_SYS_CHROOT, "SYS_PTRACE": unix.CAP_SYS_PTRACE,
}

func capSet(names []string) (uint64, error) {
	var set uint64
	for _, n := range names {
		c, ok := capNumbers[strings.TrimPrefix(strings.ToUpper(n), "CAP_")]
		if !ok {
			return 0, fmt.Errorf("capability %q unknown to the test sandbox", n)
		}
		set |= 1 << uint(c)
	}
	return set, nil
}

// lookPath resolves name inside root the way runc does: as given when it
// has a slash, else in the directories of PATH from env.
func lookPath(root, name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	pathEnv := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			pathEnv = v
		}
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(filepath.Join(root, p)); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found in the image's PATH %s", name, pathEnv)
}
