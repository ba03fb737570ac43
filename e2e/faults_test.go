package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/bench/lab"
	"github.com/shoal-dev/shoal/p2p"
)

// faultsFull selects the fault suite's full variants (make e2e-faults):
// more nodes, bigger images, every fault repeated.
var faultsFull = flag.Bool("faults.full", os.Getenv("SHOAL_FAULTS_FULL") != "", "run the fault suite's full variants: more nodes, bigger images, repetitions")

// faultParams sizes the suite.
type faultParams struct {
	nodes     int   // shoal nodes, besides the registry host
	layers    int   // layers of the images the registry faults pull
	layerSize int64 // their size
	bigLayer  int64 // the one layer of the images in flight during peer faults
	shapeMbit float64
	reps      int // repetitions of each peer fault
}

// faultReps overrides the repetitions of each peer fault, e.g. 20 to
// count how often a rule holds: go test -run '^TestFaults$/^peer-' ./e2e/
// -args -faults.reps 20.
var faultReps = flag.Int("faults.reps", 0, "repetitions of each peer fault (0: 1, or 3 with -faults.full)")

func faultSizes() faultParams {
	p := faultParams{nodes: 4, layers: 2, layerSize: 2 << 20, bigLayer: 16 << 20, shapeMbit: 40, reps: 1}
	if *faultsFull {
		p = faultParams{nodes: 6, layers: 3, layerSize: 8 << 20, bigLayer: 64 << 20, shapeMbit: 80, reps: 3}
	}
	if *faultReps > 0 {
		p.reps = *faultReps
	}
	return p
}

// The stall timeout the nodes run with: short, so a stalled source costs
// the suite seconds, not the default 10 s.
const faultStallTimeout = 2 * time.Second

// faultPeerStall is the daemon's default --peer-stall, which the peer
// faults measure (the other e2e tests run with patientPeerStall).
const faultPeerStall = 500 * time.Millisecond

// No leak, as checked here: once a fault has ended and the pulls are done,
// every surviving daemon gets back within these margins of the goroutines
// and open files it had before the fault, within leakSettle. The margins
// cover what a healthy daemon holds for a while after work: idle HTTP
// connections to the registry (two goroutines and a file each, kept 90 s),
// libp2p streams and connections redialled after a peer came back, and a
// DHT query finishing. A leak per transfer or per failed source shows
// within a few faults; the suite's last check compares the daemons that
// ran through every fault with their state before the first.
const (
	goroutineSlack = 40
	fdSlack        = 16
	leakSettle     = 45 * time.Second
)

// faultEnv is the suite's shared setup: one network, one registry with a
// fault proxy in front of it, one mesh.
type faultEnv struct {
	p     faultParams
	net   *lab.Network
	reg   *lab.Registry
	proxy *lab.Proxy
	nodes []*meshNode
	key   string
	seeds []string
	warm  lab.Image // pulled by every node first, never removed

	mu   sync.Mutex
	rows []string
}

// registry is the name nodes pull images by: the proxy's address.
func (e *faultEnv) registry() string { return e.proxy.Addr() }

func (e *faultEnv) ref(im lab.Image) string { return e.registry() + "/" + im.Repo + ":" + im.Tag }

func (e *faultEnv) push(t *testing.T, repo string, layers int, size int64) lab.Image {
	t.Helper()
	regHost := e.net.Hosts[0]
	im, err := lab.PushImage(t.Context(), e.reg.Addr(), repo, "v1", layers, size, lab.WithTransport(lab.TransportIn(regHost.Netns)))
	if err != nil {
		t.Fatal(err)
	}
	return im
}

// record logs one parseable line per fault and keeps it for the report.
func (e *faultEnv) record(t *testing.T, name, outcome string, recovery, total time.Duration, leak leakResult, detail string) {
	t.Helper()
	row := fmt.Sprintf("FAULT name=%s outcome=%s recovery=%s pull=%s goroutines=%+d fds=%+d detail=%q",
		name, outcome, recovery.Round(10*time.Millisecond), total.Round(10*time.Millisecond), leak.goroutines, leak.fds, detail)
	t.Log(row)
	e.mu.Lock()
	e.rows = append(e.rows, row)
	e.mu.Unlock()
}

