package resolver_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoal-dev/shoal/p2p/swarm"
	"github.com/shoal-dev/shoal/resolver"
)

// designatingRouter is a fakeRouter that also names designated peers.
type designatingRouter struct {
	*fakeRouter
	designated []string
	through    []string // "peer@offset registry/repo"
	groups     map[digest.Digest][]digest.Digest
}

func (d *designatingRouter) Designated(dgst digest.Digest, group []digest.Digest) ([]string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.groups == nil {
		d.groups = map[digest.Digest][]digest.Digest{}
	}
	d.groups[dgst] = group
	return d.designated, len(d.designated) == 0
}

func (d *designatingRouter) FetchThrough(ctx context.Context, p string, dgst digest.Digest, off int64, registry, repo string) (io.ReadCloser, int64, error) {
	d.mu.Lock()
	d.through = append(d.through, fmt.Sprintf("%s@%d %s/%s", p, off, registry, repo))
	d.mu.Unlock()
	return d.Fetch(ctx, p, dgst, off)
}

func TestDesignatedPeerFetchesForTheCluster(t *testing.T) {
	t.Parallel()
	body := randomBytes(t, 1<<20)
	d := digest.FromBytes(body)
	router := &designatingRouter{
		fakeRouter: &fakeRouter{peers: map[string]fakePeer{"designated": {data: body}, "holder": {data: body}}, order: []string{"holder"}},
		designated: []string{"designated"},
	}
	f := newFixture(t, resolver.Config{}, resolver.Sources{Router: router})

	// A request from this node's containerd goes to the designated peer
	// first, naming where the blob comes from.
	b, err := f.res.Blob(t.Context(), resolver.BlobRequest{Registry: "registry.example", Repo: "team/app", Digest: d})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := readAll(t.Context(), t, b, 0); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("read %d bytes: %v", len(got), err)
	}
	if want := []string{"designated@0 registry.example/team/app"}; !slices.Equal(router.through, want) {
		t.Fatalf("fetched through %v, want %v", router.through, want)
	}
	if n := f.up.blobGets.Load(); n != 0 {
		t.Fatalf("registry asked %d times", n)
	}

	// Asked by a peer to fetch for the cluster, this node never goes back
	// to a designated peer (that could be the asker): holders, then the
	// registry.
	other := randomBytes(t, 1<<20)
	od := digest.FromBytes(other)
	router.peers["holder"] = fakePeer{data: other}
	router.peers["designated"] = fakePeer{data: other}
	blob, err := f.res.PullFor(t.Context(), od, "registry.example", "team/app", swarm.Asker{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(other))
	if n, err := blob.ReadAt(got, 0); n != len(other) || !bytes.Equal(got, other) {
		t.Fatalf("PullFor read %d bytes: %v", n, err)
	}
	if len(router.through) != 1 {
		t.Fatalf("PullFor fetched through a designated peer: %v", router.through)
	}
	router.mu.Lock()
	defer router.mu.Unlock()
	if last := router.fetches[len(router.fetches)-1]; last != "holder@0" {
		t.Fatalf("PullFor fetched %v, want the holder", router.fetches)
	}
}

// TestPrefetchNamesTheImage: the designated fetchers of a prefetched blob
// are chosen knowing the image's other blobs, the largest first, so that
// its layers' first copies go to different nodes.
func TestPrefetchNamesTheImage(t *testing.T) {
	t.Parallel()
	router := &designatingRouter{fakeRouter: &fakeRouter{}}
	f := newFixture(t, resolver.Config{}, resolver.Sources{Router: router})
	m, ds := imageManifest(t, f, "team/app", ocispec.MediaTypeImageManifest, randomBytes(t, 100), randomBytes(t, 2000), randomBytes(t, 3000))
	if n := f.res.Prefetch(t.Context(), resolver.ManifestRequest{Registry: f.up.host, Repo: "team/app", Reference: "v1"}, m); n != 3 {
		t.Fatalf("prefetch started %d downloads, want 3", n)
	}
	waitStored(t, f, ds)
	router.mu.Lock()
	defer router.mu.Unlock()
	want := []digest.Digest{ds[2], ds[1], ds[0]}
	for _, d := range ds {
		if !slices.Equal(router.groups[d], want) {
			t.Fatalf("blob %s designated within %v, want the image's blobs, the largest first: %v", d, router.groups[d], want)
		}
	}
}

