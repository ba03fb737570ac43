package resolver_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shoal-dev/shoal/pulls"
	"github.com/shoal-dev/shoal/resolver"
	"github.com/shoal-dev/shoal/resolver/upstream"
	"github.com/shoal-dev/shoal/store"
)

// TestRecordMatchesMetrics: a blob whose first peer stalls mid-way and
// whose second dies before the registry sends the rest is recorded with
// the bytes of each source, as many as shoal_fetched_bytes_total counts,
// and the two peers given up with their reasons. PeerStall is 1 s: on a
// loaded host under -race, the second peer's stream paused 200 ms before
// its cut and was given up as stalled.
func TestRecordMatchesMetrics(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	client, err := upstream.New(upstream.Config{Insecure: []string{up.host}})
	if err != nil {
		t.Fatal(err)
	}
	body := randomBytes(t, 1<<20)
	d := up.push(t, "app", body)
	router := &fakeRouter{order: []string{"a", "b"}, peers: map[string]fakePeer{
		"a": {data: body, stallAt: 300000},
		"b": {data: body, cutAt: 700000},
	}}
	rec := pulls.New(5)
	reg := prometheus.NewRegistry()
	res, err := resolver.New(store.NewMemory(), client, resolver.Sources{Router: router},
		resolver.Config{StallTimeout: 5 * time.Second, PeerStall: time.Second, PieceSize: -1, Registries: []string{up.host}, Recorder: rec}, reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(res.Close)

	m, _ := json.Marshal(ocispec.Manifest{Layers: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayer, Digest: d, Size: int64(len(body))}}})
	req := resolver.ManifestRequest{Registry: up.host, Repo: "app", Reference: "v1"}
	rec.Fetched(req, resolver.Manifest{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(m), Body: m})
	b, err := res.Blob(t.Context(), resolver.BlobRequest{Registry: up.host, Repo: "app", Digest: d})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := readAll(t.Context(), t, b, 0); err != nil || len(got) != len(body) {
		t.Fatalf("read %d bytes: %v", len(got), err)
	}
	res.Close()

	p, ok := rec.Latest(up.host+"/app:v1", nil)
	if !ok || len(p.Blobs) != 1 {
		t.Fatalf("record: %+v, %v", p, ok)
	}
	bl := p.Blobs[0]
	if bl.State != pulls.StateStored {
		t.Errorf("state %s, want stored", bl.State)
	}
	by := map[string]int64{}
	for _, s := range bl.Sources {
		by[s.Source] += s.Bytes
		if s.Source == "peer" {
			by[s.Peer] = s.Bytes
		}
	}
	for _, src := range []string{"peer", "upstream"} {
		if want := testutil.ToFloat64(counterOf(t, reg, src)); float64(by[src]) != want {
			t.Errorf("%s: recorded %d bytes, the metric counts %v", src, by[src], want)
		}
	}
	if by["a"] != 300000 || by["b"] != 400000 || by["upstream"] != int64(len(body))-700000 {
		t.Errorf("bytes by source %v, want a 300000, b 400000, upstream the rest", by)
	}
	var falls []string
	for _, f := range bl.Fallbacks {
		falls = append(falls, f.Peer+" "+f.Reason)
	}
	if fmt.Sprint(falls) != fmt.Sprint([]string{"a " + resolver.ReasonStalled, "b " + resolver.ReasonFailed}) {
		t.Errorf("fallbacks %v", falls)
	}
	if lost := bl.Fallbacks[0].LostMS; lost < 1000 {
		t.Errorf("the stalled peer cost %d ms, want at least the peer stall time (1 s)", lost)
	}
}

func counterOf(t *testing.T, reg *prometheus.Registry, source string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
	for _, mf := range mfs {
		if mf.GetName() != "shoal_fetched_bytes_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "source" && l.GetValue() == source {
					c.Add(m.GetCounter().GetValue())
				}
			}
		}
	}
	return c
}

func TestFallbackReason(t *testing.T) {
	t.Parallel()
	cases := []struct {
		src  resolver.Source
		err  error
		want string
	}{
		{resolver.SourcePeer, fmt.Errorf("peer x: %w", errdefs.ErrResourceExhausted), resolver.ReasonBusy},
		{resolver.SourcePeer, fmt.Errorf("not yet: %w", errdefs.ErrOutOfRange), resolver.ReasonNotYet},
		{resolver.SourceUpstream, &resolver.RateLimitedError{Registry: "r", RetryAfter: time.Second}, resolver.ReasonRateLimited},
		{resolver.SourceUpstream, fmt.Errorf("500: %w", errdefs.ErrUnavailable), resolver.ReasonRegistry},
		{resolver.SourceUpstream, fmt.Errorf("gone: %w", errdefs.ErrNotFound), resolver.ReasonNotFound},
		{resolver.SourcePeer, fmt.Errorf("reset"), resolver.ReasonFailed},
	}
	for _, tc := range cases {
		if got := resolver.FallbackReason(tc.src, tc.err); got != tc.want {
			t.Errorf("FallbackReason(%s, %v) = %q, want %q", tc.src, tc.err, got, tc.want)
		}
	}
}
