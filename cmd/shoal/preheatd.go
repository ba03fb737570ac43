package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"os"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/distribution/reference"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	containerdplugin "github.com/shoal-dev/shoal/containerd-plugin"
	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/resolver"
)

// preheatRequest is what `shoal preheat` posts to /preheat.
type preheatRequest struct {
	Images []string `json:"images"`
	// Nodes names the members to fill; empty means every live member
	// (this node included), narrowed by Selector and Count.
	Nodes    []string          `json:"nodes,omitempty"`
	Selector map[string]string `json:"selector,omitempty"`
	Count    int               `json:"count,omitempty"`
	// IntoContainerd has every node create the images in its containerd
	// too (see PullThroughMirror).
	IntoContainerd bool `json:"into_containerd,omitempty"`
}

// preheatEvent is one line of /preheat's answer (NDJSON): first a plan
// (the nodes chosen and each image's digest), then progress per node and
// image, and an end per node and image, with its error when it failed.
type preheatEvent struct {
	Kind string `json:"kind"` // plan, progress, end
	// plan
	Nodes   []string          `json:"nodes,omitempty"`
	Digests map[string]string `json:"digests,omitempty"`
	// progress and end
	Node      string `json:"node,omitempty"`
	Image     string `json:"image,omitempty"`
	Blobs     int    `json:"blobs"`
	HeldBlobs int    `json:"held_blobs"`
	Bytes     int64  `json:"bytes"`
	HeldBytes int64  `json:"held_bytes"`
	Error     string `json:"error,omitempty"`
}

// preheatNode is a member a preheat may fill: this node has no peer ID.
type preheatNode struct {
	Name   string
	ID     peer.ID
	Self   bool
	Labels map[string]string
}

// chooseNodes is the rule for which nodes a preheat fills: those named,
// else every candidate whose labels hold the selector's, sorted by name,
// the first count of them when count > 0. A name that is no live member
// is an error, and so is a choice of none.
func chooseNodes(cands []preheatNode, names []string, selector map[string]string, count int) ([]preheatNode, error) {
	sort.Slice(cands, func(i, j int) bool { return cands[i].Name < cands[j].Name })
	var out []preheatNode
	if len(names) > 0 {
		for _, name := range names {
			i := slices.IndexFunc(cands, func(c preheatNode) bool { return c.Name == name })
			if i < 0 {
				return nil, fmt.Errorf("node %q is not a live member", name)
			}
			if !slices.ContainsFunc(out, func(c preheatNode) bool { return c.Name == name }) {
				out = append(out, cands[i])
			}
		}
	} else {
		out = slices.Clone(cands)
	}
	out = slices.DeleteFunc(out, func(c preheatNode) bool {
		for k, v := range selector {
			if got, ok := c.Labels[k]; !ok || got != v {
				return true
			}
		}
		return false
	})
	if count > 0 && len(out) > count {
		out = out[:count]
	}
	if len(out) == 0 {
		return nil, errors.New("no live member matches")
	}
	return out, nil
}

// parseImage splits an image reference into the manifest request that
// resolves it, and says the name containerd gives the image.
func parseImage(ref string) (resolver.ManifestRequest, string, error) {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return resolver.ManifestRequest{}, "", fmt.Errorf("image %q: %w", ref, err)
	}
	req := resolver.ManifestRequest{Registry: reference.Domain(named), Repo: reference.Path(named)}
	switch r := named.(type) {
	case reference.Digested:
		req.Reference = r.Digest().String()
	case reference.Tagged:
		req.Reference = r.Tag()
	}
	return req, named.String(), nil
}

// preheater runs preheats: this node's through its resolver, the
// members' over the mesh.
type preheater struct {
	res  *resolver.Resolver
	node *p2p.Node // nil without a mesh
	name string    // this node's name
	log  *slog.Logger
	// ctrd creates a preheated image in the node's containerd; nil
	// without one.
	ctrd importFunc
}

// importFunc creates the image name, whose manifest or index is dgst, in
// the node's containerd.
type importFunc func(ctx context.Context, name string, dgst digest.Digest) error

// target is one image of a preheat: resolved, with the name containerd
// gives it.
type target struct {
	ref  string // as the user wrote it
	name string // as containerd names it
	im   resolver.Image
	into bool
}

// preheatWorkers bounds the nodes one preheat asks at once.
const preheatWorkers = 32