// TestBusyDesignatedPeerIsNotPassedOver: when the first designated peer is
// only out of upload slots, the second is not asked (it would fetch the blob
// from the registry a second time); the peers already receiving it are.
func TestBusyDesignatedPeerIsNotPassedOver(t *testing.T) {
	t.Parallel()
	body := randomBytes(t, 1<<20)
	d := digest.FromBytes(body)
	router := &designatingRouter{
		fakeRouter: &fakeRouter{peers: map[string]fakePeer{"first": {data: body, busy: 1}, "second": {data: body}, "receiver": {data: body}}, order: []string{"receiver"}},
		designated: []string{"first", "second"},
	}
	f := newFixture(t, resolver.Config{}, resolver.Sources{Router: router})
	b, err := f.res.Blob(t.Context(), resolver.BlobRequest{Registry: "registry.example", Repo: "team/app", Digest: d})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := readAll(t.Context(), t, b, 0); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("read %d bytes: %v", len(got), err)
	}
	f.res.Close()
	router.mu.Lock()
	defer router.mu.Unlock()
	if want := []string{"first@0 registry.example/team/app"}; !slices.Equal(router.through, want) {
		t.Fatalf("fetched through %v, want only the first designated peer %v", router.through, want)
	}
	if want := []string{"first@0", "receiver@0"}; !slices.Equal(router.fetches, want) {
		t.Fatalf("fetches %v, want %v", router.fetches, want)
	}
}

// TestNextFetcherTakesWhatPeersHold: the designated peer dies after
// sending the first MiB, so this node, ranked next, fetches the blob for
// the cluster. A peer still receiving the blob holds 3 MiB of it: this node
// takes them without waiting for that peer's next byte (its source died
// too, or it waits for this node: both would stall until StallTimeout) and
// asks the registry for the last MiB only.
func TestNextFetcherTakesWhatPeersHold(t *testing.T) {
	t.Parallel()
	body := randomBytes(t, 4<<20)
	router := &rangingRouter{
		designatingRouter: &designatingRouter{
			fakeRouter: &fakeRouter{order: []string{"receiving"}, peers: map[string]fakePeer{
				"first": {data: body, cutAt: 1 << 20}, "receiving": {data: body, stallAt: 3 << 20},
			}},
			designated: []string{"first"},
		},
		rpeers: map[string]rangePeer{"receiving": {data: body, have: 3 << 20, stuck: true}},
		served: map[string]int64{},
	}
	f := newFixture(t, resolver.Config{StallTimeout: 20 * time.Second, PieceSize: -1}, resolver.Sources{Router: router})
	d := f.up.push(t, "team/app", body)
	b, err := f.res.Blob(t.Context(), resolver.BlobRequest{Registry: f.up.host, Repo: "team/app", Digest: d, Size: int64(len(body))})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := readAll(t.Context(), t, b, 0); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("read %d bytes: %v", len(got), err)
	}
	if want := []string{"receiving@1048576+0 wait=false through=false"}; !slices.Equal(router.askedOf("receiving"), want) {
		t.Errorf("asked the receiving peer %v, want %v", router.askedOf("receiving"), want)
	}
	if n := f.up.blobGets.Load(); n != 1 {
		t.Errorf("registry asked %d times, want once", n)
	}
	if rg, _ := f.up.ranges.Load(d); rg != "bytes=3145728-4194303" {
		t.Errorf("registry asked for %v, want bytes=3145728-4194303", rg)
	}
}

