package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testNetPrefix starts the names of the networks tests make; the pid after
// it tells a leftover of a dead run from a network a live run still uses.
const testNetPrefix = "labt"

// testNetworkName returns a name unique to this test process and removes
// the networks of test processes that died before their cleanups ran.
func testNetworkName(t testing.TB, suffix string) string {
	t.Helper()
	if _, err := SweepDead(t.Context(), testNetPrefix, testLogger(t)); err != nil {
		t.Logf("sweeping a dead run's namespaces: %v", err)
	}
	return fmt.Sprintf("%s%d-%s", testNetPrefix, os.Getpid(), suffix)
}

func processGone(pid int) bool {
	return pid > 0 && errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// TestNetworkPull runs a registry in one host namespace and a containerd of
// each flavor in two others, and pulls over the shaped veths.
func TestNetworkPull(t *testing.T) {
	t.Parallel()
	requireRoot(t, DefaultRegistryBinary, "ip", "tc")
	ctx := t.Context()
	log := testLogger(t)
	const mbit = 200
	n, err := NewNetwork(ctx, testNetworkName(t, "pull"), 3, NetworkConfig{EgressMbit: mbit, IngressMbit: mbit, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeOrError(t, n.Close) })
	regHost := n.Hosts[0]
	reg, err := StartRegistry(ctx, RegistryConfig{Netns: regHost.Netns, Addr: regHost.Addr(5000), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeOrError(t, reg.Close) })
	im, err := PushImage(ctx, reg.Addr(), "lab/netns", "v1", 2, 4<<20, WithTransport(testClient(t, regHost.Netns).Transport), WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}

	var pids []int
	var closers []func() error
	for i, flavor := range []Flavor{Flavor16, Flavor2} {
		h := n.Hosts[i+1]
		c, err := StartContainerd(ctx, ContainerdConfig{Flavor: flavor, Netns: h.Netns, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { closeOrError(t, c.Close) })
		pids = append(pids, c.Pid())
		closers = append(closers, c.Close)
		if err := c.WriteHosts(reg.Addr(), Hosts{Server: "http://" + reg.Addr()}); err != nil {
			t.Fatal(err)
		}
		for _, via := range []string{"ctr", "cri"} {
			before, err := h.Counters(ctx)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			pull := c.CtrPull
			if via == "cri" {
				pull = c.CRIPull
			}
			if err := pull(ctx, im.Ref); err != nil {
				t.Fatalf("%s %s pull: %v", flavor, via, err)
			}
			took := time.Since(start)
			after, err := h.Counters(ctx)
			if err != nil {
				t.Fatal(err)
			}
			rx := after.RxBytes - before.RxBytes
			t.Logf("%s %s pull over a %d Mbit/s veth: %d bytes in %v (%.0f Mbit/s); host received %d bytes",
				flavor, via, mbit, im.Size, took, float64(im.Size)*8/took.Seconds()/1e6, rx)
			if rx < im.Size {
				t.Errorf("%s %s pull: host %s received %d bytes, less than the image's %d", flavor, via, h.Netns, rx, im.Size)
			}
			if ok, err := c.HasImage(ctx, im.Ref); err != nil || !ok {
				t.Fatalf("%s %s pull: image present %v, %v", flavor, via, ok, err)
			}
			if err := c.RemoveImage(ctx, im.Ref); err != nil {
				t.Fatal(err)
			}
		}
	}

	reqs, err := reg.Requests()
	if err != nil {
		t.Fatal(err)
	}
	from := map[string]int{}
	for _, q := range reqs {
		if q.Method == "GET" && q.Blob && q.UserAgent != "go-containerregistry" {
			from[strings.Split(q.RemoteAddr, ":")[0]]++
		}
	}
	for _, h := range n.Hosts[1:] {
		// two pulls of two layers and a config
		if from[h.IP.String()] != 6 {
			t.Errorf("registry served %d blob GETs to %s, want 6 (all: %v)", from[h.IP.String()], h.IP, from)
		}
	}

	pids = append(pids, reg.Pid())
	closeAll(t, append(closers, reg.Close, n.Close)...)
	for _, pid := range pids {
		if !processGone(pid) {
			t.Errorf("process %d still alive after Close", pid)
		}
	}
	checkNetworkGone(t, n)
}

func closeAll(t *testing.T, fns ...func() error) {
	t.Helper()
	for _, f := range fns {
		closeOrError(t, f)
	}
}

// checkNetworkGone asserts that no namespace, veth or bridge of n remains.
func checkNetworkGone(t *testing.T, n *Network) {
	t.Helper()
	names, err := ListNetns()
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range n.Namespaces() {
		if slices.Contains(names, ns) {
			t.Errorf("namespace %s still listed", ns)
		}
	}
	out, err := exec.Command(ipPath(), "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), n.Name) {
		t.Errorf("ip netns list still shows %s:\n%s", n.Name, out)
	}
	out, err = exec.Command(ipPath(), "-o", "link", "show", "type", "veth").Output()
	if err != nil {
		t.Fatal(err)
	}
	// Ours are only ever created inside the network's namespaces.
	for _, h := range n.Hosts {
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], h.Port+"@") {
				t.Errorf("veth %s in the root namespace: %s", h.Port, line)
			}
		}
	}
}

