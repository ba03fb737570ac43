package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/bench/lab"
)

// TestPullThroughShoal: with shoal configured, ctr and CRI pulls succeed and
// the registry serves every blob once, to shoal, even with two pulls of the
// same image at the same time; a second pull after the image is removed
// comes from shoal without the registry.
func TestPullThroughShoal(t *testing.T) {
	t.Parallel()
	for _, flavor := range flavors {
		t.Run(string(flavor), func(t *testing.T) {
			t.Parallel()
			requireRoot(t)
			ctx := t.Context()
			reg, imA := registryWith(t, "e2e/app", 3, 4<<20)
			imB, err := lab.PushImage(ctx, reg.Addr(), "e2e/cri", "v1", 2, 2<<20)
			if err != nil {
				t.Fatal(err)
			}
			n := startNode(t, flavor, reg.Addr(), "--resolve-tags-locally")

			// Two ctr pulls of the same image at once.
			var wg sync.WaitGroup
			errs := make([]error, 2)
			for i := range errs {
				wg.Go(func() { errs[i] = n.ctrd.CtrPull(ctx, imA.Ref) })
			}
			wg.Wait()
			for _, err := range errs {
				if err != nil {
					t.Fatalf("ctr pull: %v\n%s", err, tailFile(n.ctrd.LogPath(), 20))
				}
			}
			// And a pull through CRI, as the kubelet does it.
			if err := n.ctrd.CRIPull(ctx, imB.Ref); err != nil {
				t.Fatalf("CRI pull: %v\n%s", err, tailFile(n.ctrd.LogPath(), 20))
			}
			for _, im := range []lab.Image{imA, imB} {
				if ok, err := n.ctrd.HasImage(ctx, im.Ref); err != nil || !ok {
					t.Fatalf("image %s present: %v %v", im.Ref, ok, err)
				}
			}
			checkFetchedOnceByShoal(t, reg, imA, imB)
			verifyHolds(t, n.ctrd.ContentDir(), append(imA.Blobs(), imB.Blobs()...)...)
			blobs := float64(len(imA.Blobs()) + len(imB.Blobs()))
			if got := waitMetric(t, n.shoal, "shoal_downloads_total", map[string]string{"result": "ok"}, blobs); got != blobs {
				t.Errorf("shoal counted %v downloads, want %v", got, blobs)
			}

			// Pull again after removing the image: containerd's content is
			// gone, shoal's store still has it.
			if err := n.ctrd.RemoveImage(ctx, imA.Ref); err != nil {
				t.Fatal(err)
			}
			if err := n.ctrd.CtrPull(ctx, imA.Ref); err != nil {
				t.Fatalf("second pull: %v", err)
			}
			checkFetchedOnceByShoal(t, reg, imA, imB)
			if got := metric(t, ctx, n.shoal, "shoal_served_bytes_total", map[string]string{"source": "store"}); got < float64(imA.Size-imA.ManifestSize) {
				t.Errorf("second pull: %v bytes served from shoal's store, want at least %d", got, imA.Size-imA.ManifestSize)
			}

			// With the registry down, the tag resolves from the node's own
			// images (--resolve-tags-locally) and the kubelet's pull succeeds.
			reg.Stop()
			if err := n.ctrd.CRIPull(ctx, imB.Ref); err != nil {
				t.Fatalf("CRI pull with the registry down: %v", err)
			}

			// unconfigure leaves the hosts dir as it was: empty.
			out, err := runShoal(ctx, "unconfigure", "containerd", "--hosts-dir", n.ctrd.HostsDir(), "--registry", "http://"+reg.Addr())
			if err != nil {
				t.Fatalf("unconfigure: %v\n%s", err, out)
			}
			left, err := os.ReadDir(n.ctrd.HostsDir())
			if err != nil {
				t.Fatalf("hosts dir after unconfigure: %v", err)
			}
			if len(left) != 0 {
				t.Errorf("unconfigure left %v", left)
			}
		})
	}
}

// checkFetchedOnceByShoal reads the registry's own log: every blob of the
// images was fetched exactly once, by shoal.
func checkFetchedOnceByShoal(t *testing.T, reg *lab.Registry, ims ...lab.Image) {
	t.Helper()
	reqs, err := reg.Requests()
	if err != nil {
		t.Fatal(err)
	}
	gets := map[string]int{}
	for _, q := range reqs {
		if !q.Blob || q.Method != "GET" {
			continue
		}
		gets[q.Digest.String()]++
		if !strings.HasPrefix(q.UserAgent, "shoal/") {
			t.Errorf("registry served %s to %q, not to shoal", q.Digest, q.UserAgent)
		}
	}
	for _, im := range ims {
		for _, d := range im.Blobs() {
			if gets[d.String()] != 1 {
				t.Errorf("registry served %s %d times, want once", d, gets[d.String()])
			}
		}
	}
}

// TestFallbackWhenShoalIsDown: hosts.toml names shoal, shoal is stopped,
// the pull succeeds from the registry.
func TestFallbackWhenShoalIsDown(t *testing.T) {
	t.Parallel()
	for _, flavor := range flavors {
		t.Run(string(flavor), func(t *testing.T) {
			t.Parallel()
			requireRoot(t)
			ctx := t.Context()
			reg, im := registryWith(t, "e2e/down", 2, 2<<20)
			n := startNode(t, flavor, reg.Addr())
			n.shoal.Stop()
			if err := n.ctrd.CtrPull(ctx, im.Ref); err != nil {
				t.Fatalf("pull with shoal down: %v", err)
			}
			if err := n.ctrd.CRIPull(ctx, im.Ref); err != nil {
				t.Fatalf("CRI pull with shoal down: %v", err)
			}
			verifyHolds(t, n.ctrd.ContentDir(), im.Blobs()...)
		})
	}
}

