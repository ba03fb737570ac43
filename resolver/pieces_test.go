package resolver_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/resolver"
)

// rangePeer is how one peer of rangingRouter answers ranged requests.
type rangePeer struct {
	data []byte
	have int64 // bytes held; len(data) when 0
	// wholeAfter: this long after its first ranged request the peer
	// holds the whole blob (have only until then)
	wholeAfter time.Duration
	stall      bool // answer, then send nothing
	// stuck: asked to wait, send the bytes held, then nothing (the
	// peer's own source is gone)
	stuck bool
	slow  bool // send 64 KiB every 10 ms
	// lagAt: send at 6.4 MB/s up to this offset, then at a quarter of it,
	// adding what was sent to lagSent
	lagAt   int64
	lagSent *atomic.Int64
	// wholeWhen: the peer holds the whole blob once it says so (have
	// only until then)
	wholeWhen func() bool
	cuts      int  // the first ranged requests that fail as a lost connection
	fails     bool // not found
	// busySays: a "busy" answer says what the peer holds, as a real
	// peer's does
	busySays bool
}

// rangingRouter is a designatingRouter whose peers also serve ranges, and
// that records every ranged request ("peer@offset+length wait through").
type rangingRouter struct {
	*designatingRouter
	mu     sync.Mutex
	rpeers map[string]rangePeer
	asked  []string
	served map[string]int64 // bytes each peer sent
	sentAt map[string]bool  // "peer@offset" of every range sent
	first  map[string]time.Time
}

func (r *rangingRouter) FetchRange(ctx context.Context, p string, d digest.Digest, rg resolver.PeerRange) (io.ReadCloser, int64, int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.asked = append(r.asked, fmt.Sprintf("%s@%d+%d wait=%t through=%t", p, rg.Off, rg.Length, rg.Wait, rg.Registry != ""))
	rp, ok := r.rpeers[p]
	if !ok && rg.Length == 0 && r.designatingRouter != nil {
		// A stream from a peer that serves no ranges here: as the
		// fakeRouter's Fetch (or FetchThrough), holding the whole blob.
		var body io.ReadCloser
		var size int64
		var err error
		if rg.Registry != "" {
			body, size, err = r.FetchThrough(ctx, p, d, rg.Off, rg.Registry, rg.Repo)
		} else {
			body, size, err = r.Fetch(ctx, p, d, rg.Off)
		}
		return body, size, size, err
	}
	if !ok || rp.fails || digest.FromBytes(rp.data) != d {
		return nil, 0, 0, errdefs.ErrNotFound
	}
	if rp.cuts > 0 && rg.Length > 0 {
		rp.cuts--
		r.rpeers[p] = rp
		return nil, 0, 0, fmt.Errorf("peer %s: connection closed: %w", p, errdefs.ErrUnavailable)
	}
	if rg.Length == 0 && r.designatingRouter != nil && r.busyStream(p) {
		// As a real peer: a stream counts against the blob's slots, a piece
		// does not.
		if rp.busySays {
			return nil, int64(len(rp.data)), rp.have, fmt.Errorf("peer %s: %w", p, errdefs.ErrResourceExhausted)
		}
		return nil, 0, 0, fmt.Errorf("peer %s: %w", p, errdefs.ErrResourceExhausted)
	}
	size := int64(len(rp.data))
	have := rp.have
	if r.first == nil {
		r.first = map[string]time.Time{}
	}
	if _, ok := r.first[p]; !ok {
		r.first[p] = time.Now()
	}
	if have == 0 || (rp.wholeAfter > 0 && time.Since(r.first[p]) >= rp.wholeAfter) || (rp.wholeWhen != nil && rp.wholeWhen()) {
		have = size
	}
	if !rg.Wait && rg.Off >= have {
		return nil, size, have, fmt.Errorf("peer %s holds %d: %w", p, have, errdefs.ErrOutOfRange)
	}
	end := size
	if rg.Length > 0 {
		end = rg.Off + rg.Length
	}
	var body io.Reader = bytes.NewReader(rp.data[rg.Off:end])
	if rp.slow {
		body = &slowReader{ctx: ctx, r: body}
	}
	if rp.lagAt > 0 {
		body = &laggingReader{ctx: ctx, r: body, left: rp.lagAt - rg.Off, sent: rp.lagSent}
	}
	if rp.stall {
		body = stallReader{ctx}
	} else if rp.stuck && rg.Wait && end > have {
		body = io.MultiReader(bytes.NewReader(rp.data[rg.Off:max(rg.Off, have)]), stallReader{ctx})
	} else {
		r.served[p] += end - rg.Off
		if r.sentAt == nil {
			r.sentAt = map[string]bool{}
		}
		r.sentAt[fmt.Sprintf("%s@%d", p, rg.Off)] = true
	}
	return io.NopCloser(body), size, have, nil
}

