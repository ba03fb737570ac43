package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/shoal-dev/shoal/bench/lab"
)

var (
	soakFor    = flag.Duration("soak", 0, "run TestSoak for this long, e.g. 10m (0 skips it; make soak SOAK=10m)")
	soakSample = flag.Duration("soak-sample", 0, "how often TestSoak samples each daemon (0: a fortieth of -soak, at least 5s)")
)

// Soak bounds: what may grow between the quiet sample after warm-up and
// the quiet sample at the end, per daemon.
const (
	soakGrowth      = 1.5      // × the baseline, for RSS and heap
	soakMemSlack    = 16 << 20 // plus this, for RSS and heap
	soakGoroutineUp = 50
	soakFDUp        = 20
	soakQuiet       = 2 * time.Minute  // the longest wait for the daemons to go idle
	soakRest        = 15 * time.Second // then, before a quiet sample
	soakOpTimeout   = 3 * time.Minute  // one pull or removal
	soakImages      = 12
)

// soakSample is one reading of one daemon.
type procSample struct {
	at         time.Duration // since the soak began
	pulls      int64         // successful pulls by then, all nodes
	rss, heap  int64
	goroutines int
	fds        int
}

func (s procSample) String() string {
	return fmt.Sprintf("RSS %.1f MiB, heap %.1f MiB, %d goroutines, %d fds", mib(s.rss), mib(s.heap), s.goroutines, s.fds)
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// TestSoak runs many pulls of many images across three nodes (containerd
// 1.6, 2.4 and 1.6, each with a shoal built without the race detector, as
// shipped) for -soak, and checks that each daemon's memory, goroutines and
// open files stay flat and that no pull fails. Twelve images share two
// pools of layers and have one layer of their own; every node loops: pull
// an image (ctr or CRI, alternately), check it, remove it and let
// containerd collect its blobs, so the next pull of it must come through
// shoal again. A small --store-max-bytes keeps shoal's own store evicting,
// so blobs keep moving between peers and from the registry. After a
// warm-up (a fifth of the run, at most 2 minutes) the loops pause and each
// daemon is sampled once quiet; at the end again; between the two: RSS and
// Go heap at most 1.5 × + 16 MiB, goroutines at most +50, fds at most +20.
func TestSoak(t *testing.T) {
	if *soakFor <= 0 {
		t.Skip("a soak runs only when asked: go test ./e2e -run TestSoak -soak 10m (make soak SOAK=10m)")
	}
	requireRoot(t)
	ctx := t.Context()
	log := testLogger(t)
	interval := *soakSample
	if interval <= 0 {
		interval = max(*soakFor/40, 5*time.Second)
	}
	warmup := min(*soakFor/5, 2*time.Minute)

	// The daemon as shipped: the race detector would multiply its memory
	// and hide the growth the soak looks for.
	bin := filepath.Join(filepath.Dir(shoalBin), "shoal-norace")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "../cmd/shoal").CombinedOutput(); err != nil {
		t.Fatalf("building shoal: %v\n%s", err, out)
	}

	net, err := lab.NewNetwork(ctx, netName(t, "soak"), 4, lab.NetworkConfig{Subnet: "10.213.32.0/24", Logger: log})
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
	refs, err := pushSoakImages(ctx, reg.Addr(), lab.TransportIn(regHost.Netns), soakImages)
	if err != nil {
		t.Fatal(err)
	}

	key := writeKey(t)
	var seeds []string
	for _, h := range net.Hosts[1:] {
		seeds = append(seeds, h.IP.String()+":7502")
	}
	nodes := make([]*meshNode, 3)
	var wg sync.WaitGroup
	for i := range nodes {
		flavor := lab.Flavor16
		if i == 1 {
			flavor = lab.Flavor2
		}
		wg.Go(func() {
			nodes[i] = startMeshNodeBin(t, bin, fmt.Sprintf("node%d", i+1), net.Hosts[i+1], flavor, reg.Addr(), seeds, key,
				// Less than the images' layers together: the store keeps evicting.
				"--store-max-bytes", "24MiB", "--log-level", "warn")
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	waitFor(t, "mesh converges", 30*time.Second, func() error {
		for _, n := range nodes {
			if got := n.status(t).LiveMembers; got != len(nodes) {
				return fmt.Errorf("%s sees %d live members", n.name, got)
			}
		}
		return nil
	})
	for _, n := range nodes {
		if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", n.shoal.Pid())); err != nil || !strings.HasPrefix(string(comm), "shoal") {
			t.Fatalf("%s: pid %d is %q, not the daemon: %v", n.name, n.shoal.Pid(), comm, err)
		}
	}

	var pulls, failures atomic.Int64
	start := time.Now()
	sample := func(n *meshNode) (procSample, error) {
		pid := n.shoal.Pid()
		s := procSample{at: time.Since(start), pulls: pulls.Load()}
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			return s, err
		}
		for _, line := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				if err != nil {
					return s, fmt.Errorf("VmRSS %q: %w", v, err)
				}
				s.rss = kb << 10
			}
		}
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			return s, err
		}
		s.fds = len(fds)
		m, err := n.shoal.Metrics(ctx)
		if err != nil {
			return s, err
		}
		if _, ok := m["go_goroutines"]; !ok {
			return s, errors.New("no go_goroutines in /metrics")
		}
		s.goroutines = int(m.Sum("go_goroutines", nil))
		s.heap = int64(m.Sum("go_memstats_heap_alloc_bytes", nil))
		return s, nil
	}
	samples := make([][]procSample, len(nodes))
	sampleAll := func() []procSample {
		out := make([]procSample, len(nodes))
		for i, n := range nodes {
			s, err := sample(n)
			if err != nil {
				t.Errorf("sampling %s: %v", n.name, err)
			}
			out[i] = s
			samples[i] = append(samples[i], s)
		}
		return out
	}

	// loop pulls and removes images on node i until ctx ends.
	loop := func(ctx context.Context, i int, round *int) {
		n := nodes[i]
		for ctx.Err() == nil {
			ref := refs[(*round*5+i*4)%len(refs)]
			*round++
			op := func(what string, f func(context.Context) error) bool {
				octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), soakOpTimeout)
				defer cancel()
				if err := f(octx); err != nil {
					if failures.Add(1) <= 10 {
						t.Errorf("%s %s %s (round %d): %v", n.name, what, ref, *round, err)
					}
					return false
				}
				return true
			}
			pulled := op("pull", func(ctx context.Context) error {
				if *round%2 == 0 {
					return n.ctrd.CRIPull(ctx, ref)
				}
				return n.ctrd.CtrPull(ctx, ref)
			}) && op("check", func(ctx context.Context) error {
				if ok, err := n.ctrd.HasImage(ctx, ref); err != nil || !ok {
					return fmt.Errorf("image complete: %v, %v", ok, err)
				}
				return nil
			})
			if pulled {
				pulls.Add(1)
			}
			op("remove", func(ctx context.Context) error { return n.ctrd.RemoveImage(ctx, ref) })
		}
	}
	rounds := make([]int, len(nodes))
	// run loops every node until the deadline, sampling as it goes.
	run := func(until time.Time) {
		rctx, cancel := context.WithDeadline(ctx, until)
		defer cancel()
		var lw sync.WaitGroup
		for i := range nodes {
			lw.Go(func() { loop(rctx, i, &rounds[i]) })
		}
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for done := false; !done; {
			select {
			case <-rctx.Done():
				done = true
			case <-tick.C:
				sampleAll()
			}
		}
		lw.Wait()
	}
	// quiet waits until every daemon is idle (no download, mirror request
	// or upload running), gives them soakRest to release what their last
	// work held (connections and streams close on timers), and samples
	// them: both quiet samples are taken the same time after the last work.
	quiet := func() []procSample {
		waitFor(t, "every daemon idle: no download, mirror request or upload running", soakQuiet, func() error {
			var busy []string
			for _, n := range nodes {
				m, err := n.shoal.Metrics(ctx)
				if err != nil {
					return fmt.Errorf("%s: %w", n.name, err)
				}
				for _, g := range []string{"shoal_inflight_downloads", "shoal_mirror_requests_inflight", "shoal_p2p_uploads_active"} {
					if v := m.Sum(g, nil); v != 0 {
						busy = append(busy, fmt.Sprintf("%s: %s %v", n.name, g, v))
					}
				}
			}
			if len(busy) > 0 {
				return errors.New(strings.Join(busy, "; "))
			}
			return nil
		})
		time.Sleep(soakRest)
		return sampleAll()
	}

	sampleAll()
	run(start.Add(warmup))
	base := quiet()
	baseAt := time.Since(start)
	run(start.Add(*soakFor))
	end := quiet()
	elapsed := time.Since(start)

	t.Logf("soak: %v (warm-up %v), %d pulls of %d images on %d nodes, %d failures; samples every %v",
		elapsed.Round(time.Second), warmup, pulls.Load(), len(refs), len(nodes), failures.Load(), interval)
	for i, n := range nodes {
		peak := procSample{}
		for _, s := range samples[i] {
			peak.rss, peak.heap = max(peak.rss, s.rss), max(peak.heap, s.heap)
			peak.goroutines, peak.fds = max(peak.goroutines, s.goroutines), max(peak.fds, s.fds)
		}
		t.Logf("%s (containerd %s): after warm-up (+%v, quiet): %v", n.name, n.ctrd.Flavor(), baseAt.Round(time.Second), base[i])
		t.Logf("%s: at the end (+%v, quiet): %v", n.name, elapsed.Round(time.Second), end[i])
		t.Logf("%s: highest while pulling: %v", n.name, peak)
		for _, s := range thin(samples[i], 8) {
			t.Logf("%s: sample +%v after %d pulls: %v", n.name, s.at.Round(time.Second), s.pulls, s)
		}
		b, e := base[i], end[i]
		if limit := int64(soakGrowth*float64(b.rss)) + soakMemSlack; e.rss > limit {
			t.Errorf("%s: RSS grew from %.1f to %.1f MiB, over %.1f MiB", n.name, mib(b.rss), mib(e.rss), mib(limit))
		}
		if limit := int64(soakGrowth*float64(b.heap)) + soakMemSlack; e.heap > limit {
			t.Errorf("%s: heap grew from %.1f to %.1f MiB, over %.1f MiB", n.name, mib(b.heap), mib(e.heap), mib(limit))
		}
		if e.goroutines > b.goroutines+soakGoroutineUp {
			t.Errorf("%s: goroutines grew from %d to %d, over +%d", n.name, b.goroutines, e.goroutines, soakGoroutineUp)
		}
		if e.fds > b.fds+soakFDUp {
			t.Errorf("%s: open fds grew from %d to %d, over +%d", n.name, b.fds, e.fds, soakFDUp)
		}
		if !n.shoal.Running() {
			t.Errorf("%s: the daemon is not running", n.name)
		}
	}
	if failures.Load() != 0 {
		t.Errorf("%d pulls, checks or removals failed", failures.Load())
	}
	if min := int64(len(refs)); pulls.Load() < min {
		t.Errorf("only %d pulls in %v; want at least %d", pulls.Load(), elapsed, min)
	}
}