// TestShoalKilledMidBlob: shoal dies while it streams a layer; containerd
// resumes from the registry and the pull succeeds with verified content.
func TestShoalKilledMidBlob(t *testing.T) {
	t.Parallel()
	for _, flavor := range flavors {
		t.Run(string(flavor), func(t *testing.T) {
			t.Parallel()
			requireRoot(t)
			ctx := t.Context()
			log := testLogger(t)
			reg, im := registryWith(t, "e2e/kill", 1, 24<<20)
			// A slow path to the registry keeps the layer in flight long
			// enough to kill shoal in the middle of it.
			p, err := lab.StartProxy(ctx, reg.Addr(), lab.ProxyConfig{RateBytesPerSec: 8 << 20, Logger: log})
			if err != nil {
				t.Fatal(err)
			}
			cleanup(t, p.Close)
			n := startNode(t, flavor, p.Addr())
			ref := p.Addr() + "/" + im.Repo + ":" + im.Tag

			done := make(chan error, 1)
			go func() { done <- n.ctrd.CtrPull(ctx, ref) }()
			// Killed once it has streamed a sixth of the layer to
			// containerd, and not all of it: mid-blob.
			layerSize := float64(im.LayerSizes[0])
			var streamed float64
			waitFor(t, "shoal streams a sixth of the layer to containerd", 30*time.Second, func() error {
				m, err := n.shoal.Metrics(ctx)
				if err != nil {
					return err
				}
				streamed = m.Sum("shoal_served_bytes_total", map[string]string{"source": "upstream"})
				if streamed < layerSize/6 {
					return fmt.Errorf("%v of %v bytes served", streamed, layerSize)
				}
				return nil
			})
			if streamed >= layerSize {
				t.Fatalf("shoal served all %v bytes of the layer before it could be killed mid-blob", streamed)
			}
			n.shoal.Kill()
			t.Logf("killed shoal after it had served %v of the layer's %v bytes", streamed, layerSize)
			if err := <-done; err != nil {
				t.Fatalf("pull after shoal was killed: %v\n%s", err, tailFile(n.ctrd.LogPath(), 20))
			}
			if ok, err := n.ctrd.HasImage(ctx, ref); err != nil || !ok {
				t.Fatalf("image present: %v %v", ok, err)
			}
			verifyHolds(t, n.ctrd.ContentDir(), im.Blobs()...)
			// The rest of the layer came from the registry, asked by
			// containerd itself.
			direct := 0
			for _, r := range p.Requests() {
				if r.Method == "GET" && r.Digest == im.Layers[0] && !strings.HasPrefix(r.UserAgent, "shoal/") {
					direct++
				}
			}
			if direct == 0 {
				t.Errorf("containerd never asked the registry for the layer after shoal died")
			}
			// shoal restarted on the same data dir serves no half blob.
			if err := n.shoal.Start(ctx); err != nil {
				t.Fatal(err)
			}
			left, err := os.ReadDir(filepath.Join(n.shoal.DataDir(), "ingest"))
			if err != nil {
				t.Fatalf("shoal's ingest dir after restart: %v", err)
			}
			if len(left) != 0 {
				t.Errorf("ingest files left after restart: %v", left)
			}
			if stored(t, n.shoal.DataDir(), im.Layers[0]) {
				t.Errorf("shoal holds the layer it never finished")
			}
		})
	}
}

// TestCorruptRegistryBlob: the registry sends a layer with a flipped byte;
// neither containerd nor shoal commits it.
func TestCorruptRegistryBlob(t *testing.T) {
	t.Parallel()
	for _, flavor := range flavors {
		t.Run(string(flavor), func(t *testing.T) {
			t.Parallel()
			requireRoot(t)
			ctx := t.Context()
			log := testLogger(t)
			reg, im := registryWith(t, "e2e/corrupt", 2, 2<<20)
			p, err := lab.StartProxy(ctx, reg.Addr(), lab.ProxyConfig{CorruptBlob: im.Layers[1], Logger: log})
			if err != nil {
				t.Fatal(err)
			}
			cleanup(t, p.Close)
			n := startNode(t, flavor, p.Addr())
			ref := p.Addr() + "/" + im.Repo + ":" + im.Tag
			if err := n.ctrd.CtrPull(ctx, ref); err == nil {
				t.Fatal("pull of a corrupted layer succeeded")
			}
			// Whatever containerd kept of the failed pull is whole; it may
			// collect the manifest at any time, as 1.6 does.
			verifyContent(t, n.ctrd.ContentDir())
			have, err := n.ctrd.ContentDigests(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range have {
				if d == im.Layers[1] {
					t.Fatal("containerd committed the corrupted layer")
				}
			}
			verifyHolds(t, n.shoal.DataDir(), im.Digest)
			if stored(t, n.shoal.DataDir(), im.Layers[1]) {
				t.Fatal("shoal stored the corrupted layer")
			}
			waitMetric(t, n.shoal, "shoal_verify_failures_total", nil, 1)
		})
	}
}

// registryWith starts a registry holding one pushed image, repo:v1.
func registryWith(t *testing.T, repo string, layers int, layerSize int64) (*lab.Registry, lab.Image) {
	t.Helper()
	reg, err := lab.StartRegistry(t.Context(), lab.RegistryConfig{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	cleanup(t, reg.Close)
	im, err := lab.PushImage(t.Context(), reg.Addr(), repo, "v1", layers, layerSize)
	if err != nil {
		t.Fatal(err)
	}
	return reg, im
}
