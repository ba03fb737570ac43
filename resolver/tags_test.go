package resolver_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/resolver"
	"github.com/shoal-dev/shoal/resolver/upstream"
	"github.com/shoal-dev/shoal/store"
)

// pushTag pushes a new image (one config blob) under repo:tag and returns
// its manifest digest.
func pushTag(t *testing.T, f *fixture, repo, tag string) digest.Digest {
	t.Helper()
	m, _ := imageManifest(t, f, repo, ocispec.MediaTypeImageManifest, randomBytes(t, 64))
	return f.up.pushManifest(t, repo, tag, m.Body, m.MediaType)
}

// byTag counts the manifest requests by tag among reqs.
func byTag(reqs []string, tag string) int {
	n := 0
	for _, r := range reqs {
		if strings.HasSuffix(r, " "+tag) {
			n++
		}
	}
	return n
}

// tagRouter is a mesh of one designated node for every tag: ask answers
// for it.
type tagRouter struct {
	designated string
	self       bool
	ask        func(ctx context.Context, req resolver.ManifestRequest) (resolver.TagAnswer, error)

	mu      sync.Mutex
	asked   int
	avoided []string
}

func (r *tagRouter) Providers(context.Context, digest.Digest) ([]string, error) { return nil, nil }
func (r *tagRouter) Fetch(context.Context, string, digest.Digest, int64) (io.ReadCloser, int64, error) {
	return nil, 0, errdefs.ErrNotFound
}
func (r *tagRouter) Provide(context.Context, digest.Digest) error { return nil }
func (r *tagRouter) Avoid(p string, _ error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.avoided = append(r.avoided, p)
}
func (r *tagRouter) TagDesignated(string) (string, bool) { return r.designated, r.self }
func (r *tagRouter) AskTag(ctx context.Context, p string, req resolver.ManifestRequest) (resolver.TagAnswer, error) {
	r.mu.Lock()
	r.asked++
	r.mu.Unlock()
	if p != r.designated {
		return resolver.TagAnswer{}, fmt.Errorf("asked %s, not the designated %s", p, r.designated)
	}
	return r.ask(ctx, req)
}