func (e *faultEnv) writeReport(t *testing.T) {
	p := os.Getenv("SHOAL_FAULTS_REPORT")
	if p == "" {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := os.WriteFile(p, []byte(strings.Join(e.rows, "\n")+"\n"), 0o644); err != nil {
		t.Errorf("SHOAL_FAULTS_REPORT: %v", err)
	}
}

// converged waits until every running node sees want live members, and
// returns how long that took.
func (e *faultEnv) converged(t *testing.T, nodes []*meshNode, want int, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	waitFor(t, fmt.Sprintf("%d nodes see %d live members", len(nodes), want), timeout, func() error {
		for _, n := range nodes {
			st, err := statusOf(t, n)
			if err != nil {
				return err
			}
			if st.LiveMembers != want {
				return fmt.Errorf("%s sees %d live members", n.name, st.LiveMembers)
			}
		}
		return nil
	})
	return time.Since(start)
}

// usage is what a daemon holds: goroutines (go_goroutines from /metrics)
// and open files (/proc/<pid>/fd).
type usage struct{ goroutines, fds int }

func usageOf(t *testing.T, n *meshNode) (usage, error) {
	m, err := n.shoal.Metrics(t.Context())
	if err != nil {
		return usage{}, err
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", n.shoal.Pid()))
	if err != nil {
		return usage{}, err
	}
	return usage{goroutines: int(m.Sum("go_goroutines", nil)), fds: len(fds)}, nil
}

// baseline is the usage of nodes before a fault, keyed by pid: a daemon
// restarted since is another process and is not compared.
type baseline map[int]usage

func takeBaseline(t *testing.T, nodes []*meshNode) baseline {
	t.Helper()
	b := baseline{}
	for _, n := range nodes {
		u, err := usageOf(t, n)
		if err != nil {
			t.Fatalf("%s usage: %v", n.name, err)
		}
		b[n.shoal.Pid()] = u
	}
	return b
}

type leakResult struct{ goroutines, fds int } // the largest growth left, over the nodes compared

// checkNoLeak waits until every node still running as the same process is
// back within the slack of its baseline; it fails the test if one is not
// within leakSettle.
func checkNoLeak(t *testing.T, base baseline, nodes []*meshNode) leakResult {
	t.Helper()
	var res leakResult
	err := lab.WaitFor(t.Context(), "daemons back to their baseline", leakSettle, func() error {
		res = leakResult{}
		var errs []error
		for _, n := range nodes {
			b, ok := base[n.shoal.Pid()]
			if !ok || !n.shoal.Running() {
				continue
			}
			u, err := usageOf(t, n)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", n.name, err))
				continue
			}
			dg, df := u.goroutines-b.goroutines, u.fds-b.fds
			res.goroutines, res.fds = max(res.goroutines, dg), max(res.fds, df)
			if dg > goroutineSlack || df > fdSlack {
				errs = append(errs, fmt.Errorf("%s: %d goroutines (baseline %d), %d open files (baseline %d)", n.name, u.goroutines, b.goroutines, u.fds, b.fds))
			}
		}
		return errors.Join(errs...)
	})
	if err != nil {
		t.Errorf("leak: %v", err)
	}
	return res
}

// nodeStatus is a daemon's /status: the mesh, and how its containerd is.
type nodeStatus struct {
	p2p.Status
	Containerd string
}

// statusOf is meshNode.status without failing the test: a daemon may be
// briefly unreachable during a fault.
func statusOf(t *testing.T, n *meshNode) (nodeStatus, error) {
	b, err := n.shoal.Status(t.Context())
	if err != nil {
		return nodeStatus{}, err
	}
	var st struct {
		Containerd string      `json:"containerd"`
		Mesh       *p2p.Status `json:"mesh"`
	}
	if err := json.Unmarshal(b, &st); err != nil || st.Mesh == nil {
		return nodeStatus{}, fmt.Errorf("%s status %s: %v", n.name, b, err)
	}
	return nodeStatus{Status: *st.Mesh, Containerd: st.Containerd}, nil
}

func fetchedFrom(t *testing.T, n *meshNode, source string) float64 {
	m, err := n.shoal.Metrics(t.Context())
	if err != nil {
		return -1
	}
	return m.Sum("shoal_fetched_bytes_total", map[string]string{"source": source})
}

// verifyAll checks every blob committed by every node's containerd and
// shoal against its digest. Every containerd holds the warm-up image, and
// the shoals together hold it too: the check found something to verify.
func (e *faultEnv) verifyAll(t *testing.T) {
	t.Helper()
	inShoal := map[digest.Digest]bool{}
	for _, n := range e.nodes {
		verifyHolds(t, n.ctrd.ContentDir(), e.warm.Blobs()...)
		for d := range verifyContent(t, n.shoal.DataDir()) {
			inShoal[d] = true
		}
	}
	for _, d := range e.warm.Blobs() {
		if !inShoal[d] {
			t.Errorf("no node's shoal holds %s of the warm-up image", d)
		}
	}
}

func (e *faultEnv) pull(t *testing.T, n *meshNode, im lab.Image) time.Duration {
	t.Helper()
	start := time.Now()
	if err := n.ctrd.CtrPull(t.Context(), e.ref(im)); err != nil {
		t.Fatalf("%s pull %s: %v\n%s", n.name, im.Repo, err, tailFile(n.shoal.LogPath(), 20))
	}
	d := time.Since(start)
	if ok, err := n.ctrd.HasImage(t.Context(), e.ref(im)); err != nil || !ok {
		t.Fatalf("%s has %s: %v %v", n.name, im.Repo, ok, err)
	}
	return d
}

// TestFaults injects one fault at a time into a running mesh of real
// shoal daemons and containerds in network namespaces, with a registry
// behind a fault proxy, and checks what an operator would: every pull
// completes (through shoal, or by containerd's fallback to the registry),
// no blob is committed with the wrong bytes, and the daemons that live
// through the fault hold no more goroutines or files than before it. Each
// fault logs one `FAULT name=… outcome=… recovery=…` line, also written to
// $SHOAL_FAULTS_REPORT when set.
func TestFaults(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	ctx := t.Context()
	log := testLogger(t)
	p := faultSizes()
	e := &faultEnv{p: p}
	net, err := lab.NewNetwork(ctx, netName(t, "flt"), 1+p.nodes, lab.NetworkConfig{Subnet: "10.213.21.0/24", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	cleanup(t, net.Close)
	e.net = net
	regHost := net.Hosts[0]
	if e.reg, err = lab.StartRegistry(ctx, lab.RegistryConfig{Netns: regHost.Netns, Addr: regHost.Addr(5000), Logger: log}); err != nil {
		t.Fatal(err)
	}
	cleanup(t, e.reg.Close)
	if e.proxy, err = lab.StartProxy(ctx, e.reg.Addr(), lab.ProxyConfig{Netns: regHost.Netns, Addr: regHost.Addr(5001), TargetNetns: regHost.Netns, Logger: log}); err != nil {
		t.Fatal(err)
	}
	cleanup(t, e.proxy.Close)

	e.key = writeKey(t)
	for _, h := range net.Hosts[1:] {
		e.seeds = append(e.seeds, h.IP.String()+":7502")
	}
	e.nodes = make([]*meshNode, p.nodes)
	var wg sync.WaitGroup
	for i := range p.nodes {
		wg.Go(func() {
			e.nodes[i] = startMeshNode(t, fmt.Sprintf("node%d", i+1), net.Hosts[i+1], flavors[i%2], e.registry(), e.seeds, e.key,
				"--stall-timeout", faultStallTimeout.String(), "--peer-stall", faultPeerStall.String())
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	e.converged(t, e.nodes, p.nodes, 60*time.Second)
	// Warm up: every node pulls once, so the baselines include the pools a
	// daemon keeps after its first pull.
	e.warm = e.push(t, "faults/warm", 1, 1<<20)
	for _, n := range e.nodes {
		e.pull(t, n, e.warm)
	}
	suiteBase := takeBaseline(t, e.nodes)
	t.Cleanup(func() { e.writeReport(t) })

	t.Run("registry-500", func(t *testing.T) { e.registryStatus(t, "registry-500", 500, "") })
	t.Run("registry-429", e.registryRateLimit)
	t.Run("registry-stall", e.registryStall)
	t.Run("registry-cut", e.registryCut)
	t.Run("peer-sigkill", func(t *testing.T) { e.peerFault(t, "peer-sigkill") })
	t.Run("peer-sigstop", func(t *testing.T) { e.peerFault(t, "peer-sigstop") })
	t.Run("peer-link-down", func(t *testing.T) { e.peerFault(t, "peer-link-down") })
	t.Run("partition", e.partition)
	t.Run("disk-full", e.diskFull)
	t.Run("shoal-restart", e.shoalRestart)
	t.Run("containerd-restart", e.containerdRestart)

	e.proxy.SetFault(lab.Fault{})
	e.verifyAll(t)
	// The daemons that ran through every fault, compared with before the first.
	leak := checkNoLeak(t, suiteBase, e.nodes)
	t.Logf("FAULT-SUITE goroutines=%+d fds=%+d (largest growth over the whole suite, daemons never restarted)", leak.goroutines, leak.fds)
}

// nodeAt names the node whose address is hostPort, or returns hostPort.
func (e *faultEnv) nodeAt(hostPort string) string {
	host, _, err := net.SplitHostPort(hostPort)
	if err != nil {
		return hostPort
	}
	for _, n := range e.nodes {
		if n.host.IP.String() == host {
			return n.name
		}
	}
	return hostPort
}

// blobGets sorts the proxy's blob GETs of im after since by who asked.
type blobGets struct {
	shoal, direct map[digest.Digest][]lab.ProxyRequest
}

func (e *faultEnv) blobGets(im lab.Image, since time.Time) blobGets {
	g := blobGets{shoal: map[digest.Digest][]lab.ProxyRequest{}, direct: map[digest.Digest][]lab.ProxyRequest{}}
	want := map[digest.Digest]bool{}
	for _, d := range im.Blobs() {
		want[d] = true
	}
	for _, r := range e.proxy.Requests() {
		if r.Method != "GET" || !want[r.Digest] || r.Start.Before(since) {
			continue
		}
		if strings.HasPrefix(r.UserAgent, "shoal/") {
			g.shoal[r.Digest] = append(g.shoal[r.Digest], r)
		} else {
			g.direct[r.Digest] = append(g.direct[r.Digest], r)
		}
	}
	// The proxy lists requests as they complete; a stalled one completes
	// last. In the order they arrived:
	for _, m := range []map[digest.Digest][]lab.ProxyRequest{g.shoal, g.direct} {
		for _, rs := range m {
			slices.SortStableFunc(rs, func(a, b lab.ProxyRequest) int { return a.Start.Compare(b.Start) })
		}
	}
	return g
}

// registryStatus: the registry answers every blob GET from shoal with
// status (mid-pull: the manifests pass). shoal must answer containerd
// within a bounded time, without a retry storm, and containerd must get
// every blob from the registry itself.
func (e *faultEnv) registryStatus(t *testing.T, name string, status int, retryAfter string) {
	im := e.push(t, "faults/"+name, e.p.layers, e.p.layerSize)
	puller := e.nodes[0]
	base := takeBaseline(t, e.nodes)
	start := time.Now()
	e.proxy.SetFault(lab.Fault{Kind: lab.FaultStatus, Status: status, RetryAfter: retryAfter, UserAgentPrefix: "shoal/"})
	pullTime := e.pull(t, puller, im)
	e.proxy.SetFault(lab.Fault{})
	e.verifyAll(t)

	g := e.blobGets(im, start)
	var recovery time.Duration
	maxTries := 0
	for _, d := range im.Blobs() {
		tries := len(g.shoal[d])
		maxTries = max(maxTries, tries)
		ok := false
		for _, r := range g.direct[d] {
			if r.Status == 200 && r.BodyBytes > 0 {
				ok = true
				if tries > 0 {
					// How long containerd waited on shoal before going around it.
					recovery = max(recovery, r.Start.Sub(g.shoal[d][0].Start))
				}
			}
		}
		if !ok {
			t.Errorf("blob %s: containerd never fetched it from the registry itself (direct GETs %+v)", d, g.direct[d])
		}
		// Each node asks the registry at most FetchAttempts (3) times per
		// blob, the puller and the blob's designated fetchers among them:
		// after a download failed at the registry, the blob is a miss on
		// that node for 10 s.
		first := map[string]time.Time{}
		asked := map[string]int{}
		for _, r := range g.shoal[d] {
			node := e.nodeAt(r.From)
			if f, ok := first[node]; !ok || r.Start.Before(f) {
				first[node] = r.Start
			}
		}
		for _, r := range g.shoal[d] {
			if node := e.nodeAt(r.From); r.Start.Before(first[node].Add(10 * time.Second)) {
				asked[node]++
			}
		}
		for node, n := range asked {
			if n > 3 {
				t.Errorf("blob %s: %s asked the registry %d times within 10 s while it answered %d, more than 3 (by node: %v)", d, node, n, status, asked)
			}
		}
		if _, err := os.Stat(filepath.Join(puller.shoal.DataDir(), "blobs", "sha256", d.Encoded())); err == nil {
			t.Errorf("%s's shoal stored %s, which the registry never sent it", puller.name, d)
		}
	}
	leak := checkNoLeak(t, base, e.nodes)
	e.record(t, name, "fallback", recovery, pullTime, leak, fmt.Sprintf("shoal asked the registry up to %d times per blob; containerd fetched every blob itself", maxTries))
}

// rateLimitFor is the Retry-After of the registry-429 fault: long enough
// that the whole pull happens within it, short enough to wait out.
const rateLimitFor = 10 * time.Second

// registryRateLimit: the registry answers every blob GET from shoal with
// 429 and a Retry-After (mid-pull: the manifests pass). The first 429 backs
// the registry off on every node: until the Retry-After passed, no node of
// the mesh asks the registry for a blob that one of them already asked
// for, each says so in a metric and its log, and containerd gets every
// blob from the registry itself, with its own quota.
func (e *faultEnv) registryRateLimit(t *testing.T) {
	const name = "registry-429"
	im := e.push(t, "faults/"+name, e.p.layers, e.p.layerSize)
	puller := e.nodes[0]
	base := takeBaseline(t, e.nodes)
	start := time.Now()
	e.proxy.SetFault(lab.Fault{Kind: lab.FaultStatus, Status: http.StatusTooManyRequests,
		RetryAfter: strconv.Itoa(int(rateLimitFor.Seconds())), UserAgentPrefix: "shoal/"})
	pullTime := e.pull(t, puller, im)
	e.proxy.SetFault(lab.Fault{})
	e.verifyAll(t)

	g := e.blobGets(im, start)
	var first time.Time // the first 429
	for _, rs := range g.shoal {
		for _, r := range rs {
			if r.Status == http.StatusTooManyRequests && (first.IsZero() || r.Start.Before(first)) {
				first = r.Start
			}
		}
	}
	if first.IsZero() {
		t.Fatalf("shoal never asked the registry for a blob of %s (its GETs: %+v)", im.Repo, g.shoal)
	}
	// The next faults need the registry: wait the back-off out, also when
	// a check below fails.
	defer func() { time.Sleep(time.Until(first.Add(rateLimitFor + time.Second))) }()
	// The back-off runs from each node's first 429 or word of it, a few
	// milliseconds after the proxy answered; asks at its very end are
	// not counted against it.
	ends := first.Add(rateLimitFor - time.Second)
	var recovery time.Duration
	for _, d := range im.Blobs() {
		during := 0
		for _, r := range g.shoal[d] {
			if r.Start.Before(ends) {
				during++
			}
		}
		if during > 1 {
			t.Errorf("blob %s: the mesh asked the registry %d times during its back-off, want at most once: %+v", d, during, g.shoal[d])
		}
		ok := false
		for _, r := range g.direct[d] {
			if r.Status == 200 && r.BodyBytes > 0 {
				ok = true
				if len(g.shoal[d]) > 0 {
					recovery = max(recovery, r.Start.Sub(g.shoal[d][0].Start))
				}
			}
		}
		if !ok {
			t.Errorf("blob %s: containerd never fetched it from the registry itself (direct GETs %+v)", d, g.direct[d])
		}
		if _, err := os.Stat(filepath.Join(puller.shoal.DataDir(), "blobs", "sha256", d.Encoded())); err == nil {
			t.Errorf("%s's shoal stored %s, which the registry never sent it", puller.name, d)
		}
	}
	e.backedOffEverywhere(t, first)
	leak := checkNoLeak(t, base, e.nodes)
	e.record(t, name, "fallback", recovery, pullTime, leak, fmt.Sprintf("%d blobs, asked at most once each by the whole mesh during the back-off", len(im.Blobs())))
}

// backedOffEverywhere checks that every node says, in its metrics and its
// log, that the registry is backed off until about first + rateLimitFor:
// the nodes the registry answered, and the others through the gossip.
func (e *faultEnv) backedOffEverywhere(t *testing.T, first time.Time) {
	t.Helper()
	want := first.Add(rateLimitFor)
	for _, n := range e.nodes {
		deadline := time.Now().Add(5 * time.Second)
		for {
			until := metric(t, t.Context(), n.shoal, "shoal_registry_backoff_until_seconds", map[string]string{"registry": e.registry()})
			if math.Abs(until-float64(want.Unix())) <= 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: registry backed off until %.0f, want about %d (the first 429 plus its Retry-After); log:\n%s",
					n.name, until, want.Unix(), tailFile(n.shoal.LogPath(), 20))
			}
			time.Sleep(50 * time.Millisecond)
		}
		if !loggedBackoff(t, n.shoal.LogPath(), e.registry()) {
			t.Errorf("%s's log does not say the registry is backed off:\n%s", n.name, tailFile(n.shoal.LogPath(), 20))
		}
	}
}

// loggedBackoff says whether the daemon's JSON log has the warning that
// registry is backed off, with the time it ends.
func loggedBackoff(t *testing.T, path, registry string) bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		var rec struct {
			Level, Msg, Registry, Until string
		}
		if json.Unmarshal([]byte(line), &rec) != nil {
			continue
		}
		if rec.Level == "WARN" && strings.HasPrefix(rec.Msg, "registry asked shoal to slow down") && rec.Registry == registry && rec.Until != "" {
			return true
		}
	}
	return false
}

// registryStall: the registry sends part of a layer to shoal and then
// nothing. shoal must give up on it after --stall-timeout and resume at
// the same offset; containerd sees a slow blob, not a stalled one.
func (e *faultEnv) registryStall(t *testing.T) {
	im := e.push(t, "faults/registry-stall", e.p.layers, e.p.layerSize)
	puller := e.nodes[0]
	layer, size := im.Layers[0], im.LayerSizes[0]
	base := takeBaseline(t, e.nodes)
	start := time.Now()
	e.proxy.SetFault(lab.Fault{Kind: lab.FaultStall, AfterBytes: size / 4, UserAgentPrefix: "shoal/", Blob: layer, Times: 1})
	pullTime := e.pull(t, puller, im)
	e.proxy.SetFault(lab.Fault{})
	e.verifyAll(t)

	g := e.blobGets(im, start)
	reqs := g.shoal[layer]
	if len(reqs) < 2 || !reqs[0].Stalled {
		t.Fatalf("shoal's GETs of the stalled layer: %+v", reqs)
	}
	// The stalled request is recorded only once its client hung up: shoal
	// abandoned it, the proxy did not let it go.
	var sent int64
	for _, r := range reqs {
		sent += r.BodyBytes
	}
	if sent > 2*size {
		t.Errorf("the registry sent %d bytes of a %d-byte layer: the download restarted instead of resuming", sent, size)
	}
	outcome := "shoal"
	if len(g.direct[layer]) > 0 {
		outcome = "fallback"
	}
	recovery := reqs[1].Start.Sub(reqs[0].Start)
	if recovery < faultStallTimeout {
		t.Errorf("shoal asked again %v after the stall began, before its %v stall timeout", recovery, faultStallTimeout)
	}
	leak := checkNoLeak(t, base, e.nodes)
	e.record(t, "registry-stall", outcome, recovery, pullTime, leak,
		fmt.Sprintf("stalled after %d of %d bytes; the registry sent %d bytes of the layer in %d requests", size/4, size, sent, len(reqs)))
}

// registryCut: the registry closes the connection twice in the middle of
// a layer. shoal resumes each time at the offset it reached: the registry
// sends the layer once, and containerd never notices.
func (e *faultEnv) registryCut(t *testing.T) {
	im := e.push(t, "faults/registry-cut", e.p.layers, e.p.layerSize)
	puller := e.nodes[0]
	layer, size := im.Layers[0], im.LayerSizes[0]
	base := takeBaseline(t, e.nodes)
	start := time.Now()
	e.proxy.SetFault(lab.Fault{Kind: lab.FaultCut, AfterBytes: size / 3, UserAgentPrefix: "shoal/", Blob: layer, Times: 2})
	pullTime := e.pull(t, puller, im)
	e.proxy.SetFault(lab.Fault{})
	e.verifyAll(t)

	g := e.blobGets(im, start)
	reqs := g.shoal[layer]
	var sent int64
	for _, r := range reqs {
		sent += r.BodyBytes
	}
	if len(reqs) < 3 {
		t.Errorf("shoal fetched the layer in %d requests, want the two cut ones and the rest: %+v", len(reqs), reqs)
	}
	if len(g.direct[layer]) > 0 {
		t.Errorf("containerd fetched the layer from the registry itself: shoal did not hide a cut body (%+v)", g.direct[layer])
	}
	if sent > size+64<<10 {
		t.Errorf("the registry sent %d bytes of a %d-byte layer: a cut download restarted instead of resuming", sent, size)
	}
	var recovery time.Duration
	if len(reqs) >= 2 {
		recovery = reqs[len(reqs)-1].Start.Sub(reqs[0].Start)
	}
	leak := checkNoLeak(t, base, e.nodes)
	e.record(t, "registry-cut", "shoal", recovery, pullTime, leak,
		fmt.Sprintf("cut twice at %d bytes; the registry sent %d bytes of the %d-byte layer in %d requests", size/3, sent, size, len(reqs)))
}

// holdOnly has holder pull im straight from the registry, not through
// shoal, so its containerd is the only copy in the mesh, and waits until
// its shoal advertises it.
func (e *faultEnv) holdOnly(t *testing.T, holder *meshNode, im lab.Image) {
	t.Helper()
	want := holder.status(t).BlobsProvided + len(im.Blobs()) + 1 // and the manifest
	if out, err := holder.ctrd.Ctr(t.Context(), "images", "pull", "--plain-http", e.ref(im)); err != nil {
		t.Fatalf("%s direct pull: %v\n%s", holder.name, err, out)
	}
	waitFor(t, holder.name+" advertises "+im.Repo, 30*time.Second, func() error {
		st, err := statusOf(t, holder)
		if err != nil {
			return err
		}
		if st.BlobsProvided < want {
			return fmt.Errorf("%d blobs provided, want %d", st.BlobsProvided, want)
		}
		return nil
	})
}

// inFlight starts puller's pull of im with slow, the node whose link is
// shaped (the puller's download, or a holder's upload), waits until a peer
// streams the layer to the puller, and returns that peer.
func (e *faultEnv) inFlight(t *testing.T, puller, slow *meshNode, im lab.Image) (victim *meshNode, done chan error) {
	t.Helper()
	up, down := 0.0, e.p.shapeMbit
	if slow != puller {
		up, down = e.p.shapeMbit, 0
	}
	if err := slow.host.Shape(t.Context(), up, down); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = slow.host.Shape(context.Background(), 0, 0) })
	base := fetchedFrom(t, puller, "peer")
	done = make(chan error, 1)
	go func() { done <- puller.ctrd.CtrPull(t.Context(), e.ref(im)) }()
	var got float64
	waitFor(t, puller.name+" streams "+im.Repo+" from a peer", 60*time.Second, func() error {
		if got = fetchedFrom(t, puller, "peer") - base; got < float64(im.LayerSizes[0]/4) {
			return fmt.Errorf("%s fetched %v bytes from peers", puller.name, got)
		}
		st, err := statusOf(t, puller)
		if err != nil {
			return err
		}
		for _, p := range st.Peers {
			if p.Inflight == 0 {
				continue
			}
			for _, n := range e.nodes {
				if n == puller {
					continue
				}
				if ns, err := statusOf(t, n); err == nil && ns.ID == p.ID {
					victim = n
					return nil
				}
			}
		}
		return errors.New("no transfer in flight")
	})
	if size := float64(im.LayerSizes[0]); got >= size {
		t.Fatalf("%s had fetched %v bytes, the whole %v-byte layer, before the fault: nothing was in flight", puller.name, got, size)
	}
	return victim, done
}

