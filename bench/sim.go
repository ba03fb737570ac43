package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/bench/lab"
	"github.com/shoal-dev/shoal/bench/report"
	"github.com/shoal-dev/shoal/mirror"
	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/p2p/swarm"
	"github.com/shoal-dev/shoal/resolver"
	"github.com/shoal-dev/shoal/resolver/upstream"
	"github.com/shoal-dev/shoal/store"
)

// Scenarios the simulated mode runs.
const (
	ScenarioCold = "cold" // all nodes pull a new image at once
	ScenarioWarm = "warm" // one node pulls, then all the others at once
)

// Candidates the simulated mode knows.
const (
	CandidateDirect = report.Direct // no mirror: every node pulls from the registry
	CandidateShoal  = "shoal"       // a shoal node per puller, in one mesh
)

// SimConfig describes a simulated run.
type SimConfig struct {
	Nodes        int
	Layers       int
	LayerSize    int64
	LinkMbit     float64 // each node's upload and download
	RegistryMbit float64 // the registry's upload
	Scenarios    []string
	Candidates   []string
	Reps         int
	// Progress receives a line per run; nil discards them.
	Progress io.Writer
	// Logger receives the components' logs; nil discards them.
	Logger *slog.Logger
	// Timing is the mesh's timers; zero is p2p.LocalTiming().
	Timing p2p.Timing
	// PeerStall is each resolver's PeerStall; zero is its default.
	PeerStall time.Duration

	// observe, when set, is shown each node's puller as it is made, so
	// that a test can count what the node's containerd receives.
	observe func(node int, p *puller)
}

// DefaultSimConfig runs in well under two minutes on two cores.
func DefaultSimConfig() SimConfig {
	return SimConfig{
		Nodes: 4, Layers: 4, LayerSize: 8 << 20,
		LinkMbit: 200, RegistryMbit: 200,
		Scenarios:  []string{ScenarioCold, ScenarioWarm},
		Candidates: []string{CandidateDirect, CandidateShoal},
		Reps:       2,
	}
}

func (c *SimConfig) check() error {
	switch {
	case c.Nodes < 2:
		return fmt.Errorf("--nodes %d: need at least 2", c.Nodes)
	case c.Layers < 1 || c.LayerSize < 1:
		return errors.New("--layers and --layer-size must be positive")
	case c.LinkMbit <= 0 || c.RegistryMbit <= 0:
		return errors.New("the simulated mode needs --link-mbit and --registry-mbit above 0")
	case c.Reps < 1:
		return fmt.Errorf("--reps %d: need at least 1", c.Reps)
	}
	for _, s := range c.Scenarios {
		if s != ScenarioCold && s != ScenarioWarm {
			return fmt.Errorf("scenario %q: the simulated mode runs cold and warm", s)
		}
	}
	for _, cand := range c.Candidates {
		if cand != CandidateDirect && cand != CandidateShoal {
			return fmt.Errorf("candidate %q: the simulated mode knows direct and shoal", cand)
		}
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// simRegistry is an in-process registry on the simulated network, whose
// upload is the registry's link. Its egress is what crossed that link, as
// an interface counter would count it: a transfer cut short counts as far
// as it got.
type simRegistry struct {
	srv    *http.Server
	addr   string
	host   *simHost
	active atomic.Int64 // requests being answered

	mu     sync.Mutex
	byBlob map[digest.Digest]int64 // body bytes written for each blob
	// byHost: the same, by the host that asked, then by blob.
	byHost map[*simHost]map[digest.Digest]int64
}

// blobEgress returns the body bytes the registry wrote for each blob so
// far: the part of egress a test can lay at one blob's door.
func (r *simRegistry) blobEgress() map[digest.Digest]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.byBlob)
}

// blobEgressFrom returns the body bytes the registry wrote to host h so
// far, for each blob h asked for.
func (r *simRegistry) blobEgressFrom(h *simHost) map[digest.Digest]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.byHost[h])
}

// countingWriter adds what a blob's GET writes to its registry's tally,
// and to the asking host's when it is known.
type countingWriter struct {
	http.ResponseWriter
	r    *simRegistry
	d    digest.Digest
	from *simHost // nil: not dialled through the simulated network
}