// busyStream takes one of the "busy" answers p's fakePeer has left.
func (r *rangingRouter) busyStream(p string) bool {
	f := r.fakeRouter
	f.mu.Lock()
	defer f.mu.Unlock()
	fp := f.peers[p]
	if fp.busy == 0 {
		return false
	}
	fp.busy--
	f.peers[p] = fp
	return true
}

// servedOf says whether p sent the range at off.
func (r *rangingRouter) servedOf(p string, off int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sentAt[fmt.Sprintf("%s@%d", p, off)]
}

// servedWithin says whether p sent a range that starts in (lo, hi).
func (r *rangingRouter) servedWithin(p string, lo, hi int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.sentAt {
		var off int64
		if at, ok := strings.CutPrefix(k, p+"@"); ok {
			if _, err := fmt.Sscan(at, &off); err == nil && off > lo && off < hi {
				return true
			}
		}
	}
	return false
}

func (r *rangingRouter) askedOf(p string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, a := range r.asked {
		if strings.HasPrefix(a, p+"@") {
			out = append(out, a)
		}
	}
	return out
}

// TestHelpersCatchUpFromPeersAhead: a download whose peer sends slowly
// gets the rest of the blob, from its end backwards, from peers that hold
// more of it, and the slow stream ends when the blob is whole. Helpers
// never ask a peer to wait or to fetch through, and a peer that stalls
// costs only its piece.
func TestHelpersCatchUpFromPeersAhead(t *testing.T) {
	t.Parallel()
	body := randomBytes(t, 10<<20+123)
	half := int64(len(body) / 2)
	router := &rangingRouter{
		designatingRouter: &designatingRouter{
			fakeRouter: &fakeRouter{order: []string{"slow", "stalls", "whole", "behind"}, peers: map[string]fakePeer{
				"slow": {data: body, slow: true}, "stalls": {data: body}, "whole": {data: body}, "behind": {data: body},
			}},
		},
		rpeers: map[string]rangePeer{
			"slow":   {data: body, slow: true},
			"stalls": {data: body, stall: true},
			"whole":  {data: body},
			"behind": {data: body, have: half},
		},
		served: map[string]int64{},
	}
	// A stall timeout far above a scheduling pause, even under load: the slow
	// stream stays the primary; the stalling peer holds its piece until the
	// blob is whole without it.
	readFromPeersOnly(t, resolver.Config{PieceSize: 1 << 20, PieceWorkers: 2, StallTimeout: 5 * time.Second}, router, body)
	router.mu.Lock()
	served := maps(router.served)
	asked := slices.Clone(router.asked)
	router.mu.Unlock()
	// At 6.4 MB/s the slow peer alone would take 1.6 s; the helpers send
	// most of the blob.
	if served["whole"]+served["behind"] < half {
		t.Errorf("helpers got %v bytes per peer, want at least half the blob", served)
	}
	// The primary stream asks for the rest of the blob (+0), helpers
	// for pieces.
	for _, a := range router.askedOf("slow") {
		if !strings.Contains(a, "+0 ") {
			t.Errorf("helpers asked the primary stream's peer: %s", a)
		}
	}
	for _, a := range asked {
		if strings.Contains(a, "wait=true") || strings.Contains(a, "through=true") {
			t.Errorf("a peer that is not designated was asked to wait or fetch through: %s", a)
		}
	}
	for _, a := range router.askedOf("behind") {
		var off, n int64
		var wait, through bool
		if _, err := fmt.Sscanf(a, "behind@%d+%d wait=%t through=%t", &off, &n, &wait, &through); err != nil {
			t.Fatal(err)
		}
		if off >= half && router.servedOf("behind", off) {
			t.Errorf("a peer holding %d bytes sent the piece at %d", half, off)
		}
	}
	if got := router.askedOf("stalls"); len(got) > 1 {
		t.Errorf("the stalling peer was asked %v, want at most once", got)
	}
}

