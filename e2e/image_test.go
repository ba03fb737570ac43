package e2e

import (
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/bench/lab"
	"github.com/shoal-dev/shoal/deploy/image"
)

// TestImage builds shoal's image as `make image` does, twice, and runs it
// with a real containerd 2.4 and runc: one index digest for both builds,
// both platforms in it, static binaries, and `shoal version` from the
// image prints the checkout's version.
func TestImage(t *testing.T) {
	requireRoot(t)
	if _, err := os.Stat(filepath.Join(lab.GoBin(), "containerd-shim-runc-v2")); err != nil {
		t.Fatalf("running a container with containerd 2.4 needs its own runc shim (make deps installs it): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	meta, err := image.GitMeta(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	first, second := t.TempDir(), t.TempDir()
	d1 := makeImage(ctx, t, root, first)
	d2 := makeImage(ctx, t, root, second)
	if d1 != d2 {
		t.Fatalf("two builds of one commit gave index %s and %s", d1, d2)
	}
	t.Logf("two builds of %s: index %s both times", meta.Version, d1)
	checkLayout(t, filepath.Join(first, "shoal-image"), d1)
	checkStatic(t, filepath.Join(first, "image", "shoal-linux-amd64"), elf.EM_X86_64)
	checkStatic(t, filepath.Join(first, "image", "shoal-linux-arm64"), elf.EM_AARCH64)

	c, err := lab.StartContainerd(ctx, lab.ContainerdConfig{Flavor: lab.Flavor2, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer closeContainerd(t, c)
	if out, err := c.Ctr(ctx, "images", "import", filepath.Join(first, "shoal-image.tar")); err != nil {
		t.Fatalf("ctr images import: %v\n%s", err, out)
	}
	ref := image.Repository + ":" + meta.Tag()
	out, err := c.Ctr(ctx, "run", "--rm", "--snapshotter", c.Snapshotter(), ref, "shoal-image-test", "shoal", "version")
	if err != nil {
		t.Fatalf("ctr run %s shoal version: %v\n%s\n%s", ref, err, out, tailFile(c.LogPath(), 20))
	}
	if got, want := strings.TrimSpace(string(out)), "shoal "+meta.Version; got != want {
		t.Fatalf("shoal version in the image printed %q, want %q", got, want)
	}
	t.Logf("ctr images import + ctr run %s: %q", ref, strings.TrimSpace(string(out)))
}

var indexLine = regexp.MustCompile(`index (sha256:[0-9a-f]{64}) for `)

// makeImage runs `make image`'s command with its output in out and
// returns the index digest it printed.
func makeImage(ctx context.Context, t *testing.T, root, out string) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, "go", "run", "./deploy/internal/mkimage", "-out", out)
	cmd.Dir = root
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("mkimage: %v\n%s", err, b)
	}
	m := indexLine.FindSubmatch(b)
	if m == nil {
		t.Fatalf("mkimage printed no index digest:\n%s", b)
	}
	return string(m[1])
}

// checkLayout reads the OCI layout mkimage wrote: it holds the index, and
// the index one image per platform.
func checkLayout(t *testing.T, dir, digest string) {
	t.Helper()
	idx, desc, err := image.ReadLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest.String() != digest {
		t.Fatalf("layout %s holds %s, want the index %s", dir, desc.Digest, digest)
	}
	got, err := image.PlatformsOf(idx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"linux/amd64", "linux/arm64"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("index platforms %v, want %v", got, want)
	}
}

// checkStatic asserts a binary is for machine and has no dynamic loader.
func checkStatic(t *testing.T, path string, machine elf.Machine) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != machine {
		t.Errorf("%s is for %s, want %s", path, f.Machine, machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s asks for a dynamic loader: not static", path)
		}
	}
}

func closeContainerd(t *testing.T, c *lab.Containerd) {
	t.Helper()
	if err := c.Close(); err != nil {
		t.Error(err)
	}
}