// Write passes b on in pieces of countPiece bytes, so that the tally
// grows as the bytes cross the link: the registry writes a whole blob in
// one call.
func (w countingWriter) Write(b []byte) (int, error) {
	var sent int
	for len(b) > 0 {
		n, err := w.ResponseWriter.Write(b[:min(len(b), countPiece)])
		w.r.mu.Lock()
		w.r.byBlob[w.d] += int64(n)
		if w.from != nil {
			if w.r.byHost[w.from] == nil {
				w.r.byHost[w.from] = make(map[digest.Digest]int64)
			}
			w.r.byHost[w.from][w.d] += int64(n)
		}
		w.r.mu.Unlock()
		sent += n
		b = b[n:]
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}

const countPiece = 32 << 10

// blobOf returns the digest a blob GET asks for, or "".
func blobOf(req *http.Request) digest.Digest {
	_, after, ok := strings.Cut(req.URL.Path, "/blobs/")
	if !ok || req.Method != http.MethodGet {
		return ""
	}
	d, err := digest.Parse(after)
	if err != nil {
		return ""
	}
	return d
}

// egress is what the registry has sent over its link so far.
func (r *simRegistry) egress() int64 { return r.host.sent.Load() }

// settle waits until every request has been answered and the registry's
// link is quiet, so that egress counts the last bytes clients received.
// It fails if the registry is still answering or sending after 5 s:
// egress would then be counted short.
func (r *simRegistry) settle(ctx context.Context) error {
	deadline := time.Now().Add(5 * time.Second)
	last := r.egress()
	for {
		time.Sleep(20 * time.Millisecond)
		now := r.egress()
		if r.active.Load() == 0 && now == last {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("after 5 s the registry still answers %d requests or sends (%d bytes in the last 20 ms): its egress is not final", r.active.Load(), now-last)
		}
		last = now
	}
}

func startRegistry(sn *simNet, bytesPerSec float64) (*simRegistry, error) {
	r := &simRegistry{host: newSimHost("registry", bytesPerSec, 0), byBlob: make(map[digest.Digest]int64),
		byHost: make(map[*simHost]map[digest.Digest]int64)}
	ln, err := sn.listen(r.host)
	if err != nil {
		return nil, err
	}
	r.addr = ln.Addr().String()
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.srv = &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			r.active.Add(1)
			defer r.active.Add(-1)
			if d := blobOf(req); d != "" {
				from, _ := sn.dialerOf(req.RemoteAddr)
				w = countingWriter{w, r, d, from}
			}
			reg.ServeHTTP(w, req)
		}),
	}
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

func (r *simRegistry) close() { _ = r.srv.Close() }

// RunSimulated runs every candidate in every scenario Reps times and
// returns one record per run.
func RunSimulated(ctx context.Context, cfg SimConfig) ([]report.Record, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	sn := newSimNet()
	reg, err := startRegistry(sn, report.MbitToBytes(cfg.RegistryMbit))
	if err != nil {
		return nil, err
	}
	defer reg.close()
	// Pushed around the links: the image is there before the run.
	im, err := lab.PushImage(ctx, reg.addr, "bench/app", "v1", cfg.Layers, cfg.LayerSize)
	if err != nil {
		return nil, fmt.Errorf("push the benchmark image: %w", err)
	}
	S := float64(im.Size)
	link := report.MbitToBytes(cfg.LinkMbit)
	U := report.MbitToBytes(cfg.RegistryMbit)

	var out []report.Record
	total := len(cfg.Scenarios) * len(cfg.Candidates) * cfg.Reps
	run := 0
	for rep := 1; rep <= cfg.Reps; rep++ {
		for _, sc := range cfg.Scenarios {
			for _, cand := range cfg.Candidates {
				run++
				fmt.Fprintf(cfg.Progress, "[%d/%d] %-6s %-5s rep %d: %d nodes pulling %s ...", run, total, cand, sc, rep, cfg.Nodes, human(im.Size))
				rec, err := runOnce(ctx, cfg, sn, reg, im, cand, sc)
				if err != nil {
					fmt.Fprintln(cfg.Progress, " error")
					return out, fmt.Errorf("%s %s rep %d: %w", cand, sc, rep, err)
				}
				rec.Rep = rep
				rec.Mode = report.ModeSimulated
				rec.ImageBytes = im.Size
				rec.LinkMbit, rec.RegistryMbit = cfg.LinkMbit, cfg.RegistryMbit
				if sc == ScenarioCold {
					rec.BoundSeconds = report.ColdBound(S, U, link, link, cfg.Nodes)
				} else {
					rec.BoundSeconds = report.WarmBound(S, link, link, cfg.Nodes)
				}
				if cand == CandidateDirect && sc == ScenarioCold {
					if note := report.BaselineNote(rec.MakespanSeconds, report.DirectBound(S, U, link, cfg.Nodes)); note != "" {
						rec.Notes = append(rec.Notes, note)
					}
				}
				fmt.Fprintf(cfg.Progress, " slowest %.2fs, registry sent %.2f × S\n", rec.MakespanSeconds, float64(rec.RegistryEgressBytes)/S)
				out = append(out, rec)
			}
		}
	}
	return out, nil
}