// otherBytes is what puller's downloads received from every source but
// the peer victim: the registry and the other peers.
func otherBytes(t *testing.T, puller *meshNode, victim peer.ID) float64 {
	st, err := statusOf(t, puller)
	if err != nil {
		return -1
	}
	n := fetchedFrom(t, puller, "upstream")
	for _, p := range st.Peers {
		if p.ID != victim {
			n += float64(p.BytesFetched)
		}
	}
	return n
}

// waitResumed returns how long after from the puller received 256 KiB
// from a source other than the victim: the transfer resumed elsewhere.
// Bytes the victim had sent before the fault, still queued on the way,
// do not count.
func waitResumed(t *testing.T, puller *meshNode, victim peer.ID, at float64, from time.Time, done <-chan error) (time.Duration, error) {
	for {
		if f := otherBytes(t, puller, victim); f >= at+(256<<10) {
			return time.Since(from), nil
		}
		select {
		case err := <-done:
			// The pull ended first: what was left came within a MiB.
			return time.Since(from), err
		case <-t.Context().Done():
			return 0, t.Context().Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// peerFault: the peer streaming a layer to a node is killed, frozen or
// cut off mid-transfer. The puller must resume from another source at the
// offset it reached, and the mesh must take the peer back once it returns.
func (e *faultEnv) peerFault(t *testing.T, name string) {
	for rep := range e.p.reps {
		im := e.push(t, fmt.Sprintf("faults/%s-%d", name, rep), 1, e.p.bigLayer)
		holder, puller := e.nodes[1], e.nodes[2]
		e.holdOnly(t, holder, im)
		base := takeBaseline(t, e.nodes)
		pullStart := time.Now()
		victim, done := e.inFlight(t, puller, puller, im)
		victimID := victim.status(t).ID
		at := otherBytes(t, puller, victimID)
		faultAt := time.Now()
		var restore func()
		switch name {
		case "peer-sigkill":
			victim.shoal.Kill()
			restore = func() {
				if err := victim.shoal.Start(t.Context()); err != nil {
					t.Fatal(err)
				}
			}
		case "peer-sigstop":
			pid := victim.shoal.Pid()
			if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			var once sync.Once
			restore = func() { once.Do(func() { _ = syscall.Kill(pid, syscall.SIGCONT) }) }
			t.Cleanup(restore)
		case "peer-link-down":
			if err := victim.host.SetLink(t.Context(), false); err != nil {
				t.Fatal(err)
			}
			var once sync.Once
			restore = func() {
				once.Do(func() {
					if err := victim.host.SetLink(context.Background(), true); err != nil {
						t.Error(err)
					}
				})
			}
			t.Cleanup(restore)
		}
		upBefore := fetchedFrom(t, puller, "upstream")
		recovery, err := waitResumed(t, puller, victimID, at, faultAt, done)
		if err == nil {
			err = <-done
		}
		pullTime := time.Since(pullStart)
		if err != nil {
			t.Fatalf("%s pull after %s on %s: %v\n%s", puller.name, name, victim.name, err, tailFile(puller.shoal.LogPath(), 30))
		}
		if ok, err := puller.ctrd.HasImage(t.Context(), e.ref(im)); err != nil || !ok {
			t.Fatalf("%s has the image: %v %v", puller.name, ok, err)
		}
		// The rest came from elsewhere: had the victim sent it all before
		// the fault, nothing would have resumed.
		if got := otherBytes(t, puller, victimID); got <= at {
			t.Errorf("%s received nothing from a source other than %s after the fault (%v bytes before it, %v after)", puller.name, victim.name, at, got)
		}
		_ = puller.host.Shape(t.Context(), 0, 0)
		outcome := "peer"
		if fetchedFrom(t, puller, "upstream") > upBefore {
			outcome = "registry"
		}
		if recovery > time.Second {
			t.Logf("%s resumed %v after %s on %s; the end of its log:\n%s", puller.name, recovery, name, victim.name, tailFile(puller.shoal.LogPath(), 40))
		}
		if name != "peer-sigkill" && recovery >= faultStallTimeout {
			// A silent peer's stream is judged by its own pace (--peer-stall,
			// 500ms), not left to the stall timeout.
			t.Errorf("%s resumed %v after %s on %s, not before the %v stall timeout", puller.name, recovery, name, victim.name, faultStallTimeout)
		}
		restore()
		rejoin := e.converged(t, e.nodes, len(e.nodes), 90*time.Second)
		if rejoin > 2*time.Second {
			t.Logf("the mesh was whole again %v after %s returned; the end of %s's log:\n%s\nthe end of %s's log:\n%s", rejoin, victim.name, puller.name, tailFile(puller.shoal.LogPath(), 30), victim.name, tailFile(victim.shoal.LogPath(), 30))
		}
		e.verifyAll(t)
		leak := checkNoLeak(t, base, e.nodes)
		e.record(t, name, "resumed-from-"+outcome, recovery, pullTime, leak,
			fmt.Sprintf("victim %s (holder %s); mesh whole again %v after it returned", victim.name, holder.name, rejoin.Round(10*time.Millisecond)))
		// The victim's own copy, if any, must be whole or absent.
		if victim != holder {
			verifyHolds(t, victim.shoal.DataDir(), e.warm.Blobs()...)
		}
	}
}

// partition splits the mesh into two halves (packets between them lost
// in transit, the registry reachable from both), pulls on both sides, then
// heals it: members see each other again, and each side pulls the other's
// image from the mesh with the registry's blobs down.
func (e *faultEnv) partition(t *testing.T) {
	ctx := t.Context()
	half := len(e.nodes) / 2
	sideA, sideB := e.nodes[:half], e.nodes[half:]
	ips := func(ns []*meshNode) []netip.Addr {
		var out []netip.Addr
		for _, n := range ns {
			out = append(out, n.host.IP)
		}
		return out
	}
	base := takeBaseline(t, e.nodes)
	heal := func() {
		for _, n := range sideA {
			_ = n.host.Unblock(context.Background(), ips(sideB)...)
		}
		for _, n := range sideB {
			_ = n.host.Unblock(context.Background(), ips(sideA)...)
		}
	}
	var healed sync.Once
	t.Cleanup(func() { healed.Do(heal) })
	start := time.Now()
	for _, n := range sideA {
		if err := n.host.Block(ctx, ips(sideB)...); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range sideB {
		if err := n.host.Block(ctx, ips(sideA)...); err != nil {
			t.Fatal(err)
		}
	}
	// Each side finds the other gone.
	var wg sync.WaitGroup
	wg.Go(func() { e.converged(t, sideA, len(sideA), 60*time.Second) })
	wg.Go(func() { e.converged(t, sideB, len(sideB), 60*time.Second) })
	wg.Wait()
	detect := time.Since(start)
	imA := e.push(t, "faults/partition-a", e.p.layers, e.p.layerSize)
	imB := e.push(t, "faults/partition-b", e.p.layers, e.p.layerSize)
	var pullA, pullB time.Duration
	wg.Go(func() { pullA = e.pull(t, sideA[0], imA) })
	wg.Go(func() { pullB = e.pull(t, sideB[0], imB) })
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	healAt := time.Now()
	healed.Do(heal)
	recovery := e.converged(t, e.nodes, len(e.nodes), 90*time.Second)
	_ = healAt
	// With the registry's blobs down for everyone, each side's image can
	// only come from the other side.
	e.proxy.SetFault(lab.Fault{Kind: lab.FaultStatus, Status: 503})
	defer e.proxy.SetFault(lab.Fault{})
	crossStart := time.Now()
	peerA, peerB := fetchedFrom(t, sideB[len(sideB)-1], "peer"), fetchedFrom(t, sideA[len(sideA)-1], "peer")
	var crossA, crossB time.Duration
	wg.Go(func() { crossA = e.pull(t, sideB[len(sideB)-1], imA) })
	wg.Go(func() { crossB = e.pull(t, sideA[len(sideA)-1], imB) })
	wg.Wait()
	e.proxy.SetFault(lab.Fault{})
	if t.Failed() {
		t.FailNow()
	}
	if got := fetchedFrom(t, sideB[len(sideB)-1], "peer") - peerA; got < float64(imA.Size-imA.ManifestSize) {
		t.Errorf("%s fetched %v bytes of the other side's image from peers", sideB[len(sideB)-1].name, got)
	}
	if got := fetchedFrom(t, sideA[len(sideA)-1], "peer") - peerB; got < float64(imB.Size-imB.ManifestSize) {
		t.Errorf("%s fetched %v bytes of the other side's image from peers", sideA[len(sideA)-1].name, got)
	}
	e.verifyAll(t)
	leak := checkNoLeak(t, base, e.nodes)
	e.record(t, "partition", "healed", recovery, max(pullA, pullB), leak,
		fmt.Sprintf("halves of %d and %d; each side saw the other gone after %v; after the heal each side pulled the other's image from peers in %v and %v (registry blobs down); cross pulls started %v after the heal",
			len(sideA), len(sideB), detect.Round(10*time.Millisecond), crossA.Round(10*time.Millisecond), crossB.Round(10*time.Millisecond), crossStart.Sub(healAt).Round(10*time.Millisecond)))
}
