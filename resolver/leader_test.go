package resolver_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/resolver"
	"github.com/shoal-dev/shoal/store"
)

// leaderRouter is a mesh where this node ranks first for the blob (it
// leads) and one peer, "other", is receiving it and holds its first have
// bytes. When leads is set, "other" fetches the blob from the registry for
// the cluster now and says so in its answers; it streams the rest as it
// arrives to a request that waits, and to one that does not once it
// answered "ok". Its first busy answers are busy, saying what it holds.
type leaderRouter struct {
	data  []byte
	have  int64
	leads bool
	busy  int
	// pause: the peer's stream sends nothing for this long once past what
	// it held, as the registry's stream to it pauses.
	pause time.Duration

	mu     sync.Mutex
	asked  []string
	served int64
}

func (r *leaderRouter) Providers(context.Context, digest.Digest) ([]string, error) {
	return []string{"other"}, nil
}

func (r *leaderRouter) Fetch(ctx context.Context, p string, d digest.Digest, off int64) (io.ReadCloser, int64, error) {
	body, size, _, err := r.FetchRange(ctx, p, d, resolver.PeerRange{Off: off, Wait: true})
	return body, size, err
}

func (r *leaderRouter) FetchRange(ctx context.Context, p string, d digest.Digest, rg resolver.PeerRange) (io.ReadCloser, int64, int64, error) {
	size := int64(len(r.data))
	if p != "other" || d != digest.FromBytes(r.data) {
		return nil, 0, 0, errdefs.ErrNotFound
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.asked = append(r.asked, fmt.Sprintf("@%d wait %v", rg.Off, rg.Wait))
	var err error
	switch {
	case r.busy > 0:
		r.busy--
		err = fmt.Errorf("peer other is busy: %w: %w", errdefs.ErrUnavailable, errdefs.ErrResourceExhausted)
	case !rg.Wait && rg.Off >= r.have:
		err = fmt.Errorf("peer other holds %d bytes: %w", r.have, errdefs.ErrOutOfRange)
	}
	if err != nil {
		if r.leads {
			err = fmt.Errorf("%w (%w)", err, resolver.ErrPeerLeads)
		}
		return nil, size, r.have, err
	}
	r.served += size - rg.Off
	var body io.Reader = bytes.NewReader(r.data[rg.Off:])
	if r.pause > 0 && rg.Off < r.have {
		body = io.MultiReader(bytes.NewReader(r.data[rg.Off:r.have]), pauseReader{ctx, r.pause}, bytes.NewReader(r.data[r.have:]))
	}
	return &leaderBody{Reader: body, leads: r.leads}, size, r.have, nil
}

// leaderBody is an answer that says whether its peer leads.
type leaderBody struct {
	io.Reader
	leads bool
}

func (b *leaderBody) Close() error    { return nil }
func (b *leaderBody) PeerLeads() bool { return b.leads }

func (r *leaderRouter) Avoid(string, error)                          {}
func (r *leaderRouter) Provide(context.Context, digest.Digest) error { return nil }

// Designated ranks this node first: it leads.
func (r *leaderRouter) Designated(digest.Digest, []digest.Digest) ([]string, bool) {
	return nil, true
}

func (r *leaderRouter) FetchThrough(ctx context.Context, p string, d digest.Digest, off int64, _, _ string) (io.ReadCloser, int64, error) {
	return r.Fetch(ctx, p, d, off)
}

// TestLeaderIsFollowed: a node that leads a blob asks a peer ranked below
// it for the bytes the peer holds only, and would fetch the rest from the
// registry. When the peer answers that it fetches the blob from the
// registry for the cluster now, the node waits on it for the rest
// instead, whether the peer held some bytes ("ok") or none yet ("not
// yet"), or was busy: the registry sends the blob once, to the peer, and a
// busy peer is asked again after a wait. A peer that does not lead is cut
// where it held, and the registry sends the rest.
func TestLeaderIsFollowed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		have      int64
		leads     bool
		busy      int
		registry  bool // the registry is asked
		wantAsked int
	}{
		{"holds a part, leads", 1 << 20, true, 0, false, 1},
		{"holds nothing yet, leads", 0, true, 0, false, 2},
		{"holds a part, does not lead", 1 << 20, false, 0, true, 1},
		{"holds a part, leads, busy", 1 << 20, true, 2, false, 3},
		{"holds a part, does not lead, busy", 1 << 20, false, 1, true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			body := randomBytes(t, 4<<20)
			router := &leaderRouter{data: body, have: tc.have, leads: tc.leads, busy: tc.busy}
			f := newFixture(t, resolver.Config{PieceSize: -1}, resolver.Sources{Router: router})
			pullPushed(t, f, body)
			router.mu.Lock()
			defer router.mu.Unlock()
			if n := f.up.blobGets.Load(); (n > 0) != tc.registry {
				t.Errorf("registry asked %d times; want asked: %v (the peer was asked %v)", n, tc.registry, router.asked)
			}
			if len(router.asked) != tc.wantAsked {
				t.Errorf("the peer was asked %v; want %d requests", router.asked, tc.wantAsked)
			}
		})
	}
}