// TestWaitsPointUpTheRanking: a download asks a peer still receiving the
// blob to wait for bytes it lacks only when that peer ranks above this node
// for the blob. A peer ranked below sends the bytes it held when asked: it
// may be waiting on this node, and the two would stall each other.
func TestWaitsPointUpTheRanking(t *testing.T) {
	t.Parallel()
	body := randomBytes(t, 4<<20)
	router := &rangingRouter{
		designatingRouter: &designatingRouter{
			fakeRouter: &fakeRouter{order: []string{"below", "above"}, peers: map[string]fakePeer{
				"first": {data: body, busy: 1 << 30}, "below": {data: body}, "above": {data: body},
			}},
			designated: []string{"first", "above"},
		},
		rpeers: map[string]rangePeer{"below": {data: body, have: 3 << 20, stuck: true}, "above": {data: body, have: 2 << 20}},
		served: map[string]int64{},
	}
	readFromPeersOnly(t, resolver.Config{PieceSize: -1, DesignatedPeers: 1}, router, body)
	if got, want := router.askedOf("below"), []string{"below@0+0 wait=false through=false"}; !slices.Equal(got, want) {
		t.Errorf("asked the peer ranked below %v, want %v", got, want)
	}
	if got, want := router.askedOf("above"), []string{"above@3145728+0 wait=true through=false"}; !slices.Equal(got, want) {
		t.Errorf("asked the peer ranked above %v, want %v", got, want)
	}
}

// TestCopyThatStopsGrowingIsLeft: a peer ranked above this node, still
// receiving the blob, sends what it holds and then nothing: its own source
// died. After ArrivalStall, far short of StallTimeout, the download asks it
// once, without waiting, whether it leads now (a byte at where the stream
// stopped; it does not, see TestRelayThatTookOverIsReadAgain), and takes
// the rest from another peer, from where the stream stopped.
func TestCopyThatStopsGrowingIsLeft(t *testing.T) {
	t.Parallel()
	body := randomBytes(t, 4<<20)
	router := &rangingRouter{
		designatingRouter: &designatingRouter{
			fakeRouter: &fakeRouter{order: []string{"stuck", "whole"}, peers: map[string]fakePeer{
				"first": {data: body, busy: 1 << 30}, "stuck": {data: body, stallAt: 2 << 20}, "whole": {data: body},
			}},
			designated: []string{"first", "stuck"},
		},
		rpeers: map[string]rangePeer{"stuck": {data: body, have: 2 << 20, stuck: true}, "whole": {data: body}},
		served: map[string]int64{},
	}
	f := newFixture(t, resolver.Config{PieceSize: -1, DesignatedPeers: 1, StallTimeout: 10 * time.Minute, ArrivalStall: 100 * time.Millisecond}, resolver.Sources{Router: router})
	// Bounded, so that a download waiting out StallTimeout fails the
	// test rather than hanging it.
	pullPushed(t, f, body)
	if got, want := router.askedOf("stuck"), []string{"stuck@0+0 wait=true through=false", "stuck@2097152+1 wait=false through=false"}; !slices.Equal(got, want) {
		t.Errorf("asked the stuck peer %v, want %v", got, want)
	}
	if got, want := router.askedOf("whole"), []string{"whole@2097152+0 wait=false through=false"}; !slices.Equal(got, want) {
		t.Errorf("asked the peer holding it whole %v, want %v", got, want)
	}
	if n := f.up.blobGets.Load(); n != 0 {
		t.Errorf("registry asked %d times, want 0", n)
	}
}

