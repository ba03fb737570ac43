package resolver_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/resolver"
	"github.com/shoal-dev/shoal/store"
)

// fakePeer is how one peer of fakeRouter behaves.
type fakePeer struct {
	data    []byte
	cutAt   int64 // stop with an error after this offset (0: never)
	corrupt bool  // flip a byte
	busy    int   // answer "busy" this many times first
	stallAt int64 // stop sending after this offset, without an error (0: never)
	slow    bool  // send 64 KiB every 10 ms
	dropAt  int64 // send 32 KiB every 10 ms up to this offset, then 1 KiB (0: never)
	hang    bool  // never answer
	// cutErr, when set, is the error cutAt ends with; cutOnce: a request
	// from cutAt on is not cut.
	cutErr  error
	cutOnce bool
	// pauseAt, pauseFor: send nothing for pauseFor at this offset, then
	// the rest (0: never).
	pauseAt  int64
	pauseFor time.Duration
	// answerAfter holds the answer back this long: a designated peer
	// whose own registry is slow to answer.
	answerAfter time.Duration
	link        *sharedLink
}

// fakeRouter is an in-memory mesh that records what the resolver did.
type fakeRouter struct {
	mu       sync.Mutex
	peers    map[string]fakePeer
	order    []string
	fetches  []string // "peer@offset"
	avoided  []string
	provided []digest.Digest
}

func (f *fakeRouter) Providers(_ context.Context, d digest.Digest) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, p := range f.order {
		if !slices.Contains(f.avoided, p) && digest.FromBytes(f.peers[p].data) == d {
			out = append(out, p)
		}
	}
	return out, nil
}

func (f *fakeRouter) Fetch(ctx context.Context, p string, d digest.Digest, off int64) (io.ReadCloser, int64, error) {
	f.mu.Lock()
	f.fetches = append(f.fetches, fmt.Sprintf("%s@%d", p, off))
	if f.peers[p].hang {
		f.mu.Unlock()
		<-ctx.Done()
		return nil, 0, context.Cause(ctx)
	}
	if wait := f.peers[p].answerAfter; wait > 0 {
		f.mu.Unlock()
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, 0, context.Cause(ctx)
		}
		f.mu.Lock()
	}
	defer f.mu.Unlock()
	fp, ok := f.peers[p]
	if !ok {
		return nil, 0, errdefs.ErrNotFound
	}
	if fp.busy > 0 {
		fp.busy--
		f.peers[p] = fp
		return nil, 0, fmt.Errorf("peer %s: %w", p, errdefs.ErrResourceExhausted)
	}
	data := fp.data
	if fp.corrupt {
		data = bytes.Clone(data)
		data[len(data)-10] ^= 1
	}
	var r io.Reader = bytes.NewReader(data[off:])
	if fp.cutAt > 0 && !(fp.cutOnce && off >= fp.cutAt) {
		cut := fp.cutErr
		if cut == nil {
			cut = errors.New("peer died")
		}
		r = io.MultiReader(io.LimitReader(r, fp.cutAt-off), errReader{cut})
	}
	if fp.stallAt > 0 {
		r = io.MultiReader(io.LimitReader(r, fp.stallAt-off), stallReader{ctx})
	}
	if fp.pauseAt > off {
		r = io.MultiReader(io.LimitReader(r, fp.pauseAt-off), pauseReader{ctx, fp.pauseFor}, r)
	}
	if fp.slow {
		r = &slowReader{ctx: ctx, r: r}
	}
	if fp.dropAt > 0 {
		r = &droppingReader{ctx: ctx, r: r, left: fp.dropAt - off}
	}
	if fp.link != nil {
		r = fp.link.reader(ctx, p, r)
	}
	return io.NopCloser(r), int64(len(data)), nil
}

// stallReader sends nothing until the fetch is cancelled.
type stallReader struct{ ctx context.Context }

func (s stallReader) Read([]byte) (int, error) {
	<-s.ctx.Done()
	return 0, context.Cause(s.ctx)
}

// pauseReader sends nothing for d, then ends.
type pauseReader struct {
	ctx context.Context
	d   time.Duration
}

func (p pauseReader) Read([]byte) (int, error) {
	select {
	case <-time.After(p.d):
		return 0, io.EOF
	case <-p.ctx.Done():
		return 0, context.Cause(p.ctx)
	}
}

// slowReader sends 64 KiB every 10 ms, and records how much it sent.
type slowReader struct {
	ctx  context.Context
	r    io.Reader
	sent atomic.Int64
}

