package p2p

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/resolver"
)

// TagProtocolID asks a tag's designated node to resolve the tag for the
// cluster, so that the registry is asked once per tag within the TTL
// however many nodes pull it.
//
// A request is a 2-byte big-endian length and a JSON tagRequest of at most
// maxTagRequest bytes. The answer is a 2-byte length and a JSON tagAnswer
// of at most maxImageAnswer bytes, followed, when found, by the manifest's
// Size bytes; then the server closes the stream. The asker checks the
// bytes against the digest.
const TagProtocolID protocol.ID = "/shoal/tag/1.0.0"

const maxTagRequest = 1024

// TagSource resolves a tag for a peer; see Config.Tags. An error wrapping
// errdefs.ErrPermissionDenied refuses a registry this node does not
// mirror.
type TagSource interface {
	TagFor(ctx context.Context, req resolver.ManifestRequest) (resolver.TagAnswer, error)
}

type tagRequest struct {
	Registry string `json:"registry"`
	Repo     string `json:"repo"`
	Tag      string `json:"tag"`
}

type tagAnswer struct {
	Found     bool          `json:"found"`
	MediaType string        `json:"media_type,omitempty"`
	Digest    digest.Digest `json:"digest,omitempty"`
	Size      int64         `json:"size,omitempty"`
	// AgeMillis is how long ago the registry was asked.
	AgeMillis int64  `json:"age_ms,omitempty"`
	Error     string `json:"error,omitempty"`
}

// validTag checks a request against the distribution grammar: a registry
// host[:port], a repository path and a tag, nothing else.
func validTag(req tagRequest) bool {
	ref, err := reference.Parse(req.Registry + "/" + req.Repo + ":" + req.Tag)
	if err != nil {
		return false
	}
	nt, ok := ref.(reference.NamedTagged)
	if !ok {
		return false
	}
	if _, digested := ref.(reference.Digested); digested {
		return false
	}
	return reference.Domain(nt) == req.Registry && reference.Path(nt) == req.Repo && nt.Tag() == req.Tag
}

// ImageOrder orders peers by rendezvous hashing over an image name
// (registry/repo:tag): the first resolves the tag for the cluster, and the
// mesh's image question goes to the first Config.ImagePeers. Every node
// that knows the same members computes the same order.
func ImageOrder(name string, peers []peer.ID) []peer.ID {
	return Rendezvous(digest.Digest("tag\x00"+name), peers)
}

// TagDesignated orders this node and the live members by rendezvous
// hashing over name (registry/repo:tag), leaving out the peers this node
// avoids. The first resolves the tag for the cluster.
func (n *Node) TagDesignated(name string) []peer.ID {
	ids := []peer.ID{n.id}
	now := time.Now()
	for _, ai := range n.members.livePeers() {
		if !n.stats.avoided(ai.ID, now) {
			ids = append(ids, ai.ID)
		}
	}
	return ImageOrder(name, ids)
}

// handleTag answers one tag question.
func (n *Node) handleTag(s network.Stream) {
	if !n.enterHandler() {
		_ = s.Reset()
		return
	}
	defer n.handlers.Done()
	t := n.cfg.Timing
	_ = s.SetReadDeadline(time.Now().Add(t.RequestTimeout))
	ans, body := n.answerTag(s)
	_ = s.SetWriteDeadline(time.Now().Add(t.IdleTimeout))
	b, _ := json.Marshal(ans)
	if err := writeFrame(s, b, maxImageAnswer); err != nil {
		_ = s.Reset()
		return
	}
	if _, err := s.Write(body); err != nil {
		_ = s.Reset()
		return
	}
	_ = s.Close()
}

// answerTag reads a tag question and resolves it.
func (n *Node) answerTag(s network.Stream) (tagAnswer, []byte) {
	b, err := readFrame(s, maxTagRequest)
	if err != nil {
		return tagAnswer{Error: "bad request: " + err.Error()}, nil
	}
	var req tagRequest
	if err := json.Unmarshal(b, &req); err != nil || !validTag(req) {
		return tagAnswer{Error: "bad request: not registry/repo:tag"}, nil
	}
	if n.protection == "" || n.cfg.Tags == nil {
		// An open mesh authenticates no peer: resolving for one would let
		// anyone spend the node's registry quota.
		return tagAnswer{Error: "this node resolves no tags for peers"}, nil
	}
	ctx, cancel := context.WithTimeout(n.life, n.cfg.Timing.RequestTimeout)
	defer cancel()
	ta, err := n.cfg.Tags.TagFor(ctx, resolver.ManifestRequest{Registry: req.Registry, Repo: req.Repo, Reference: req.Tag})
	if err != nil {
		if errdefs.IsPermissionDenied(err) {
			n.metrics.pullRefused.WithLabelValues("registry").Inc()
			n.log.Warn("refused a peer's tag look-up at a registry this node does not mirror", "peer", s.Conn().RemotePeer(), "registry", req.Registry)
		}
		return tagAnswer{Error: err.Error()}, nil
	}
	m := ta.Manifest
	return tagAnswer{Found: true, MediaType: m.MediaType, Digest: m.Digest, Size: int64(len(m.Body)), AgeMillis: ta.Age.Milliseconds()}, m.Body
}

