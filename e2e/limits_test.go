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

// txSample is a reading of an interface's transmitted bytes and of the
// bytes queued in the namespace's TCP sockets.
type txSample struct {
	at     time.Time
	tx     int64 // bytes eth0 sent
	queued int64 // bytes written to TCP sockets and not yet acknowledged
}

// released is what the processes had handed to TCP by the sample: sent,
// or still queued in the kernel.
func (s txSample) released() int64 { return s.tx + s.queued }

// sampleBlur is how long the reads of one sample may take: a sample read
// over a longer time (the sampler descheduled in the middle, on a loaded
// machine) has no precise time, and is dropped.
const sampleBlur = 20 * time.Millisecond

// sampleTx reads the tx byte counter of eth0, and the TCP send queues, in
// the network namespace of process pid every interval until ctx ends. It
// reads /proc/<pid>/net/dev and net/tcp, files read in this process:
// forking `ip` for each sample would blur the time of the reading by the
// fork's latency, tens of milliseconds on a loaded machine, which is
// several per cent of a one-second window. A sample whose reads took more
// than sampleBlur is dropped; the second result counts them.
func sampleTx(ctx context.Context, pid int, interval time.Duration) func() ([]txSample, int, error) {
	var (
		samples []txSample
		dropped int
		err     error
		done    = make(chan struct{})
	)
	go func() {
		defer close(done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			start := time.Now()
			tx, rerr := readTx(pid, "eth0")
			if rerr != nil {
				err = rerr
				return
			}
			queued, rerr := readTCPQueued(pid)
			if rerr != nil {
				err = rerr
				return
			}
			if took := time.Since(start); took <= sampleBlur {
				samples = append(samples, txSample{at: start.Add(took / 2), tx: tx, queued: queued})
			} else {
				dropped++
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return func() ([]txSample, int, error) {
		<-done
		return samples, dropped, err
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

// readTCPQueued sums the send queues (tx_queue: written, not yet
// acknowledged) of the TCP sockets in the network namespace of process pid,
// from /proc/<pid>/net/tcp and tcp6.
func readTCPQueued(pid int) (int64, error) {
	var sum int64
	for _, f := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if err != nil {
			return 0, err
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			// sl local rem st tx_queue:rx_queue ...
			fs := strings.Fields(line)
			if len(fs) < 5 {
				continue
			}
			txq, _, ok := strings.Cut(fs[4], ":")
			if !ok {
				return 0, fmt.Errorf("/proc/%d/net/%s: %q", pid, f, line)
			}
			n, err := strconv.ParseInt(txq, 16, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/net/%s: %q: %w", pid, f, line, err)
			}
			sum += n
		}
	}
	return sum, nil
}

// busiestWindow is the highest rate in bytes per second of count over any
// stretch of consecutive samples at least window long.
func busiestWindow(s []txSample, window time.Duration, count func(txSample) int64) (rate float64, from time.Time) {
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if d := s[j].at.Sub(s[i].at); d >= window {
				if r := float64(count(s[j])-count(s[i])) / d.Seconds(); r > rate {
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
// the holder back. Its eth0 tx counter, and the bytes queued in its TCP
// sockets, are read ten times a second; the interface's average over the
// pulls, and what the holder released into TCP over its busiest two-second
// window, must stay at or below 1.10 × the cap, and the interface's
// busiest two seconds above half of it (the cap, not a lack of demand, set
// the pace).
func TestUploadCap(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	ctx := t.Context()
	log := testLogger(t)
	const capMbit, linkMbit = 40.0, 200.0
	net, err := lab.NewNetwork(ctx, netName(t, "cap"), 5, lab.NetworkConfig{
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
	s, dropped, err := samples()
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
	if len(s) < 2 || s[len(s)-1].at.Sub(s[0].at) < 2*time.Second {
		t.Fatalf("%d samples kept over the pulls (%d dropped, read over more than %v): too few to measure a 2 s window", len(s), dropped, sampleBlur)
	}

	capBytes := capMbit * 1e6 / 8
	served := holder.status(t).BytesServed - servedBefore
	// The cap paces what shoal writes into its streams, and what its
	// connections write into their sockets, with bursts of 20 ms. Bytes
	// in the holder's socket buffers can still wait while a puller is
	// slow to read, and then leave together. So the busiest window is
	// asserted on what shoal released into TCP, the bytes sent plus those
	// still queued in its sockets, which a delay after the write does not
	// move; samples read over more than sampleBlur were dropped. The
	// interface's own figures are the average over the pulls, and a
	// busiest window showing that the cap, not a lack of demand, set the
	// pace.
	wire := func(s txSample) int64 { return s.tx }
	released := func(s txSample) int64 { return s.released() }
	peakWire, at := busiestWindow(s, 2*time.Second, wire)
	peakWire1, _ := busiestWindow(s, time.Second, wire)
	peak, _ := busiestWindow(s, 2*time.Second, released)
	var maxQueued int64
	for _, x := range s {
		maxQueued = max(maxQueued, x.queued)
	}
	first, last := s[0], s[len(s)-1]
	avg := float64(last.tx-first.tx) / last.at.Sub(first.at).Seconds()
	t.Logf("cap %.0f Mbit/s: %s served %d blob bytes (%.2f × the image) while 3 peers pulled for %v; "+
		"eth0 tx: %d bytes (%.3f × the blob bytes), average %.1f Mbit/s (%.3f × the cap), busiest 2 s window %.1f Mbit/s (%.3f ×, at +%v), "+
		"busiest 1 s window %.1f Mbit/s (%.3f ×); released into TCP: busiest 2 s window %.1f Mbit/s (%.3f ×), up to %d bytes queued; %d samples (%d dropped)",
		capMbit, holder.name, served, float64(served)/float64(im.Size), took.Round(time.Millisecond),
		last.tx-first.tx, float64(last.tx-first.tx)/float64(served), avg*8/1e6, avg/capBytes,
		peakWire*8/1e6, peakWire/capBytes, at.Sub(start).Round(time.Millisecond),
		peakWire1*8/1e6, peakWire1/capBytes, peak*8/1e6, peak/capBytes, maxQueued, len(s), dropped)
	if avg > 1.10*capBytes {
		t.Errorf("on %s's interface: average %.1f Mbit/s over the pulls, want at most 1.10 × the %.0f Mbit/s cap", holder.name, avg*8/1e6, capMbit)
	}
	if peak > 1.10*capBytes {
		t.Errorf("%s released %.1f Mbit/s into TCP over its busiest 2 s, want at most 1.10 × the %.0f Mbit/s cap", holder.name, peak*8/1e6, capMbit)
	}
	if peakWire < 0.5*capBytes {
		t.Errorf("busiest 2 s window on the interface %.1f Mbit/s is under half the cap: the test did not load the holder", peakWire*8/1e6)
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