func (s *slowReader) Read(b []byte) (int, error) {
	select {
	case <-time.After(10 * time.Millisecond):
	case <-s.ctx.Done():
		return 0, context.Cause(s.ctx)
	}
	n, err := s.r.Read(b[:min(len(b), 64<<10)])
	s.sent.Add(int64(n))
	return n, err
}

// droppingReader sends 32 KiB every 10 ms until left bytes are sent, then
// 1 KiB every 10 ms: a peer whose link was throttled mid-stream.
type droppingReader struct {
	ctx  context.Context
	r    io.Reader
	left int64
}

func (d *droppingReader) Read(b []byte) (int, error) {
	select {
	case <-time.After(10 * time.Millisecond):
	case <-d.ctx.Done():
		return 0, context.Cause(d.ctx)
	}
	chunk := 32 << 10
	if d.left <= 0 {
		chunk = 1 << 10
	}
	n, err := d.r.Read(b[:min(len(b), chunk)])
	d.left -= int64(n)
	return n, err
}

// laggingReader sends at 6.4 MB/s until left bytes are sent, then at a
// quarter of that: a peer that slowed, not slow enough to be left. Each
// rate holds over time, however late a Read comes, so that a busy host
// does not blur the two. It adds what it sent to sent.
type laggingReader struct {
	ctx  context.Context
	r    io.Reader
	left int64
	sent *atomic.Int64
	// phase: when the current rate began, and what was sent at it since.
	phase     time.Time
	phaseSent int64
	slowed    bool
}

func (l *laggingReader) Read(b []byte) (int, error) {
	const fast = 6400 << 10 // bytes per second
	rate := float64(fast)
	if l.left <= 0 {
		if !l.slowed {
			l.slowed, l.phase, l.phaseSent = true, time.Now(), 0
		}
		rate = fast / 4
	}
	if l.phase.IsZero() {
		l.phase = time.Now()
	}
	due := l.phase.Add(time.Duration(float64(l.phaseSent) / rate * float64(time.Second)))
	select {
	case <-time.After(time.Until(due)):
	case <-l.ctx.Done():
		return 0, context.Cause(l.ctx)
	}
	chunk := 64 << 10
	if l.left > 0 {
		chunk = min(chunk, int(l.left))
	}
	n, err := l.r.Read(b[:min(len(b), chunk)])
	l.left -= int64(n)
	l.phaseSent += int64(n)
	l.sent.Add(int64(n))
	return n, err
}

// sharedLink is the node's own link, which its streams share: each
// sends at linkFast until the link is cut, then at linkCut. A stream that
// was not read for a while does not catch up in a burst: like a link, it
// banks no more than linkBurst. The link is cut once streams streams have
// each sent cutAfter bytes.
type sharedLink struct {
	streams  int
	cutAfter int64
	// paused sends nothing for pause, pauseAfter after the link is cut:
	// by then the node's other streams show the cut.
	paused     string
	pause      time.Duration
	pauseAfter time.Duration
	mu         sync.Mutex
	sent       map[string]int64
	cut        atomic.Bool
	cutAt      time.Time
}

// The link's rates, bytes per second, and what a stream may bank.
const (
	linkFast  = 1 << 20
	linkCut   = linkFast / 16
	linkBurst = 16 << 10
)

func newSharedLink(streams int, cutAfter int64) *sharedLink {
	return &sharedLink{streams: streams, cutAfter: cutAfter, sent: map[string]int64{}}
}

func (l *sharedLink) reader(ctx context.Context, name string, r io.Reader) io.Reader {
	return &linkReader{ctx: ctx, l: l, name: name, r: r, last: time.Now()}
}

// add counts n bytes sent by stream name, and cuts the link once every
// stream sent cutAfter.
func (l *sharedLink) add(name string, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sent[name] += int64(n)
	if len(l.sent) < l.streams {
		return
	}
	for _, k := range l.sent {
		if k < l.cutAfter {
			return
		}
	}
	if !l.cut.Load() {
		l.cutAt = time.Now()
		l.cut.Store(true)
	}
}

// pauseDue says whether stream name is to fall silent now.
func (l *sharedLink) pauseDue(name string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return name == l.paused && l.pause > 0 && now.Sub(l.cutAt) >= l.pauseAfter
}

type linkReader struct {
	ctx    context.Context
	l      *sharedLink
	name   string
	r      io.Reader
	tokens float64 // bytes it may send now
	last   time.Time
	paused bool
}