// candidates are this node and the live members with a peer ID.
func (p *preheater) candidates() []preheatNode {
	if p.node == nil {
		name := p.name
		if name == "" {
			name, _ = os.Hostname()
		}
		return []preheatNode{{Name: name, Self: true}}
	}
	st := p.node.Status()
	out := []preheatNode{{Name: st.NodeName, Self: true, Labels: st.Labels}}
	for _, m := range st.Members {
		if m.State == p2p.MemberAlive && m.ID != "" && m.ID != st.ID {
			out = append(out, preheatNode{Name: m.Name, ID: m.ID, Labels: m.Labels})
		}
	}
	return out
}

// fill preheats one image on one node, calling progress with its reports.
func (p *preheater) fill(ctx context.Context, n preheatNode, t target, progress func(resolver.PreheatProgress)) error {
	if n.Self {
		if err := p.res.Preheat(ctx, t.im, progress); err != nil || !t.into {
			return err
		}
		return p.intoContainerd(ctx, t.name, t.im.Digest)
	}
	req := p2p.PreheatRequest{Registry: t.im.Registry, Repo: t.im.Repo, Digest: t.im.Digest, IntoContainerd: t.into, Name: t.name}
	wait := time.Second
	for attempt := 1; ; attempt++ {
		err := p.node.Preheat(ctx, n.ID, req, func(pr p2p.PreheatProgress) {
			progress(resolver.PreheatProgress{Blobs: pr.Blobs, HeldBlobs: pr.HeldBlobs, Bytes: pr.Bytes, HeldBytes: pr.HeldBytes})
		})
		if !errors.Is(err, p2p.ErrPreheatCut) || attempt == preheatAttempts {
			return err
		}
		p.log.Info("preheat stream to a member cut, asking again", "node", n.Name, "image", t.ref, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 8*time.Second)
	}
}

// preheatAttempts is how many times a member is asked to preheat an
// image when the stream to it breaks: it keeps what it fetched, so each
// attempt resumes the last. A member the mesh cuts off for good fails
// after about a minute and a half.
const preheatAttempts = 12

func (p *preheater) intoContainerd(ctx context.Context, name string, dgst digest.Digest) error {
	if p.ctrd == nil {
		return errors.New("this node runs without containerd (--containerd-sock)")
	}
	return p.ctrd(ctx, name, dgst)
}

// run fills every chosen node with every image, sending events to emit
// (one goroutine at a time); a node's images go one after the other.
func (p *preheater) run(ctx context.Context, nodes []preheatNode, targets []target, emit func(preheatEvent)) {
	var mu sync.Mutex
	send := func(e preheatEvent) {
		mu.Lock()
		defer mu.Unlock()
		emit(e)
	}
	var g errgroup.Group
	g.SetLimit(preheatWorkers)
	for _, n := range nodes {
		g.Go(func() error {
			for _, t := range targets {
				var last resolver.PreheatProgress
				err := p.fill(ctx, n, t, func(pr resolver.PreheatProgress) {
					last = pr
					send(progressEvent("progress", n.Name, t.ref, pr))
				})
				end := progressEvent("end", n.Name, t.ref, last)
				if err != nil {
					end.Error = err.Error()
					p.log.Warn("preheat failed", "node", n.Name, "image", t.ref, "err", err)
				}
				send(end)
			}
			return nil
		})
	}
	_ = g.Wait()
}

func progressEvent(kind, node, image string, pr resolver.PreheatProgress) preheatEvent {
	return preheatEvent{Kind: kind, Node: node, Image: image, Blobs: pr.Blobs, HeldBlobs: pr.HeldBlobs, Bytes: pr.Bytes, HeldBytes: pr.HeldBytes}
}

// resolve resolves every reference once, on this node.
func (p *preheater) resolve(ctx context.Context, refs []string, into bool) ([]target, error) {
	var out []target
	for _, ref := range refs {
		req, name, err := parseImage(ref)
		if err != nil {
			return nil, err
		}
		im, err := p.res.ResolveImage(ctx, req)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", ref, err)
		}
		out = append(out, target{ref: ref, name: name, im: im, into: into})
	}
	return out, nil
}