// runOnce starts fresh nodes for one candidate and runs one scenario. In
// warm, node 0 pulls before the other nodes start, so that it alone holds
// the image, as the scenario says.
func runOnce(ctx context.Context, cfg SimConfig, sn *simNet, reg *simRegistry, im lab.Image, cand, scenario string) (report.Record, error) {
	rec := report.Record{Candidate: cand, Scenario: scenario, Nodes: cfg.Nodes}
	link := report.MbitToBytes(cfg.LinkMbit)
	var m *simMesh
	if cand == CandidateShoal {
		var err error
		if m, err = newSimMesh(cfg, sn, reg.addr, link); err != nil {
			return rec, err
		}
		defer m.stop()
	}
	pullers := make([]*puller, 0, cfg.Nodes)
	defer func() {
		for _, p := range pullers {
			p.client.CloseIdleConnections()
		}
	}()
	// start makes the pullers up to n, and their nodes.
	start := func(n int) error {
		before := len(pullers)
		if m != nil {
			if err := m.grow(ctx, n); err != nil {
				return err
			}
		}
		for i := len(pullers); i < n; i++ {
			if m != nil {
				pullers = append(pullers, m.nodes[i].puller(reg.addr))
				continue
			}
			h := newSimHost(fmt.Sprintf("direct-%d", i), link, link)
			c := &http.Client{Transport: &http.Transport{DialContext: sn.dialer(h)}}
			pullers = append(pullers, &puller{registry: reg.addr, client: c, hosts: []host{{base: "http://" + reg.addr}}})
		}
		if cfg.observe != nil {
			for i := before; i < n; i++ {
				cfg.observe(i, pullers[i])
			}
		}
		return nil
	}
	first := 0
	if scenario == ScenarioWarm {
		if err := start(1); err != nil {
			return rec, err
		}
		if _, err := pullers[0].pull(ctx, im.Repo, im.Tag); err != nil {
			return rec, fmt.Errorf("seed pull: %w", err)
		}
		first = 1
	}
	if err := start(cfg.Nodes); err != nil {
		return rec, err
	}
	if m != nil && first == 1 {
		// Node 0 announces what it holds once it has peers to tell.
		if err := waitProvided(ctx, m.nodes[0], len(im.Blobs())+1); err != nil {
			return rec, err
		}
	}
	var nodes []*simNode
	if m != nil {
		nodes = m.nodes
	}
	rec.ImageBytes = im.Size
	err := pullAll(ctx, cfg, reg, im, nodes, pullers[first:], &rec)
	return rec, err
}