func TestNetworkShapeAndCounters(t *testing.T) {
	t.Parallel()
	requireRoot(t, "ip", "tc")
	ctx := t.Context()
	n, err := NewNetwork(ctx, testNetworkName(t, "shape"), 2, NetworkConfig{Subnet: "10.213.7.0/24", Qdisc: "tbf", EgressMbit: 50, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeOrError(t, n.Close) })
	a, b := n.Hosts[0], n.Hosts[1]
	if a.IP.String() != "10.213.7.2" || b.Addr(80) != "10.213.7.3:80" {
		t.Fatalf("addresses %s, %s", a.IP, b.Addr(80))
	}
	for _, h := range n.Hosts {
		for _, dev := range []string{"lo", h.Iface} {
			out, err := exec.Command(ipPath(), "-n", h.Netns, "-o", "link", "show", "dev", dev).Output()
			if err != nil || !strings.Contains(string(out), "UP") {
				t.Errorf("%s in %s: %s %v", dev, h.Netns, out, err)
			}
		}
		out, err := exec.Command(tcPath(), "-n", h.Netns, "qdisc", "show", "dev", h.Iface).Output()
		if err != nil || !strings.Contains(string(out), "tbf") || !strings.Contains(string(out), "50Mbit") {
			t.Errorf("qdisc of %s: %s %v", h.Netns, out, err)
		}
	}
	if err := b.Shape(ctx, 0, 20); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(tcPath(), "-n", n.BridgeNetns(), "qdisc", "show", "dev", b.Port).Output()
	if err != nil {
		t.Fatalf("tc qdisc show dev %s: %v", b.Port, err)
	}
	if !strings.Contains(string(out), "20Mbit") {
		t.Errorf("ingress cap of %s: %s", b.Netns, out)
	}
	// An error would list no qdisc, and "no tbf" would pass unread.
	out, err = exec.Command(tcPath(), "-n", b.Netns, "qdisc", "show", "dev", b.Iface).Output()
	if err != nil {
		t.Fatalf("tc qdisc show dev %s in %s: %v", b.Iface, b.Netns, err)
	}
	if strings.Contains(string(out), "tbf") {
		t.Errorf("egress cap of %s not removed: %s", b.Netns, out)
	}

	// Command runs inside the host: it sees the host's eth0 address.
	out, err = b.Command(ctx, "cat", "/proc/net/fib_trie").Output()
	if err != nil || !strings.Contains(string(out), b.IP.String()) {
		t.Errorf("Command in %s does not see %s: %v", b.Netns, b.IP, err)
	}

	// Push 2 MiB from a to a registry in b; both counters must see it.
	const size = 2 << 20
	before, err := a.Counters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := StartRegistry(ctx, RegistryConfig{Netns: b.Netns, Addr: b.Addr(5000), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeOrError(t, reg.Close) })
	if _, err := PushImage(ctx, reg.Addr(), "lab/shape", "v1", 1, size, WithTransport(testClient(t, a.Netns).Transport)); err != nil {
		t.Fatal(err)
	}
	after, err := a.Counters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sent := after.TxBytes - before.TxBytes; sent < size {
		t.Errorf("host a sent %d bytes, want at least %d", sent, size)
	}
	bc, err := b.Counters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if bc.RxBytes < size {
		t.Errorf("host b received %d bytes, want at least %d", bc.RxBytes, size)
	}
}