// TestUnreachableRegistryLeavesTheRestToPeers: this node fetches the blob
// for the cluster, the registry refuses connections (it is down for
// containerd too), and the one peer that has the blob holds only its first
// MiB, then gets the rest. The download waits for that peer rather than
// fail: a miss would send containerd to the same dead registry.
func TestUnreachableRegistryLeavesTheRestToPeers(t *testing.T) {
	t.Parallel()
	body := randomBytes(t, 4<<20)
	d := digest.FromBytes(body)
	router := &rangingRouter{
		designatingRouter: &designatingRouter{fakeRouter: &fakeRouter{order: []string{"receiving"}, peers: map[string]fakePeer{"receiving": {data: body}}}},
		rpeers:            map[string]rangePeer{"receiving": {data: body, have: 1 << 20}},
		served:            map[string]int64{},
	}
	f := newFixture(t, resolver.Config{PieceSize: -1}, resolver.Sources{Router: router})
	f.up.srv.Close() // connection refused from now on
	b, err := f.res.Blob(t.Context(), resolver.BlobRequest{Registry: f.up.host, Repo: "team/app", Digest: d, Size: int64(len(body))})
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(500*time.Millisecond, func() {
		router.mu.Lock()
		defer router.mu.Unlock()
		rp := router.rpeers["receiving"]
		rp.have = 0 // whole
		router.rpeers["receiving"] = rp
	})
	if got, err := readAll(t.Context(), t, b, 0); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("read %d bytes of %d: %v", len(got), len(body), err)
	}
}

// TestLostPeerHandsTheBlobOn: the peer streaming the blob goes silent
// mid-blob. The rest passes to the next in the blob's ranking, as the lost
// peer's departure would pass it: the designated peer ranked above this
// node is asked to wait for the bytes it does not hold yet, since it fetches
// them for the cluster. When it sends them the registry sends this node
// nothing; when it is stuck too (waiting on the same silent peer, say) it is
// left after twice PeerStall and this node leads, asking the registry once
// for the rest, long before StallTimeout.
func TestLostPeerHandsTheBlobOn(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name          string
		stuck         bool
		registryGets  int64
		designatedGot string
	}{
		{name: "the next in the ranking sends the rest", designatedGot: "relay@2097152+0 wait=true through=true"},
		{name: "the next is stuck too", stuck: true, registryGets: 1, designatedGot: "relay@2097152+0 wait=true through=true"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			body := randomBytes(t, 4<<20)
			router := &rangingRouter{
				designatingRouter: &designatingRouter{
					fakeRouter: &fakeRouter{order: []string{"holder"}, peers: map[string]fakePeer{
						"relay":  {data: body, busy: 1},
						"holder": {data: body, stallAt: 2 << 20},
					}},
					designated: []string{"relay"},
				},
				rpeers: map[string]rangePeer{"relay": {data: body, have: 1 << 20, stuck: tc.stuck}},
				served: map[string]int64{},
			}
			f := newFixture(t, resolver.Config{PieceSize: -1, DesignatedPeers: 1, StallTimeout: 10 * time.Minute, ArrivalStall: 10 * time.Minute, PeerStall: 100 * time.Millisecond}, resolver.Sources{Router: router})
			pullPushed(t, f, body)
			if got := router.askedOf("relay"); !slices.Contains(got, tc.designatedGot) {
				t.Errorf("asked the designated peer %v, want %q once the holder went silent", got, tc.designatedGot)
			}
			if n := f.up.blobGets.Load(); n != tc.registryGets {
				t.Errorf("registry asked %d times, want %d", n, tc.registryGets)
			}
		})
	}
}

