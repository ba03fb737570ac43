package bench

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"text/tabwriter"
	"time"

	"github.com/shoal-dev/shoal/bench/model"
	"github.com/shoal-dev/shoal/bench/report"
)

// ModelConfig is a `shoal bench --model` session: the swarm's rules for N
// nodes on model links in virtual time (package bench/model).
type ModelConfig struct {
	Nodes, Layers int
	LayerSize     int64
	// LinkMbit is each node's upload and download, RegistryMbit the
	// registry's upload; both must be positive.
	LinkMbit, RegistryMbit float64
	// Scenarios are cold and warm.
	Scenarios []string
	Reps      int
	// Progress, if set, gets a line per run.
	Progress io.Writer
}

// ModelRTT is every connection's round trip in the model mode.
const ModelRTT = time.Millisecond

// ModelStepsPerBound is how many virtual-time steps a model run takes
// per T*: its step is T*/ModelStepsPerBound.
const ModelStepsPerBound = 500

// ModelRun is one model run: its record, its node times over T*, and what
// computing it cost.
type ModelRun struct {
	Record  report.Record
	Summary model.Summary
	// Step is the run's virtual-time step.
	Step time.Duration
	// Wall is how long the run took to compute; Sys the memory the Go
	// runtime held from the system after it (its peak, near enough: the
	// runtime keeps what it took).
	Wall time.Duration
	Sys  uint64
}

// RunModel runs each scenario Reps times, each repetition another seed.
func RunModel(ctx context.Context, cfg ModelConfig) ([]ModelRun, error) {
	if cfg.LinkMbit <= 0 || cfg.RegistryMbit <= 0 {
		return nil, fmt.Errorf("the model mode needs --link-mbit and --registry-mbit above 0")
	}
	var out []ModelRun
	for _, sc := range cfg.Scenarios {
		for rep := 1; rep <= max(1, cfg.Reps); rep++ {
			if err := ctx.Err(); err != nil {
				return out, err
			}
			run, err := modelRun(ctx, cfg, sc, rep)
			if err != nil {
				return out, fmt.Errorf("model %s, rep %d: %w", sc, rep, err)
			}
			if cfg.Progress != nil {
				fmt.Fprintf(cfg.Progress, "model %s rep %d: makespan/T* %.2f, computed in %s\n", sc, rep, run.Summary.MakespanOverBound, run.Wall.Round(time.Millisecond))
			}
			out = append(out, run)
		}
	}
	return out, nil
}

// modelRun runs one scenario with seed rep.
func modelRun(ctx context.Context, cfg ModelConfig, scenario string, rep int) (ModelRun, error) {
	link, reg := cfg.LinkMbit*1e6/8, cfg.RegistryMbit*1e6/8
	mc := model.Config{Nodes: cfg.Nodes, Layers: cfg.Layers, LayerSize: cfg.LayerSize, Up: link, Down: link, RegistryUp: reg, RTT: ModelRTT, Seed: uint64(rep), Done: ctx.Done()}
	size := float64(cfg.Layers) * float64(cfg.LayerSize)
	var bound float64
	run := model.Cold
	switch scenario {
	case ScenarioCold:
		bound = report.ColdBound(size, reg, link, link, cfg.Nodes)
	case ScenarioWarm:
		bound, run = report.WarmBound(size, link, link, cfg.Nodes), model.Warm
	default:
		return ModelRun{}, fmt.Errorf("scenario %q: the model mode runs cold and warm", scenario)
	}
	mc.Step = time.Duration(bound / ModelStepsPerBound * float64(time.Second))
	start := time.Now()
	r, err := run(mc)
	if err != nil {
		return ModelRun{}, err
	}
	wall := time.Since(start)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rec := report.Record{
		Candidate: CandidateShoal, Scenario: scenario, Mode: report.ModeModel, Rep: rep, Nodes: cfg.Nodes,
		ImageBytes: r.Size, RegistryEgressBytes: r.Egress, BoundSeconds: r.Bound.Seconds(), MakespanSeconds: r.Makespan.Seconds(),
		FailedPulls: r.Failed, NodeUploadBytes: r.NodeUploadBytes, LinkMbit: cfg.LinkMbit, RegistryMbit: cfg.RegistryMbit,
	}
	for _, t := range r.NodeTimes {
		rec.NodeSeconds = append(rec.NodeSeconds, t.Seconds())
	}
	return ModelRun{Record: rec, Summary: r.Summary(), Step: mc.Step, Wall: wall, Sys: ms.Sys}, nil
}

// WriteModelTable writes what the report's table leaves out of a model
// run: its nodes' times over T*, its step, and what computing it cost.
func WriteModelTable(w io.Writer, runs []ModelRun) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\trep\tp50/T*\tp99/T*\tmax/T*\tstep\tsim wall time\tmemory (Go Sys)")
	for _, r := range runs {
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.2f\t%.2f\t%s\t%s\t%d MiB\n", r.Record.Scenario, r.Record.Rep,
			r.Summary.P50, r.Summary.P99, r.Summary.Max, r.Step.Round(time.Microsecond), r.Wall.Round(time.Millisecond), r.Sys>>20)
	}
	return tw.Flush()
}