// TestLeaderThatWaitsOnTheRegistryIsKept: a peer that leads, followed,
// sends nothing past what it held for longer than ArrivalStall, as the
// registry's stream to it pauses. It answers a ping, and waits on no peer:
// it is kept, for StallTimeout as it keeps the registry, and the registry
// sends this node nothing.
func TestLeaderThatWaitsOnTheRegistryIsKept(t *testing.T) {
	t.Parallel()
	body := randomBytes(t, 4<<20)
	router := &leaderRouter{data: body, have: 1 << 20, leads: true, pause: 800 * time.Millisecond}
	// The judge gets 10 s: the test is about the arrival watchdog.
	f := newFixture(t, resolver.Config{
		PieceSize: -1, ArrivalStall: 200 * time.Millisecond,
		PeerStall: 10 * time.Second, PeerSlowWindow: 10 * time.Second,
	}, resolver.Sources{Router: router})
	pullPushed(t, f, body)
	router.mu.Lock()
	defer router.mu.Unlock()
	if n := f.up.blobGets.Load(); n != 0 {
		t.Errorf("registry asked %d times, want 0 (the peer was asked %v)", n, router.asked)
	}
}

// TestInFlightSaysItLeads: peers reading a download still arriving are
// told whether this node fetches the blob from the registry for the
// cluster now: it does when it leads (it ranks first) and its stream reads
// the registry, not when it reads the registry without a ranking.
func TestInFlightSaysItLeads(t *testing.T) {
	t.Parallel()
	for _, ranked := range []bool{true, false} {
		t.Run(fmt.Sprintf("ranked %v", ranked), func(t *testing.T) {
			t.Parallel()
			body := randomBytes(t, 2<<20)
			var src resolver.Sources
			if ranked {
				// "other" holds nothing yet and does not lead.
				src.Router = &leaderRouter{data: body}
			}
			f := newFixture(t, resolver.Config{PieceSize: -1}, src)
			release, halfway := make(chan struct{}), make(chan struct{})
			f.up.hook = func(w http.ResponseWriter, r *http.Request, b []byte) bool {
				w.Header().Set("Content-Length", strconv.Itoa(len(b)))
				w.WriteHeader(http.StatusOK)
				_, _ = w.Write(b[:len(b)/2])
				w.(http.Flusher).Flush()
				close(halfway)
				select {
				case <-release:
				case <-r.Context().Done():
					return true
				}
				_, _ = w.Write(b[len(b)/2:])
				return true
			}
			d := f.up.push(t, "team/app", body)
			b, err := f.res.Blob(t.Context(), resolver.BlobRequest{Registry: f.up.host, Repo: "team/app", Digest: d, Size: int64(len(body))})
			if err != nil {
				t.Fatal(err)
			}
			<-halfway
			// Served to peers once this node took in the registry's answer.
			var blob store.Blob
			for deadline := time.Now().Add(10 * time.Second); blob == nil; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the download is not served to peers 10 s after the registry's first bytes")
				}
				blob, _ = f.res.InFlight(d)
			}
			l, ok := blob.(interface{ Leads() bool })
			if !ok || l.Leads() != ranked {
				t.Errorf("the download in flight says it leads: %v (says at all: %v); want %v", ok && l.Leads(), ok, ranked)
			}
			close(release)
			if got, err := readAll(t.Context(), t, b, 0); err != nil || !bytes.Equal(got, body) {
				t.Fatalf("read %d bytes: %v", len(got), err)
			}
		})
	}
}

