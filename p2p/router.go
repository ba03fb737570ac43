package p2p

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/containerd/errdefs"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoal-dev/shoal/p2p/swarm"
	"github.com/shoal-dev/shoal/resolver"
)

// Router presents a Node with peers named by strings, the shape the
// resolver's Router interface asks for.
type Router struct {
	n *Node
	// Limit caps how many providers one look-up returns. Zero means 4.
	Limit int
}

// Router returns the node as a router for the resolver.
func (n *Node) Router() *Router { return &Router{n: n} }

// Providers lists live peers holding dgst, best first; none is no error.
func (r *Router) Providers(ctx context.Context, dgst digest.Digest) ([]string, error) {
	limit := r.Limit
	if limit == 0 {
		limit = 4
	}
	ps, err := r.n.Providers(ctx, dgst, limit)
	if errdefs.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out, nil
}

func decodePeer(p string) (peer.ID, error) {
	id, err := peer.Decode(p)
	if err != nil {
		return "", fmt.Errorf("peer %q: %w: %w", p, err, errdefs.ErrInvalidArgument)
	}
	return id, nil
}

// Fetch streams dgst from peer p from offset off.
func (r *Router) Fetch(ctx context.Context, p string, dgst digest.Digest, off int64) (io.ReadCloser, int64, error) {
	id, err := decodePeer(p)
	if err != nil {
		return nil, 0, err
	}
	return r.n.Fetch(ctx, id, dgst, off)
}

// FetchRange streams part of dgst from peer p (see Node.FetchRange).
func (r *Router) FetchRange(ctx context.Context, p string, dgst digest.Digest, rg resolver.PeerRange) (io.ReadCloser, int64, int64, error) {
	id, err := decodePeer(p)
	if err != nil {
		return nil, 0, 0, err
	}
	return r.n.FetchRange(ctx, id, dgst, Range{Off: rg.Off, Length: rg.Length, Wait: rg.Wait, Registry: rg.Registry, Repo: rg.Repo, Leads: rg.Leads})
}

// Avoid leaves peer p out of Providers for a while.
func (r *Router) Avoid(p string, why error) {
	if id, err := decodePeer(p); err == nil {
		r.n.Avoid(id, why)
	}
}

// Silent leaves peer p out until it answers again (see Node.Silent).
func (r *Router) Silent(p string) {
	if id, err := decodePeer(p); err == nil {
		r.n.Silent(id)
	}
}

// Silenced says whether peer p is left out now, having gone silent.
func (r *Router) Silenced(p string) bool {
	id, err := decodePeer(p)
	return err == nil && r.n.stats.isSilent(id)
}

// HeardSilent says when a member last said peer p went silent, if one
// did: a member that still receives p's bytes does not leave p out on
// that word, but holds p's streams to a share of what it receives (see
// swarm.LeavesWithPeer).
func (r *Router) HeardSilent(p string) (time.Time, bool) {
	id, err := decodePeer(p)
	if err != nil {
		return time.Time{}, false
	}
	at := r.n.stats.peer(id).heardSilent.Load()
	return time.Unix(0, at), at != 0
}

// Answers says whether peer p answers a libp2p ping before ctx ends.
func (r *Router) Answers(ctx context.Context, p string) bool {
	id, err := decodePeer(p)
	return err == nil && r.n.answers(ctx, id)
}

// Provide announces that this node holds dgst.
func (r *Router) Provide(ctx context.Context, dgst digest.Digest) error {
	return r.n.Provide(ctx, dgst)
}

// ResolveImage asks the members which manifest they hold for an image name
// and returns the newest.
func (r *Router) ResolveImage(ctx context.Context, name string) (ocispec.Descriptor, error) {
	return r.n.ResolveImage(ctx, name)
}

// Designated returns the peers that should fetch dgst from the registry
// for the cluster, in the order Spread gives within group, up to and
// excluding this node; self says whether this node is the first.
func (r *Router) Designated(dgst digest.Digest, group []digest.Digest) (peers []string, self bool) {
	above, self := swarm.Above(r.n.Designated(dgst, group), r.n.ID())
	for _, id := range above {
		peers = append(peers, id.String())
	}
	return peers, self
}

// FetchThrough streams dgst from peer p, which fetches it from the registry
// for the cluster when it does not hold it.
func (r *Router) FetchThrough(ctx context.Context, p string, dgst digest.Digest, off int64, registry, repo string) (io.ReadCloser, int64, error) {
	id, err := decodePeer(p)
	if err != nil {
		return nil, 0, err
	}
	return r.n.FetchThrough(ctx, id, dgst, off, registry, repo)
}

// OwnLinkSlow says whether, p having kept this node waiting for wait,
// none of the node's other peers answers a ping in time: this node's own
// link holds up what p sends (see Node.ownLinkSlow).
func (r *Router) OwnLinkSlow(p string, wait time.Duration) bool {
	id, err := decodePeer(p)
	return err == nil && r.n.ownLinkSlow(id, wait)
}

// PeerLinkQueued says whether a ping shows p's link, not this node's,
// holds p's bytes up (see swarm.PeerLinkQueued).
func (r *Router) PeerLinkQueued(p string) bool {
	id, err := decodePeer(p)
	return err == nil && r.n.peerLinkQueued(id)
}