func TestSweep(t *testing.T) {
	t.Parallel()
	requireRoot(t, "ip")
	ctx := t.Context()
	name := testNetworkName(t, "sweep")
	n, err := NewNetwork(ctx, name, 2, NetworkConfig{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeOrError(t, n.Close) })
	// A process left inside, as an interrupted run would leave one.
	sleeper := n.Hosts[1].Command(context.Background(), "sleep", "300")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- sleeper.Wait() }()
	removed, err := Sweep(ctx, name+"-", testLogger(t))
	checkSwept(t, removed, err, n)
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Error("process in a swept namespace still running")
	}
	checkNetworkGone(t, n)
}

// TestNetworkFaults: a proxy listening inside a host namespace is reached
// from another host; Block loses that host's packets silently until
// Unblock, and a link taken down cuts it off until it comes back up.
func TestNetworkFaults(t *testing.T) {
	t.Parallel()
	requireRoot(t, "ip")
	ctx := t.Context()
	log := testLogger(t)
	target, d, _ := blobServer(t, 64<<10)
	n, err := NewNetwork(ctx, testNetworkName(t, "faults"), 2, NetworkConfig{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeOrError(t, n.Close) })
	srv, cli := n.Hosts[0], n.Hosts[1]
	p, err := StartProxy(ctx, target, ProxyConfig{Netns: srv.Netns, Addr: srv.Addr(5001), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeOrError(t, p.Close) })
	if p.Addr() != srv.Addr(5001) {
		t.Fatalf("proxy listens on %s, want %s", p.Addr(), srv.Addr(5001))
	}
	get := func() error {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.URL()+"/v2/lab/blobs/"+d.String(), nil)
		c := &http.Client{Transport: TransportIn(cli.Netns)}
		defer c.CloseIdleConnections()
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	steps := []struct {
		name    string
		do      func() error
		wantErr bool
	}{
		{"reachable", func() error { return nil }, false},
		{"blocked", func() error { return cli.Block(ctx, srv.IP) }, true},
		{"unblocked", func() error { return cli.Unblock(ctx, srv.IP) }, false},
		{"link down", func() error { return cli.SetLink(ctx, false) }, true},
		{"link up", func() error { return cli.SetLink(ctx, true) }, false},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		// A link coming up takes a moment to carry traffic again.
		err := WaitFor(ctx, s.name, 5*time.Second, func() error {
			if err := get(); (err != nil) != s.wantErr {
				return fmt.Errorf("GET through the proxy: %v, want error %v", err, s.wantErr)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestSweepDead: the namespaces of a run whose process is gone are swept,
// those of this live run are not.
func TestSweepDead(t *testing.T) {
	t.Parallel()
	requireRoot(t, "ip")
	ctx := t.Context()
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	prefix := testNetPrefix + "sd"
	dead, err := NewNetwork(ctx, fmt.Sprintf("%s%d-x", prefix, gone.ProcessState.Pid()), 1, NetworkConfig{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	live, err := NewNetwork(ctx, fmt.Sprintf("%s%d-x", prefix, os.Getpid()), 1, NetworkConfig{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeOrError(t, live.Close) })
	removed, err := SweepDead(ctx, prefix, testLogger(t))
	checkSwept(t, removed, err, dead)
	left, err := ListNetns()
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range live.Namespaces() {
		if !slices.Contains(left, ns) {
			t.Errorf("the live run's namespace %s was swept", ns)
		}
	}
}

// checkSwept fails t unless a sweep without error removed exactly n's
// namespaces.
func checkSwept(t *testing.T, removed []string, err error, n *Network) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(removed)
	want := n.Namespaces()
	slices.Sort(want)
	if !slices.Equal(removed, want) {
		t.Errorf("swept %v, want %v", removed, want)
	}
}