// pausedRouter is a mesh where "gone", ranked first for the blob, answers
// and then sends nothing (it froze: this download lost a peer), and
// "relay", ranked next, holds the first MiB and relays the next as they
// reach it. Its first stream pauses once it has relayed a second MiB, as
// its own source does; its next one sends the rest.
type pausedRouter struct {
	goneFrozen
	data  []byte
	pause time.Duration

	mu    sync.Mutex
	asked []string
}

func (r *pausedRouter) Providers(context.Context, digest.Digest) ([]string, error) {
	return []string{"relay"}, nil
}

func (r *pausedRouter) Fetch(ctx context.Context, p string, d digest.Digest, off int64) (io.ReadCloser, int64, error) {
	body, size, _, err := r.FetchRange(ctx, p, d, resolver.PeerRange{Off: off, Wait: true})
	return body, size, err
}

func (r *pausedRouter) FetchRange(ctx context.Context, p string, d digest.Digest, rg resolver.PeerRange) (io.ReadCloser, int64, int64, error) {
	size := int64(len(r.data))
	if d != digest.FromBytes(r.data) {
		return nil, 0, 0, errdefs.ErrNotFound
	}
	r.mu.Lock()
	r.asked = append(r.asked, fmt.Sprintf("%s@%d", p, rg.Off))
	first := len(r.asked) == 2
	r.mu.Unlock()
	switch p {
	case "gone":
		return io.NopCloser(stallReader{ctx}), size, size, nil
	case "relay":
		var body io.Reader = bytes.NewReader(r.data[rg.Off:])
		if first {
			body = io.MultiReader(bytes.NewReader(r.data[rg.Off:2<<20]), pauseReader{ctx, r.pause}, stallReader{ctx})
		}
		return io.NopCloser(body), size, 1 << 20, nil
	}
	return nil, 0, 0, errdefs.ErrNotFound
}

// goneFrozen is the rest of a mesh where the peer "gone" is frozen and
// every other peer answers a ping; it avoids, provides and silences
// nothing.
type goneFrozen struct{}

func (goneFrozen) Avoid(string, error)                          {}
func (goneFrozen) Provide(context.Context, digest.Digest) error { return nil }
func (goneFrozen) Silent(string)                                {}
func (goneFrozen) Silenced(string) bool                         { return false }

func (goneFrozen) Answers(ctx context.Context, p string) bool {
	if p == "gone" {
		<-ctx.Done()
		return false
	}
	return true
}

func (r *pausedRouter) Designated(digest.Digest, []digest.Digest) ([]string, bool) {
	return []string{"gone", "relay"}, false
}

func (r *pausedRouter) FetchThrough(ctx context.Context, p string, d digest.Digest, off int64, _, _ string) (io.ReadCloser, int64, error) {
	return r.Fetch(ctx, p, d, off)
}

// TestRelayWhoseSourcePausedIsAskedAgain: after the download lost a peer,
// the peer it moved to relays bytes that reach it after it answered, then
// sends none for longer than ArrivalStall, as its own source pauses. It
// answers a ping: it is asked once more, not given up, and sends the
// rest; the registry sends nothing. Given up, it would leave this node to
// lead, and the registry would send the rest twice.
func TestRelayWhoseSourcePausedIsAskedAgain(t *testing.T) {
	t.Parallel()
	body := randomBytes(t, 4<<20)
	router := &pausedRouter{data: body, pause: 10 * time.Second}
	f := newFixture(t, resolver.Config{
		PieceSize: -1, StallTimeout: 300 * time.Millisecond, ArrivalStall: 200 * time.Millisecond,
		PeerStall: 2 * time.Second, PeerSlowWindow: 2 * time.Second,
	}, resolver.Sources{Router: router})
	pullPushed(t, f, body)
	f.res.Close()
	router.mu.Lock()
	defer router.mu.Unlock()
	wantAsked(t, f, router.asked, false, []string{"gone@0", "relay@0", "relay@2097152"})
}