func (lr *linkReader) Read(b []byte) (int, error) {
	for {
		now := time.Now()
		rate := float64(linkFast)
		if lr.l.cut.Load() {
			rate = linkCut
			if !lr.paused && lr.l.pauseDue(lr.name, now) {
				lr.paused = true
				select {
				case <-time.After(lr.l.pause):
				case <-lr.ctx.Done():
					return 0, context.Cause(lr.ctx)
				}
				now, lr.tokens = time.Now(), 0
			}
		}
		lr.tokens = min(linkBurst, lr.tokens+rate*now.Sub(lr.last).Seconds())
		lr.last = now
		if lr.tokens >= 1<<10 {
			n, err := lr.r.Read(b[:min(len(b), int(lr.tokens))])
			lr.tokens -= float64(n)
			lr.l.add(lr.name, n)
			return n, err
		}
		select {
		case <-time.After(10 * time.Millisecond):
		case <-lr.ctx.Done():
			return 0, context.Cause(lr.ctx)
		}
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func (f *fakeRouter) Avoid(p string, _ error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.avoided = append(f.avoided, p)
}

func (f *fakeRouter) Provide(_ context.Context, d digest.Digest) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.provided = append(f.provided, d)
	return nil
}

func TestPeers(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name        string
		cfg         resolver.Config
		peers       func(body []byte) map[string]fakePeer
		order       []string
		inUpstream  bool
		wantOK      bool
		wantFetches []string
		wantAvoided []string
		wantGets    int64
	}{
		{
			name:        "from the first peer, registry untouched",
			peers:       func(b []byte) map[string]fakePeer { return map[string]fakePeer{"a": {data: b}, "b": {data: b}} },
			order:       []string{"a", "b"},
			wantOK:      true,
			wantFetches: []string{"a@0"},
		},
		{
			name: "peer stalls mid-blob: after StallTimeout the next peer resumes at the same offset",
			cfg:  resolver.Config{StallTimeout: 300 * time.Millisecond},
			peers: func(b []byte) map[string]fakePeer {
				return map[string]fakePeer{"a": {data: b, stallAt: 400000}, "b": {data: b}}
			},
			order:       []string{"a", "b"},
			wantOK:      true,
			wantFetches: []string{"a@0", "b@400000"},
		},
		{
			name: "peer dies mid-blob: the next peer resumes at the same offset",
			peers: func(b []byte) map[string]fakePeer {
				return map[string]fakePeer{"a": {data: b, cutAt: 300000}, "b": {data: b}}
			},
			order:       []string{"a", "b"},
			wantOK:      true,
			wantFetches: []string{"a@0", "b@300000"},
		},
		{
			name: "a peer listed twice that died is not asked again by the same download",
			peers: func(b []byte) map[string]fakePeer {
				return map[string]fakePeer{"a": {data: b, cutAt: 300000}, "b": {data: b}}
			},
			order:       []string{"a", "a", "b"},
			wantOK:      true,
			wantFetches: []string{"a@0", "b@300000"},
		},
		{
			name:        "last peer dies: the registry resumes at the same offset",
			peers:       func(b []byte) map[string]fakePeer { return map[string]fakePeer{"a": {data: b, cutAt: 500000}} },
			order:       []string{"a"},
			inUpstream:  true,
			wantOK:      true,
			wantFetches: []string{"a@0"},
			wantGets:    1,
		},
		{
			name:        "only holder busy: asked again until a slot frees, registry spared",
			peers:       func(b []byte) map[string]fakePeer { return map[string]fakePeer{"a": {data: b, busy: 2}} },
			order:       []string{"a"},
			wantOK:      true,
			wantFetches: []string{"a@0", "a@0", "a@0"},
		},
		{
			name:        "corrupting peer is avoided and nothing is stored",
			peers:       func(b []byte) map[string]fakePeer { return map[string]fakePeer{"bad": {data: b, corrupt: true}} },
			order:       []string{"bad"},
			wantOK:      false,
			wantFetches: []string{"bad@0"},
			wantAvoided: []string{"bad"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			router := &fakeRouter{order: tc.order}
			f := newFixture(t, tc.cfg, resolver.Sources{Router: router})
			body := randomBytes(t, 1<<20)
			d := digest.FromBytes(body)
			if tc.inUpstream {
				f.up.push(t, "a", body)
			}
			router.peers = tc.peers(body)
			b, err := f.res.Blob(t.Context(), resolver.BlobRequest{Registry: f.up.host, Repo: "a", Digest: d})
			if err != nil {
				t.Fatal(err)
			}
			got, err := readAll(t.Context(), t, b, 0)
			if tc.wantOK != (err == nil && bytes.Equal(got, body)) {
				t.Fatalf("read %d bytes, err %v; want ok=%v", len(got), err, tc.wantOK)
			}
			if !tc.wantOK && !errors.Is(err, store.ErrDigestMismatch) {
				t.Fatalf("err %v, want a digest mismatch", err)
			}
			if !tc.wantOK && len(got) != 0 {
				// A corrupt prefix handed on cannot be repaired by a resume.
				t.Fatalf("reader received %d unverified bytes from a peer", len(got))
			}
			f.res.Close() // wait for the download to finish its bookkeeping
			router.mu.Lock()
			defer router.mu.Unlock()
			if !slices.Equal(router.fetches, tc.wantFetches) {
				t.Errorf("fetches %v, want %v", router.fetches, tc.wantFetches)
			}
			if !slices.Equal(router.avoided, tc.wantAvoided) {
				t.Errorf("avoided %v, want %v", router.avoided, tc.wantAvoided)
			}
			if n := f.up.blobGets.Load(); n != tc.wantGets {
				t.Errorf("registry GETs %d, want %d", n, tc.wantGets)
			}
			if rg, ok := f.up.ranges.Load(d); tc.inUpstream && (!ok || rg.(string) != "bytes=500000-1048575") {
				t.Errorf("registry resumed with %v", rg)
			}
			_, serr := f.store.Stat(context.Background(), d)
			if tc.wantOK != (serr == nil) {
				t.Errorf("stored: %v, want %v", serr == nil, tc.wantOK)
			}
			// Announced when the download starts (peers may read it as it
			// arrives) and again once stored.
			if tc.wantOK && (len(router.provided) == 0 || slices.ContainsFunc(router.provided, func(p digest.Digest) bool { return p != d })) {
				t.Errorf("provided %v, want only the blob, announced", router.provided)
			}
		})
	}
}

