package resolver_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/p2p/swarm"
	"github.com/shoal-dev/shoal/resolver"
	"github.com/shoal-dev/shoal/store"
)

// TestDesignatedNodeCoordinates: asked to fetch a blob for the cluster
// that its own clients do not want, a node fetches nothing: the first
// asker is told to fetch it itself, the next are pointed at it. Once its
// own clients pull from the repository, it fetches for the cluster what it
// has not left to another.
func TestDesignatedNodeCoordinates(t *testing.T) {
	t.Parallel()
	f := newFixture(t, resolver.Config{}, resolver.Sources{})
	d := f.up.push(t, "team/app", randomBytes(t, 64<<10))

	if _, err := f.res.PullFor(t.Context(), d, f.up.host, "team/app", swarm.Asker{Peer: "node1"}, nil); !errors.Is(err, resolver.ErrFetchYourself) {
		t.Fatalf("first asker: %v, want ErrFetchYourself", err)
	}
	var at *resolver.FetchingAtError
	if _, err := f.res.PullFor(t.Context(), d, f.up.host, "team/app", swarm.Asker{Peer: "node2"}, nil); !errors.As(err, &at) || at.Peer != "node1" {
		t.Fatalf("second asker: %v, want pointed at node1", err)
	}
	if _, err := f.res.PullFor(t.Context(), d, f.up.host, "team/app", swarm.Asker{Peer: "node1"}, nil); !errors.Is(err, resolver.ErrFetchYourself) {
		t.Fatalf("first asker again: %v, want ErrFetchYourself", err)
	}
	if n := f.up.blobGets.Load(); n != 0 {
		t.Fatalf("the registry was asked %d times", n)
	}
	if _, err := f.store.Stat(t.Context(), d); err == nil {
		t.Fatal("the node keeps a blob it does not want")
	}

	// Its own client pulls from the repository: now it fetches for the
	// cluster, and keeps the copy it will need.
	own := f.up.push(t, "team/app", randomBytes(t, 1000))
	b, err := f.res.Blob(t.Context(), resolver.BlobRequest{Registry: f.up.host, Repo: "team/app", Digest: own})
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	next := f.up.push(t, "team/app", randomBytes(t, 64<<10))
	blob, err := f.res.PullFor(t.Context(), next, f.up.host, "team/app", swarm.Asker{Peer: "node3"}, nil)
	if err != nil {
		t.Fatalf("asked while pulling the repository itself: %v", err)
	}
	blob.Close()
	// The blob it left to node1 stays node1's: a node asking for it now is
	// pointed there rather than starting a second fetch here.
	at = nil
	if _, err := f.res.PullFor(t.Context(), d, f.up.host, "team/app", swarm.Asker{Peer: "node2"}, nil); !errors.As(err, &at) || at.Peer != "node1" {
		t.Fatalf("asked for the blob left to node1 while pulling the repository: %v, want pointed at node1", err)
	}
}