// takeOverRouter is a mesh without a ranking (every peer may be waited
// on) where "gone", listed first, answers and then sends nothing (it
// froze: the download lost a peer), and "relay" holds the first MiB, which
// it was reading from "gone" too. Its first stream sends that MiB and then
// nothing: its own source is lost. From then on, when takesOver is set, it fetches the blob
// from the registry for the cluster, and says so in its answers; it never
// did when it answered first.
type takeOverRouter struct {
	goneFrozen
	data      []byte
	takesOver bool
	// lateTakeOver: the relay sends what it held over 640 ms, says it
	// does not lead when first asked, and takes over right after.
	lateTakeOver bool
	questions    int // one-byte questions asked of the relay

	mu    sync.Mutex
	asked []string
}

func (r *takeOverRouter) Providers(context.Context, digest.Digest) ([]string, error) {
	return []string{"gone", "relay"}, nil
}

func (r *takeOverRouter) Fetch(ctx context.Context, p string, d digest.Digest, off int64) (io.ReadCloser, int64, error) {
	body, size, _, err := r.FetchRange(ctx, p, d, resolver.PeerRange{Off: off, Wait: true})
	return body, size, err
}

func (r *takeOverRouter) FetchRange(ctx context.Context, p string, d digest.Digest, rg resolver.PeerRange) (io.ReadCloser, int64, int64, error) {
	const held = 1 << 20
	size := int64(len(r.data))
	if d != digest.FromBytes(r.data) {
		return nil, 0, 0, errdefs.ErrNotFound
	}
	r.mu.Lock()
	r.asked = append(r.asked, fmt.Sprintf("%s@%d wait %v", p, rg.Off, rg.Wait))
	first := p == "relay" && !slices.ContainsFunc(r.asked[:len(r.asked)-1], func(a string) bool { return a[:5] == "relay" })
	question := p == "relay" && !rg.Wait && rg.Off >= held
	if question {
		r.questions++
	}
	leads := r.takesOver || (r.lateTakeOver && r.questions >= 2)
	r.mu.Unlock()
	switch {
	case p == "gone":
		return io.NopCloser(stallReader{ctx}), size, size, nil
	case p != "relay":
		return nil, 0, 0, errdefs.ErrNotFound
	case first && r.lateTakeOver:
		body := io.MultiReader(&trickle{data: r.data[rg.Off:held], every: 40 * time.Millisecond}, stallReader{ctx})
		return &leaderBody{Reader: body}, size, held, nil
	case first:
		body := io.MultiReader(bytes.NewReader(r.data[rg.Off:held]), stallReader{ctx})
		return &leaderBody{Reader: body}, size, held, nil
	case question:
		err := fmt.Errorf("peer relay holds %d bytes: %w", held, errdefs.ErrOutOfRange)
		if leads {
			err = fmt.Errorf("%w (%w)", err, resolver.ErrPeerLeads)
		}
		return nil, size, held, err
	}
	return &leaderBody{Reader: bytes.NewReader(r.data[rg.Off:]), leads: leads}, size, held, nil
}

// trickle sends data 64 KiB at a time, every apart.
type trickle struct {
	data  []byte
	every time.Duration
}

func (t *trickle) Read(p []byte) (int, error) {
	if len(t.data) == 0 {
		return 0, io.EOF
	}
	time.Sleep(t.every)
	n := copy(p[:min(len(p), 64<<10)], t.data)
	t.data = t.data[n:]
	return n, nil
}