// slowAnd is a rangingRouter whose peers are "slow", which sends 64 KiB
// every 10 ms and is read first, then the others in order.
func slowAnd(body []byte, order []string, others map[string]rangePeer) *rangingRouter {
	peers := map[string]fakePeer{"slow": {data: body, slow: true}}
	rpeers := map[string]rangePeer{"slow": {data: body, slow: true}}
	for _, name := range order {
		peers[name] = fakePeer{data: body}
		rpeers[name] = others[name]
	}
	return &rangingRouter{
		designatingRouter: &designatingRouter{fakeRouter: &fakeRouter{order: append([]string{"slow"}, order...), peers: peers}},
		rpeers:            rpeers,
		served:            map[string]int64{},
	}
}

// beside is the configuration of the tests that read a 20 MiB blob from
// slowAnd's slow peer (3.3 s at 6.4 MB/s) and helpers beside it.
var beside = resolver.Config{PieceSize: 1 << 20, PieceWorkers: 2, StallTimeout: 5 * time.Second}

// wantPieces fails the test unless peer p sent at least 4 MiB of pieces.
func wantPieces(t *testing.T, router *rangingRouter, p string) {
	t.Helper()
	asked := router.askedOf(p)
	router.mu.Lock()
	sent := router.served[p]
	router.mu.Unlock()
	if sent < 4<<20 {
		t.Errorf("peer %s sent %d bytes, want at least 4 MiB of pieces; asked: %v", p, sent, asked)
	}
}

// TestHelpersRaceALaggingStream: the primary stream's peer slows to a
// quarter of its rate at 4.5 MiB, not slow enough to be left, just as
// another peer comes to hold the whole blob. The helpers take the pieces a
// piece ahead of the stream, and then, the stream lagging, the piece after
// it and the second half of what is left of its own: the lagging peer
// stops short of 8 MiB, where its piece ends. Without the race within its
// own piece it would carry that piece to its end; without any race, the
// blob to 12 MiB. The slowdown comes 3.5 MiB before the piece's end, over
// two seconds at the lagging rate, so that a lag found late on a loaded
// host is still found before the stream nears it.
func TestHelpersRaceALaggingStream(t *testing.T) {
	t.Parallel()
	const lagAt = 4608 << 10
	body := randomBytes(t, 16<<20)
	var lagSent atomic.Int64
	router := &rangingRouter{
		designatingRouter: &designatingRouter{
			fakeRouter: &fakeRouter{order: []string{"lags", "whole"}, peers: map[string]fakePeer{
				"lags": {data: body}, "whole": {data: body},
			}},
		},
		rpeers: map[string]rangePeer{
			"lags":  {data: body, lagAt: lagAt, lagSent: &lagSent},
			"whole": {data: body, have: 1, wholeWhen: func() bool { return lagSent.Load() >= lagAt }},
		},
		served: map[string]int64{},
	}
	readFromPeersOnly(t, resolver.Config{PieceSize: 4 << 20, PieceWorkers: 2, StallTimeout: 5 * time.Second, PeerSlowWindow: 300 * time.Millisecond}, router, body)
	if sent := lagSent.Load(); sent >= 8<<20 {
		t.Errorf("the lagging peer sent %d bytes, want under 8 MiB: the helpers race it within its piece; asked of the whole holder: %v", sent, router.askedOf("whole"))
	}
	if !router.servedOf("whole", 8<<20) {
		t.Errorf("the whole holder did not send the piece after the stream's; asked: %v", router.askedOf("whole"))
	}
	if !router.servedWithin("whole", lagAt, 8<<20) {
		t.Errorf("the whole holder sent nothing of the stream's own piece past where it lagged; asked: %v", router.askedOf("whole"))
	}
	// A helper that gives up a range the stream has reached asks again at
	// once: asked from where the stream is, it would ask without end.
	if asked := router.askedOf("whole"); len(asked) > 10 {
		t.Errorf("the whole holder was asked %d times, want a few: %v", len(asked), asked)
	}
}

