package bench

import (
	"math"
	"testing"

	"github.com/shoal-dev/shoal/bench/report"
)

// realMedians are the real mode's medians at N = 4 and 8, 4 × 32 MiB,
// 100 Mbit/s links and registry (T* = 10.7 s): makespan over T* and the
// registry's egress over S, of every repetition of
//
//	sudo bin/shoal bench --real --nodes N --layers 4 --layer-size 32MiB \
//	  --link-mbit 100 --registry-mbit 100 --scenarios cold,warm --candidates shoal --reps R
//
// with R = 4, 2026-12-03, commit ae40a07, containerd 2.4, this machine's
// two cores. docs/benchmarks.md ("The model against the real mode") has
// each run. They are recorded again when a rule of the swarm changes what
// the real mode does.
var realMedians = []struct {
	nodes            int
	scenario         string
	runs             int
	makespan, egress float64
}{
	{4, ScenarioCold, 4, 1.41, 1.00},
	{4, ScenarioWarm, 4, 1.24, 0},
	{8, ScenarioCold, 4, 1.58, 1.00},
	{8, ScenarioWarm, 4, 1.58, 0},
}

// TestModelMatchesTheRealMode holds the model to the real mode's recorded
// medians: over nine seeds, its median makespan within 15 % of the real
// one, and its median egress within 0.05 × S.
func TestModelMatchesTheRealMode(t *testing.T) {
	t.Parallel()
	for _, real := range realMedians {
		cfg := ModelConfig{
			Nodes: real.nodes, Layers: 4, LayerSize: 32 << 20, LinkMbit: 100, RegistryMbit: 100,
			Scenarios: []string{real.scenario}, Reps: 9,
		}.WithContainerdPull()
		runs, err := RunModel(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		var records []report.Record
		for _, r := range runs {
			records = append(records, r.Record)
		}
		// The medians the bench's table prints.
		sum := report.Summarize(records)[0]
		model, modelEgress := sum.MakespanRatioMedian, sum.EgressRatioMedian
		t.Logf("N = %d %s: model %.2f × T*, %.2f × S; real %.2f × T*, %.2f × S (%d runs)",
			real.nodes, real.scenario, model, modelEgress, real.makespan, real.egress, real.runs)
		if r := model / real.makespan; r < 0.85 || r > 1.15 {
			t.Errorf("N = %d %s: the model's makespan is %.2f × the real mode's (%.2f × T* against %.2f), outside ±15 %%",
				real.nodes, real.scenario, r, model, real.makespan)
		}
		if d := math.Abs(modelEgress - real.egress); d > 0.05 {
			t.Errorf("N = %d %s: the model's egress %.2f × S, the real mode's %.2f × S: %.2f apart, more than 0.05",
				real.nodes, real.scenario, modelEgress, real.egress, d)
		}
	}
}