// newPeerResolver is another node's resolver on f's registry, with its own
// store and metrics.
func newPeerResolver(t *testing.T, f *fixture, cfg resolver.Config, src resolver.Sources) (*resolver.Resolver, *prometheus.Registry) {
	t.Helper()
	client, err := upstream.New(upstream.Config{Insecure: []string{f.up.host}})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Registries = append(cfg.Registries, f.up.host)
	reg := prometheus.NewRegistry()
	res, err := resolver.New(store.NewMemory(), client, src, cfg, reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(res.Close)
	return res, reg
}

func tagLookups(t *testing.T, reg *prometheus.Registry, source string) float64 {
	t.Helper()
	return counterValue(t, reg, "shoal_tag_lookups_total", "source", source)
}

// counterValue is the value of counter name in reg, at label=value; an
// empty label takes a counter without labels.
func counterValue(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" {
				return m.GetCounter().GetValue()
			}
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestTagRoute is the rule for where a tag look-up goes.
func TestTagRoute(t *testing.T) {
	t.Parallel()
	now := time.Now()
	fresh := now.Add(-time.Second)
	stale := now.Add(-10 * time.Second)
	cases := []struct {
		name       string
		ttl        time.Duration
		at         time.Time
		cached     bool
		designated string
		self       bool
		want       string
	}{
		{"off", -1, fresh, true, "p", false, "registry"},
		{"fresh answer", 5 * time.Second, fresh, true, "p", false, "cache"},
		{"stale answer, designated peer", 5 * time.Second, stale, true, "p", false, "designated"},
		{"no answer, designated peer", 5 * time.Second, time.Time{}, false, "p", false, "designated"},
		{"this node designated", 5 * time.Second, stale, true, "", true, "registry"},
		{"no mesh", 5 * time.Second, time.Time{}, false, "", false, "registry"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := resolver.TagRouteName(tc.ttl, tc.at, tc.cached, now, tc.designated, tc.self); got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}

// TestTagLookupsShareOneRegistryAnswer: look-ups of one tag at the same
// time, and within the TTL, cost the registry one HEAD by tag and one GET
// by digest; once the TTL has passed, a tag moved upstream is seen.
func TestTagLookupsShareOneRegistryAnswer(t *testing.T) {
	t.Parallel()
	// Every look-up starts within the TTL, however late a loaded run
	// under -race starts its goroutines.
	const ttl = 2 * time.Second
	f := newFixture(t, resolver.Config{TagTTL: ttl}, resolver.Sources{})
	first := pushTag(t, f, "team/app", "v1")
	req := resolver.ManifestRequest{Registry: f.up.host, Repo: "team/app", Reference: "v1"}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			m, err := f.res.Manifest(t.Context(), req)
			if err != nil || m.Digest != first {
				t.Errorf("got %s, %v; want %s", m.Digest, err, first)
			}
		})
	}
	wg.Wait()
	reqs := f.up.manifestRequests()
	if got := byTag(reqs, "v1"); got != 1 {
		t.Fatalf("registry got %d requests by tag for 8 look-ups at once, want 1: %v", got, reqs)
	}
	if !slices.Contains(reqs, "HEAD v1") || byTag(reqs, first.String()) != 1 {
		t.Fatalf("want a HEAD by tag and one GET by digest, got %v", reqs)
	}
	second := pushTag(t, f, "team/app", "v1")
	eventually(t, 10*time.Second, func() error {
		m, err := f.res.Manifest(t.Context(), req)
		if err != nil {
			return err
		}
		if m.Digest != second {
			return fmt.Errorf("still %s", m.Digest)
		}
		return nil
	})
	// A manifest the node holds is not fetched again after the HEAD.
	before := f.up.manifestRequests()
	time.Sleep(ttl)
	if _, err := f.res.Manifest(t.Context(), req); err != nil {
		t.Fatal(err)
	}
	after := f.up.manifestRequests()[len(before):]
	if !slices.Equal(after, []string{"HEAD v1"}) {
		t.Fatalf("after the TTL, the registry got %v, want one HEAD by tag", after)
	}
}

// TestTagAnsweredForPeersKeepsNothing: a node that resolves a tag only for
// its peers writes nothing to its store and asks the registry once within
// the TTL; once its own clients ask, it keeps the manifest.
func TestTagAnsweredForPeersKeepsNothing(t *testing.T) {
	t.Parallel()
	f := newFixture(t, resolver.Config{TagTTL: time.Minute}, resolver.Sources{})
	d := pushTag(t, f, "team/app", "v1")
	req := resolver.ManifestRequest{Registry: f.up.host, Repo: "team/app", Reference: "v1"}
	for i := range 3 {
		ans, err := f.res.TagFor(t.Context(), req)
		if err != nil || ans.Manifest.Digest != d || digest.FromBytes(ans.Manifest.Body) != d {
			t.Fatalf("answer %d: %s, %v; want %s", i, ans.Manifest.Digest, err, d)
		}
	}
	if _, err := f.store.Stat(t.Context(), d); err == nil {
		t.Fatal("the store keeps a manifest only peers asked for")
	}
	if got, want := f.up.manifestRequests(), []string{"HEAD v1", "GET " + d.String()}; !slices.Equal(got, want) {
		t.Fatalf("the registry got %v for three answers, want %v", got, want)
	}
	m, err := f.res.Manifest(t.Context(), req)
	if err != nil || m.Digest != d {
		t.Fatalf("own look-up: %s, %v", m.Digest, err)
	}
	if _, err := f.store.Stat(t.Context(), d); err != nil {
		t.Fatalf("after its own client asked, the store does not hold the manifest: %v", err)
	}
	if n := len(f.up.manifestRequests()); n != 2 {
		t.Fatalf("the own look-up went to the registry: %v", f.up.manifestRequests())
	}
}

