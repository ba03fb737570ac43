package e2e

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shoal-dev/shoal/bench/lab"
	"github.com/shoal-dev/shoal/bench/report"
)

var (
	preheatNodes  = flag.Int("preheat.nodes", 4, "nodes of TestPreheat")
	preheatSize   = flag.Int("preheat.size", 24, "size of TestPreheat's image in MiB, config and layers")
	preheatLayers = flag.Int("preheat.layers", 4, "layers of TestPreheat's image")
	preheatMbit   = flag.Float64("preheat.mbit", 200, "every link's rate in TestPreheat, Mbit/s each way (0: unshaped, and no bound is reported)")
)

// TestPreheat runs `shoal preheat` on one node of a mesh of
// -preheat.nodes (containerd 1.6 and 2.4 alternating, every link shaped
// to -preheat.mbit) for a new image of -preheat.size MiB, into shoal and
// then, for another, into containerd: the command exits 0 with every node
// holding every blob, the registry sends about the image once, and a pull
// on every node afterwards takes nothing from the registry or from peers.
// A preheat of a node that is no member exits non-zero and says so, and a
// daemon started with --preheat fills itself with that image.
func TestPreheat(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	ctx := t.Context()
	n := *preheatNodes
	l := startMeshLab(t, meshLabConfig{name: "preheat", subnet: "10.213.41.0/24", nodes: n, mbit: *preheatMbit, flags: func(i int) []string {
		return []string{"--node-labels", "pool=" + []string{"a", "b"}[i%2], "--containerd-snapshotter", lab.ProbeSnapshotter("")}
	}})
	reg, nodes := l.reg, l.nodes
	layers := *preheatLayers
	push := func(repo string) lab.Image {
		return l.push(t, repo, "v1", layers, int64(*preheatSize)<<20/int64(layers))
	}
	im, into := push("preheat/app"), push("preheat/into")
	t.Run("a node that is no member", func(t *testing.T) {
		out, err := preheatOn(t, nodes[0], "--nodes", "node1,nowhere", imageRef(reg, im))
		if err == nil || !strings.Contains(out, `"nowhere" is not a live member`) {
			t.Errorf("preheat of an unknown node: %v\n%s", err, out)
		}
	})
	t.Run("into shoal", func(t *testing.T) {
		preheatAll(t, reg, nodes, im)
		pullFetchesNothing(t, reg, nodes, im, ctrPull)
	})
	t.Run("into containerd", func(t *testing.T) {
		preheatAll(t, reg, nodes, into, "--into-containerd")
		for _, nd := range nodes {
			if ok, err := nd.ctrd.HasImage(ctx, imageRef(reg, into)); err != nil || !ok {
				t.Errorf("%s: containerd does not hold the image complete after the preheat: %v", nd.name, err)
			}
			if !unpacked(t, nd, imageRef(reg, into)) {
				t.Errorf("%s: the image is not unpacked after the preheat", nd.name)
			}
			st, err := nd.ctrd.ImageService().ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: imageRef(reg, into)}})
			if err != nil || st.GetImage() == nil {
				t.Errorf("%s: CRI does not find the image present: %v", nd.name, err)
			}
		}
		pullFetchesNothing(t, reg, nodes, into, ctrPull)
		// What the kubelet does for a pod whose policy is Always.
		pullFetchesNothing(t, reg, nodes, into, criPull)
	})
	t.Run("a daemon keeps its --preheat images", func(t *testing.T) {
		kept := l.push(t, "preheat/kept", "v1", 2, 2<<20)
		nd := nodes[len(nodes)-1]
		nd.restartShoal(t, "--preheat", imageRef(reg, kept))
		waitFor(t, nd.name+" fills itself with its --preheat image", 60*time.Second, func() error {
			for _, d := range append(kept.Blobs(), kept.Digest) {
				if !stored(t, nd.shoal.DataDir(), d) {
					return fmt.Errorf("%s not held yet", d)
				}
			}
			return nil
		})
	})
}

