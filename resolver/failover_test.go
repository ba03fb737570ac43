package resolver_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoal-dev/shoal/resolver"
	"github.com/shoal-dev/shoal/resolver/upstream"
	"github.com/shoal-dev/shoal/store"
)

// chainedRegistry is the registry a chainFixture fetches through: its
// hosts.toml lists deadHost, which takes the dial timeout (deadDial
// unless told) to fail every connection, before the fixture's registry.
const (
	chainedRegistry = "registry.test"
	deadHost        = "dead.test:5000"
	deadDial        = 500 * time.Millisecond
	// failoverDial is the dead host's dial time in the tests of a
	// peer that fetches through the chain: the most a chain gives a host
	// before the next (see upstream.Client.FailoverTime), so that a peer's
	// answer can come 1 s either side of a limit: a loaded run under
	// -race runs timers a few hundred ms late.
	failoverDial = 2 * time.Second
)

// chainHosts is a hosts.toml chain for chainedRegistry alone.
type chainHosts []upstream.Endpoint

func (c chainHosts) Chain(registry string) (upstream.Chain, error) {
	if registry != chainedRegistry {
		return upstream.Chain{}, errors.New("no hosts.toml")
	}
	return upstream.Chain{Endpoints: c, Source: "test", Gen: 1}, nil
}