// TestPeerJudgedByItsPace: a peer's stream that goes silent, or drops to
// a small part of its rate, is given up long before StallTimeout; the next
// peer resumes at the offset reached.
func TestPeerJudgedByItsPace(t *testing.T) {
	t.Parallel()
	const size = 4 << 20
	cases := []struct {
		name string
		peer func(body []byte) fakePeer
		at   int64 // where b resumes, at least
	}{
		{"silent after 1 MiB", func(b []byte) fakePeer { return fakePeer{data: b, stallAt: 1 << 20} }, 1 << 20},
		{"a thirty-second of its rate after 1 MiB", func(b []byte) fakePeer { return fakePeer{data: b, dropAt: 1 << 20} }, 1 << 20},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			body := randomBytes(t, size)
			d := digest.FromBytes(body)
			router := &fakeRouter{order: []string{"a", "b"}, peers: map[string]fakePeer{"a": tc.peer(body), "b": {data: body}}}
			// StallTimeout would hold the download for ten minutes: the
			// test's deadline fails it long before. PeerStall is wide of
			// the peers' 10 ms gaps: a loaded run under -race pauses a
			// stream for hundreds of ms.
			f := newFixture(t, resolver.Config{StallTimeout: 10 * time.Minute, PeerStall: time.Second, PeerSlowWindow: 300 * time.Millisecond, PieceSize: -1}, resolver.Sources{Router: router})
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			b, err := f.res.Blob(ctx, resolver.BlobRequest{Registry: f.up.host, Repo: "a", Digest: d})
			if err != nil {
				t.Fatal(err)
			}
			got, err := readAll(ctx, t, b, 0)
			if err != nil || !bytes.Equal(got, body) {
				t.Fatalf("read %d bytes, err %v", len(got), err)
			}
			f.res.Close()
			router.mu.Lock()
			defer router.mu.Unlock()
			var resumed int64 = -1
			if len(router.fetches) == 2 && router.fetches[0] == "a@0" {
				fmt.Sscanf(router.fetches[1], "b@%d", &resumed)
			}
			if resumed < tc.at || resumed >= size {
				t.Fatalf("fetches %v: want a@0, then b from %d or later, before the end", router.fetches, tc.at)
			}
		})
	}
}

// pullWithRegistry pulls body through a resolver with cfg, whose peers are
// router's and whose registry holds body too, checks what it read, and
// closes the resolver.
func pullWithRegistry(t *testing.T, cfg resolver.Config, router resolver.Router, body []byte) *fixture {
	t.Helper()
	f := newFixture(t, cfg, resolver.Sources{Router: router})
	f.up.push(t, "a", body)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	b, err := f.res.Blob(ctx, resolver.BlobRequest{Registry: f.up.host, Repo: "a", Digest: digest.FromBytes(body)})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := readAll(ctx, t, b, 0); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("read %d bytes, err %v", len(got), err)
	}
	f.res.Close()
	return f
}