// TestDesignatedNodeWaitsForWant: asked to fetch a blob it does not want
// by a peer that already leads another blob, a node first waits a moment
// for its own clients. When they pull from the repository meanwhile, it
// fetches the blob for the cluster itself, so the asker is not left a
// second layer to lead; when they do not, the asker is left the blob, as
// any first asker is.
func TestDesignatedNodeWaitsForWant(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	f := newFixtureIn(t, resolver.Config{}, resolver.Sources{}, reg)
	waited := func() float64 {
		return counterValue(t, reg, "shoal_fetch_requests_waited_for_want_total", "", "")
	}
	left := f.up.push(t, "team/app", randomBytes(t, 64<<10))
	if _, err := f.res.PullFor(t.Context(), left, f.up.host, "team/app", swarm.Asker{Peer: "node1", Leads: true}, nil); !errors.Is(err, resolver.ErrFetchYourself) {
		t.Fatalf("nobody here pulls the repository: %v, want ErrFetchYourself", err)
	}
	if w := waited(); w != 1 {
		t.Fatalf("waited for this node's clients %v times, want 1", w)
	}

	// A node that waits long, so that its client's pull below comes
	// within the wait however loaded the machine.
	reg = prometheus.NewRegistry()
	f = newFixtureIn(t, resolver.Config{WantWait: time.Minute}, resolver.Sources{}, reg)
	d := f.up.push(t, "team/app", randomBytes(t, 64<<10))
	type pulled struct {
		b   store.Blob
		err error
	}
	got := make(chan pulled, 1)
	go func() {
		b, err := f.res.PullFor(t.Context(), d, f.up.host, "team/app", swarm.Asker{Peer: "node2", Leads: true}, nil)
		got <- pulled{b, err}
	}()
	// Its own client pulls from the repository while the asker waits.
	for waited() < 1 {
		select {
		case p := <-got:
			t.Fatalf("answered %v before waiting for this node's clients", p.err)
		case <-time.After(time.Millisecond):
		}
	}
	own := f.up.push(t, "team/app", randomBytes(t, 1000))
	b, err := f.res.Blob(t.Context(), resolver.BlobRequest{Registry: f.up.host, Repo: "team/app", Digest: own})
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	p := <-got
	if p.err != nil {
		t.Fatalf("asked while its own client came to pull the repository: %v, want the blob", p.err)
	}
	p.b.Close()
	// It keeps the copy it will need.
	eventually(t, 10*time.Second, func() error {
		_, err := f.store.Stat(t.Context(), d)
		return err
	})
	// Asked again by a peer that leads, now that it wants the blob: it
	// fetches for the cluster at once.
	next := f.up.push(t, "team/app", randomBytes(t, 1000))
	b2, err := f.res.PullFor(t.Context(), next, f.up.host, "team/app", swarm.Asker{Peer: "node3", Leads: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b2.Close()
	if w := waited(); w != 1 {
		t.Errorf("waited %v times, want 1: the node wanted the repository when node3 asked", w)
	}
}

// TestPreheatingNodeServesTheAskerItMadeWait: a designated node that
// preheats the image while a peer that leads another blob waits on it
// serves that peer the blob it fetches, and the registry sends the blob
// once.
func TestPreheatingNodeServesTheAskerItMadeWait(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	f := newFixtureIn(t, resolver.Config{WantWait: time.Minute}, resolver.Sources{}, reg)
	layer := randomBytes(t, 256<<10)
	idx, _, ds := pushImage(t, f, "team/app", "v1", randomBytes(t, 1024), layer)
	type pulled struct {
		body []byte
		err  error
	}
	got := make(chan pulled, 1)
	go func() {
		b, err := f.res.PullFor(t.Context(), ds[1], f.up.host, "team/app", swarm.Asker{Peer: "node2", Leads: true}, nil)
		if err != nil {
			got <- pulled{err: err}
			return
		}
		defer b.Close()
		body, err := io.ReadAll(io.NewSectionReader(b, 0, b.Size()))
		got <- pulled{body, err}
	}()
	for counterValue(t, reg, "shoal_fetch_requests_waited_for_want_total", "", "") < 1 {
		select {
		case p := <-got:
			t.Fatalf("answered %v before waiting for this node's clients", p.err)
		case <-time.After(time.Millisecond):
		}
	}
	// A member asks for the preheat, naming the image it resolved.
	im := resolver.Image{Registry: f.up.host, Repo: "team/app", Digest: idx}
	if err := f.res.PreheatFor(t.Context(), im, nil); err != nil {
		t.Fatal(err)
	}
	p := <-got
	if p.err != nil {
		t.Fatalf("asked while the node preheated the image: %v, want the blob", p.err)
	}
	if !bytes.Equal(p.body, layer) {
		t.Errorf("the asker received %d bytes that are not the layer", len(p.body))
	}
	if n := f.up.blobGets.Load(); n != int64(len(ds)) {
		t.Errorf("the registry was asked for %d blobs, want %d: each once", n, len(ds))
	}
}

// askingRouter designates one peer, "fetcher", for every blob; it leaves
// every blob to the asker, holding its answer for a blob in hold until
// the blob's channel closes, and records whether each question said the
// asker leads another blob.
type askingRouter struct {
	*designatingRouter
	hold  map[digest.Digest]chan struct{}
	asked chan digest.Digest
	leads sync.Map // digest.Digest → bool
}

func (a *askingRouter) FetchRange(ctx context.Context, p string, d digest.Digest, rg resolver.PeerRange) (io.ReadCloser, int64, int64, error) {
	a.leads.Store(d, rg.Leads)
	a.asked <- d
	if ch, ok := a.hold[d]; ok {
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, 0, 0, ctx.Err()
		}
	}
	return nil, 0, 0, fmt.Errorf("fetch %s from %s: %w", d, p, resolver.ErrFetchYourself)
}

// TestAskerSaysItLeadsWhileAnotherQuestionWaits: a node whose question
// about one blob to its designated peer is not answered yet says, asking
// about another, that it leads another blob (a pull's first questions go
// out together, and each may leave a blob to it); its first question, and
// a lone one, say nothing.
func TestAskerSaysItLeadsWhileAnotherQuestionWaits(t *testing.T) {
	t.Parallel()
	bodies := [][]byte{randomBytes(t, 4096), randomBytes(t, 4096), randomBytes(t, 4096)}
	first, second, lone := digest.FromBytes(bodies[0]), digest.FromBytes(bodies[1]), digest.FromBytes(bodies[2])
	router := &askingRouter{
		designatingRouter: &designatingRouter{fakeRouter: &fakeRouter{}, designated: []string{"fetcher"}},
		hold:              map[digest.Digest]chan struct{}{first: make(chan struct{})},
		asked:             make(chan digest.Digest, 8),
	}
	f := newFixture(t, resolver.Config{}, resolver.Sources{Router: router})
	for _, b := range bodies {
		f.up.push(t, "team/app", b)
	}
	said := func(d digest.Digest) bool {
		v, ok := router.leads.Load(d)
		if !ok {
			t.Fatalf("%s: the designated peer was not asked", d)
		}
		return v.(bool)
	}
	pull := func(d digest.Digest) error {
		b, err := f.res.Blob(t.Context(), resolver.BlobRequest{Registry: f.up.host, Repo: "team/app", Digest: d})
		if err == nil {
			b.Close()
		}
		return err
	}
	errs := make(chan error, 1)
	go func() { errs <- pull(first) }()
	if d := <-router.asked; d != first {
		t.Fatalf("asked about %s first", d)
	}
	if err := pull(second); err != nil {
		t.Fatal(err)
	}
	close(router.hold[first])
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	if said(first) {
		t.Error("the first question said the node leads another blob")
	}
	if !said(second) {
		t.Error("asked while its question about another blob waited for its answer, the node did not say it may lead another")
	}
	// Once neither download runs, a question is lone.
	eventually(t, 10*time.Second, func() error {
		for _, d := range []digest.Digest{first, second} {
			if b, ok := f.res.InFlight(d); ok {
				b.Close()
				return fmt.Errorf("%s still downloads", d)
			}
		}
		return nil
	})
	if err := pull(lone); err != nil {
		t.Fatal(err)
	}
	if said(lone) {
		t.Error("a lone question said the node leads another blob")
	}
}

// firstForRouter is an askingRouter that ranks this node first for the
// blobs in first, and "fetcher" first for the others; its look-up of a
// blob's holders waits for the blob's channel in lookups to close.
type firstForRouter struct {
	*askingRouter
	first   map[digest.Digest]bool
	lookups map[digest.Digest]chan struct{}
}

func (r *firstForRouter) Designated(d digest.Digest, _ []digest.Digest) ([]string, bool) {
	if r.first[d] {
		return nil, true
	}
	return []string{"fetcher"}, false
}

func (r *firstForRouter) Providers(ctx context.Context, d digest.Digest) ([]string, error) {
	if ch, ok := r.lookups[d]; ok {
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return r.askingRouter.Providers(ctx, d)
}

// TestAskerSaysItWillLeadItsOwnLayer: a node that ranks first for a layer
// of the image it does not hold says, in its very first question about
// another blob, that it leads another: the prefetch started the layer's
// download, which still looks up the layer's holders and will then fetch
// it for the cluster. Once it holds the layer, and when the only blob it
// ranks first for is a small one, it says nothing.
func TestAskerSaysItWillLeadItsOwnLayer(t *testing.T) {
	t.Parallel()
	router := &firstForRouter{askingRouter: &askingRouter{
		designatingRouter: &designatingRouter{fakeRouter: &fakeRouter{}},
		asked:             make(chan digest.Digest, 64),
	}}
	f := newFixture(t, resolver.Config{PrefetchBlobs: 2, PeerLookupTimeout: time.Minute}, resolver.Sources{Router: router})
	// The config, its own layer, a layer and a small blob designated
	// elsewhere, and a small blob of its own.
	m, ds := imageManifest(t, f, "team/app", ocispec.MediaTypeImageManifest,
		randomBytes(t, 300), randomBytes(t, 2*swarm.LeadWorthy), randomBytes(t, swarm.LeadWorthy+1), randomBytes(t, 4096), randomBytes(t, 8192))
	config, own, other, small, ownSmall := ds[0], ds[1], ds[2], ds[3], ds[4]
	router.first = map[digest.Digest]bool{own: true, ownSmall: true}
	router.lookups = map[digest.Digest]chan struct{}{own: make(chan struct{})}
	// The prefetch starts the config's download and the own layer's, which
	// waits for its holders.
	if n := f.res.Prefetch(t.Context(), resolver.ManifestRequest{Registry: f.up.host, Repo: "team/app", Reference: "v1"}, m); n != 2 {
		t.Fatalf("prefetch started %d downloads, want 2", n)
	}
	ended := func(d digest.Digest) {
		waitStored(t, f, []digest.Digest{d})
		eventually(t, 10*time.Second, func() error {
			if b, ok := f.res.InFlight(d); ok {
				b.Close()
				return fmt.Errorf("%s still downloads", d)
			}
			return nil
		})
	}
	ended(config) // it led from the registry, and would say so itself
	said := func(d digest.Digest) bool {
		v, ok := router.leads.Load(d)
		if !ok {
			t.Fatalf("%s: the designated peer was not asked", d)
		}
		return v.(bool)
	}
	pull := func(d digest.Digest) {
		b, err := f.res.Blob(t.Context(), resolver.BlobRequest{Registry: f.up.host, Repo: "team/app", Digest: d})
		if err != nil {
			t.Fatal(err)
		}
		b.Close()
		ended(d)
	}
	pull(other)
	if !said(other) {
		t.Error("ranked first for a layer it lacks, the node did not say it leads another blob")
	}
	close(router.lookups[own])
	ended(own)
	pull(small)
	if said(small) {
		t.Error("holding its own layer, and ranked first only for a small blob, the node said it leads another")
	}
}

// coordinatingRouter is a designatingRouter whose designated peers answer
// a fetch through them as a designated node that does not want the blob
// does: answers maps a peer to its answer.
type coordinatingRouter struct {
	*designatingRouter
	answers map[string]error
}

func (c *coordinatingRouter) FetchThrough(ctx context.Context, p string, dgst digest.Digest, off int64, registry, repo string) (io.ReadCloser, int64, error) {
	c.mu.Lock()
	c.through = append(c.through, fmt.Sprintf("%s@%d %s/%s", p, off, registry, repo))
	err := c.answers[p]
	c.mu.Unlock()
	if err != nil {
		return nil, 0, fmt.Errorf("fetch %s from %s: %w", dgst, p, err)
	}
	return c.Fetch(ctx, p, dgst, off)
}

// TestCoordinatedDownloads: a node the designated peer leaves a blob to
// asks no other designated peer and fetches the blob from the registry
// itself; a node pointed at the peer fetching it reads it there, and the
// registry is not asked.
func TestCoordinatedDownloads(t *testing.T) {
	t.Parallel()
	t.Run("left to us", func(t *testing.T) {
		t.Parallel()
		router := &coordinatingRouter{
			designatingRouter: &designatingRouter{fakeRouter: &fakeRouter{peers: map[string]fakePeer{}}, designated: []string{"d1", "d2"}},
			answers:           map[string]error{"d1": resolver.ErrFetchYourself},
		}
		f := newFixture(t, resolver.Config{}, resolver.Sources{Router: router})
		body := randomBytes(t, 256<<10)
		d := f.up.push(t, "team/app", body)
		wantBlob(t, f, d, body)
		if want := []string{"d1@0 " + f.up.host + "/team/app"}; !slices.Equal(router.through, want) {
			t.Fatalf("asked through %v, want %v only", router.through, want)
		}
		if n := f.up.blobGets.Load(); n != 1 {
			t.Fatalf("the registry was asked %d times, want once", n)
		}
	})
	t.Run("pointed at the fetcher", func(t *testing.T) {
		t.Parallel()
		body := randomBytes(t, 256<<10)
		router := &coordinatingRouter{
			designatingRouter: &designatingRouter{fakeRouter: &fakeRouter{peers: map[string]fakePeer{"fetcher": {data: body}}}, designated: []string{"d1", "d2"}},
			answers:           map[string]error{"d1": &resolver.FetchingAtError{Peer: "fetcher"}},
		}
		f := newFixture(t, resolver.Config{}, resolver.Sources{Router: router})
		d := f.up.push(t, "team/app", body)
		wantBlob(t, f, d, body)
		router.mu.Lock()
		defer router.mu.Unlock()
		if !slices.Contains(router.fetches, "fetcher@0") {
			t.Fatalf("fetched %v, want from the fetcher", router.fetches)
		}
		wantNoRegistryGets(t, f)
	})
	// The fetcher answers "not found" twice: it has not begun to receive
	// the blob. The download waits for it rather than asking the second
	// designated peer or the registry; also when d1, which pointed at it,
	// fails every request from the second round on (it froze): the
	// download then asks the fetcher first.
	for _, tc := range []struct {
		name   string
		d1Lost bool
	}{
		{"pointed at a fetcher that has not begun", false},
		{"pointed at a fetcher, the designated peer then lost", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			body := randomBytes(t, 256<<10)
			router := &coordinatingRouter{
				designatingRouter: &designatingRouter{fakeRouter: &fakeRouter{peers: map[string]fakePeer{}}, designated: []string{"d1", "d2"}},
				answers:           map[string]error{"d1": &resolver.FetchingAtError{Peer: "fetcher"}},
			}
			f := newFixture(t, resolver.Config{}, resolver.Sources{Router: router})
			d := f.up.push(t, "team/app", body)
			go func() {
				for {
					router.mu.Lock()
					n := len(router.fetches)
					if n >= 1 && tc.d1Lost {
						router.answers["d1"] = errors.New("no answer: source stalled")
					}
					if n >= 2 {
						router.peers["fetcher"] = fakePeer{data: body}
					}
					router.mu.Unlock()
					if n >= 2 {
						return
					}
					time.Sleep(time.Millisecond)
				}
			}()
			wantBlob(t, f, d, body)
			router.mu.Lock()
			defer router.mu.Unlock()
			for _, th := range router.through {
				if strings.HasPrefix(th, "d2@") {
					t.Fatalf("asked the second designated peer: %v; fetched %v", router.through, router.fetches)
				}
			}
			wantNoRegistryGets(t, f)
		})
	}
	t.Run("left to a peer, then wanted here", func(t *testing.T) {
		t.Parallel()
		body := randomBytes(t, 256<<10)
		router := &coordinatingRouter{
			designatingRouter: &designatingRouter{fakeRouter: &fakeRouter{peers: map[string]fakePeer{"node1": {data: body}}}},
		}
		f := newFixture(t, resolver.Config{}, resolver.Sources{Router: router})
		d := f.up.push(t, "team/app", body)
		if _, err := f.res.PullFor(t.Context(), d, f.up.host, "team/app", swarm.Asker{Peer: "node1"}, nil); !errors.Is(err, resolver.ErrFetchYourself) {
			t.Fatalf("asked by node1: %v, want ErrFetchYourself", err)
		}
		// This node's containerd asks for the blob while node1 fetches it:
		// it reads it from node1.
		wantBlob(t, f, d, body)
		router.mu.Lock()
		defer router.mu.Unlock()
		if len(router.fetches) == 0 || router.fetches[0] != "node1@0" {
			t.Fatalf("fetched %v, want from node1 first", router.fetches)
		}
		wantNoRegistryGets(t, f)
	})
}

// wantBlob pulls d as this node's containerd does and checks it is body.
func wantBlob(t *testing.T, f *fixture, d digest.Digest, body []byte) {
	t.Helper()
	if got := pullBlob(t, f, d); !bytes.Equal(got, body) {
		t.Fatalf("read %d bytes, not the blob", len(got))
	}
}

// wantNoRegistryGets fails the test if the registry sent a blob.
func wantNoRegistryGets(t *testing.T, f *fixture) {
	t.Helper()
	if n := f.up.blobGets.Load(); n != 0 {
		t.Fatalf("the registry was asked %d times", n)
	}
}

// pullBlob asks for d as this node's containerd does and reads it whole.
func pullBlob(t *testing.T, f *fixture, d digest.Digest) []byte {
	t.Helper()
	b, err := f.res.Blob(t.Context(), resolver.BlobRequest{Registry: f.registry, Repo: "team/app", Digest: d})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	got, err := readAll(t.Context(), t, b, 0)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestDesignatedNodeOutOfSlots: a designated node with no upload slot
// free coordinates as one with slots does, and takes none for it (see
// swarm.TakesSlot); a blob it would fetch for the cluster it answers
// ErrNoSlot, and starts nothing.
func TestDesignatedNodeOutOfSlots(t *testing.T) {
	t.Parallel()
	f := newFixture(t, resolver.Config{}, resolver.Sources{})
	d := f.up.push(t, "team/app", randomBytes(t, 64<<10))
	asked := 0
	full := func() bool {
		asked++
		return false
	}
	if _, err := f.res.PullFor(t.Context(), d, f.up.host, "team/app", swarm.Asker{Peer: "node1"}, full); !errors.Is(err, resolver.ErrFetchYourself) {
		t.Fatalf("first asker: %v, want ErrFetchYourself", err)
	}
	var at *resolver.FetchingAtError
	if _, err := f.res.PullFor(t.Context(), d, f.up.host, "team/app", swarm.Asker{Peer: "node2"}, full); !errors.As(err, &at) || at.Peer != "node1" {
		t.Fatalf("second asker: %v, want pointed at node1", err)
	}
	if asked != 0 {
		t.Fatalf("looked for a slot %d times for answers that stream nothing", asked)
	}

	// Its own client pulls from the repository: a blob it would fetch for
	// the cluster needs a slot first.
	own := f.up.push(t, "team/app", randomBytes(t, 1000))
	b, err := f.res.Blob(t.Context(), resolver.BlobRequest{Registry: f.up.host, Repo: "team/app", Digest: own})
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	gets := f.up.blobGets.Load()
	next := f.up.push(t, "team/app", randomBytes(t, 64<<10))
	if _, err := f.res.PullFor(t.Context(), next, f.up.host, "team/app", swarm.Asker{Peer: "node3"}, full); !errors.Is(err, resolver.ErrNoSlot) {
		t.Fatalf("asked for a blob it would fetch, out of slots: %v, want ErrNoSlot", err)
	}
	if asked != 1 {
		t.Fatalf("looked for a slot %d times, want once", asked)
	}
	if n := f.up.blobGets.Load() - gets; n != 0 {
		t.Fatalf("the registry was asked %d times for a blob no slot streams", n)
	}
	// Its own copy, too, is streamed only in a slot.
	if _, err := f.res.PullFor(t.Context(), own, f.up.host, "team/app", swarm.Asker{Peer: "node3"}, full); !errors.Is(err, resolver.ErrNoSlot) {
		t.Fatalf("asked for its own copy, out of slots: %v, want ErrNoSlot", err)
	}
	blob, err := f.res.PullFor(t.Context(), next, f.up.host, "team/app", swarm.Asker{Peer: "node3"}, func() bool { return true })
	if err != nil {
		t.Fatalf("asked again with a slot free: %v", err)
	}
	blob.Close()
}
