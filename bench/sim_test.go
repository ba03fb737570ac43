package bench

import (
	"bytes"
	"math"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/shoal-dev/shoal/bench/report"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestSimulated checks what the simulated benchmark counts, not how fast
// it is: the registry's egress, the records' fields, and that every pull
// succeeds.
func TestSimulated(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a registry and a mesh of four nodes")
	}
	var progress bytes.Buffer
	cfg := SimConfig{
		Nodes: 3, Layers: 2, LayerSize: 1 << 20,
		LinkMbit: 400, RegistryMbit: 400,
		Scenarios:  []string{ScenarioCold, ScenarioWarm},
		Candidates: []string{CandidateDirect, CandidateShoal},
		Reps:       1,
		Progress:   &progress,
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