// TestRelayThatTookOverLaterIsAskedAgain: as in
// TestRelayThatTookOverIsReadAgain, but the relay, asked as the download
// leaves it, does not lead yet, and takes over a moment later. The round
// reaches the registry with a list over a second old, looks the holders
// up again, and asks the relay it left once more whether it leads: it
// does, and is read again; the registry sends this node nothing.
func TestRelayThatTookOverLaterIsAskedAgain(t *testing.T) {
	t.Parallel()
	body := randomBytes(t, 4<<20)
	router := &takeOverRouter{data: body, lateTakeOver: true}
	f := newFixture(t, resolver.Config{
		PieceSize: -1, StallTimeout: 300 * time.Millisecond, ArrivalStall: 200 * time.Millisecond,
		PeerStall: 10 * time.Second, PeerSlowWindow: 10 * time.Second,
	}, resolver.Sources{Router: router})
	pullPushed(t, f, body)
	f.res.Close()
	router.mu.Lock()
	defer router.mu.Unlock()
	wantAsked(t, f, router.asked, false, []string{"gone@0 wait true", "relay@0 wait true", "relay@1048576 wait false", "relay@1048576 wait false", "relay@1048576 wait true"})
}

// wantAsked fails t unless the registry was asked for the blob (registry)
// or not at all, and the peers were asked as asked says, in order.
func wantAsked(t *testing.T, f *fixture, asked []string, registry bool, want []string) {
	t.Helper()
	if n := f.up.blobGets.Load(); (n > 0) != registry {
		t.Errorf("registry asked %d times; want asked: %v (peers asked %v)", n, registry, asked)
	}
	if !slices.Equal(asked, want) {
		t.Errorf("peers asked %v, want %v", asked, want)
	}
}

// TestRelayThatTookOverIsReadAgain: after the download lost a peer, the
// relay it moved to sends what it held and then nothing, its own source
// lost too; it answers a ping. Before the download leaves it, it asks the
// relay once, without waiting, whether it leads now: one that took over
// the lead (it fetches the blob from the registry for the cluster) is read
// again, and the registry sends this node nothing; the relay's lead is
// said only in an answer, and left unasked this node would lead beside
// it. A relay that did not take over is left, and the registry sends this
// node the rest. The same holds for a designated peer ranked above this
// node (ranked): it is asked that question, not asked once more with a
// wait.
func TestRelayThatTookOverIsReadAgain(t *testing.T) {
	t.Parallel()
	for _, ranked := range []bool{false, true} {
		for _, tc := range []struct {
			name      string
			takesOver bool
			wantAsked []string
			registry  bool
		}{
			{"took over", true, []string{"gone@0 wait true", "relay@0 wait true", "relay@1048576 wait false", "relay@1048576 wait true"}, false},
			{"did not", false, []string{"gone@0 wait true", "relay@0 wait true", "relay@1048576 wait false"}, true},
		} {
			t.Run(fmt.Sprintf("%s, ranked %v", tc.name, ranked), func(t *testing.T) {
				t.Parallel()
				body := randomBytes(t, 4<<20)
				router := &takeOverRouter{data: body, takesOver: tc.takesOver}
				var mesh resolver.Router = router
				if ranked {
					mesh = rankedTakeOver{router}
				}
				// The judge gets 10 s: the test is about the arrival
				// watchdog, which gives the relay 200 ms past what it held.
				f := newFixture(t, resolver.Config{
					PieceSize: -1, StallTimeout: 300 * time.Millisecond, ArrivalStall: 200 * time.Millisecond,
					PeerStall: 10 * time.Second, PeerSlowWindow: 10 * time.Second,
				}, resolver.Sources{Router: mesh})
				pullPushed(t, f, body)
				f.res.Close()
				router.mu.Lock()
				defer router.mu.Unlock()
				wantAsked(t, f, router.asked, tc.registry, tc.wantAsked)
			})
		}
	}
}

// rankedTakeOver is takeOverRouter with a ranking: "gone" and "relay",
// in that order, are the designated peers above this node.
type rankedTakeOver struct{ *takeOverRouter }

func (r rankedTakeOver) Designated(digest.Digest, []digest.Digest) ([]string, bool) {
	return []string{"gone", "relay"}, false
}

func (r rankedTakeOver) FetchThrough(ctx context.Context, p string, d digest.Digest, off int64, _, _ string) (io.ReadCloser, int64, error) {
	return r.Fetch(ctx, p, d, off)
}
