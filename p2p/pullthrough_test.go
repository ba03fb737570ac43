package p2p_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/p2p/p2ptest"
	"github.com/shoal-dev/shoal/p2p/swarm"
	"github.com/shoal-dev/shoal/resolver"
	"github.com/shoal-dev/shoal/store"
)

// recordingPuller serves one blob it "fetches" and records the requests.
type recordingPuller struct {
	blob []byte
	mu   sync.Mutex
	asks []string
	from []string // the askers' peer IDs
	// leads: whether each asker said it leads another blob
	leads []bool
}

func (p *recordingPuller) PullFor(_ context.Context, d digest.Digest, registry, repo string, from swarm.Asker, _ func() bool) (store.Blob, error) {
	p.mu.Lock()
	p.asks = append(p.asks, registry+"/"+repo+"@"+d.String())
	p.from = append(p.from, from.Peer)
	p.leads = append(p.leads, from.Leads)
	p.mu.Unlock()
	if d != digest.FromBytes(p.blob) {
		return nil, errdefs.ErrNotFound
	}
	return bytesBlob{bytes.NewReader(p.blob)}, nil
}

type bytesBlob struct{ *bytes.Reader }

func (bytesBlob) Close() error { return nil }

func TestFetchThrough(t *testing.T) {
	t.Parallel()
	blob := bytes.Repeat([]byte("pull-through "), 50000)
	d := digest.FromBytes(blob)
	puller := &recordingPuller{blob: blob}
	c := p2ptest.Start(t, 3, p2ptest.Options{Config: func(i int, cfg *p2p.Config) {
		if i == 1 {
			cfg.Puller = puller
		}
	}})
	c.WaitMembers(t, 3, 10*time.Second)
	asker, designated, plain := c.Nodes[0], c.Nodes[1], c.Nodes[2]

	// Asked with a source, the node fetches for the cluster, from any offset.
	body, size, err := asker.FetchThrough(t.Context(), designated.ID(), d, 1000, "registry.example:5000", "team/app")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(body)
	body.Close()
	if err != nil || size != int64(len(blob)) || !bytes.Equal(got, blob[1000:]) {
		t.Fatalf("got %d bytes of %d, %v", len(got), size, err)
	}
	puller.mu.Lock()
	if len(puller.asks) != 1 || puller.asks[0] != "registry.example:5000/team/app@"+d.String() {
		t.Fatalf("puller asked %v", puller.asks)
	}
	if puller.from[0] != asker.ID().String() {
		t.Fatalf("puller told the asker is %q, want %s", puller.from[0], asker.ID())
	}
	puller.mu.Unlock()

	// An asker that leads another blob says so, and the puller hears it.
	body, _, _, err = asker.FetchRange(t.Context(), designated.ID(), d, p2p.Range{Registry: "registry.example:5000", Repo: "team/app", Leads: true})
	if err != nil {
		t.Fatal(err)
	}
	body.Close()
	puller.mu.Lock()
	if len(puller.leads) != 2 || puller.leads[0] || !puller.leads[1] {
		t.Fatalf("puller told the askers lead: %v, want [false true]", puller.leads)
	}
	puller.mu.Unlock()

	// Without a source, a node that lacks the blob says so.
	if _, _, err := asker.Fetch(t.Context(), designated.ID(), d, 0); !errdefs.IsNotFound(err) {
		t.Fatalf("plain fetch: %v, want NotFound", err)
	}
	// A node without a Puller does not fetch for others.
	if _, _, err := asker.FetchThrough(t.Context(), plain.ID(), d, 0, "registry.example:5000", "team/app"); !errdefs.IsNotFound(err) {
		t.Fatalf("node without a puller: %v, want NotFound", err)
	}
	// A malformed source never leaves the node.
	if _, _, err := asker.FetchThrough(t.Context(), designated.ID(), d, 0, "bad host", "team/app"); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("bad source: %v, want InvalidArgument", err)
	}
	// Everyone agrees on who is designated.
	for _, n := range c.Nodes {
		p2ptest.Eventually(t, 5*time.Second, func() error {
			if got, want := n.Designated(d, nil), asker.Designated(d, nil); len(got) != 3 || got[0] != want[0] {
				return errdefs.ErrUnavailable
			}
			return nil
		})
	}
}

// TestPullForNeedsAKeyedMesh: in an open mesh no peer is authenticated, so
// a node never fetches for a peer, whatever registry it names.
func TestPullForNeedsAKeyedMesh(t *testing.T) {
	t.Parallel()
	blob := []byte("a layer nobody holds")
	puller := &recordingPuller{blob: blob}
	c := p2ptest.Start(t, 2, p2ptest.Options{Open: true, Config: func(i int, cfg *p2p.Config) {
		if i == 1 {
			cfg.Puller = puller
		}
	}})
	c.WaitMembers(t, 2, 10*time.Second)
	_, _, err := c.Nodes[0].FetchThrough(t.Context(), c.Nodes[1].ID(), digest.FromBytes(blob), 0, "registry.example:5000", "team/app")
	if !errdefs.IsNotFound(err) {
		t.Fatalf("got %v, want not found", err)
	}
	puller.mu.Lock()
	defer puller.mu.Unlock()
	if len(puller.asks) != 0 {
		t.Fatalf("an open mesh's node fetched for a peer: %v", puller.asks)
	}
}

