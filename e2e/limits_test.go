package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/bench/lab"
)

// txSample is a reading of an interface's transmitted bytes.
type txSample struct {
	at time.Time
	tx int64
}

// sampleTx reads the tx byte counter of eth0 in the network namespace of
// process pid every interval until ctx ends. It reads /proc/<pid>/net/dev,
// a file read in this process: forking `ip` for each sample would blur the
// time of the reading by the fork's latency, tens of milliseconds on a
// loaded machine, which is several per cent of a one-second window.
func sampleTx(ctx context.Context, pid int, interval time.Duration) func() ([]txSample, error) {
	var (
		samples []txSample
		err     error
		done    = make(chan struct{})
	)
	go func() {
		defer close(done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			tx, rerr := readTx(pid, "eth0")
			at := time.Now()
			if rerr != nil {
				err = rerr
				return
			}
			samples = append(samples, txSample{at: at, tx: tx})
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return func() ([]txSample, error) {
		<-done
		return samples, err
	}
}

// readTx reads an interface's transmitted bytes from /proc/<pid>/net/dev.
func readTx(pid int, iface string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/dev", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(name) != iface {
			continue
		}
		// rx: bytes packets errs drop fifo frame compressed multicast; then tx bytes.
		f := strings.Fields(rest)
		if len(f) < 9 {
			return 0, fmt.Errorf("/proc/%d/net/dev: %q", pid, line)
		}
		return strconv.ParseInt(f[8], 10, 64)
	}
	return 0, fmt.Errorf("/proc/%d/net/dev: no %s", pid, iface)
}

// busiestWindow is the highest rate in bytes per second over any stretch
// of consecutive samples at least window long.
func busiestWindow(s []txSample, window time.Duration) (rate float64, from time.Time) {
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if d := s[j].at.Sub(s[i].at); d >= window {
				if r := float64(s[j].tx-s[i].tx) / d.Seconds(); r > rate {
					rate, from = r, s[i].at
				}
				break
			}
		}
	}
	return rate, from
}

