package e2e

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

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
// to -preheat.mbit) for a new image of -preheat.size MiB: the command
// exits 0 with every node holding every blob, the registry sends about
// the image once, and a pull on every node afterwards takes nothing from
// the registry or from peers. A preheat of a node that is no member
// exits non-zero and says so.
func TestPreheat(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	ctx := t.Context()
	log := testLogger(t)
	n := *preheatNodes
	net, err := lab.NewNetwork(ctx, "e2e-preheat-"+strconv.Itoa(os.Getpid()%100000), n+1, lab.NetworkConfig{Subnet: "10.213.41.0/24", EgressMbit: *preheatMbit, IngressMbit: *preheatMbit, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	cleanup(t, net.Close)
	regHost := net.Hosts[0]
	reg, err := lab.StartRegistry(ctx, lab.RegistryConfig{Netns: regHost.Netns, Addr: regHost.Addr(5000), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	cleanup(t, reg.Close)
	layers := *preheatLayers
	im, err := lab.PushImage(ctx, reg.Addr(), "preheat/app", "v1", layers, int64(*preheatSize)<<20/int64(layers), lab.WithTransport(lab.TransportIn(regHost.Netns)))
	if err != nil {
		t.Fatal(err)
	}
	key := writeKey(t)
	var seeds []string
	for _, h := range net.Hosts[1:] {
		seeds = append(seeds, h.IP.String()+":7502")
	}
	nodes := make([]*meshNode, n)
	var wg sync.WaitGroup
	for i := range n {
		flavor := lab.Flavor16
		if i%2 == 1 {
			flavor = lab.Flavor2
		}
		wg.Go(func() {
			nodes[i] = startMeshNode(t, fmt.Sprintf("node%d", i+1), net.Hosts[i+1], flavor, reg.Addr(), seeds, key,
				"--node-labels", "pool="+[]string{"a", "b"}[i%2])
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	waitFor(t, "mesh converges", 60*time.Second, func() error {
		for _, nd := range nodes {
			if got := nd.status(t).LiveMembers; got != n {
				return fmt.Errorf("%s sees %d live members", nd.name, got)
			}
		}
		return nil
	})
	ref := reg.Addr() + "/" + im.Repo + ":" + im.Tag
	S := im.Size - im.ManifestSize // what the registry must send once: config and layers

	t.Run("a node that is no member", func(t *testing.T) {
		out, err := preheatOn(t, nodes[0], "--nodes", "node1,nowhere", ref)
		if err == nil || !strings.Contains(out, `"nowhere" is not a live member`) {
			t.Errorf("preheat of an unknown node: %v\n%s", err, out)
		}
	})

	start := time.Now()
	out, err := preheatOn(t, nodes[0], ref)
	took := time.Since(start)
	t.Logf("shoal preheat:\n%s", out)
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
	sent := registryBlobBytes(t, reg)
	t.Logf("registry sent %d bytes for an image of %d (%.3f ×); %d nodes preheated in %s", sent, S, float64(sent)/float64(S), n, took.Round(10*time.Millisecond))
	if *preheatMbit > 0 {
		rate := report.MbitToBytes(*preheatMbit)
		bound := report.ColdBound(float64(S), rate, rate, rate, n)
		t.Logf("T* = %.2fs; the preheat took %.2f × T*", bound, took.Seconds()/bound)
	}
	if float64(sent) > 1.1*float64(S) {
		t.Errorf("the registry sent %d bytes, more than 1.1 × the image's %d", sent, S)
	}

	t.Run("a pull after the preheat fetches nothing", func(t *testing.T) {
		peerBefore := make([]float64, n)
		for i, nd := range nodes {
			peerBefore[i] = nd.metric(t, "shoal_fetched_bytes_total", map[string]string{"source": "peer"})
		}
		var wg sync.WaitGroup
		for _, nd := range nodes {
			wg.Go(func() {
				if err := nd.ctrd.CtrPull(ctx, ref); err != nil {
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
	})
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