// TestTagWithoutHEAD: a registry that answers no HEAD is asked with a GET
// by tag, once.
func TestTagWithoutHEAD(t *testing.T) {
	t.Parallel()
	f := newFixture(t, resolver.Config{}, resolver.Sources{})
	f.up.noHead.Store(true)
	d := pushTag(t, f, "team/app", "v1")
	m, err := f.res.Manifest(t.Context(), resolver.ManifestRequest{Registry: f.up.host, Repo: "team/app", Reference: "v1"})
	if err != nil || m.Digest != d {
		t.Fatalf("got %s, %v; want %s", m.Digest, err, d)
	}
	if got := f.up.manifestRequests(); !slices.Equal(got, []string{"HEAD v1", "GET v1"}) {
		t.Fatalf("the registry got %v, want a HEAD then a GET by tag", got)
	}
}

func eventually(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTagFromTheDesignatedNode: a node asks the tag's designated node,
// which alone asks the registry; a designated node that lies, fails or
// stalls costs a look-up of the node's own, never an error.
func TestTagFromTheDesignatedNode(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		// ask turns the designated node's honest answer into what it sends.
		ask          func(ctx context.Context, honest func() (resolver.TagAnswer, error)) (resolver.TagAnswer, error)
		wantSource   string // tag look-up metric
		wantFallback string // "" none
		wantAvoided  bool
	}{
		{"answers", func(_ context.Context, h func() (resolver.TagAnswer, error)) (resolver.TagAnswer, error) { return h() }, "designated", "", false},
		{"lies", func(_ context.Context, h func() (resolver.TagAnswer, error)) (resolver.TagAnswer, error) {
			a, err := h()
			a.Manifest.Body = append([]byte(nil), a.Manifest.Body...)
			a.Manifest.Body[0] = ' '
			return a, err
		}, "registry", "mismatch", true},
		{"fails", func(context.Context, func() (resolver.TagAnswer, error)) (resolver.TagAnswer, error) {
			return resolver.TagAnswer{}, errors.New("connection refused")
		}, "registry", "error", false},
		{"stalls", func(ctx context.Context, _ func() (resolver.TagAnswer, error)) (resolver.TagAnswer, error) {
			<-ctx.Done()
			return resolver.TagAnswer{}, ctx.Err()
		}, "registry", "timeout", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// The designated node's answer is a HEAD and a GET to a
			// registry in the test's process: 2 s leaves a loaded run
			// under -race time for them. Only the stalling node is
			// waited for to the end.
			cfg := resolver.Config{TagTTL: time.Minute, TagPeerTimeout: 2 * time.Second}
			if tc.name == "stalls" {
				cfg.TagPeerTimeout = 200 * time.Millisecond
			}
			f := newFixture(t, cfg, resolver.Sources{}) // the designated node
			d := pushTag(t, f, "team/app", "v1")
			req := resolver.ManifestRequest{Registry: f.up.host, Repo: "team/app", Reference: "v1"}
			router := &tagRouter{designated: "designated", ask: func(ctx context.Context, r resolver.ManifestRequest) (resolver.TagAnswer, error) {
				return tc.ask(ctx, func() (resolver.TagAnswer, error) { return f.res.TagFor(ctx, r) })
			}}
			asker, reg := newPeerResolver(t, f, cfg, resolver.Sources{Router: router})
			m, err := asker.Manifest(t.Context(), req)
			if err != nil {
				t.Fatalf("look-up failed: %v", err)
			}
			if m.Digest != d || digest.FromBytes(m.Body) != d {
				t.Fatalf("got %s (body %s), want %s", m.Digest, digest.FromBytes(m.Body), d)
			}
			if got := tagLookups(t, reg, tc.wantSource); got != 1 {
				t.Errorf("tag look-ups from %s: %v, want 1", tc.wantSource, got)
			}
			if tc.wantFallback != "" {
				if got := counterValue(t, reg, "shoal_tag_fallbacks_total", "reason", tc.wantFallback); got != 1 {
					t.Errorf("fallbacks for %s: %v, want 1", tc.wantFallback, got)
				}
			}
			router.mu.Lock()
			avoided := len(router.avoided) > 0
			router.mu.Unlock()
			if avoided != tc.wantAvoided {
				t.Errorf("designated node avoided: %v, want %v", avoided, tc.wantAvoided)
			}
			if tc.wantSource != "designated" {
				return
			}
			// The answer counts for the TTL, and the GET by digest that
			// follows is served from the node.
			if _, err := asker.Manifest(t.Context(), req); err != nil {
				t.Fatal(err)
			}
			if got := tagLookups(t, reg, "cache"); got != 1 {
				t.Errorf("second look-up: %v from cache, want 1", got)
			}
			byDigest, err := asker.Manifest(t.Context(), resolver.ManifestRequest{Registry: f.up.host, Repo: "team/app", Reference: d.String()})
			if err != nil || byDigest.Source != resolver.SourceStore {
				t.Errorf("by digest: source %s, %v; want the store", byDigest.Source, err)
			}
			if reqs := f.up.manifestRequests(); byTag(reqs, "v1") != 1 || byTag(reqs, d.String()) != 1 {
				t.Errorf("the registry got %v for two nodes' look-ups, want one HEAD by tag and one GET by digest", reqs)
			}
		})
	}
}

