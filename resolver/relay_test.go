package resolver_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/resolver"
)

// relayRouter is a mesh of one peer, "relay", that holds the first MiB of
// the blob and relays the rest as it reaches it. Its first stream stops at
// pauseAt and sends nothing more: the relay is frozen (it answers no
// ping), or it waits on its own source, which was lost (it answers, and a
// second stream gets the rest, from the source it found next).
type relayRouter struct {
	data    []byte
	pauseAt int64
	frozen  bool
	// top, when set, makes the mesh rank a frozen peer, "top", first
	// for the blob and the relay next: the relay's own source. It
	// answered busy before it froze.
	top bool
	// mute: the relay froze before it answered.
	mute bool
	// next, when set, makes the mesh rank a peer "next" after the relay,
	// above this node; it holds the whole blob.
	next bool

	mu     sync.Mutex
	asked  []string
	silent []string
}

func (r *relayRouter) Providers(context.Context, digest.Digest) ([]string, error) {
	return []string{"relay"}, nil
}

func (r *relayRouter) Fetch(ctx context.Context, p string, d digest.Digest, off int64) (io.ReadCloser, int64, error) {
	body, size, _, err := r.FetchRange(ctx, p, d, resolver.PeerRange{Off: off, Wait: true})
	return body, size, err
}

func (r *relayRouter) FetchRange(ctx context.Context, p string, d digest.Digest, rg resolver.PeerRange) (io.ReadCloser, int64, int64, error) {
	if p == "top" && r.top {
		return nil, 0, 0, fmt.Errorf("peer top: %w", errdefs.ErrResourceExhausted)
	}
	if p == "next" && r.next {
		r.mu.Lock()
		r.asked = append(r.asked, fmt.Sprintf("%s@%d", p, rg.Off))
		r.mu.Unlock()
		return io.NopCloser(bytes.NewReader(r.data[rg.Off:])), int64(len(r.data)), int64(len(r.data)), nil
	}
	if p != "relay" || d != digest.FromBytes(r.data) {
		return nil, 0, 0, errdefs.ErrNotFound
	}
	if r.mute {
		<-ctx.Done()
		return nil, 0, 0, context.Cause(ctx)
	}
	r.mu.Lock()
	r.asked = append(r.asked, fmt.Sprintf("%s@%d", p, rg.Off))
	first := len(r.asked) == 1
	r.mu.Unlock()
	size, have := int64(len(r.data)), int64(1<<20)
	var body io.Reader = bytes.NewReader(r.data[rg.Off:])
	if first || r.frozen {
		body = io.MultiReader(&slowReader{ctx: ctx, r: bytes.NewReader(r.data[rg.Off:max(rg.Off, r.pauseAt)])}, stallReader{ctx})
	}
	return io.NopCloser(body), size, have, nil
}

func (r *relayRouter) Avoid(string, error)                          {}
func (r *relayRouter) Provide(context.Context, digest.Digest) error { return nil }

func (r *relayRouter) Silent(p string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.silent = append(r.silent, p)
}

func (r *relayRouter) Silenced(p string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Contains(r.silent, p)
}