// TestNextPeerHeldToThePaceOfTheLostOne: a peer goes silent mid-blob and
// the next is slow from its first byte (its own link was cut, say). Judged
// against its own best alone it would never be "slower than it was", and
// the download would read it to the end; held to the pace the lost peer
// had, it is left after one window, and the registry sends the rest.
func TestNextPeerHeldToThePaceOfTheLostOne(t *testing.T) {
	t.Parallel()
	const lostAt = 4 << 20
	body := randomBytes(t, lostAt+512<<10)
	d := digest.FromBytes(body)
	router := &fakeRouter{order: []string{"fast", "crawls"}, peers: map[string]fakePeer{
		// 64 KiB every 10 ms for 4 MiB, then nothing.
		"fast": {data: body, slow: true, stallAt: lostAt},
		// 1 KiB every 10 ms from its first byte: a sixty-fourth.
		"crawls": {data: body, dropAt: 1},
	}}
	// PeerStall is wide of the peers' 10 ms gaps: a loaded run under
	// -race pauses a stream for hundreds of ms, which would make a
	// peer silent before its time.
	f := pullWithRegistry(t, resolver.Config{StallTimeout: 10 * time.Minute, PeerStall: time.Second, PeerSlowWindow: 300 * time.Millisecond, PieceSize: -1}, router, body)
	router.mu.Lock()
	defer router.mu.Unlock()
	if want := []string{"fast@0", fmt.Sprintf("crawls@%d", lostAt)}; !slices.Equal(router.fetches, want) {
		t.Errorf("fetches %v, want %v", router.fetches, want)
	}
	rg, _ := f.up.ranges.Load(d)
	var from, to int64
	if n, _ := fmt.Sscanf(fmt.Sprint(rg), "bytes=%d-%d", &from, &to); n != 2 || from < lostAt || from >= int64(len(body)) || to != int64(len(body))-1 {
		t.Errorf("the registry was asked for %v, want the rest from %d or later", rg, lostAt)
	}
}

// TestHoldersLookedUpAgainBeforeTheRegistry: a download reads from the
// one peer that held the blob when its round began, for over a second,
// and the peer dies mid-blob. Meanwhile another peer came to hold the
// blob whole: before the registry, the round looks the holders up again,
// and the rest comes from that peer; the registry sends nothing.
func TestHoldersLookedUpAgainBeforeTheRegistry(t *testing.T) {
	t.Parallel()
	const cutAt = 8 << 20
	body := randomBytes(t, cutAt+2<<20)
	router := &fakeRouter{order: []string{"first"}, peers: map[string]fakePeer{
		// 64 KiB every 10 ms: 8 MiB take 1.3 s.
		"first": {data: body, slow: true, cutAt: cutAt},
		"whole": {data: body},
	}}
	go func() {
		// Once the round listed its sources and began to read "first".
		for {
			router.mu.Lock()
			if slices.Contains(router.fetches, "first@0") {
				router.order = append(router.order, "whole")
				router.mu.Unlock()
				return
			}
			router.mu.Unlock()
			select {
			case <-t.Context().Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	// PeerStall is wide of the peers' 10 ms gaps: a loaded run under
	// -race pauses a stream for hundreds of ms, which would make a
	// peer silent before its time.
	f := pullWithRegistry(t, resolver.Config{StallTimeout: 10 * time.Minute, PeerStall: 2 * time.Second, PieceSize: -1}, router, body)
	router.mu.Lock()
	defer router.mu.Unlock()
	if want := []string{"first@0", fmt.Sprintf("whole@%d", cutAt)}; !slices.Equal(router.fetches, want) {
		t.Errorf("fetches %v, want %v", router.fetches, want)
	}
	if n := f.up.blobGets.Load(); n != 0 {
		t.Errorf("registry asked %d times, want 0", n)
	}
}

// TestOwnLinkCutKeepsThePeer: the node's own link is cut to a
// sixteenth while it reads one blob from a peer and another from the
// registry; both slow at once, and the peer's stream may even fall
// silent for a while, as streams that share a full link do. The peer is
// not given up for the registry: the registry's bytes would come through
// the same link, and it would send again what the peer was sending.
func TestOwnLinkCutKeepsThePeer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		pause time.Duration // the peer's silence once the link is cut
	}{
		{"both slowed", 0},
		{"both slowed, and the peer silent for half a second", 500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ownLinkCut(t, tc.pause)
		})
	}
}