// TestHelpersAskAgain: a peer that held little of the blob when the
// helpers first asked it, and the whole blob soon after, is asked again
// once what it said is stale; a peer whose connection failed under a
// helper's piece (closed or reset, as over a node's own saturated link) is
// asked again a moment later. Each then sends the pieces the slow primary
// stream has not reached.
func TestHelpersAskAgain(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		peer rangePeer
	}{
		// Whole 0.2 s after it first said it held one byte, which is
		// stale a second after it said it.
		{"a peer that was behind", rangePeer{have: 1, wholeAfter: 200 * time.Millisecond}},
		{"a peer whose connection was cut", rangePeer{cuts: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			body := randomBytes(t, 20<<20+7)
			other := tc.peer
			other.data = body
			router := slowAnd(body, []string{"other"}, map[string]rangePeer{"other": other})
			readFromPeersOnly(t, beside, router, body)
			wantPieces(t, router, "other")
		})
	}
}

// silentRanging is a rangingRouter whose peers can be silenced.
type silentRanging struct {
	*rangingRouter
	silences
}

// TestHelpersPassOverASilentPeer: the helpers do not ask a peer the mesh
// left out as silent, though it is listed as holding the blob; they fetch
// from the others.
func TestHelpersPassOverASilentPeer(t *testing.T) {
	t.Parallel()
	body := randomBytes(t, 20<<20+7)
	ranging := slowAnd(body, []string{"quiet", "whole"}, map[string]rangePeer{"quiet": {data: body}, "whole": {data: body}})
	router := &silentRanging{rangingRouter: ranging}
	router.Silent("quiet")
	readFromPeersOnly(t, beside, router, body)
	if asked := ranging.askedOf("quiet"); len(asked) > 0 {
		t.Errorf("the silent peer was asked %v", asked)
	}
	wantPieces(t, ranging, "whole")
}

// readFromPeersOnly reads body through a resolver with cfg over router, and
// fails the test unless it arrives whole without the registry, which holds
// the blob too: a download that turned to it would succeed, and show in its
// count.
func readFromPeersOnly(t *testing.T, cfg resolver.Config, router resolver.Router, body []byte) {
	t.Helper()
	f := newFixture(t, cfg, resolver.Sources{Router: router})
	f.up.push(t, "team/app", body)
	b, err := f.res.Blob(t.Context(), resolver.BlobRequest{Registry: f.up.host, Repo: "team/app", Digest: digest.FromBytes(body), Size: int64(len(body))})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := readAll(t.Context(), t, b, 0); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("read %d bytes: %v", len(got), err)
	}
	if n := f.up.blobGets.Load(); n != 0 {
		t.Errorf("registry asked %d times, want 0", n)
	}
}

func maps(m map[string]int64) map[string]int64 {
	out := make(map[string]int64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// TestHelpersFetchFromTheFrontWhilePeersAreBusy: every peer refuses a
// stream of the blob (each serves its few streams of it already) but
// serves pieces. The helpers then fetch the blob from its first missing
// piece on, so the node holds a growing start it can pass on, and the
// download neither waits for a stream nor turns to the registry.
func TestHelpersFetchFromTheFrontWhilePeersAreBusy(t *testing.T) {
	t.Parallel()
	body := randomBytes(t, 6<<20+5)
	router := &rangingRouter{
		designatingRouter: &designatingRouter{
			fakeRouter: &fakeRouter{order: []string{"a", "b"}, peers: map[string]fakePeer{
				"a": {data: body, busy: 1 << 30}, "b": {data: body, busy: 1 << 30},
			}},
		},
		rpeers: map[string]rangePeer{"a": {data: body}, "b": {data: body}},
		served: map[string]int64{},
	}
	readFromPeersOnly(t, resolver.Config{PieceSize: 1 << 20, PieceWorkers: 2, BusyWait: 10 * time.Second, BusyRetryFor: 20 * time.Second}, router, body)
	if !router.servedOf("a", 0) && !router.servedOf("b", 0) {
		t.Errorf("no peer sent the first piece; ranged requests: %v %v", router.askedOf("a"), router.askedOf("b"))
	}
	router.mu.Lock()
	total := router.served["a"] + router.served["b"]
	router.mu.Unlock()
	if total != int64(len(body)) {
		t.Errorf("peers sent %d bytes in pieces, want the blob's %d once", total, len(body))
	}
}