// pullAll has every puller of group pull the image at once and records the
// times, the registry's egress and the nodes' uploads.
func pullAll(ctx context.Context, cfg SimConfig, reg *simRegistry, im lab.Image, nodes []*simNode, group []*puller, rec *report.Record) error {
	if err := reg.settle(ctx); err != nil {
		return err
	}
	egressBefore := reg.egress()
	var uploadedBefore []int64
	for _, n := range nodes {
		uploadedBefore = append(uploadedBefore, n.host.sent.Load())
	}
	times := make([]float64, len(group))
	errs := make([]error, len(group))
	start := time.Now()
	var wg sync.WaitGroup
	for i, p := range group {
		wg.Go(func() {
			_, errs[i] = p.pull(ctx, im.Repo, im.Tag)
			times[i] = time.Since(start).Seconds()
		})
	}
	wg.Wait()
	if err := reg.settle(ctx); err != nil {
		return err
	}
	rec.RegistryEgressBytes = reg.egress() - egressBefore
	rec.NodeSeconds = times
	var ok []float64
	for i, err := range errs {
		if err != nil {
			rec.FailedPulls++
			cfg.Logger.Warn("pull failed", "node", i, "err", err)
		} else {
			ok = append(ok, times[i])
		}
		rec.MakespanSeconds = max(rec.MakespanSeconds, times[i])
	}
	for i, n := range nodes {
		rec.NodeUploadBytes = append(rec.NodeUploadBytes, n.host.sent.Load()-uploadedBefore[i])
	}
	if note := report.FasterThanLinkNote(ok, float64(im.Size), report.MbitToBytes(cfg.LinkMbit)); note != "" {
		rec.Notes = append(rec.Notes, note)
	}
	return nil
}

// simNode is one in-process shoal: store, resolver, mesh node and mirror,
// on a host of the simulated network.
type simNode struct {
	host      *simHost
	node      *p2p.Node
	res       *resolver.Resolver
	store     store.Store
	heard     atomic.Pointer[resolver.Resolver] // res, for the gossip
	srv       *http.Server
	mirrorURL string
	client    *http.Client
	cancel    context.CancelFunc
	done      chan struct{}
}

// puller pulls as the node's containerd does: from its mirror, over
// loopback, then from the registry, over the node's link.
func (n *simNode) puller(registry string) *puller {
	return &puller{registry: registry, client: n.client, hosts: []host{
		{base: n.mirrorURL, mirror: true},
		{base: "http://" + registry},
	}}
}

// simMesh is the shoal nodes of a run, in one mesh with a fresh key.
type simMesh struct {
	cfg      SimConfig
	sn       *simNet
	registry string
	link     float64
	key      []byte
	nodes    []*simNode
}

func newSimMesh(cfg SimConfig, sn *simNet, registryAddr string, link float64) (*simMesh, error) {
	key, err := p2p.GenerateClusterKey()
	if err != nil {
		return nil, err
	}
	return &simMesh{cfg: cfg, sn: sn, registry: registryAddr, link: link, key: key}, nil
}

// startMesh starts a mesh of cfg.Nodes nodes.
func startMesh(ctx context.Context, cfg SimConfig, sn *simNet, registryAddr string, link float64) (*simMesh, error) {
	m, err := newSimMesh(cfg, sn, registryAddr, link)
	if err != nil {
		return nil, err
	}
	if err := m.grow(ctx, cfg.Nodes); err != nil {
		m.stop()
		return nil, err
	}
	return m, nil
}