func ownLinkCut(t *testing.T, pause time.Duration) {
	// The resolver judges by the wall clock, so each rule the test relies
	// on is given room to spare for a loaded machine's late wake-ups:
	//   - window: the peer's rate is measured over two seconds, and the
	//     link is cut once both streams sent two and a half seconds' worth
	//     at its full rate, so each stream's best is measured whole;
	//   - the pause starts pauseAfter the cut, when the registry's stream
	//     has trickled for a whole window (othersTrickle holds);
	//   - a silence is excused up to ownLinkSilences × PeerStall = 1.2 s,
	//     over twice the pause;
	//   - after the pause, the peer's stream still has two thirds of the
	//     registry's rate over the window, where the rule for a node that
	//     reads from two sources asks for a third.
	// The peer's blob ends two and a half seconds after the pause, the
	// registry's one and a half seconds later: the node reads from two
	// sources to the peer's last byte.
	const (
		window     = 2 * time.Second
		cutAfter   = 5 * linkFast / 2
		pauseAfter = 5 * time.Second / 2
	)
	fromPeer, fromRegistry := randomBytes(t, cutAfter+5*linkCut), randomBytes(t, cutAfter+7*linkCut)
	link := newSharedLink(2, cutAfter)
	link.pause, link.paused, link.pauseAfter = pause, "p", pauseAfter
	router := &fakeRouter{order: []string{"p"}, peers: map[string]fakePeer{"p": {data: fromPeer, link: link}}}
	f := newFixture(t, resolver.Config{StallTimeout: 10 * time.Minute, PeerStall: 300 * time.Millisecond, PeerSlowWindow: window, PieceSize: -1,
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil))}, resolver.Sources{Router: router})
	dPeer := f.up.push(t, "a", fromPeer)
	f.up.push(t, "a", fromRegistry)
	var askedForPeerBlob atomic.Bool
	f.up.hook = func(w http.ResponseWriter, r *http.Request, body []byte) bool {
		if digest.FromBytes(body) == dPeer {
			askedForPeerBlob.Store(true)
			return false
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		rd := link.reader(r.Context(), "registry", bytes.NewReader(body))
		buf := make([]byte, 32<<10)
		for {
			n, err := rd.Read(buf)
			if _, werr := w.Write(buf[:n]); werr != nil || err != nil {
				return true
			}
			w.(http.Flusher).Flush()
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, blob := range [][]byte{fromRegistry, fromPeer} {
		wg.Go(func() {
			b, err := f.res.Blob(ctx, resolver.BlobRequest{Registry: f.up.host, Repo: "a", Digest: digest.FromBytes(blob)})
			if err != nil {
				t.Error(err)
				return
			}
			if got, err := readAll(ctx, t, b, 0); err != nil || !bytes.Equal(got, blob) {
				t.Errorf("read %d bytes, err %v", len(got), err)
			}
		})
	}
	wg.Wait()
	f.res.Close()
	router.mu.Lock()
	defer router.mu.Unlock()
	if want := []string{"p@0"}; !slices.Equal(router.fetches, want) || askedForPeerBlob.Load() {
		t.Errorf("fetches %v, and the registry was asked for the peer's blob: %v; want %v only", router.fetches, askedForPeerBlob.Load(), want)
	}
}

// linkJudgingRouter is a fakeRouter that says whether the node's own
// link is slow: whether its other peers fail to answer a ping in time.
type linkJudgingRouter struct {
	*fakeRouter
	ownSlow bool
	asked   atomic.Int32
}

func (r *linkJudgingRouter) OwnLinkSlow(string, time.Duration) bool {
	r.asked.Add(1)
	return r.ownSlow
}

// TestSilenceLaidToTheOwnLink: a peer's stream falls silent for a second
// and a half mid-blob, where PeerStall is 200 ms, and the node receives
// nothing else. When the node's other peers answer a ping in time, the
// peer is given up and the next one resumes the blob; when they do not,
// the node's own link is what holds the bytes up, and the peer is kept to
// the end: the next source's bytes would come through the same link.
func TestSilenceLaidToTheOwnLink(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		ownSlow bool
		want    func(fetches []string) bool
	}{
		{"other peers answer", false, func(f []string) bool { return len(f) == 2 && f[0] == "a@0" && strings.HasPrefix(f[1], "b@") }},
		{"no other peer answers", true, func(f []string) bool { return slices.Equal(f, []string{"a@0"}) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			body := randomBytes(t, 4<<20)
			router := &linkJudgingRouter{ownSlow: tc.ownSlow, fakeRouter: &fakeRouter{order: []string{"a", "b"}, peers: map[string]fakePeer{
				// Measured over a whole window before it pauses: the
				// node's best second is known.
				"a": {data: body, slow: true, pauseAt: 3 << 20, pauseFor: 1500 * time.Millisecond},
				"b": {data: body},
			}}}
			pullWithRegistry(t, resolver.Config{StallTimeout: 10 * time.Second, PeerStall: 200 * time.Millisecond, PeerSlowWindow: 300 * time.Millisecond, PieceSize: -1}, router, body)
			router.mu.Lock()
			defer router.mu.Unlock()
			if !tc.want(router.fetches) || router.asked.Load() == 0 {
				t.Errorf("fetches %v, own link asked %d times", router.fetches, router.asked.Load())
			}
		})
	}
}

// TestPeerThatCutsAskedAgainWhenTheOwnLinkIsSlow: a peer's stream drops
// to a trickle mid-blob, as it does behind a node's own link cut to a
// tenth, and the peer then cuts it (its upload watch found the node not
// reading). When the node's other peers do not answer a ping in time
// either, its own link holds the bytes up: the peer is asked again for the
// rest and the registry is not, whose bytes would come through the same
// link. When they answer, the trickle is the peer's, and the registry
// sends the rest. So for a request the peer did not answer in time
// (resolver.ErrNoAnswer), as behind a full link it may not. The stream takes about a second before the cut: with
// BusyRetryFor at 600 ms, a download that counted its idle time from the
// start of the round, not from its last byte, would ask the registry.
func TestPeerThatCutsAskedAgainWhenTheOwnLinkIsSlow(t *testing.T) {
	t.Parallel()
	const dropAt, cutAt = 2 << 20, 2<<20 + 32<<10
	body := randomBytes(t, cutAt+32<<10)
	d := digest.FromBytes(body)
	for _, tc := range []struct {
		name     string
		ownSlow  bool
		busyFor  time.Duration // BusyRetryFor; 0: the default
		fetches  []string
		registry bool
		cut      error // what the peer's failure is marked with
	}{
		{"other peers answer", false, 0, []string{"a@0"}, true, resolver.ErrPeerCut},
		{"no other peer answers", true, 0, []string{"a@0", fmt.Sprintf("a@%d", cutAt)}, false, resolver.ErrPeerCut},
		{"no other peer answers, the stream longer than the busy wait", true, 600 * time.Millisecond, []string{"a@0", fmt.Sprintf("a@%d", cutAt)}, false, resolver.ErrPeerCut},
		{"unanswered, other peers answer", false, 0, []string{"a@0"}, true, resolver.ErrNoAnswer},
		{"unanswered, no other peer answers", true, 0, []string{"a@0", fmt.Sprintf("a@%d", cutAt)}, false, resolver.ErrNoAnswer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			router := &linkJudgingRouter{ownSlow: tc.ownSlow, fakeRouter: &fakeRouter{order: []string{"a"}, peers: map[string]fakePeer{
				"a": {data: body, dropAt: dropAt, cutAt: cutAt, cutOnce: true, cutErr: fmt.Errorf("stream reset: %w", tc.cut)},
			}}}
			f := pullWithRegistry(t, resolver.Config{StallTimeout: 10 * time.Second, PeerStall: 200 * time.Millisecond, PeerSlowWindow: 300 * time.Millisecond, PieceSize: -1, BusyRetryFor: tc.busyFor}, router, body)
			router.mu.Lock()
			defer router.mu.Unlock()
			_, asked := f.up.ranges.Load(d)
			if !slices.Equal(router.fetches, tc.fetches) || asked != tc.registry {
				t.Errorf("fetches %v, the registry asked: %v; want %v, %v", router.fetches, asked, tc.fetches, tc.registry)
			}
		})
	}
}

