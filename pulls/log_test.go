package pulls

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoal-dev/shoal/resolver"
)

// clock is a settable time for the log.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }
func newTestLog(keep int) (*Log, *clock) {
	c := &clock{t: time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)}
	l := New(keep)
	l.now = c.now
	return l, c
}

func blobDigest(i int) digest.Digest { return digest.FromString(fmt.Sprint("blob", i)) }

// image returns an image manifest of a config and n layers of 1000 bytes.
func image(t *testing.T, n int) resolver.Manifest {
	t.Helper()
	m := ocispec.Manifest{Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: blobDigest(0), Size: 100}}
	for i := 1; i <= n; i++ {
		m.Layers = append(m.Layers, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: blobDigest(i), Size: 1000})
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return resolver.Manifest{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(b), Body: b}
}

func names(p string) string { return map[string]string{"12D3peerA": "node2", "12D3peerB": "node3"}[p] }

func TestPullRecord(t *testing.T) {
	t.Parallel()
	l, c := newTestLog(10)
	req := resolver.ManifestRequest{Registry: "reg:5000", Repo: "app", Reference: "v1"}
	m := image(t, 2)
	l.Tagged(req, m)
	l.Fetched(resolver.ManifestRequest{Registry: "reg:5000", Repo: "app", Reference: m.Digest.String()}, m)

	// The config: from the registry at once.
	l.Started(blobDigest(0), 100)
	l.Trying(blobDigest(0), resolver.SourceUpstream, "")
	l.Received(blobDigest(0), resolver.SourceUpstream, "", 100)
	l.Ended(blobDigest(0), nil)
	// Layer 1: peer A stalls after 600 bytes, the registry sends the rest.
	l.Started(blobDigest(1), 1000)
	l.Trying(blobDigest(1), resolver.SourcePeer, "12D3peerA")
	l.Received(blobDigest(1), resolver.SourcePeer, "12D3peerA", 600)
	c.advance(500 * time.Millisecond)
	l.FellBack(blobDigest(1), resolver.SourcePeer, "12D3peerA", resolver.ReasonStalled, errors.New("no byte"))
	l.Trying(blobDigest(1), resolver.SourceUpstream, "")
	l.Received(blobDigest(1), resolver.SourceUpstream, "", 400)
	// Layer 2: peer B, with a helper's bytes from A; still running.
	l.Started(blobDigest(2), 1000)
	l.Trying(blobDigest(2), resolver.SourcePeer, "12D3peerB")
	l.Received(blobDigest(2), resolver.SourcePeer, "12D3peerB", 300)
	l.Received(blobDigest(2), resolver.SourcePeer, "12D3peerA", 200)
	c.advance(time.Second)
	l.Ended(blobDigest(1), nil)

	if got := l.Transfers(names); len(got) != 1 || got[0].Digest != blobDigest(2) || got[0].Bytes != 500 || got[0].Name != "node3" || !got[0].Waiting {
		t.Errorf("transfers: %+v, want layer 2 with 500 bytes, asking node3, waiting", got)
	}
	l.FellBack(blobDigest(2), resolver.SourcePeer, "12D3peerB", resolver.ReasonBusy, nil)
	if got := l.Transfers(names); len(got) != 1 || got[0].Name != "node3" || got[0].Reason != resolver.ReasonBusy || !got[0].Waiting {
		t.Errorf("transfers: %+v, want layer 2 waiting on node3, busy", got)
	}
	p, ok := l.Latest("reg:5000/app:v1", names)
	if !ok {
		t.Fatal("no record of reg:5000/app:v1")
	}
	if p.Image != "reg:5000/app:v1" || !p.Running || len(p.Blobs) != 3 {
		t.Fatalf("record %+v", p)
	}
	l1 := p.Blobs[1]
	if l1.State != StateStored || len(l1.Fallbacks) != 1 || l1.Fallbacks[0].Reason != resolver.ReasonStalled || l1.Fallbacks[0].LostMS != 500 || l1.Fallbacks[0].Name != "node2" {
		t.Errorf("layer 1: %+v", l1)
	}
	l.Received(blobDigest(2), resolver.SourcePeer, "12D3peerB", 500)
	l.Ended(blobDigest(2), nil)
	p, _ = l.Latest("reg:5000/app:v1", names)
	want := map[string]int64{"upstream": 500, "peer node2": 800, "peer node3": 800}
	got := map[string]int64{}
	for _, s := range p.Totals {
		k := s.Source
		if s.Name != "" {
			k += " " + s.Name
		}
		got[k] = s.Bytes
	}
	if fmt.Sprint(got) != fmt.Sprint(want) || p.Running || p.Falls != 2 || p.LostMS != 1500 {
		t.Errorf("totals %v, running %v, %d fallbacks, %d ms lost; want %v, done, 2, 1500", got, p.Running, p.Falls, p.LostMS, want)
	}
}