// thin keeps about n evenly spaced samples, the first and last included.
func thin(s []procSample, n int) []procSample {
	if len(s) <= n {
		return s
	}
	var out []procSample
	for i := range n {
		out = append(out, s[i*(len(s)-1)/(n-1)])
	}
	return out
}

// pushSoakImages pushes n images, each of three uncompressed layers: one
// of three shared 4 MiB bases, one of four shared 2 MiB middles, and a
// 1-4 MiB layer of its own. It returns their references.
func pushSoakImages(ctx context.Context, registry string, rt http.RoundTripper, n int) ([]string, error) {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	layer := func(size int) (v1.Layer, error) {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("soak-%x", rng.Uint64()), Mode: 0o644, Size: int64(size), Typeflag: tar.TypeReg}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
		if err := tw.Close(); err != nil {
			return nil, err
		}
		return static.NewLayer(b.Bytes(), types.OCIUncompressedLayer), nil
	}
	pool := func(k, size int) ([]v1.Layer, error) {
		var ls []v1.Layer
		for range k {
			l, err := layer(size)
			if err != nil {
				return nil, err
			}
			ls = append(ls, l)
		}
		return ls, nil
	}
	bases, err := pool(3, 4<<20)
	if err != nil {
		return nil, err
	}
	mids, err := pool(4, 2<<20)
	if err != nil {
		return nil, err
	}
	var refs []string
	for i := range n {
		own, err := layer((1 + i%4) << 20)
		if err != nil {
			return nil, err
		}
		img, err := mutate.AppendLayers(empty.Image, bases[i%len(bases)], mids[i%len(mids)], own)
		if err != nil {
			return nil, err
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, err
		}
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture = "linux", runtime.GOARCH
		if img, err = mutate.ConfigFile(img, cf); err != nil {
			return nil, err
		}
		img = mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
		ref, err := name.NewTag(fmt.Sprintf("%s/soak/app%02d:v1", registry, i), name.Insecure)
		if err != nil {
			return nil, err
		}
		if err := remote.Write(ref, img, remote.WithContext(ctx), remote.WithTransport(rt)); err != nil {
			return nil, fmt.Errorf("push %s: %w", ref, err)
		}
		refs = append(refs, ref.String())
	}
	if slices.Contains(refs, "") {
		return nil, errors.New("push: an image without a name")
	}
	return refs, nil
}