// refusingPuller mirrors one registry only.
type refusingPuller struct{ recordingPuller }

func (p *refusingPuller) PullFor(ctx context.Context, d digest.Digest, registry, repo string, from swarm.Asker, take func() bool) (store.Blob, error) {
	if registry != "registry.example:5000" {
		return nil, fmt.Errorf("registry %s: %w", registry, errdefs.ErrPermissionDenied)
	}
	return p.recordingPuller.PullFor(ctx, d, registry, repo, from, take)
}

// TestPullForRefusedRegistry: a node whose Puller refuses a registry
// answers the peer "not found", so the peer goes on as for a blob the node
// does not hold, and the other registries still work.
func TestPullForRefusedRegistry(t *testing.T) {
	t.Parallel()
	blob := bytes.Repeat([]byte("mirrored "), 1000)
	puller := &refusingPuller{recordingPuller{blob: blob}}
	c := p2ptest.Start(t, 2, p2ptest.Options{Config: func(i int, cfg *p2p.Config) {
		if i == 1 {
			cfg.Puller = puller
		}
	}})
	c.WaitMembers(t, 2, 10*time.Second)
	d := digest.FromBytes(blob)
	if _, _, err := c.Nodes[0].FetchThrough(t.Context(), c.Nodes[1].ID(), d, 0, "elsewhere.example", "team/app"); !errdefs.IsNotFound(err) {
		t.Fatalf("a registry the node does not mirror: got %v, want not found", err)
	}
	body, _, err := c.Nodes[0].FetchThrough(t.Context(), c.Nodes[1].ID(), d, 0, "registry.example:5000", "team/app")
	if err != nil {
		t.Fatalf("the registry the node mirrors: %v", err)
	}
	got, err := io.ReadAll(body)
	body.Close()
	if err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("read %d bytes: %v", len(got), err)
	}
}

// coordinatingPuller leaves every blob to its first asker and points the
// others at it, as a node that does not want the blob does.
type coordinatingPuller struct {
	mu    sync.Mutex
	first string
}

func (p *coordinatingPuller) PullFor(_ context.Context, _ digest.Digest, _, _ string, from swarm.Asker, _ func() bool) (store.Blob, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.first == "" || p.first == from.Peer {
		p.first = from.Peer
		return nil, resolver.ErrFetchYourself
	}
	return nil, &resolver.FetchingAtError{Peer: p.first}
}

// TestFetchThroughCoordinated: a designated node's "fetch it yourself" and
// "read it from that peer" reach the askers as such, naming the first
// asker to the second.
func TestFetchThroughCoordinated(t *testing.T) {
	t.Parallel()
	c := p2ptest.Start(t, 3, p2ptest.Options{Config: func(i int, cfg *p2p.Config) {
		if i == 1 {
			cfg.Puller = &coordinatingPuller{}
		}
	}})
	c.WaitMembers(t, 3, 10*time.Second)
	first, designated, second := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	d := digest.FromString("a layer only one node pulls")
	rg := p2p.Range{Registry: "registry.example:5000", Repo: "team/app"}

	_, _, _, err := first.FetchRange(t.Context(), designated.ID(), d, rg)
	if !errors.Is(err, resolver.ErrFetchYourself) {
		t.Fatalf("first asker: %v, want ErrFetchYourself", err)
	}
	_, _, _, err = second.FetchRange(t.Context(), designated.ID(), d, rg)
	var at *resolver.FetchingAtError
	if !errors.As(err, &at) || at.Peer != first.ID().String() {
		t.Fatalf("second asker: %v, want pointed at %s", err, first.ID())
	}
}

// stuckPuller coordinates as coordinatingPuller does, except for one blob
// it fetches for the cluster, whose bytes do not come until release is
// closed.
type stuckPuller struct {
	coordinatingPuller
	stuck   digest.Digest
	release chan struct{}
}

func (p *stuckPuller) PullFor(ctx context.Context, d digest.Digest, registry, repo string, from swarm.Asker, take func() bool) (store.Blob, error) {
	if d != p.stuck {
		return p.coordinatingPuller.PullFor(ctx, d, registry, repo, from, take)
	}
	if !take() {
		return nil, resolver.ErrNoSlot
	}
	return stuckBlob{p.release}, nil
}