// Designated ranks the peers as the mesh does: the silent left out.
func (r *relayRouter) Designated(digest.Digest, []digest.Digest) ([]string, bool) {
	var order []string
	if r.top {
		order = append(order, "top")
	}
	order = append(order, "relay")
	if r.next {
		order = append(order, "next")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.DeleteFunc(order, func(p string) bool { return slices.Contains(r.silent, p) }), false
}

func (r *relayRouter) FetchThrough(ctx context.Context, p string, d digest.Digest, off int64, _, _ string) (io.ReadCloser, int64, error) {
	return r.Fetch(ctx, p, d, off)
}

func (r *relayRouter) Answers(ctx context.Context, p string) bool {
	if r.frozen || p == "top" {
		<-ctx.Done() // no answer, until the ping gives up
		return false
	}
	return true
}

// TestRelayThatStopsIsPingedBeforeItIsLeft: a peer relaying a blob it is
// still receiving stops sending. It may be frozen, or waiting on its own
// source: silence alone cannot tell, so the download pings it. A frozen
// relay (no answer) is left as silent, for every download, and the
// registry sends the rest, long before ArrivalStall and StallTimeout. A
// relay that answers is asked once more, and sends the rest: the
// registry sends nothing, as it would to a node that left such a peer
// for slow after its own source was lost. The same holds when the arrival
// watchdog, not the judge, finds the relay's copy stopped growing
// (ArrivalStall shorter than PeerStall): it pings the relay too.
func TestRelayThatStopsIsPingedBeforeItIsLeft(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name         string
		frozen, top  bool
		mute         bool
		watchdog     bool // ArrivalStall 200 ms, PeerStall 2 s
		registryGets int64
		silent       []string
	}{
		{name: "frozen", frozen: true, registryGets: 1, silent: []string{"relay"}},
		// Frozen before it answered: it is pinged after PeerStall too.
		{name: "frozen before it answered", frozen: true, mute: true, registryGets: 1, silent: []string{"relay"}},
		{name: "waiting on its own source", registryGets: 0},
		// The peers ranked above the relay are pinged too: the frozen
		// one is left out of every download rather than asked next.
		{name: "waiting on a frozen peer ranked above it", top: true, registryGets: 0, silent: []string{"top"}},
		{name: "frozen, found by the arrival watchdog", frozen: true, watchdog: true, registryGets: 1, silent: []string{"relay"}},
		{name: "waiting on its own source, found by the arrival watchdog", watchdog: true, registryGets: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			body := randomBytes(t, 6<<20)
			router := &relayRouter{data: body, pauseAt: 4 << 20, frozen: tc.frozen, top: tc.top, mute: tc.mute}
			// A silence of PeerStall over the bytes the relay holds (its
			// first MiB) ends the stream as silent: 300 ms, so that a
			// loaded host's pause does not.
			cfg := resolver.Config{
				PieceSize: -1, StallTimeout: 10 * time.Minute, ArrivalStall: 10 * time.Minute,
				PeerStall: 300 * time.Millisecond, PeerSlowWindow: 500 * time.Millisecond,
			}
			if tc.watchdog {
				cfg.ArrivalStall, cfg.PeerStall, cfg.PeerSlowWindow = 200*time.Millisecond, 2*time.Second, 4*time.Second
			}
			f := newFixture(t, cfg, resolver.Sources{Router: router})
			pullPushed(t, f, body)
			f.res.Close()
			router.mu.Lock()
			defer router.mu.Unlock()
			if n := f.up.blobGets.Load(); n != tc.registryGets {
				t.Errorf("registry asked %d times, want %d (relay asked %v)", n, tc.registryGets, router.asked)
			}
			if !slices.Equal(router.silent, tc.silent) {
				t.Errorf("peers marked silent: %v, want %v", router.silent, tc.silent)
			}
		})
	}
}

// TestNextAboveLeadsWhenTheDesignatedFail: the one designated peer a
// round asks (DesignatedPeers 1), the relay, freezes mid-blob. The blob's
// ranking names another peer above this node: with the relay silent, it
// is the next designated, as the relay's departure would make it, and it
// sends the rest. The node does not lead, and the registry sends nothing:
// leading, the node would have the registry send the rest once for itself
// and once more for the next peer's own readers.
func TestNextAboveLeadsWhenTheDesignatedFail(t *testing.T) {
	t.Parallel()
	body := randomBytes(t, 6<<20)
	router := &relayRouter{data: body, pauseAt: 4 << 20, frozen: true, next: true}
	f := newFixture(t, resolver.Config{
		PieceSize: -1, DesignatedPeers: 1, StallTimeout: 10 * time.Minute, ArrivalStall: 10 * time.Minute,
		PeerStall: 100 * time.Millisecond, PeerSlowWindow: 500 * time.Millisecond,
	}, resolver.Sources{Router: router})
	pullPushed(t, f, body)
	f.res.Close()
	router.mu.Lock()
	defer router.mu.Unlock()
	if n := f.up.blobGets.Load(); n != 0 {
		t.Errorf("registry asked %d times, want 0 (peers asked %v)", n, router.asked)
	}
	// From where this node's stream stopped: at the relay's last byte
	// before it froze (4 MiB), or before it on a host so loaded that the
	// relay's 64 KiB each 10 ms came late and its stream was left as slow
	// first.
	if !slices.ContainsFunc(router.asked, func(a string) bool { return strings.HasPrefix(a, "next@") && a != "next@0" }) {
		t.Errorf("peers asked %v, want the next peer above from where the relay stopped", router.asked)
	}
}

// busyRouter is a mesh of one peer, "relay", whose pings are never
// answered in time, with two blobs. It holds the first 4 MiB of relayed
// and relays the rest: its first stream of it sends those 4 MiB and then
// nothing for pause (a stream it writes little to, behind its full
// uplink); asked again, it sends the rest. It holds other whole, and sends
// it in chunks of chunk bytes every 10 ms.
type busyRouter struct {
	silences
	relayed, other []byte
	chunk          int
	pause          time.Duration

	mu    sync.Mutex
	asked []string
}

func (r *busyRouter) Providers(context.Context, digest.Digest) ([]string, error) {
	return []string{"relay"}, nil
}

func (r *busyRouter) Fetch(ctx context.Context, p string, d digest.Digest, off int64) (io.ReadCloser, int64, error) {
	body, size, _, err := r.FetchRange(ctx, p, d, resolver.PeerRange{Off: off, Wait: true})
	return body, size, err
}

