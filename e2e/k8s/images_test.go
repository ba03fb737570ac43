package k8s_test

import (
	"archive/tar"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/shoal-dev/shoal/bench/lab"
	"github.com/shoal-dev/shoal/bench/lab/kube"
	"github.com/shoal-dev/shoal/deploy/image"
)

// labTransport reaches the lab network (registry, node IPs) from the
// control plane's namespace.
func labTransport(t *testing.T, c *kube.Cluster) *http.Transport {
	tr := lab.TransportIn(c.Network.Hosts[0].Netns)
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// pushShoalImage builds shoal's own image, linux/amd64 only, from this
// checkout as `make image` does and pushes it to the lab registry. It
// returns the repository and tag for the chart's values, and the image's
// blobs.
func pushShoalImage(t *testing.T, c *kube.Cluster, tr http.RoundTripper) (repo, tag string, blobs testImage) {
	t.Helper()
	ctx := t.Context()
	meta, err := image.GitMeta(ctx, repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	platforms := []v1.Platform{{OS: "linux", Architecture: "amd64"}}
	bins, err := image.BuildBinaries(ctx, repoRoot, t.TempDir(), meta, platforms)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := image.Index(meta, platforms, bins)
	if err != nil {
		t.Fatal(err)
	}
	repo, tag = c.Registry.Addr()+"/shoal", meta.Tag()
	ref, err := name.NewTag(repo+":"+tag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx, remote.WithContext(ctx), remote.WithTransport(tr)); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	d, _ := idx.Digest()
	t.Logf("pushed shoal's image %s (%s, version %s)", ref, d, meta.Version)
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return repo, tag, describe(t, ref.String(), img, 0)
}

// testImage is an image no node has: layers of random bytes on top of the
// lab's pod image, whose entrypoint waits for SIGTERM.
type testImage struct {
	Ref string
	// New are the blobs (config and random layers) that no node holds yet,
	// with their sizes.
	New map[string]int64
	// All are every blob of the image, the pod image's layer included.
	All map[string]int64
}

func (im testImage) newBytes() int64 {
	var n int64
	for _, s := range im.New {
		n += s
	}
	return n
}

// pushTestImage pushes n layers of size bytes each over c.PodImage as
// <registry>/<path>, path naming the repository and tag.
func pushTestImage(t *testing.T, c *kube.Cluster, tr http.RoundTripper, path string, n int, size int64) testImage {
	t.Helper()
	ctx := t.Context()
	opts := []remote.Option{remote.WithContext(ctx), remote.WithTransport(tr)}
	base, err := name.NewTag(c.PodImage, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(base, opts...)
	if err != nil {
		t.Fatalf("pull %s: %v", base, err)
	}
	baseLayers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for range n {
		l, err := random.Layer(size, types.OCILayer)
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	ref, err := name.NewTag(c.Registry.Addr()+"/"+path, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, opts...); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return describe(t, ref.String(), img, len(baseLayers))
}

// describe lists img's blobs; the first old layers are the base's.
func describe(t *testing.T, ref string, img v1.Image, old int) testImage {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	im := testImage{Ref: ref, New: map[string]int64{}, All: map[string]int64{}}
	im.New[m.Config.Digest.String()] = m.Config.Size
	im.All[m.Config.Digest.String()] = m.Config.Size
	for i, l := range m.Layers {
		im.All[l.Digest.String()] = l.Size
		if i >= old {
			im.New[l.Digest.String()] = l.Size
		}
	}
	return im
}

// pushKubectlImage pushes an image holding bin's kubectl as /bin/kubectl,
// on PATH, for the chart's uninstall hook (its unconfigure.kubectlImage):
// registry.k8s.io cannot be reached from the lab.
func pushKubectlImage(t *testing.T, c *kube.Cluster, tr http.RoundTripper, bin string) string {
	t.Helper()
	tarPath := filepath.Join(t.TempDir(), "kubectl.tar")
	if err := writeBinaryTar(tarPath, filepath.Join(bin, "kubectl"), "bin/kubectl"); err != nil {
		t.Fatal(err)
	}
	layer, err := tarball.LayerFromFile(tarPath, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config = v1.Config{Env: []string{"PATH=/bin"}}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	ref, err := name.NewTag(c.Registry.Addr()+"/lab/kubectl:"+kube.Version, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithContext(t.Context()), remote.WithTransport(tr)); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return ref.String()
}

// writeBinaryTar writes a tar at path holding the file src as name, mode
// 0755, in its directory.
func writeBinaryTar(path, src, name string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(out)
	hdrs := []*tar.Header{
		{Typeflag: tar.TypeDir, Name: filepath.Dir(name) + "/", Mode: 0o755, Format: tar.FormatPAX},
		{Typeflag: tar.TypeReg, Name: name, Mode: 0o755, Size: st.Size(), Format: tar.FormatPAX},
	}
	for _, h := range hdrs {
		if err = tw.WriteHeader(h); err != nil {
			return errors.Join(err, out.Close())
		}
	}
	if _, err = io.Copy(tw, in); err != nil {
		return errors.Join(err, out.Close())
	}
	return errors.Join(tw.Close(), out.Close())
}
