package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/opencontainers/go-digest"
	"golang.org/x/time/rate"

	"github.com/shoal-dev/shoal/bench/lab"
	"github.com/shoal-dev/shoal/bench/report"
	"github.com/shoal-dev/shoal/mirror"
	"github.com/shoal-dev/shoal/p2p"
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

// simRegistry is an in-process registry whose upload is paced and counted.
type simRegistry struct {
	srv    *http.Server
	addr   string
	egress atomic.Int64
	active atomic.Int64 // requests being answered
}

// settle waits until every request has been answered, so that egress
// counts the last chunks a client received before the handler returned.
func (r *simRegistry) settle(ctx context.Context) {
	deadline := time.Now().Add(5 * time.Second)
	for r.active.Load() > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
}

func startRegistry(ctx context.Context, bytesPerSec float64) (*simRegistry, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &simRegistry{addr: ln.Addr().String()}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	l := newLimiter(bytesPerSec)
	r.srv = &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			r.active.Add(1)
			defer r.active.Add(-1)
			reg.ServeHTTP(egressWriter{ResponseWriter: w, ctx: req.Context(), l: l, count: &r.egress}, req)
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
	reg, err := startRegistry(ctx, report.MbitToBytes(cfg.RegistryMbit))
	if err != nil {
		return nil, err
	}
	defer reg.close()
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
				rec, err := runOnce(ctx, cfg, reg, im, cand, sc)
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

// runOnce starts fresh nodes for one candidate and runs one scenario.
func runOnce(ctx context.Context, cfg SimConfig, reg *simRegistry, im lab.Image, cand, scenario string) (report.Record, error) {
	rec := report.Record{Candidate: cand, Scenario: scenario, Nodes: cfg.Nodes}
	link := report.MbitToBytes(cfg.LinkMbit)
	pullers := make([]*puller, cfg.Nodes)
	var nodes []*simNode
	if cand == CandidateShoal {
		var err error
		nodes, err = startMesh(ctx, cfg, reg.addr, link)
		if err != nil {
			return rec, err
		}
		defer stopMesh(nodes)
		for i, n := range nodes {
			pullers[i] = &puller{registry: reg.addr, client: n.client, hosts: []host{
				{base: n.mirrorURL, mirror: true},
				{base: "http://" + reg.addr, limit: n.download},
			}}
		}
	} else {
		for i := range pullers {
			c := &http.Client{Transport: &http.Transport{}}
			pullers[i] = &puller{registry: reg.addr, client: c, hosts: []host{{base: "http://" + reg.addr, limit: newLimiter(link)}}}
		}
	}
	defer func() {
		for _, p := range pullers {
			p.client.CloseIdleConnections()
		}
	}()

	group := pullers
	if scenario == ScenarioWarm {
		if _, err := pullers[0].pull(ctx, im.Repo, im.Tag); err != nil {
			return rec, fmt.Errorf("seed pull: %w", err)
		}
		if len(nodes) > 0 {
			if err := waitProvided(ctx, nodes[0], len(im.Blobs())+1); err != nil {
				return rec, err
			}
		}
		group = pullers[1:]
	}
	reg.settle(ctx)
	reg.egress.Store(0)
	var uploadedBefore []int64
	for _, n := range nodes {
		uploadedBefore = append(uploadedBefore, n.uploaded.Load())
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
	reg.settle(ctx)
	rec.RegistryEgressBytes = reg.egress.Load()
	rec.NodeSeconds = times
	for i, err := range errs {
		if err != nil {
			rec.FailedPulls++
			cfg.Logger.Warn("pull failed", "node", i, "err", err)
		}
		rec.MakespanSeconds = max(rec.MakespanSeconds, times[i])
	}
	for i, n := range nodes {
		rec.NodeUploadBytes = append(rec.NodeUploadBytes, n.uploaded.Load()-uploadedBefore[i])
	}
	return rec, nil
}

// simNode is one in-process shoal: store, resolver, mesh node and mirror.
type simNode struct {
	node      *p2p.Node
	res       *resolver.Resolver
	srv       *http.Server
	mirrorURL string
	client    *http.Client
	download  *rate.Limiter
	upload    *rate.Limiter
	uploaded  atomic.Int64
	heard     atomic.Pointer[resolver.Resolver] // res, for the gossip
	cancel    context.CancelFunc
	done      chan struct{}
}

func startMesh(ctx context.Context, cfg SimConfig, registryAddr string, link float64) ([]*simNode, error) {
	key, err := p2p.GenerateClusterKey()
	if err != nil {
		return nil, err
	}
	var nodes []*simNode
	var seed string
	for i := range cfg.Nodes {
		n, err := startNode(ctx, cfg, i, registryAddr, link, key, seed)
		if err != nil {
			stopMesh(nodes)
			return nil, err
		}
		if i == 0 {
			seed = n.node.Status().GossipAddr
		}
		nodes = append(nodes, n)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, n := range nodes {
		for n.node.Status().LiveMembers < cfg.Nodes {
			if time.Now().After(deadline) {
				stopMesh(nodes)
				return nil, fmt.Errorf("mesh did not converge: %d of %d members", n.node.Status().LiveMembers, cfg.Nodes)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nodes, nil
}

func startNode(ctx context.Context, cfg SimConfig, i int, registryAddr string, link float64, key []byte, seed string) (*simNode, error) {
	st := store.NewMemory()
	n := &simNode{download: newLimiter(link), upload: newLimiter(link), done: make(chan struct{})}
	pc := p2p.DefaultConfig()
	pc.NodeName = fmt.Sprintf("sim-%d", i)
	pc.GossipAddr = "127.0.0.1:0"
	pc.P2PAddr = "127.0.0.1:0"
	pc.ClusterKey = key
	pc.Timing = p2p.LocalTiming()
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
	node, err := p2p.New(pc, &simContent{n: n, st: st, upload: n.upload, uploaded: &n.uploaded})
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
	up, err := upstream.New(upstream.Config{Insecure: []string{registryAddr}, UserAgent: "shoal-bench"})
	if err != nil {
		n.stop()
		return nil, err
	}
	n.res, err = resolver.New(st, limitedUpstream{up, n.download},
		resolver.Sources{Router: limitedRouter{node.Router(), n.download}},
		resolver.Config{Logger: pc.Logger}, nil)
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		n.stop()
		return nil, err
	}
	n.srv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = n.srv.Serve(ln) }()
	n.mirrorURL = "http://" + ln.Addr().String()
	n.client = &http.Client{Transport: &http.Transport{}}
	return n, nil
}

func (n *simNode) stop() {
	if n.srv != nil {
		_ = n.srv.Close()
	}
	if n.res != nil {
		n.res.Close()
	}
	n.cancel()
	<-n.done
}

func stopMesh(nodes []*simNode) {
	var wg sync.WaitGroup
	for _, n := range nodes {
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

func (p pullFor) PullFor(ctx context.Context, dgst digest.Digest, registry, repo string) (store.Blob, error) {
	b, err := p.n.res.PullFor(ctx, dgst, registry, repo)
	if err != nil {
		return nil, err
	}
	return limitedBlob{Blob: b, l: p.n.upload, uploaded: &p.n.uploaded}, nil
}

// simContent is what a simulated node serves its peers, at its upload pace.
type simContent struct {
	n        *simNode
	st       store.Store
	upload   *rate.Limiter
	uploaded *atomic.Int64
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
	return limitedBlob{Blob: b, l: c.upload, uploaded: c.uploaded}, nil
}

func (c *simContent) Walk(ctx context.Context, fn func(digest.Digest, int64) error) error {
	return c.st.Walk(ctx, func(i store.Info) error { return fn(i.Digest, i.Size) })
}

// limitedUpstream paces registry bytes through the node's download link.
type limitedUpstream struct {
	resolver.Upstream
	l *rate.Limiter
}

func (u limitedUpstream) Blob(ctx context.Context, req resolver.BlobRequest, off int64) (io.ReadCloser, int64, error) {
	body, size, err := u.Upstream.Blob(ctx, req, off)
	if err != nil {
		return nil, 0, err
	}
	return limitReader(ctx, body, u.l), size, nil
}

// limitedRouter paces peer bytes through the node's download link.
type limitedRouter struct {
	*p2p.Router
	l *rate.Limiter
}

func (r limitedRouter) FetchThrough(ctx context.Context, p string, dgst digest.Digest, off int64, registry, repo string) (io.ReadCloser, int64, error) {
	body, size, err := r.Router.FetchThrough(ctx, p, dgst, off, registry, repo)
	if err != nil {
		return nil, 0, err
	}
	return limitReader(ctx, body, r.l), size, nil
}

func (r limitedRouter) Fetch(ctx context.Context, p string, dgst digest.Digest, off int64) (io.ReadCloser, int64, error) {
	body, size, err := r.Router.Fetch(ctx, p, dgst, off)
	if err != nil {
		return nil, 0, err
	}
	return limitReader(ctx, body, r.l), size, nil
}

func human(n int64) string {
	const mib = 1 << 20
	if n >= mib {
		return fmt.Sprintf("%.1f MiB", float64(n)/mib)
	}
	return strings.TrimSpace(fmt.Sprintf("%d B", n))
}