// TestUploadCap: with --max-upload-mbit set, a
// node's peer upload, measured on its interface, stays within 10% of the
// cap while its peers still complete their pulls. One node holds a 48 MiB
// image that no other node and no registry can serve; three nodes pull it
// at once over 200 Mbit/s links, five times the cap, so only the cap holds
// the holder back. Its eth0 tx counter is read ten times a second; the
// average over the pulls and the busiest two-second window must stay at or
// below 1.10 × the cap, and that window above half of it (the cap, not a
// lack of demand, set the pace).
func TestUploadCap(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	ctx := t.Context()
	log := testLogger(t)
	const capMbit, linkMbit = 40.0, 200.0
	net, err := lab.NewNetwork(ctx, "e2e-cap-"+strconv.Itoa(os.Getpid()%100000), 5, lab.NetworkConfig{
		Subnet: "10.213.31.0/24", EgressMbit: linkMbit, IngressMbit: linkMbit, Logger: log})
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
	im, err := lab.PushImage(ctx, reg.Addr(), "cap/big", "v1", 3, 16<<20, lab.WithTransport(lab.TransportIn(regHost.Netns)))
	if err != nil {
		t.Fatal(err)
	}

	key := writeKey(t)
	var seeds []string
	for _, h := range net.Hosts[1:] {
		seeds = append(seeds, h.IP.String()+":7502")
	}
	nodes := make([]*meshNode, 5) // 1 holds the image, capped; 2-4 pull
	var wg sync.WaitGroup
	for i := 1; i <= 4; i++ {
		flavor := lab.Flavor16
		if i%2 == 0 {
			flavor = lab.Flavor2
		}
		var extra []string
		if i == 1 {
			extra = []string{"--max-upload-mbit", strconv.FormatFloat(capMbit, 'f', -1, 64)}
		}
		wg.Go(func() {
			nodes[i] = startMeshNode(t, fmt.Sprintf("node%d", i), net.Hosts[i], flavor, reg.Addr(), seeds, key, extra...)
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	holder, pullers := nodes[1], nodes[2:]
	waitFor(t, "mesh converges", 30*time.Second, func() error {
		for _, n := range nodes[1:] {
			if got := n.status(t).LiveMembers; got != 4 {
				return fmt.Errorf("%s sees %d live members", n.name, got)
			}
		}
		return nil
	})
	ref := reg.Addr() + "/" + im.Repo + ":" + im.Tag
	// Straight from the registry, not through shoal: no other node's shoal
	// holds a copy.
	if out, err := holder.ctrd.Ctr(ctx, "images", "pull", "--plain-http", ref); err != nil {
		t.Fatalf("%s direct pull: %v\n%s", holder.name, err, out)
	}
	waitProvided(t, holder, len(im.Blobs())+1)
	reg.Stop()

	servedBefore := holder.status(t).BytesServed
	sctx, stopSampling := context.WithCancel(ctx)
	samples := sampleTx(sctx, holder.shoal.Pid(), 100*time.Millisecond)
	start := time.Now()
	errs := make([]error, len(pullers))
	for i, n := range pullers {
		wg.Go(func() { errs[i] = n.ctrd.CtrPull(ctx, ref) })
	}
	wg.Wait()
	took := time.Since(start)
	stopSampling()
	s, err := samples()
	if err != nil {
		t.Fatal(err)
	}
	for i, err := range errs {
		if err != nil {
			t.Errorf("%s pull from the capped holder: %v", pullers[i].name, err)
		}
	}
	for _, n := range pullers {
		verifyHolds(t, n.ctrd.ContentDir(), im.Blobs()...)
		if ok, err := n.ctrd.HasImage(ctx, ref); err != nil || !ok {
			t.Errorf("%s has the image: %v %v", n.name, ok, err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	capBytes := capMbit * 1e6 / 8
	served := holder.status(t).BytesServed - servedBefore
	// Asserted over 2 s windows: the cap paces what shoal writes into its
	// streams, and a burst of 20 ms keeps that within 2 % of the cap over
	// one second; but bytes paid for can wait in yamux and socket buffers
	// while a loaded machine is slow to send them, and then leave together.
	// Measured here: 1.02 × over 1 s when the machine is idle, up to 1.10 ×
	// when other tests load both cores.
	peak1, _ := busiestWindow(s, time.Second)
	peak, at := busiestWindow(s, 2*time.Second)
	first, last := s[0], s[len(s)-1]
	avg := float64(last.tx-first.tx) / last.at.Sub(first.at).Seconds()
	t.Logf("cap %.0f Mbit/s: %s served %d blob bytes (%.2f × the image) while 3 peers pulled for %v; "+
		"eth0 tx: %d bytes (%.3f × the blob bytes), busiest 2 s window %.1f Mbit/s (%.3f × the cap, at +%v), "+
		"busiest 1 s window %.1f Mbit/s (%.3f ×), average %.1f Mbit/s (%.3f ×) over %d samples",
		capMbit, holder.name, served, float64(served)/float64(im.Size), took.Round(time.Millisecond),
		last.tx-first.tx, float64(last.tx-first.tx)/float64(served),
		peak*8/1e6, peak/capBytes, at.Sub(start).Round(time.Millisecond),
		peak1*8/1e6, peak1/capBytes, avg*8/1e6, avg/capBytes, len(s))
	if peak > 1.10*capBytes || avg > 1.10*capBytes {
		t.Errorf("on %s's interface: busiest 2 s window %.1f Mbit/s, average %.1f Mbit/s: want both at most 1.10 × the %.0f Mbit/s cap",
			holder.name, peak*8/1e6, avg*8/1e6, capMbit)
	}
	if peak < 0.5*capBytes {
		t.Errorf("busiest 2 s window %.1f Mbit/s is under half the cap: the test did not load the holder", peak*8/1e6)
	}
	if layers := im.Size - im.ManifestSize - im.ConfigSize; served < layers {
		t.Errorf("%s served %d bytes to peers, less than the %d bytes of layers: the pulls did not go through it", holder.name, served, layers)
	}
}

// TestMirrorRequestCap: a mirror at its --mirror-max-requests answers 503
// at once, and containerd (1.6 and 2.4) takes the blob from the registry
// instead: the pull succeeds, and the registry's log shows containerd's
// own requests beside shoal's. A slow path to the registry keeps each of
// shoal's downloads in flight long enough for containerd's three parallel
// blob requests to meet the cap of one.
func TestMirrorRequestCap(t *testing.T) {
	t.Parallel()
	for _, flavor := range flavors {
		t.Run(string(flavor), func(t *testing.T) {
			t.Parallel()
			requireRoot(t)
			ctx := t.Context()
			reg, im := registryWith(t, "e2e/capped", 6, 4<<20)
			p, err := lab.StartProxy(ctx, reg.Addr(), lab.ProxyConfig{RateBytesPerSec: 8 << 20, Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			cleanup(t, p.Close)
			n := startNode(t, flavor, p.Addr(), "--mirror-max-requests", "1")
			ref := p.Addr() + "/" + im.Repo + ":" + im.Tag
			if err := n.ctrd.CtrPull(ctx, ref); err != nil {
				t.Fatalf("pull through a mirror at its request cap: %v\n%s", err, tailFile(n.ctrd.LogPath(), 20))
			}
			if ok, err := n.ctrd.HasImage(ctx, ref); err != nil || !ok {
				t.Fatalf("image present: %v %v", ok, err)
			}
			verifyHolds(t, n.ctrd.ContentDir(), im.Blobs()...)
			rejected := metric(t, ctx, n.shoal, "shoal_mirror_requests_rejected_total", nil)
			answered503 := metric(t, ctx, n.shoal, "shoal_mirror_requests_total", map[string]string{"code": "503"})
			if rejected < 1 || answered503 != rejected {
				t.Fatalf("shoal rejected %v requests and answered %v with 503; want at least one, the same", rejected, answered503)
			}
			reqs, err := reg.Requests()
			if err != nil {
				t.Fatal(err)
			}
			direct := 0
			for _, q := range reqs {
				if q.Blob && q.Method == "GET" && !strings.HasPrefix(q.UserAgent, "shoal/") {
					direct++
				}
			}
			if direct == 0 {
				t.Fatalf("shoal turned %v requests away, yet containerd fetched no blob from the registry itself", rejected)
			}
			t.Logf("containerd %s: %v requests answered 503 at the cap; containerd fetched %d blobs from the registry instead", flavor, rejected, direct)
		})
	}
}
