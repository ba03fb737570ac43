package p2p_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/p2p/p2ptest"
	"github.com/shoal-dev/shoal/resolver"
	"github.com/shoal-dev/shoal/resolver/upstream"
	"github.com/shoal-dev/shoal/store"
)

// fixedTags answers every tag with one manifest, and counts the asks.
type fixedTags struct {
	m     resolver.Manifest
	asked atomic.Int64
}

func (f *fixedTags) TagFor(_ context.Context, req resolver.ManifestRequest) (resolver.TagAnswer, error) {
	f.asked.Add(1)
	if req.Registry != "registry.example:5000" {
		return resolver.TagAnswer{}, fmt.Errorf("registry %s: %w", req.Registry, resolver.ErrNotMirrored)
	}
	return resolver.TagAnswer{Manifest: f.m, Age: 1500 * time.Millisecond}, nil
}

func TestAskTag(t *testing.T) {
	t.Parallel()
	body := []byte(`{"schemaVersion":2,"manifests":[]}`)
	tags := &fixedTags{m: resolver.Manifest{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromBytes(body), Body: body}}
	c := p2ptest.Start(t, 3, p2ptest.Options{Config: func(i int, cfg *p2p.Config) {
		if i == 1 {
			cfg.Tags = tags
		}
	}})
	c.WaitMembers(t, 3, 30*time.Second)
	asker, designated, plain := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	req := resolver.ManifestRequest{Registry: "registry.example:5000", Repo: "team/app", Reference: "v1"}

	ans, err := asker.AskTag(t.Context(), designated.ID(), req)
	if err != nil {
		t.Fatal(err)
	}
	if ans.Manifest.Digest != tags.m.Digest || ans.Manifest.MediaType != tags.m.MediaType || !bytes.Equal(ans.Manifest.Body, body) || ans.Age != 1500*time.Millisecond {
		t.Fatalf("got %+v", ans)
	}
	cases := []struct {
		name  string
		to    peer.ID
		req   resolver.ManifestRequest
		check func(error) bool
	}{
		{"a node that resolves no tags", plain.ID(), req, errdefs.IsNotFound},
		{"a registry the node does not mirror", designated.ID(), resolver.ManifestRequest{Registry: "elsewhere.example", Repo: "team/app", Reference: "v1"}, errdefs.IsNotFound},
		{"a digest for a tag", designated.ID(), resolver.ManifestRequest{Registry: "registry.example:5000", Repo: "team/app", Reference: tags.m.Digest.String()}, errdefs.IsInvalidArgument},
		{"a malformed registry", designated.ID(), resolver.ManifestRequest{Registry: "bad host", Repo: "team/app", Reference: "v1"}, errdefs.IsInvalidArgument},
	}
	for _, tc := range cases {
		if _, err := asker.AskTag(t.Context(), tc.to, tc.req); !tc.check(err) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	// The malformed requests never reached the designated node's source.
	if got := tags.asked.Load(); got != 2 {
		t.Errorf("the tag source was asked %d times, want 2", got)
	}
}

// TestAskTagAgainAfterNoAnswer: a tag question whose stream fails before
// any answer comes (a member that had not heard of a node that joined a
// moment ago refuses its connection) is asked again, and answered; a peer
// that never answers is asked three times in all, then given up.
func TestAskTagAgainAfterNoAnswer(t *testing.T) {
	t.Parallel()
	body := []byte(`{"schemaVersion":2,"manifests":[]}`)
	tags := &fixedTags{m: resolver.Manifest{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromBytes(body), Body: body}}
	c := p2ptest.Start(t, 2, p2ptest.Options{Config: func(i int, cfg *p2p.Config) {
		if i == 1 {
			cfg.Tags = tags
		}
	}})
	c.WaitMembers(t, 2, 30*time.Second)
	asker, designated := c.Nodes[0], c.Nodes[1]
	req := resolver.ManifestRequest{Registry: "registry.example:5000", Repo: "team/app", Reference: "v1"}
	for _, tc := range []struct {
		name    string
		resets  int64 // streams reset before the node answers
		answers bool
		streams int64
	}{
		{"the first stream reset", 1, true, 2},
		{"every stream reset", 100, false, 3},
	} {
		var streams atomic.Int64
		p2p.Host(designated).SetStreamHandler(p2p.TagProtocolID, func(s network.Stream) {
			if streams.Add(1) <= tc.resets {
				_ = s.Reset()
				return
			}
			p2p.HandleTag(designated)(s)
		})
		ans, err := asker.AskTag(t.Context(), designated.ID(), req)
		if answered := err == nil && ans.Manifest.Digest == tags.m.Digest; answered != tc.answers || streams.Load() != tc.streams {
			t.Errorf("%s: answered %v (%v) over %d streams; want %v over %d", tc.name, answered, err, streams.Load(), tc.answers, tc.streams)
		}
	}
}

// TestOpenMeshResolvesNoTagsForPeers: without a cluster key no peer is
// authenticated, so no node spends its registry quota for one.
func TestOpenMeshResolvesNoTagsForPeers(t *testing.T) {
	t.Parallel()
	body := []byte(`{"schemaVersion":2,"manifests":[]}`)
	tags := &fixedTags{m: resolver.Manifest{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromBytes(body), Body: body}}
	c := p2ptest.Start(t, 2, p2ptest.Options{Open: true, Config: func(_ int, cfg *p2p.Config) { cfg.Tags = tags }})
	c.WaitMembers(t, 2, 30*time.Second)
	_, err := c.Nodes[0].AskTag(t.Context(), c.Nodes[1].ID(), resolver.ManifestRequest{Registry: "registry.example:5000", Repo: "team/app", Reference: "v1"})
	if !errdefs.IsNotFound(err) || tags.asked.Load() != 0 {
		t.Fatalf("open mesh: %v, source asked %d times; want NotFound and none", err, tags.asked.Load())
	}
}

// countingImages answers nothing and counts the questions.
type countingImages struct{ asked atomic.Int64 }

func (c *countingImages) ResolveImage(context.Context, string) (ocispec.Descriptor, error) {
	c.asked.Add(1)
	return ocispec.Descriptor{}, errdefs.ErrNotFound
}

// TestResolveImageAsksAFew: the mesh's image question goes to the
// ImagePeers first members in the tag's rendezvous order, never to all.
func TestResolveImageAsksAFew(t *testing.T) {
	t.Parallel()
	const nodes = 6
	srcs := make([]*countingImages, nodes)
	c := p2ptest.Start(t, nodes, p2ptest.Options{Config: func(i int, cfg *p2p.Config) {
		srcs[i] = &countingImages{}
		cfg.Images = srcs[i]
	}})
	c.WaitMembers(t, nodes, 60*time.Second)
	const name = "registry.example:5000/team/app:v1"
	if _, err := c.Nodes[0].ResolveImage(t.Context(), name); !errdefs.IsNotFound(err) {
		t.Fatalf("got %v, want NotFound", err)
	}
	others := slices.DeleteFunc(c.Nodes[0].TagDesignated(name), func(p peer.ID) bool { return p == c.Nodes[0].ID() })
	var want, got []int
	for i, n := range c.Nodes {
		if srcs[i].asked.Load() > 0 {
			got = append(got, i)
		}
		if slices.Contains(others[:3], n.ID()) {
			want = append(want, i)
		}
	}
	if !slices.Equal(got, want) || len(got) != 3 {
		t.Fatalf("asked nodes %v, want the first three in rendezvous order %v", got, want)
	}
}

// lateTags lets a node's tag source be set once its resolver exists.
type lateTags struct {
	res atomic.Pointer[resolver.Resolver]
}

func (l *lateTags) TagFor(ctx context.Context, req resolver.ManifestRequest) (resolver.TagAnswer, error) {
	r := l.res.Load()
	if r == nil {
		return resolver.TagAnswer{}, errdefs.ErrUnavailable
	}
	return r.TagFor(ctx, req)
}

// TestOneTagLookupPerCluster runs a resolver on every node of a mesh:
// four nodes resolving a tag at once cost the registry one look-up by tag,
// answered by the tag's designated node.
func TestOneTagLookupPerCluster(t *testing.T) {
	t.Parallel()
	const nodes = 4
	var mu sync.Mutex
	var byTag []string
	reg := registry.New()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/manifests/v1") && r.Method != http.MethodPut {
			mu.Lock()
			byTag = append(byTag, r.Method)
			mu.Unlock()
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	body := []byte(`{"schemaVersion":2,"mediaType":"` + ocispec.MediaTypeImageIndex + `","manifests":[]}`)
	putManifest(t, srv.URL+"/v2/team/app/manifests/v1", body)

	late := make([]*lateTags, nodes)
	c := p2ptest.Start(t, nodes, p2ptest.Options{Config: func(i int, cfg *p2p.Config) {
		late[i] = &lateTags{}
		cfg.Tags = late[i]
	}})
	c.WaitMembers(t, nodes, 60*time.Second)
	ress := make([]*resolver.Resolver, nodes)
	for i, n := range c.Nodes {
		client, err := upstream.New(upstream.Config{Insecure: []string{host}})
		if err != nil {
			t.Fatal(err)
		}
		// Logged: why a node did not take the designated node's answer.
		res, err := resolver.New(store.NewMemory(), client, resolver.Sources{Router: n.Router()},
			resolver.Config{Registries: []string{host}, TagTTL: time.Minute, Logger: c.Logger().With("node", i, "component", "resolver")}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(res.Close)
		late[i].res.Store(res)
		ress[i] = res
	}
	var wg sync.WaitGroup
	for _, res := range ress {
		wg.Go(func() {
			m, err := res.Manifest(t.Context(), resolver.ManifestRequest{Registry: host, Repo: "team/app", Reference: "v1"})
			if err != nil || m.Digest != digest.FromBytes(body) {
				t.Errorf("got %s, %v", m.Digest, err)
			}
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(byTag, []string{http.MethodHead}) {
		t.Fatalf("the registry got %v by tag for %d nodes' look-ups, want one HEAD", byTag, nodes)
	}
}

func putManifest(t *testing.T, url string, body []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", ocispec.MediaTypeImageIndex)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("put manifest: %d", resp.StatusCode)
	}
}
