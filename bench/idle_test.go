package bench

import (
	"os"
	"path/filepath"
	"testing"
)

// TestStoredBlobBytes counts the files of content stores' blob and ingest
// directories, and nothing else a node's dir holds.
func TestStoredBlobBytes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	files := map[string]int{
		"ctrd/root/io.containerd.content.v1.content/blobs/sha256/aaaa":       1000,
		"ctrd/root/io.containerd.content.v1.content/ingest/x/data":           300,
		"lab-shoal-1/data/blobs/sha256/bbbb":                                 20,
		"lab-shoal-1/data/ingest/cccc":                                       4,
		"lab-shoal-1/shoal.log":                                              5000,
		"ctrd/root/io.containerd.snapshotter.v1.overlayfs/metadata.db":       7000,
		"ctrd/root/io.containerd.content.v1.content/blobs/sha256-other/dddd": 600,
	}
	for name, size := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, make([]byte, size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := storedBlobBytes(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(1000 + 300 + 20 + 4); got != want {
		t.Fatalf("storedBlobBytes = %d, want %d", got, want)
	}
	if got, err := storedBlobBytes(filepath.Join(dir, "none")); err != nil || got != 0 {
		t.Fatalf("a dir that does not exist: %d, %v", got, err)
	}
}