// grow starts nodes until the mesh has n, joining node 0, and waits until
// every node sees them all.
func (m *simMesh) grow(ctx context.Context, n int) error {
	for i := len(m.nodes); i < n; i++ {
		seed := ""
		if i > 0 {
			seed = m.nodes[0].node.Status().GossipAddr
		}
		node, err := startNode(ctx, m.cfg, m.sn, i, m.registry, m.link, m.key, seed)
		if err != nil {
			return err
		}
		m.nodes = append(m.nodes, node)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, node := range m.nodes {
		for node.node.Status().LiveMembers < n {
			if time.Now().After(deadline) {
				return fmt.Errorf("mesh did not converge: %d of %d members", node.node.Status().LiveMembers, n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

func startNode(ctx context.Context, cfg SimConfig, sn *simNet, i int, registryAddr string, link float64, key []byte, seed string) (*simNode, error) {
	st := store.NewMemory()
	n := &simNode{host: newSimHost(fmt.Sprintf("sim-%d", i), link, link), store: st, done: make(chan struct{})}
	pc := p2p.DefaultConfig()
	pc.NodeName = n.host.name
	pc.GossipAddr = "127.0.0.1:0"
	pc.P2PAddr = "127.0.0.1:0"
	pc.Dial = sn.dialer(n.host)
	pc.ClusterKey = key
	pc.Timing = cfg.Timing
	if pc.Timing == (p2p.Timing{}) {
		pc.Timing = p2p.LocalTiming()
	}
	pc.Logger = cfg.Logger.With("node", pc.NodeName)
	if seed != "" {
		pc.Join = []string{seed}
	}
	pc.Puller = pullFor{n}
	pc.OnRegistryBackoff = func(registry string, left time.Duration, origin string) {
		if r := n.heard.Load(); r != nil {
			r.NoteBackoff(registry, left, origin)
		}
	}
	node, err := p2p.New(pc, &simContent{n: n, st: st})
	if err != nil {
		return nil, err
	}
	n.node = node
	nctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	n.cancel = cancel
	go func() {
		defer close(n.done)
		_ = node.Run(nctx)
	}()
	for _, a := range node.Status().Addrs {
		if addr, err := manet.ToNetAddr(a); err == nil {
			sn.register(addr.String(), n.host)
		}
	}
	up, err := upstream.New(upstream.Config{Insecure: []string{registryAddr}, UserAgent: "shoal-bench", Dial: sn.dialer(n.host)})
	if err != nil {
		n.stop()
		return nil, err
	}
	n.res, err = resolver.New(st, up, resolver.Sources{Router: node.Router()}, resolver.Config{Logger: pc.Logger, PeerStall: cfg.PeerStall}, nil)
	if err != nil {
		n.stop()
		return nil, err
	}
	n.heard.Store(n.res)
	h, err := mirror.New(n.res, mirror.Config{Logger: pc.Logger})
	if err != nil {
		n.stop()
		return nil, err
	}
	// The mirror is the node's own, reached by its containerd over
	// loopback: not on the network.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		n.stop()
		return nil, err
	}
	n.srv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = n.srv.Serve(ln) }()
	n.mirrorURL = "http://" + ln.Addr().String()
	n.client = &http.Client{Transport: &http.Transport{DialContext: sn.dialer(n.host, ln.Addr().String())}}
	return n, nil
}

// stop ends the node's mirror, then its mesh node, and closes its
// resolver last: a peer's request served by the mesh node calls the
// resolver (PullFor), so the resolver must outlive the mesh node.
func (n *simNode) stop() {
	if n.srv != nil {
		_ = n.srv.Close()
	}
	n.cancel()
	<-n.done
	if n.res != nil {
		n.res.Close()
	}
}

func (m *simMesh) stop() {
	var wg sync.WaitGroup
	for _, n := range m.nodes {
		wg.Go(n.stop)
	}
	wg.Wait()
}

func waitProvided(ctx context.Context, n *simNode, want int) error {
	deadline := time.Now().Add(30 * time.Second)
	for n.node.Status().BlobsProvided < want {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("seed node announced %d of %d blobs", n.node.Status().BlobsProvided, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// pullFor lets peers ask this node to fetch a blob for the cluster.
type pullFor struct{ n *simNode }

func (p pullFor) PullFor(ctx context.Context, dgst digest.Digest, registry, repo string, from swarm.Asker, take func() bool) (store.Blob, error) {
	return p.n.res.PullFor(ctx, dgst, registry, repo, from, take)
}

// simContent is what a simulated node serves its peers: its store, and
// the downloads running on it.
type simContent struct {
	n  *simNode
	st store.Store
}

func (c *simContent) Open(ctx context.Context, dgst digest.Digest) (store.Blob, error) {
	b, err := c.st.Open(ctx, dgst)
	if err != nil {
		in, ok := c.n.res.InFlight(dgst)
		if !ok {
			return nil, err
		}
		b = in
	}
	return b, nil
}

func (c *simContent) Walk(ctx context.Context, fn func(digest.Digest, int64) error) error {
	return c.st.Walk(ctx, func(i store.Info) error { return fn(i.Digest, i.Size) })
}

func human(n int64) string {
	const mib = 1 << 20
	if n >= mib {
		return fmt.Sprintf("%.1f MiB", float64(n)/mib)
	}
	return strings.TrimSpace(fmt.Sprintf("%d B", n))
}