// TestAfterASilentPeerTheNextMustAnswerSoon: once a peer went silent
// mid-blob, the next peer, which may be waiting on the silent one, gets
// twice PeerStall to answer, not StallTimeout; then the registry sends the
// rest.
func TestAfterASilentPeerTheNextMustAnswerSoon(t *testing.T) {
	t.Parallel()
	body := randomBytes(t, 4<<20)
	d := digest.FromBytes(body)
	router := &fakeRouter{order: []string{"holder", "hanger"}, peers: map[string]fakePeer{
		"holder": {data: body, stallAt: 1 << 20},
		"hanger": {data: body, hang: true},
	}}
	f := pullWithRegistry(t, resolver.Config{StallTimeout: 10 * time.Minute, PeerStall: 100 * time.Millisecond, PieceSize: -1}, router, body)
	router.mu.Lock()
	defer router.mu.Unlock()
	if want := []string{"holder@0", "hanger@1048576"}; !slices.Equal(router.fetches, want) {
		t.Errorf("fetches %v, want %v", router.fetches, want)
	}
	if rg, _ := f.up.ranges.Load(d); rg != "bytes=1048576-4194303" {
		t.Errorf("the registry was asked for %v, want the rest from 1 MiB", rg)
	}
}

// TestBusyPeerWaitedForWhileTheNodeReceives: a layer's one holder answers
// busy for longer than the download may wait idle (BusyRetryFor), while
// the node receives another layer from a slow peer. The node is not
// stalled, so the download waits for the holder: the registry, which has
// the layer, is not asked for it.
//
// The holder's nine busy answers span about 4.5 s of backoff; the slow
// layer takes at least 7.7 s; a download idle for half of BusyRetryFor
// asks the registry. A host so loaded that the slow stream's bytes stop
// for 1 s would fail the test: the margin is that wide because such a
// pause did happen, under -race, at a 0.5 s threshold. The slow stream's
// judge gets PeerStall and PeerSlowWindow of 10 s: the test is about the
// busy holder, and a loaded host's pause in the slow stream, judged by
// the defaults, left the stream for the registry, which lacks the layer.
func TestBusyPeerWaitedForWhileTheNodeReceives(t *testing.T) {
	t.Parallel()
	const busy = 9
	busyLayer, slowLayer := randomBytes(t, 1<<20), randomBytes(t, 48<<20)
	router := &fakeRouter{
		peers: map[string]fakePeer{"holder": {data: busyLayer, busy: busy}, "slow": {data: slowLayer, slow: true}},
		order: []string{"holder", "slow"},
	}
	f := newFixture(t, resolver.Config{
		BusyWait: 200 * time.Millisecond, BusyRetryFor: 2 * time.Second,
		PeerStall: 10 * time.Second, PeerSlowWindow: 10 * time.Second,
	}, resolver.Sources{Router: router})
	f.up.push(t, "a", busyLayer)
	slow, err := f.res.Blob(t.Context(), resolver.BlobRequest{Registry: f.up.host, Repo: "a", Digest: digest.FromBytes(slowLayer), Size: int64(len(slowLayer))})
	if err != nil {
		t.Fatal(err)
	}
	slowDone := make(chan error, 1)
	go func() {
		got, err := readAll(t.Context(), t, slow, 0)
		if err == nil && !bytes.Equal(got, slowLayer) {
			err = errors.New("the slow layer's bytes differ")
		}
		slowDone <- err
	}()
	b, err := f.res.Blob(t.Context(), resolver.BlobRequest{Registry: f.up.host, Repo: "a", Digest: digest.FromBytes(busyLayer), Size: int64(len(busyLayer))})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := readAll(t.Context(), t, b, 0); err != nil || !bytes.Equal(got, busyLayer) {
		t.Fatalf("read %d bytes of %d: %v", len(got), len(busyLayer), err)
	}
	if err := <-slowDone; err != nil {
		t.Fatal(err)
	}
	if n := f.up.blobGets.Load(); n != 0 {
		t.Errorf("the registry was asked for %d blobs while the busy holder's node received bytes, want 0", n)
	}
	router.mu.Lock()
	defer router.mu.Unlock()
	asked := 0
	for _, f := range router.fetches {
		if f == "holder@0" {
			asked++
		}
	}
	if asked != busy+1 {
		t.Errorf("the holder was asked %d times, want %d (%d busy answers, then its bytes): %v", asked, busy+1, busy, router.fetches)
	}
}