func (r *busyRouter) FetchRange(ctx context.Context, p string, d digest.Digest, rg resolver.PeerRange) (io.ReadCloser, int64, int64, error) {
	if p != "relay" || r.Silenced(p) {
		return nil, 0, 0, errdefs.ErrNotFound
	}
	switch d {
	case digest.FromBytes(r.other):
		chunked := &pacedReader{ctx: ctx, r: bytes.NewReader(r.other[rg.Off:]), chunk: r.chunk}
		return io.NopCloser(chunked), int64(len(r.other)), int64(len(r.other)), nil
	case digest.FromBytes(r.relayed):
		r.mu.Lock()
		r.asked = append(r.asked, fmt.Sprintf("relay@%d", rg.Off))
		first := len(r.asked) == 1
		r.mu.Unlock()
		size, have := int64(len(r.relayed)), int64(4<<20)
		var body io.Reader = &slowReader{ctx: ctx, r: bytes.NewReader(r.relayed[rg.Off:])}
		if first {
			body = io.MultiReader(&slowReader{ctx: ctx, r: bytes.NewReader(r.relayed[rg.Off:have])}, pauseReader{ctx, r.pause},
				&slowReader{ctx: ctx, r: bytes.NewReader(r.relayed[have:])})
		}
		return io.NopCloser(body), size, have, nil
	}
	return nil, 0, 0, errdefs.ErrNotFound
}

func (r *busyRouter) Avoid(string, error)                          {}
func (r *busyRouter) Provide(context.Context, digest.Digest) error { return nil }

func (r *busyRouter) Answers(ctx context.Context, p string) bool {
	<-ctx.Done() // the answer waits behind the peer's full uplink
	return false
}

// pacedReader sends chunk bytes every 10 ms.
type pacedReader struct {
	ctx   context.Context
	r     io.Reader
	chunk int
}

func (p *pacedReader) Read(b []byte) (int, error) {
	select {
	case <-time.After(10 * time.Millisecond):
	case <-p.ctx.Done():
		return 0, context.Cause(p.ctx)
	}
	return p.r.Read(b[:min(len(b), p.chunk)])
}

// TestBusyPeersBytesAnswerItsPing: a peer relays one blob to the node and
// sends it another whole. The relayed stream goes silent past PeerStall,
// and the peer answers no ping in time. While its other stream brings the
// node bytes at a good share of its rate, the peer is alive and its uplink
// full (the pings wait behind its bytes): it is kept, not left out of
// every download as silent, and the registry sends nothing. While that
// stream trickles at a twentieth, as behind a link cut to a tenth, the
// peer is left as silent and the registry sends the rest.
func TestBusyPeersBytesAnswerItsPing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		chunk   int // of the other stream, every 10 ms
		leftOut bool
	}{
		{name: "its other stream flows", chunk: 64 << 10},
		{name: "its other stream trickles", chunk: 2 << 10, leftOut: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// The relayed stream is silent for 3 s after its 4 MiB,
			// found so after PeerStall (1 s) and asked about with two
			// pings of 400 ms; the other stream lasts past them.
			router := &busyRouter{relayed: randomBytes(t, 6<<20), other: randomBytes(t, 32<<20), chunk: tc.chunk, pause: 3 * time.Second}
			if tc.chunk < 64<<10 {
				router.other = router.other[:2<<20]
			}
			// ArrivalStall is its default, 1 s: its watchdog pings the
			// relay too.
			cfg := resolver.Config{
				PieceSize: -1, StallTimeout: 10 * time.Minute,
				PeerStall: time.Second, PeerSlowWindow: time.Second,
			}
			f := newFixture(t, cfg, resolver.Sources{Router: router})
			// Both pushed before either is pulled: a push takes seconds
			// under the race detector on a loaded host, and the relayed
			// stream's silence must come while the other stream flows.
			bodies := [][]byte{router.relayed, router.other}
			ds := make([]digest.Digest, len(bodies))
			for i, body := range bodies {
				ds[i] = f.up.push(t, "team/app", body)
			}
			var wg sync.WaitGroup
			for i, body := range bodies {
				d := ds[i]
				wg.Go(func() {
					ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
					defer cancel()
					b, err := f.res.Blob(ctx, resolver.BlobRequest{Registry: f.up.host, Repo: "team/app", Digest: d, Size: int64(len(body))})
					if err != nil {
						t.Error(err)
						return
					}
					if got, err := readAll(ctx, t, b, 0); err != nil || !bytes.Equal(got, body) {
						t.Errorf("%s: read %d bytes: %v", d, len(got), err)
					}
				})
			}
			wg.Wait()
			f.res.Close()
			router.mu.Lock()
			defer router.mu.Unlock()
			if left := router.Silenced("relay"); left != tc.leftOut {
				t.Errorf("the peer left out as silent: %v, want %v (relay asked %v)", left, tc.leftOut, router.asked)
			}
			if n := f.up.blobGets.Load(); (n > 0) != tc.leftOut {
				t.Errorf("registry asked %d times, the peer left out as silent: %v (relay asked %v)", n, tc.leftOut, router.asked)
			}
		})
	}
}