// newChainFixture is newFixture with chainedRegistry reached through
// deadHost, then the fixture's registry. Dials to deadHost are counted
// in deadDials, and each fails after dead.
func newChainFixture(t *testing.T, cfg resolver.Config, src resolver.Sources, deadDials *atomic.Int64, dead time.Duration) *fixture {
	t.Helper()
	up := newUpstream(t)
	hosts := chainHosts{
		{Scheme: "http", Host: deadHost, Path: "/v2", Pull: true, Resolve: true},
		{Scheme: "http", Host: up.host, Path: "/v2", Pull: true, Resolve: true},
	}
	var d net.Dialer
	client, err := upstream.New(upstream.Config{
		Hosts:       hosts,
		DialTimeout: dead,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if addr != deadHost {
				return d.DialContext(ctx, network, addr)
			}
			deadDials.Add(1)
			select {
			case <-time.After(dead):
			case <-ctx.Done():
			}
			return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("i/o timeout")}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	st := store.NewMemory()
	cfg.Registries = append(cfg.Registries, chainedRegistry)
	res, err := resolver.New(st, client, src, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(res.Close)
	return &fixture{res: res, store: st, up: up, registry: chainedRegistry}
}

// delayBlobs makes the fixture's registry answer blob GETs after wait.
func delayBlobs(f *fixture, wait time.Duration) {
	f.up.hook = func(http.ResponseWriter, *http.Request, []byte) bool {
		time.Sleep(wait)
		return false
	}
}

// TestNextHostGetsTheWholeStallTimeout: the first host of the registry's
// chain cannot be reached and takes most of StallTimeout to fail; the
// next answers within StallTimeout of being asked. The download waits
// for it rather than counting the dead host's time as the registry's
// silence, which would cut the answer and ask the registry again.
func TestNextHostGetsTheWholeStallTimeout(t *testing.T) {
	t.Parallel()
	var dials atomic.Int64
	// The dead host and the live one take 6 × deadDial each: 12 in all,
	// over StallTimeout (10), and each is 4 × deadDial (2 s) within it on
	// its own. The margins are wide because a loaded run under -race
	// runs timers late: when the dead host's dial outlasted StallTimeout
	// the download was cut before it moved on, and the dead host was
	// dialled a second time. MissTimeout is past the first answer (12)
	// with as wide a margin: the test is of StallTimeout, not of
	// MissTimeout.
	f := newChainFixture(t, resolver.Config{StallTimeout: 10 * deadDial, MissTimeout: 16 * deadDial}, resolver.Sources{}, &dials, 6*deadDial)
	body := randomBytes(t, 1<<20)
	d := f.up.push(t, "team/app", body)
	delayBlobs(f, 6*deadDial)

	wantBlob(t, f, d, body)
	if n := f.up.blobGets.Load(); n != 1 {
		t.Fatalf("the registry's live host was asked %d times, want once", n)
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("the dead host was dialled %d times, want once", n)
	}
}

// TestDesignatedPeerGetsTheChainsFailoverTime: the designated peer
// fetches through the same chain, and answers only once its own dead
// host failed: after StallTimeout, within StallTimeout and the chain's
// failover time. This node waits for it, and the registry sends the blob
// once for the cluster, not a second time to this node.
func TestDesignatedPeerGetsTheChainsFailoverTime(t *testing.T) {
	t.Parallel()
	body := randomBytes(t, 1<<20)
	d := digest.FromBytes(body)
	router := &designatingRouter{
		// 1.5 × failoverDial: past StallTimeout (failoverDial), and
		// within it and the failover time (one more failoverDial), by
		// 1 s each way.
		fakeRouter: &fakeRouter{peers: map[string]fakePeer{"designated": {data: body, answerAfter: 3 * failoverDial / 2}}},
		designated: []string{"designated"},
	}
	var dials atomic.Int64
	f := newChainFixture(t, resolver.Config{StallTimeout: failoverDial, PeerStall: -1}, resolver.Sources{Router: router}, &dials, failoverDial)
	f.up.push(t, "team/app", body)

	wantBlob(t, f, d, body)
	wantNoRegistryGets(t, f)
	router.mu.Lock()
	defer router.mu.Unlock()
	if want := []string{"designated@0 " + chainedRegistry + "/team/app"}; !slices.Equal(router.through, want) {
		t.Fatalf("fetched through %v, want %v", router.through, want)
	}
	if !strings.HasPrefix(router.fetches[0], "designated@") || len(router.fetches) != 1 {
		t.Fatalf("fetches %v, want the designated peer's alone", router.fetches)
	}
}

// TestTagDesignatedNodeGetsTheChainsFailoverTime: the tag's designated
// node asks the registry through the same chain, and answers only once
// its own dead host failed: after TagPeerTimeout, within TagPeerTimeout
// and the chain's failover time. This node waits for it and does not ask
// the registry for the tag a second time.
func TestTagDesignatedNodeGetsTheChainsFailoverTime(t *testing.T) {
	t.Parallel()
	var answer resolver.Manifest
	router := &tagRouter{designated: "designated", ask: func(ctx context.Context, _ resolver.ManifestRequest) (resolver.TagAnswer, error) {
		// 1.5 × failoverDial: past TagPeerTimeout (failoverDial), and
		// within it and the failover time (one more failoverDial), by
		// 1 s each way.
		select {
		case <-time.After(3 * failoverDial / 2):
		case <-ctx.Done():
			return resolver.TagAnswer{}, ctx.Err()
		}
		return resolver.TagAnswer{Manifest: answer}, nil
	}}
	var dials atomic.Int64
	f := newChainFixture(t, resolver.Config{TagTTL: time.Minute, TagPeerTimeout: failoverDial}, resolver.Sources{Router: router}, &dials, failoverDial)
	m, _ := imageManifest(t, f, "team/app", ocispec.MediaTypeImageManifest, randomBytes(t, 64))
	d := f.up.pushManifest(t, "team/app", "v1", m.Body, m.MediaType)
	answer = resolver.Manifest{Digest: d, Body: m.Body, MediaType: m.MediaType}

	got, err := f.res.Manifest(t.Context(), resolver.ManifestRequest{Registry: chainedRegistry, Repo: "team/app", Reference: "v1"})
	if err != nil || got.Digest != d {
		t.Fatalf("look-up: %s, %v; want %s", got.Digest, err, d)
	}
	if got.Source != resolver.SourcePeer {
		t.Errorf("answered from %s, want the designated peer", got.Source)
	}
	if reqs := f.up.manifestRequests(); byTag(reqs, "v1") != 0 {
		t.Errorf("the registry was asked for the tag: %v", reqs)
	}
}