// silences makes a test router a Silencer: it leaves peers out as the
// mesh does a peer that went quiet in another download, and a peer left
// out does not answer a ping.
type silences struct{ silent sync.Map }

func (s *silences) Silent(p string) { s.silent.Store(p, true) }

func (s *silences) Silenced(p string) bool {
	_, ok := s.silent.Load(p)
	return ok
}

func (s *silences) Answers(ctx context.Context, p string) bool { return !s.Silenced(p) }

// silencingRouter is a fakeRouter whose peers can be silenced.
type silencingRouter struct {
	*fakeRouter
	silences
}

// TestSilencedPeerIsNotAsked: a peer that went silent in another download
// after this one listed its sources is passed over, not asked and waited
// on until it is found silent a second time.
func TestSilencedPeerIsNotAsked(t *testing.T) {
	t.Parallel()
	body := randomBytes(t, 1<<20)
	d := digest.FromBytes(body)
	router := &silencingRouter{fakeRouter: &fakeRouter{
		peers: map[string]fakePeer{"frozen": {data: body, hang: true}, "good": {data: body}},
		order: []string{"frozen", "good"},
	}}
	router.Silent("frozen")
	f := newFixture(t, resolver.Config{}, resolver.Sources{Router: router})
	b, err := f.res.Blob(t.Context(), resolver.BlobRequest{Digest: d})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := readAll(t.Context(), t, b, 0); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("read %d bytes: %v", len(got), err)
	}
	router.mu.Lock()
	defer router.mu.Unlock()
	if want := []string{"good@0"}; !slices.Equal(router.fetches, want) {
		t.Fatalf("fetches %v, want %v: the silenced peer was asked", router.fetches, want)
	}
}
