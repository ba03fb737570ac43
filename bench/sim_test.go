package bench

import (
	"bytes"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/shoal-dev/shoal/bench/report"
	"github.com/shoal-dev/shoal/p2p"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// patientTiming is p2p.LocalTiming with the timers that a starved CPU can
// exceed made long, for tests that bound the registry's egress. With
// LocalTiming's, a node asked to fetch a blob for a peer that has no byte
// of it within 1.5 s says it has none, and the peer goes to the registry;
// under load (tests of other packages running beside these) that happens
// for reasons of scheduling, not of the mesh, and the registry sends more.
// patientPeerStall is the resolvers' PeerStall in the simulated tests that
// count the registry's bytes: under -race on a busy host a peer can
// miss a 200 ms ping, and the default's verdicts would then measure the
// host, not the mesh.
const patientPeerStall = 2 * time.Second

func patientTiming() p2p.Timing {
	t := p2p.LocalTiming()
	t.ProbeInterval, t.ProbeTimeout = 2*time.Second, 2*time.Second
	t.RequestTimeout = 10 * time.Second
	t.IdleTimeout = 20 * time.Second
	return t
}

// TestSimulated checks what the simulated benchmark counts, not how fast
// it is: the registry's egress, the records' fields, and that every pull
// succeeds.
func TestSimulated(t *testing.T) {
	var progress bytes.Buffer
	cfg := SimConfig{
		Nodes: 3, Layers: 2, LayerSize: 1 << 20,
		LinkMbit: 400, RegistryMbit: 400,
		Scenarios:  []string{ScenarioCold, ScenarioWarm},
		Candidates: []string{CandidateDirect, CandidateShoal},
		Reps:       1,
		Progress:   &progress,
		Timing:     patientTiming(),
		PeerStall:  patientPeerStall,
	}
	recs, err := RunSimulated(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 4 {
		t.Fatalf("%d records, want 4", len(recs))
	}
	for _, r := range recs {
		S := float64(r.ImageBytes)
		egress := float64(r.RegistryEgressBytes) / S
		if r.FailedPulls != 0 || r.Mode != report.ModeSimulated || r.Nodes != 3 || r.BoundSeconds <= 0 {
			t.Errorf("%s %s: %+v", r.Candidate, r.Scenario, r)
		}
		want := map[string]int{ScenarioCold: 3, ScenarioWarm: 2}[r.Scenario]
		if len(r.NodeSeconds) != want {
			t.Errorf("%s %s: %d node times, want %d", r.Candidate, r.Scenario, len(r.NodeSeconds), want)
		}
		switch {
		case r.Candidate == CandidateDirect:
			// Every puller downloads the whole image from the registry.
			if math.Abs(egress-float64(want)) > 0.02*float64(want) {
				t.Errorf("direct %s: egress %.3f × S, want %d × S", r.Scenario, egress, want)
			}
		case r.Scenario == ScenarioWarm:
			// One node holds the image: the others take it from the mesh.
			// The registry answers only the tag look-ups.
			if egress > 0.01 {
				t.Errorf("shoal warm: egress %.3f × S, want 0", egress)
			}
		case r.Scenario == ScenarioCold:
			// Each blob is fetched from the registry once, by its
			// designated node, for the whole cluster.
			if egress > 1.1 {
				t.Errorf("shoal cold: egress %.3f × S, want at most 1.1", egress)
			}
		}
		if note := report.FasterThanLinkNote(r.NodeSeconds, S, report.MbitToBytes(cfg.LinkMbit)); note != "" {
			t.Errorf("%s %s: %s", r.Candidate, r.Scenario, note)
		}
		if r.Candidate == CandidateShoal {
			// No node receives a blob twice: the mesh carries at most
			// one copy per puller.
			var up int64
			for _, b := range r.NodeUploadBytes {
				up += b
			}
			if float64(up) > float64(want)*S*1.01 {
				t.Errorf("shoal %s: nodes uploaded %d bytes, more than %d copies of the image", r.Scenario, up, want)
			}
		}
	}
	if !strings.Contains(progress.String(), "[4/4]") {
		t.Errorf("progress shows no run count:\n%s", progress.String())
	}
}

// arrivals records when a node's containerd received its bytes: a body
// counted as it is read, whatever the node's mirror served it from.
type arrivals struct {
	mu    sync.Mutex
	start time.Time // the first request
	total int64
	at    []time.Time
	bytes []int64 // cumulative, at each time
}

func (a *arrivals) add(n int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.total += int64(n)
	a.at = append(a.at, time.Now())
	a.bytes = append(a.bytes, a.total)
}

// countingTransport counts the response bodies of the requests it carries.
type countingTransport struct {
	inner http.RoundTripper
	a     *arrivals
}

func (c countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	c.a.mu.Lock()
	if c.a.start.IsZero() {
		c.a.start = time.Now()
	}
	c.a.mu.Unlock()
	resp, err := c.inner.RoundTrip(req)
	if err == nil {
		resp.Body = &countingBody{ReadCloser: resp.Body, a: c.a}
	}
	return resp, err
}

type countingBody struct {
	io.ReadCloser
	a *arrivals
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.a.add(n)
	}
	return n, err
}

// TestSimulatedLinksHold: in the simulated mode no node receives faster
// than its link, whatever path its bytes take (the registry, a peer's
// stream, a peer fetching for the cluster, pieces, manifests). What the
// node's containerd has received by any time t, which the node received
// first, stays within d·t plus one burst of the link's token bucket, t from
// its first request; and no
// record shows a node faster than the image's time across its link.
func TestSimulatedLinksHold(t *testing.T) {
	const linkMbit = 100
	d := report.MbitToBytes(linkMbit)
	var mu sync.Mutex
	var seen []*arrivals
	cfg := SimConfig{
		Nodes: 4, Layers: 3, LayerSize: 2 << 20,
		LinkMbit: linkMbit, RegistryMbit: linkMbit,
		Scenarios:  []string{ScenarioCold, ScenarioWarm},
		Candidates: []string{CandidateDirect, CandidateShoal},
		Reps:       1,
		observe: func(node int, p *puller) {
			a := &arrivals{}
			mu.Lock()
			seen = append(seen, a)
			mu.Unlock()
			p.client.Transport = countingTransport{inner: p.client.Transport, a: a}
		},
	}
	recs, err := RunSimulated(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		for _, n := range r.Notes {
			t.Errorf("%s %s: %s", r.Candidate, r.Scenario, n)
		}
		if r.FailedPulls != 0 {
			t.Errorf("%s %s: %d pulls failed", r.Candidate, r.Scenario, r.FailedPulls)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	checked := 0
	for i, a := range seen {
		a.mu.Lock()
		if len(a.at) == 0 {
			a.mu.Unlock()
			continue
		}
		checked++
		// From the puller's first request: the node's download link
		// held at most a burst then.
		t0 := a.start
		for k, at := range a.at {
			allowed := d*at.Sub(t0).Seconds() + limitBurst
			if float64(a.bytes[k]) > allowed {
				t.Errorf("puller %d: %d bytes by %.3f s, more than its link lets through (%.0f)", i, a.bytes[k], at.Sub(t0).Seconds(), allowed)
				break
			}
		}
		a.mu.Unlock()
	}
	// Direct and shoal, cold and warm: 4 + 4 + 4 + 4 pullers.
	if checked != 16 {
		t.Fatalf("checked %d pullers, want 16", checked)
	}
}