func TestLocalBlobsAndClaims(t *testing.T) {
	t.Parallel()
	l, c := newTestLog(10)
	// This node fetched layer 1 for a peer just before its own pull.
	l.Started(blobDigest(1), 1000)
	l.Trying(blobDigest(1), resolver.SourceUpstream, "")
	l.Received(blobDigest(1), resolver.SourceUpstream, "", 1000)
	l.Ended(blobDigest(1), nil)
	c.advance(time.Second)
	m := image(t, 2)
	l.Fetched(resolver.ManifestRequest{Registry: "docker.io", Repo: "library/alpine", Reference: "latest"}, m)
	// containerd reads layer 1 from the store: the download's record
	// stands; layer 2 is the node's own copy; the config never asked.
	l.Received(blobDigest(1), resolver.SourceStore, "", 1000)
	l.Received(blobDigest(2), resolver.SourceContainerd, "", 1000)
	p, ok := l.Latest("alpine", nil)
	if !ok {
		t.Fatal("alpine not found by its short name")
	}
	states := []string{p.Blobs[0].State, p.Blobs[1].State, p.Blobs[2].State}
	if fmt.Sprint(states) != fmt.Sprint([]string{StateHeld, StateStored, StateLocal}) {
		t.Errorf("states %v", states)
	}
	if s := p.Blobs[1].Sources; len(s) != 1 || s[0].Source != "upstream" || s[0].Bytes != 1000 {
		t.Errorf("layer 1 sources %+v, want the registry's 1000 bytes alone", s)
	}
	if s := p.Blobs[2].Sources; len(s) != 1 || s[0].Source != "containerd" || s[0].Bytes != 1000 {
		t.Errorf("layer 2 sources %+v", s)
	}
	// A download long over is not claimed by a later pull.
	c.advance(time.Hour)
	l.Fetched(resolver.ManifestRequest{Registry: "docker.io", Repo: "library/alpine", Reference: "latest"}, m)
	p, _ = l.Latest("docker.io/library/alpine:latest", nil)
	if p.Blobs[1].State != StateHeld || p.ID != 2 {
		t.Errorf("second pull: %+v", p)
	}
}

func TestBounded(t *testing.T) {
	t.Parallel()
	l, _ := newTestLog(3)
	m := image(t, 1)
	for i := range 10 {
		l.Fetched(resolver.ManifestRequest{Registry: "r", Repo: fmt.Sprint("app", i), Reference: "v1"}, m)
	}
	if got := l.Pulls(nil); len(got) != 3 || got[0].Image != "r/app9:v1" {
		t.Errorf("kept %d pulls, newest %q; want 3, r/app9:v1", len(got), got[0].Image)
	}
	l.Started(blobDigest(1), 1000)
	for range maxFallbacksPerBlob + 5 {
		l.FellBack(blobDigest(1), resolver.SourcePeer, "p", resolver.ReasonBusy, nil)
	}
	for i := range maxSourcesPerBlob + 5 {
		l.Received(blobDigest(1), resolver.SourcePeer, fmt.Sprint("p", i), 1)
	}
	b := l.Pulls(nil)[0].Blobs[1]
	if len(b.Fallbacks) != maxFallbacksPerBlob || b.MoreFallbacks != 5 || len(b.Sources) != maxSourcesPerBlob {
		t.Errorf("%d fallbacks (+%d), %d sources", len(b.Fallbacks), b.MoreFallbacks, len(b.Sources))
	}
	for i := range maxBlobs + 10 {
		l.Started(blobDigest(100+i), 1)
	}
	if len(l.blobs) != maxBlobs || len(l.order) != maxBlobs {
		t.Errorf("%d blobs known, want %d", len(l.blobs), maxBlobs)
	}
}

func TestIndexNamesItsManifests(t *testing.T) {
	t.Parallel()
	l, _ := newTestLog(10)
	m := image(t, 1)
	idx, _ := json.Marshal(ocispec.Index{Manifests: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageManifest, Digest: m.Digest, Size: int64(len(m.Body))}}})
	im := resolver.Manifest{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromBytes(idx), Body: idx}
	req := resolver.ManifestRequest{Registry: "docker.io", Repo: "library/busybox", Reference: "1.36"}
	l.Tagged(req, im)
	req.Reference = im.Digest.String()
	l.Fetched(req, im)
	req.Reference = m.Digest.String()
	l.Fetched(req, m)
	if _, ok := l.Latest("busybox:1.36", nil); !ok {
		t.Errorf("the platform manifest's pull is not found by the index's tag: %+v", l.Pulls(nil))
	}
}

// TestDownloadStartedAgain: a pull's blob whose download failed and was
// started again keeps one record, with the bytes of both attempts.
func TestDownloadStartedAgain(t *testing.T) {
	t.Parallel()
	l, c := newTestLog(10)
	l.Fetched(resolver.ManifestRequest{Registry: "r", Repo: "app", Reference: "v1"}, image(t, 1))
	l.Started(blobDigest(1), 1000)
	l.Received(blobDigest(1), resolver.SourcePeer, "a", 400)
	l.Ended(blobDigest(1), errors.New("cut"))
	c.advance(time.Second)
	l.Started(blobDigest(1), 1000)
	l.Received(blobDigest(1), resolver.SourceUpstream, "", 1000)
	l.Ended(blobDigest(1), nil)
	b := l.Pulls(nil)[0].Blobs[1]
	if b.State != StateStored || len(b.Sources) != 2 || b.Sources[0].Bytes+b.Sources[1].Bytes != 1400 {
		t.Errorf("blob %+v, want stored with the 400 + 1000 bytes of both attempts", b)
	}
}

// TestEmptyListsAreLists: the page and scripts read lists, never null.
func TestEmptyListsAreLists(t *testing.T) {
	t.Parallel()
	l, _ := newTestLog(1)
	l.Fetched(resolver.ManifestRequest{Registry: "r", Repo: "app", Reference: "v1"}, image(t, 1))
	b, err := json.Marshal(map[string]any{"transfers": l.Transfers(nil), "pulls": l.Pulls(nil)})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "null") {
		t.Errorf("JSON with null: %s", b)
	}
}