// TestTagForOnlyFromMirroredRegistries: a peer cannot make the node ask a
// registry it does not mirror.
func TestTagForOnlyFromMirroredRegistries(t *testing.T) {
	t.Parallel()
	f := newFixture(t, resolver.Config{}, resolver.Sources{})
	other := newUpstream(t)
	m, _ := imageManifest(t, &fixture{up: other}, "team/app", ocispec.MediaTypeImageManifest, randomBytes(t, 64))
	other.pushManifest(t, "team/app", "v1", m.Body, m.MediaType)
	_, err := f.res.TagFor(t.Context(), resolver.ManifestRequest{Registry: other.host, Repo: "team/app", Reference: "v1"})
	if !errors.Is(err, resolver.ErrNotMirrored) {
		t.Fatalf("got %v, want ErrNotMirrored", err)
	}
	if got := other.manifestRequests(); len(got) != 0 {
		t.Fatalf("the registry the node does not mirror got %v", got)
	}
	if _, err := f.res.TagFor(t.Context(), resolver.ManifestRequest{Registry: f.up.host, Repo: "team/app", Reference: digest.FromString("x").String()}); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("a digest asked as a tag: %v, want InvalidArgument", err)
	}
}

// TestLastTagAnswersTheMeshWhenTheRegistryIsDown: the node keeps its last
// answer for a tag past the TTL, for itself and for members asking while
// the registry is down.
func TestLastTagAnswersTheMeshWhenTheRegistryIsDown(t *testing.T) {
	t.Parallel()
	f := newFixture(t, resolver.Config{TagTTL: 100 * time.Millisecond}, resolver.Sources{})
	d := pushTag(t, f, "team/app", "v1")
	req := resolver.ManifestRequest{Registry: f.up.host, Repo: "team/app", Reference: "v1"}
	if _, err := f.res.Manifest(t.Context(), req); err != nil {
		t.Fatal(err)
	}
	f.up.srv.Close()
	time.Sleep(200 * time.Millisecond)
	desc, err := f.res.LastTag(t.Context(), f.up.host+"/team/app:v1")
	if err != nil || desc.Digest != d || desc.Annotations[resolver.UpdatedAnnotation] == "" {
		t.Fatalf("last answer %+v, %v; want %s with its time", desc, err, d)
	}
	m, err := f.res.Manifest(t.Context(), req)
	if err != nil || m.Digest != d {
		t.Fatalf("with the registry down: %s, %v; want %s", m.Digest, err, d)
	}
	if _, err := f.res.LastTag(t.Context(), f.up.host+"/team/app:v2"); !errdefs.IsNotFound(err) {
		t.Fatalf("unknown tag: %v, want NotFound", err)
	}
}