// AskTag asks peer p to resolve a tag for the cluster. The manifest's
// bytes come unchecked: the caller verifies them against the digest. A
// question whose stream failed before any answer came is asked again, up
// to tagTries times in all, while p is a live member (see errNoTagAnswer).
func (n *Node) AskTag(ctx context.Context, p peer.ID, req resolver.ManifestRequest) (resolver.TagAnswer, error) {
	q := tagRequest{Registry: req.Registry, Repo: req.Repo, Tag: req.Reference}
	if !validTag(q) {
		return resolver.TagAnswer{}, fmt.Errorf("tag %s/%s:%s: %w", req.Registry, req.Repo, req.Reference, errdefs.ErrInvalidArgument)
	}
	pause := tagRetryPause
	for try := 1; ; try++ {
		ans, err := n.askTagOnce(ctx, p, q)
		if !errors.Is(err, errNoTagAnswer) || try == tagTries || ctx.Err() != nil || !n.members.live(p) {
			return ans, err
		}
		n.log.Debug("a tag question got no answer: asking again", "peer", p, "try", try, "err", err)
		select {
		case <-time.After(pause):
		case <-ctx.Done():
			return resolver.TagAnswer{}, err
		}
		pause *= 2
	}
}

// errNoTagAnswer marks a tag question whose stream failed before the
// peer's answer came: it could not be opened, written or read. A node
// that joined a moment ago is refused by a member that has not heard of it
// yet, on a connection that looks open until its first stream fails;
// asked again a moment later, over a new connection, the member has.
// Seen: the node then asked the registry for the tag beside the
// designated node.
var errNoTagAnswer = errors.New("no answer to the tag question")

// tagTries and tagRetryPause bound how often AskTag asks again, the
// pause doubling each time: a member that is down costs 75 ms more before
// the node asks the registry itself.
const (
	tagTries      = 3
	tagRetryPause = 25 * time.Millisecond
)

// askTagOnce asks peer p the tag question q once.
func (n *Node) askTagOnce(ctx context.Context, p peer.ID, q tagRequest) (resolver.TagAnswer, error) {
	if ps := n.host.Peerstore(); len(ps.Addrs(p)) == 0 {
		ps.AddAddrs(p, n.members.addrsOf(p), peerstore.TempAddrTTL)
	}
	s, err := n.host.NewStream(network.WithForceDirectDial(ctx, "tag"), p, TagProtocolID)
	if err != nil {
		return resolver.TagAnswer{}, fmt.Errorf("peer %s: %w: %w: %w", p, errNoTagAnswer, err, errdefs.ErrUnavailable)
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	b, _ := json.Marshal(q)
	if err := writeFrame(s, b, maxTagRequest); err != nil {
		_ = s.Reset()
		return resolver.TagAnswer{}, fmt.Errorf("peer %s: %w: %w", p, errNoTagAnswer, err)
	}
	ans, body, err := readTagAnswer(s)
	if err != nil {
		_ = s.Reset()
		return resolver.TagAnswer{}, fmt.Errorf("peer %s: %w", p, err)
	}
	return resolver.TagAnswer{
		Manifest: resolver.Manifest{MediaType: ans.MediaType, Digest: ans.Digest, Body: body, Source: resolver.SourcePeer},
		Age:      time.Duration(ans.AgeMillis) * time.Millisecond,
	}, nil
}

// readTagAnswer reads an answer and, when found, the manifest's bytes,
// of the size it names and at most resolver.MaxManifestBytes.
func readTagAnswer(r io.Reader) (tagAnswer, []byte, error) {
	b, err := readFrame(r, maxImageAnswer)
	if err != nil {
		return tagAnswer{}, nil, fmt.Errorf("%w: %w", errNoTagAnswer, err)
	}
	var ans tagAnswer
	if err := json.Unmarshal(b, &ans); err != nil {
		return tagAnswer{}, nil, fmt.Errorf("bad answer: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	switch {
	case !ans.Found && ans.Error != "":
		return tagAnswer{}, nil, fmt.Errorf("%s: %w", ans.Error, errdefs.ErrNotFound)
	case !ans.Found:
		return tagAnswer{}, nil, errdefs.ErrNotFound
	case ans.Size <= 0 || ans.Size > resolver.MaxManifestBytes || ans.AgeMillis < 0:
		return tagAnswer{}, nil, fmt.Errorf("answer of size %d, age %d ms: %w", ans.Size, ans.AgeMillis, errdefs.ErrInvalidArgument)
	}
	body := make([]byte, ans.Size)
	if _, err := io.ReadFull(r, body); err != nil {
		return tagAnswer{}, nil, fmt.Errorf("manifest of %d bytes: %w", ans.Size, err)
	}
	return ans, body, nil
}

// TagDesignated names the node that resolves name for the cluster.
func (r *Router) TagDesignated(name string) (string, bool) {
	ids := r.n.TagDesignated(name)
	if len(ids) == 0 {
		return "", false
	}
	return ids[0].String(), ids[0] == r.n.ID()
}

// AskTag asks peer p to resolve a tag for the cluster (see Node.AskTag).
func (r *Router) AskTag(ctx context.Context, p string, req resolver.ManifestRequest) (resolver.TagAnswer, error) {
	id, err := decodePeer(p)
	if err != nil {
		return resolver.TagAnswer{}, err
	}
	return r.n.AskTag(ctx, id, req)
}

var _ resolver.TagAsker = (*Router)(nil)

// imagePeers are the members ResolveImage asks about name: the first
// ImagePeers in rendezvous order over name, this node left out.
func (n *Node) imagePeers(name string) []peer.ID {
	ids := slices.DeleteFunc(n.TagDesignated(name), func(p peer.ID) bool { return p == n.id })
	return ids[:min(len(ids), n.cfg.ImagePeers)]
}