// TestBusyDesignatedBehindIsLeft: the holder a node read from goes silent
// halfway, and the designated peer next in the ranking answers busy,
// holding less than the node: it read from the lost holder too. The node
// waits twice --peer-stall for it to pull ahead, then leads, and the
// registry sends the rest; waiting for a busy peer otherwise lasts half
// of BusyRetryFor, here longer than the pull may take.
func TestBusyDesignatedBehindIsLeft(t *testing.T) {
	t.Parallel()
	body := randomBytes(t, 4<<20)
	router := &rangingRouter{
		designatingRouter: &designatingRouter{
			fakeRouter: &fakeRouter{order: []string{"holder"}, peers: map[string]fakePeer{
				"relay":  {data: body, busy: 1 << 20},
				"holder": {data: body, stallAt: 2 << 20},
			}},
			designated: []string{"relay"},
		},
		rpeers: map[string]rangePeer{"relay": {data: body, have: 1 << 20, busySays: true}},
		served: map[string]int64{},
	}
	f := newFixture(t, resolver.Config{PieceSize: -1, DesignatedPeers: 1, StallTimeout: 10 * time.Minute, ArrivalStall: 10 * time.Minute,
		PeerStall: 100 * time.Millisecond, BusyRetryFor: 10 * time.Minute}, resolver.Sources{Router: router})
	pullPushed(t, f, body)
	if got := router.askedOf("relay"); len(got) == 0 {
		t.Error("the designated peer was not asked once the holder went silent")
	}
	if n := f.up.blobGets.Load(); n != 1 {
		t.Errorf("registry asked %d times, want 1", n)
	}
}

// TestSlowPeerLeavesTheRestToThisNode: the holder a node read from drops
// to a thirty-second of its rate halfway (its link throttled), and the
// designated peer next in the ranking holds less than the node: it reads
// from the slow holder too, or from a relay of it, and no one tells it
// the holder is slow. Once the node gave the holder up as slow, the
// designated peer is asked only for the bytes it holds, not to wait for
// the rest, and the node leads: the registry sends the rest once. A
// silent holder is handed on as before (see TestLostPeerHandsTheBlobOn).
func TestSlowPeerLeavesTheRestToThisNode(t *testing.T) {
	t.Parallel()
	body := randomBytes(t, 4<<20)
	router := &rangingRouter{
		designatingRouter: &designatingRouter{
			fakeRouter: &fakeRouter{order: []string{"holder"}, peers: map[string]fakePeer{
				"relay":  {data: body, busy: 1},
				"holder": {data: body, dropAt: 2 << 20},
			}},
			designated: []string{"relay"},
		},
		rpeers: map[string]rangePeer{"relay": {data: body, have: 1 << 20, stuck: true}},
		served: map[string]int64{},
	}
	// PeerStall is wide of the holder's 10 ms gaps: a loaded run under
	// -race pauses a stream for hundreds of ms, and at 100 ms the holder
	// was found silent after its first 32 KiB, not slow.
	f := newFixture(t, resolver.Config{PieceSize: -1, DesignatedPeers: 1, StallTimeout: 10 * time.Minute, ArrivalStall: 10 * time.Minute,
		PeerStall: time.Second, PeerSlowWindow: 300 * time.Millisecond}, resolver.Sources{Router: router})
	pullPushed(t, f, body)
	asked := router.askedOf("relay")
	if slices.ContainsFunc(asked, func(a string) bool { return strings.Contains(a, "wait=true") && !strings.HasPrefix(a, "relay@0+") }) ||
		!slices.ContainsFunc(asked, func(a string) bool { return strings.Contains(a, "+0 wait=false through=true") }) {
		t.Errorf("asked the designated peer %v once the holder was slow, want it asked for what it holds only", asked)
	}
	if n := f.up.blobGets.Load(); n != 1 {
		t.Errorf("registry asked %d times, want 1", n)
	}
}

// pullPushed pushes body to the fixture's registry and pulls it whole as
// this node's containerd does, its size known, within 30 s; it fails t
// unless the bytes match.
func pullPushed(t *testing.T, f *fixture, body []byte) {
	t.Helper()
	d := f.up.push(t, "team/app", body)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	b, err := f.res.Blob(ctx, resolver.BlobRequest{Registry: f.up.host, Repo: "team/app", Digest: d, Size: int64(len(body))})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := readAll(ctx, t, b, 0); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("read %d bytes: %v", len(got), err)
	}
}