// serveHTTP answers POST /preheat: it resolves the images, chooses the
// nodes, and streams the preheat's events as NDJSON until every node is
// done. Only a JSON body is accepted, so that a web page cannot post one
// from a browser on the node without a CORS preflight, which it never
// passes.
func (p *preheater) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		http.Error(w, "want a JSON body (Content-Type: application/json)", http.StatusUnsupportedMediaType)
		return
	}
	var req preheatRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil || len(req.Images) == 0 || req.Count < 0 {
		http.Error(w, fmt.Sprintf("want {\"images\": [...]} with a count of 0 or more: %v", err), http.StatusBadRequest)
		return
	}
	nodes, err := chooseNodes(p.candidates(), req.Nodes, req.Selector, req.Count)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	targets, err := p.resolve(r.Context(), req.Images, req.IntoContainerd)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	plan := preheatEvent{Kind: "plan", Digests: map[string]string{}}
	for _, n := range nodes {
		plan.Nodes = append(plan.Nodes, n.Name)
	}
	for _, t := range targets {
		plan.Digests[t.ref] = t.im.Digest.String()
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	var lastFlush time.Time
	emit := func(e preheatEvent) {
		// The status server's write timeout is for small answers: a
		// preheat's answer lasts as long as the preheat.
		_ = rc.SetWriteDeadline(time.Now().Add(time.Minute))
		_ = enc.Encode(e)
		if e.Kind != "progress" || time.Since(lastFlush) > 250*time.Millisecond {
			_ = rc.Flush()
			lastFlush = time.Now()
		}
	}
	emit(plan)
	p.log.Info("preheat", "images", req.Images, "nodes", plan.Nodes)
	p.run(r.Context(), nodes, targets, emit)
}

// keep fills this node with refs at start and every interval, so that
// every node the daemon runs on, one that joins later included, holds
// them: each node resolves the references and fills itself, and the
// swarm makes the registry send each image about once.
func (p *preheater) keep(ctx context.Context, refs []string, every time.Duration) error {
	if len(refs) == 0 {
		return nil
	}
	t := time.NewTimer(keepFirst)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		for _, ref := range refs {
			start := time.Now()
			ts, err := p.resolve(ctx, []string{ref}, false)
			if err == nil {
				err = p.res.Preheat(ctx, ts[0].im, nil)
			}
			if ctx.Err() != nil {
				return nil
			}
			if err != nil {
				p.log.Warn("kept image not preheated", "image", ref, "err", err)
				continue
			}
			p.log.Info("kept image preheated", "image", ref, "digest", ts[0].im.Digest, "took", time.Since(start).Round(time.Millisecond))
		}
		t.Reset(every)
	}
}

// keepFirst is how long after start a daemon first fills itself with the
// kept images: time for the mesh to form, so that nodes that start
// together share one fetch from the registry.
const keepFirst = 5 * time.Second

// preheaterFunc adapts a function to p2p.Preheater.
type preheaterFunc func(ctx context.Context, req p2p.PreheatRequest, progress func(p2p.PreheatProgress)) error

func (f preheaterFunc) Preheat(ctx context.Context, req p2p.PreheatRequest, progress func(p2p.PreheatProgress)) error {
	return f(ctx, req, progress)
}

// forMembers is what this node does when a member asks it to preheat: it
// fills itself from a registry its own configuration mirrors, or refuses;
// then, when asked, it creates the image in its containerd.
func forMembers(ph func() *preheater) p2p.Preheater {
	return preheaterFunc(func(ctx context.Context, req p2p.PreheatRequest, progress func(p2p.PreheatProgress)) error {
		p := ph()
		if p == nil {
			return errors.New("starting")
		}
		err := p.res.PreheatFor(ctx, resolver.Image{Registry: req.Registry, Repo: req.Repo, Digest: req.Digest}, func(pr resolver.PreheatProgress) {
			progress(p2p.PreheatProgress{Blobs: pr.Blobs, HeldBlobs: pr.HeldBlobs, Bytes: pr.Bytes, HeldBytes: pr.HeldBytes})
		})
		if err != nil || !req.IntoContainerd {
			return err
		}
		return p.intoContainerd(ctx, req.Name, req.Digest)
	})
}

// importer creates preheated images in the node's containerd by pulling
// them through the node's own mirror (mirror, host:port), in the CRI
// namespace, for the snapshotter given; nil without a containerd socket.
func importer(o daemonOptions, mirror string, log *slog.Logger) importFunc {
	if o.containerdSock == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(mirror)
	if err != nil {
		return nil
	}
	cfg := containerdplugin.PullConfig{
		Socket:      o.containerdSock,
		Namespace:   o.containerdNS,
		Snapshotter: o.snapshotter,
		// The mirror answers loopback clients: reach it there, whatever
		// address it listens on.
		Mirror: net.JoinHostPort("127.0.0.1", port),
		Logger: log.With("component", "containerd"),
	}
	return func(ctx context.Context, name string, dgst digest.Digest) error {
		return containerdplugin.PullThroughMirror(ctx, cfg, name, dgst)
	}
}