type stuckBlob struct{ release <-chan struct{} }

func (stuckBlob) Size() int64 { return 1 << 20 }

func (b stuckBlob) ReadAt([]byte, int64) (int, error) {
	<-b.release
	return 0, io.ErrUnexpectedEOF
}

func (stuckBlob) Close() error { return nil }

// TestFetchThroughCoordinatedOutOfSlots: a designated node whose upload
// slots are all taken still leaves a blob it does not want to the asker,
// rather than answering busy, for it streams nothing (see
// swarm.TakesSlot); a blob it would stream it answers busy.
func TestFetchThroughCoordinatedOutOfSlots(t *testing.T) {
	t.Parallel()
	puller := &stuckPuller{stuck: digest.FromString("a layer whose bytes do not come"), release: make(chan struct{})}
	c := p2ptest.Start(t, 3, p2ptest.Options{Config: func(i int, cfg *p2p.Config) {
		if i == 1 {
			cfg.MaxUploads = 1
			cfg.Puller = puller
		}
	}})
	t.Cleanup(func() { close(puller.release) })
	c.WaitMembers(t, 3, 10*time.Second)
	holder, designated, asker := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	rg := p2p.Range{Registry: "registry.example:5000", Repo: "team/app"}

	// The holder takes the designated node's only slot.
	body, _, _, err := holder.FetchRange(t.Context(), designated.ID(), puller.stuck, rg)
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()

	_, _, _, err = asker.FetchRange(t.Context(), designated.ID(), digest.FromString("a layer only one node pulls"), rg)
	if !errors.Is(err, resolver.ErrFetchYourself) {
		t.Fatalf("asked for a blob the node does not want: %v, want ErrFetchYourself", err)
	}
	_, _, _, err = asker.FetchRange(t.Context(), designated.ID(), puller.stuck, rg)
	if !errors.Is(err, p2p.ErrPeerBusy) {
		t.Fatalf("asked for a blob the node would stream: %v, want ErrPeerBusy", err)
	}
}

// TestHolderPointsAtFirstReader: asked, as the designated node, for a
// blob it holds whole, a node streams it to the first asker and points
// the next at that one; the first asking again, and an asker resuming
// mid-blob, are streamed it. A blob it streamed while still arriving (it
// led a cold start) is streamed to every asker.
func TestHolderPointsAtFirstReader(t *testing.T) {
	t.Parallel()
	whole, led := randomBlob(21, 1<<20), randomBlob(22, 1<<20)
	content := p2ptest.NewContent(whole, led)
	c := p2ptest.Start(t, 3, p2ptest.Options{Content: func(i int) *p2ptest.Content {
		if i == 1 {
			return content
		}
		return nil
	}})
	c.WaitMembers(t, 3, 10*time.Second)
	first, holder, second := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	rg := p2p.Range{Registry: "registry.example:5000", Repo: "team/app"}
	// read reads d from the holder as n asks for it, and checks the bytes.
	read := func(n *p2p.Node, d digest.Digest, want []byte, rg p2p.Range) error {
		body, _, _, err := n.FetchRange(t.Context(), holder.ID(), d, rg)
		if err != nil {
			return err
		}
		defer body.Close()
		got, err := io.ReadAll(body)
		if err == nil && !bytes.Equal(got, want[rg.Off:]) {
			err = fmt.Errorf("read %d bytes, not the blob's %d from %d", len(got), len(want)-int(rg.Off), rg.Off)
		}
		return err
	}

	d := digest.FromBytes(whole)
	if err := read(first, d, whole, rg); err != nil {
		t.Fatalf("first asker: %v", err)
	}
	var at *resolver.FetchingAtError
	if err := read(second, d, whole, rg); !errors.As(err, &at) || at.Peer != first.ID().String() {
		t.Fatalf("second asker: %v, want pointed at the first, %s", err, first.ID())
	}
	if err := read(first, d, whole, rg); err != nil {
		t.Fatalf("the first asking again: %v", err)
	}
	mid := rg
	mid.Off = 4096
	if err := read(second, d, whole, mid); err != nil {
		t.Fatalf("second asker from byte %d: %v", mid.Off, err)
	}
	if err := read(second, d, whole, p2p.Range{}); err != nil {
		t.Fatalf("second asker as a holder's reader: %v", err)
	}

	// Streamed while arriving, then whole: every asker is streamed it.
	l := digest.FromBytes(led)
	content.SetArriving(l, true)
	if err := read(first, l, led, p2p.Range{Wait: true}); err != nil {
		t.Fatalf("first asker while it arrives: %v", err)
	}
	content.SetArriving(l, false)
	for _, n := range []*p2p.Node{first, second} {
		if err := read(n, l, led, rg); err != nil {
			t.Fatalf("asker %s once the node led the blob: %v", n.ID(), err)
		}
	}
}
