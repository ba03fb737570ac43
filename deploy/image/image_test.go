package image

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

var testMeta = Meta{
	Version:  "v0.1.0-3-gabcdef0",
	Revision: "abcdef0123456789abcdef0123456789abcdef01",
	Created:  time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC),
}

// fakeBinaries writes one file per platform whose content names it.
func fakeBinaries(t *testing.T, mtime time.Time) map[string]string {
	t.Helper()
	dir := t.TempDir()
	bins := map[string]string{}
	for _, p := range Platforms {
		path := filepath.Join(dir, "shoal-"+p.Architecture)
		if err := os.WriteFile(path, []byte("binary for "+p.String()), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		bins[p.String()] = path
	}
	return bins
}

func TestIndexIsReproducible(t *testing.T) {
	a, err := Index(testMeta, Platforms, fakeBinaries(t, time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // a build a second later, from files of other times
	b, err := Index(testMeta, Platforms, fakeBinaries(t, time.Now().Add(-time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	da, _ := a.Digest()
	db, _ := b.Digest()
	if da != db {
		t.Fatalf("two builds of one commit: index %s and %s", da, db)
	}
	other := testMeta
	other.Revision = "1111111111111111111111111111111111111111"
	c, err := Index(other, Platforms, fakeBinaries(t, time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	if dc, _ := c.Digest(); dc == da {
		t.Fatalf("another revision gave the same index %s", dc)
	}
}

func TestIndexHoldsOneImagePerPlatform(t *testing.T) {
	bins := fakeBinaries(t, time.Now())
	idx, err := Index(testMeta, Platforms, bins)
	if err != nil {
		t.Fatal(err)
	}
	got, err := PlatformsOf(idx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"linux/amd64", "linux/arm64"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("platforms %v, want %v", got, want)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if im.MediaType != types.OCIImageIndex {
		t.Errorf("index media type %s", im.MediaType)
	}
	wantAnn := map[string]string{
		AnnotationSource:   Source,
		AnnotationRevision: testMeta.Revision,
		AnnotationVersion:  testMeta.Version,
		AnnotationCreated:  "2026-11-30T12:00:00Z",
	}
	if !reflect.DeepEqual(im.Annotations, wantAnn) {
		t.Errorf("index annotations %v, want %v", im.Annotations, wantAnn)
	}
	for _, d := range im.Manifests {
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		checkImage(t, img, *d.Platform, bins[d.Platform.String()], wantAnn)
	}
}

// checkImage checks what a runtime reads of one platform's image: its
// manifest, config and the files of its one layer.
func checkImage(t *testing.T, img v1.Image, p v1.Platform, binary string, wantAnn map[string]string) {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON {
		t.Errorf("%s: manifest %s, config %s; want OCI types", p, m.MediaType, m.Config.MediaType)
	}
	if !reflect.DeepEqual(m.Annotations, wantAnn) {
		t.Errorf("%s: manifest annotations %v", p, m.Annotations)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != p.OS || cf.Architecture != p.Architecture {
		t.Errorf("config says %s/%s, index says %s", cf.OS, cf.Architecture, p)
	}
	if !cf.Created.Time.Equal(testMeta.Created) {
		t.Errorf("%s: created %s, want the commit's time", p, cf.Created)
	}
	if !reflect.DeepEqual(cf.Config.Entrypoint, []string{"shoal"}) {
		t.Errorf("%s: entrypoint %q", p, cf.Config.Entrypoint)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("%s: %d layers (%v), want 1", p, len(layers), err)
	}
	if mt, _ := layers[0].MediaType(); mt != types.OCILayer {
		t.Errorf("%s: layer media type %s", p, mt)
	}
	want, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	files := layerFiles(t, layers[0])
	if got, ok := files["usr/local/bin/shoal"]; !ok || string(got) != string(want) {
		t.Errorf("%s: usr/local/bin/shoal holds %q, want %q", p, got, want)
	}
	if len(files) != 1 {
		t.Errorf("%s: layer holds %d files, want the binary alone", p, len(files))
	}
}

// layerFiles reads the regular files of a layer, checking every entry's
// owner and time.
func layerFiles(t *testing.T, l v1.Layer) map[string][]byte {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	files := map[string][]byte{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(testMeta.Created) {
			t.Errorf("%s: uid %d gid %d time %s", h.Name, h.Uid, h.Gid, h.ModTime)
		}
		if h.Typeflag == tar.TypeReg {
			if h.Mode != 0o755 {
				t.Errorf("%s: mode %o, want 755", h.Name, h.Mode)
			}
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[h.Name] = b
		}
	}
}

func TestIndexNeedsABinaryPerPlatform(t *testing.T) {
	bins := fakeBinaries(t, time.Now())
	delete(bins, "linux/arm64")
	if _, err := Index(testMeta, Platforms, bins); err == nil {
		t.Fatal("an index without an arm64 binary was built")
	}
	if _, err := Index(Meta{Version: "v1"}, Platforms, fakeBinaries(t, time.Now())); err == nil {
		t.Fatal("an index without a revision was built")
	}
}

func TestWriteArchiveNamesTheImage(t *testing.T) {
	idx, err := Index(testMeta, Platforms, fakeBinaries(t, time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	archive := filepath.Join(dir, "shoal-image.tar")
	if err := WriteArchive(idx, "lab.example:5000/shoal:0.1.0", archive); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(archive); err != nil {
		t.Fatal(err)
	}
	_, desc, err := ReadLayout(filepath.Join(dir, "shoal-image"))
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := idx.Digest(); desc.Digest != want {
		t.Fatalf("layout holds %s, want the index %s", desc.Digest, want)
	}
	if got := desc.Annotations["io.containerd.image.name"]; got != "lab.example:5000/shoal:0.1.0" {
		t.Errorf("containerd image name %q", got)
	}
	if err := WriteArchive(idx, "x:1", filepath.Join(dir, "noext")); err == nil {
		t.Error("an archive name without .tar was taken")
	}
}

func TestTag(t *testing.T) {
	for v, want := range map[string]string{"v0.1.0": "0.1.0", "0.2.0": "0.2.0", "3945459-dirty": "3945459-dirty"} {
		if got := (Meta{Version: v}).Tag(); got != want {
			t.Errorf("Tag(%q) = %q, want %q", v, got, want)
		}
	}
}