// unpacked says whether `ctr images check` reports ref unpacked for the
// node's snapshotter.
func unpacked(t *testing.T, nd *meshNode, ref string) bool {
	t.Helper()
	out, err := nd.ctrd.Ctr(t.Context(), "images", "check", "--snapshotter", nd.ctrd.Snapshotter(), "name=="+ref)
	if err != nil {
		t.Fatalf("ctr images check: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		// REF TYPE DIGEST STATUS SIZE UNPACKED
		if f := strings.Fields(line); len(f) > 0 && f[0] == ref {
			return f[len(f)-1] == "true"
		}
	}
	return false
}

func imageRef(reg *lab.Registry, im lab.Image) string {
	return reg.Addr() + "/" + im.Repo + ":" + im.Tag
}

// preheatAll runs `shoal preheat` on the first node for every node and
// checks that it exits 0, that every node holds every blob, and that the
// registry sent the image about once.
func preheatAll(t *testing.T, reg *lab.Registry, nodes []*meshNode, im lab.Image, args ...string) {
	t.Helper()
	S := im.Size - im.ManifestSize // what the registry must send once: config and layers
	before := registryBlobBytes(t, reg)
	start := time.Now()
	out, err := preheatOn(t, nodes[0], append(args, imageRef(reg, im))...)
	took := time.Since(start)
	t.Logf("shoal preheat %s:\n%s", strings.Join(args, " "), out)
	if err != nil {
		t.Fatalf("shoal preheat exited with %v", err)
	}
	for _, nd := range nodes {
		if !strings.Contains(out, nd.name+" ") {
			t.Errorf("the output has no line for %s", nd.name)
		}
		for _, d := range append(im.Blobs(), im.Digest) {
			if !stored(t, nd.shoal.DataDir(), d) {
				t.Errorf("%s does not hold %s after the preheat", nd.name, d)
			}
		}
	}
	sent := registryBlobBytes(t, reg) - before
	t.Logf("registry sent %d bytes for an image of %d (%.3f ×); %d nodes preheated in %s", sent, S, float64(sent)/float64(S), len(nodes), took.Round(10*time.Millisecond))
	if *preheatMbit > 0 {
		rate := report.MbitToBytes(*preheatMbit)
		bound := report.ColdBound(float64(S), rate, rate, rate, len(nodes))
		t.Logf("T* = %.2fs; the preheat took %.2f × T*", bound, took.Seconds()/bound)
	}
	if float64(sent) > 1.1*float64(S) {
		t.Errorf("the registry sent %d bytes, more than 1.1 × the image's %d", sent, S)
	}
}

// pullFetchesNothing pulls im on every node at once with pull (ctrPull or
// criPull) and checks that nothing came from the registry or from peers.
func pullFetchesNothing(t *testing.T, reg *lab.Registry, nodes []*meshNode, im lab.Image, pull func(context.Context, *meshNode, string) error) {
	t.Helper()
	ctx := t.Context()
	sent := registryBlobBytes(t, reg)
	peerBefore := make([]float64, len(nodes))
	for i, nd := range nodes {
		peerBefore[i] = nd.metric(t, "shoal_fetched_bytes_total", map[string]string{"source": "peer"})
	}
	var wg sync.WaitGroup
	for _, nd := range nodes {
		wg.Go(func() {
			if err := pull(ctx, nd, imageRef(reg, im)); err != nil {
				t.Errorf("%s pull: %v", nd.name, err)
			}
		})
	}
	wg.Wait()
	for i, nd := range nodes {
		verifyHolds(t, nd.ctrd.ContentDir(), im.Blobs()...)
		if got := nd.metric(t, "shoal_fetched_bytes_total", map[string]string{"source": "peer"}) - peerBefore[i]; got != 0 {
			t.Errorf("%s fetched %v bytes from peers in its pull after the preheat", nd.name, got)
		}
	}
	if after := registryBlobBytes(t, reg); after != sent {
		t.Errorf("the registry sent %d more blob bytes for the pulls after the preheat", after-sent)
	}
}

// ctrPull is `ctr images pull` through the node's mirror.
func ctrPull(ctx context.Context, nd *meshNode, ref string) error { return nd.ctrd.CtrPull(ctx, ref) }

// criPull is the CRI's PullImage, as the kubelet asks it.
func criPull(ctx context.Context, nd *meshNode, ref string) error {
	_, err := nd.ctrd.ImageService().PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	return err
}

// preheatOn runs `shoal preheat args...` in node nd's namespace, against
// its daemon, and returns its output.
func preheatOn(t *testing.T, nd *meshNode, args ...string) (string, error) {
	t.Helper()
	cmd := nd.host.Command(t.Context(), shoalBin, append([]string{"preheat", "--progress-every", "5s"}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("shoal preheat did not run: %v", err)
	}
	return out.String(), err
}

// registryBlobBytes is the blob bytes the registry sent so far.
func registryBlobBytes(t *testing.T, reg *lab.Registry) int64 {
	t.Helper()
	per, err := reg.BlobBytes()
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, b := range per {
		sum += b
	}
	return sum
}
