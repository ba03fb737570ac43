package bench

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"golang.org/x/sync/errgroup"
	"gonum.org/v1/gonum/stat"

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
	// Scenarios are some of ModelScenarios.
	Scenarios []string
	Reps      int
	// Manifest, Spread, Prefetch, Concurrent and UnpackPerByte are
	// containerd's pull and shoal's prefetch (see model.Config); zero
	// leaves each out. The command sets the Model constants of each.
	Manifest      time.Duration
	Spread        time.Duration
	Prefetch      bool
	Concurrent    int
	UnpackPerByte float64
	// Progress, if set, gets a line per run.
	Progress io.Writer
}

// ModelRTT is every connection's round trip in the model mode.
const ModelRTT = time.Millisecond

// ModelScenarios are the scenarios the model mode runs, as the real mode
// does: cold, warm, rolling (ModelRollingBatch nodes at a time) and churn
// (ModelChurn nodes killed mid-pull).
var ModelScenarios = []string{ScenarioCold, ScenarioWarm, ScenarioRolling, ScenarioChurn}

// containerd's pull in the model mode, set from the real mode's records
// of its pulls (results.json's tail; docs/benchmarks.md says which runs).
// ModelConcurrent is containerd's default max_concurrent_downloads. A
// real node asks for its first blob 57 ms to 192 ms after its pull
// begins (the 10th and 90th percentiles: ctr's start-up, then the
// manifest): ModelSpread spreads the pulls' starts over that range's
// width, and ModelManifest is its least. ModelUnpackPerByte is the
// median time containerd took to unpack a byte of a layer. ModelPrefetch
// is the daemon's default: its shoal downloads every blob an image's
// manifest names as the manifest passes (--prefetch).
const (
	ModelPrefetch      = true
	ModelConcurrent    = 3
	ModelSpread        = 140 * time.Millisecond
	ModelManifest      = 60 * time.Millisecond
	ModelUnpackPerByte = 4.3e-9
)

// WithContainerdPull is cfg with containerd's pull and shoal's prefetch
// as the command models them: the Model constants above.
func (cfg ModelConfig) WithContainerdPull() ModelConfig {
	cfg.Manifest, cfg.Spread, cfg.Prefetch = ModelManifest, ModelSpread, ModelPrefetch
	cfg.Concurrent, cfg.UnpackPerByte = ModelConcurrent, ModelUnpackPerByte
	return cfg
}

// ModelGoodput is the share of a link's rate that carries a blob's bytes:
// a full-sized TCP segment (1500-byte MTU, timestamps on) carries 1,448
// bytes of payload in a frame of 1,514, which is what tc's shaping counts
// in the real mode and what a switch port carries in a cluster. TLS
// records and stream framing add about 0.2 % more. T* counts the links'
// whole rate, in every mode.
const ModelGoodput = 1448.0 / 1514 * 0.998

// ModelRollingBatch is how many of n nodes pull at a time in the model's
// rolling scenario: a tenth, rounded up.
func ModelRollingBatch(n int) int { return (n + 9) / 10 }

// ModelChurn is how many of n nodes the model's churn scenario kills
// mid-pull: a twentieth, rounded up.
func ModelChurn(n int) int { return (n + 19) / 20 }

// ModelStepsPerBound is how many virtual-time steps a model run takes
// per T* of the nodes that pull at once (in rolling, one batch's): its
// step is that T*/ModelStepsPerBound.
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
// The runs are independent, so as many run at once as the machine has
// cores; the answer lists them in order, scenario by scenario.
func RunModel(ctx context.Context, cfg ModelConfig) ([]ModelRun, error) {
	if cfg.LinkMbit <= 0 || cfg.RegistryMbit <= 0 {
		return nil, fmt.Errorf("the model mode needs --link-mbit and --registry-mbit above 0")
	}
	type job struct {
		scenario string
		rep      int
	}
	var jobs []job
	for _, sc := range cfg.Scenarios {
		for rep := 1; rep <= max(1, cfg.Reps); rep++ {
			jobs = append(jobs, job{sc, rep})
		}
	}
	out := make([]ModelRun, len(jobs))
	var mu sync.Mutex // Progress
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0))
	for k, j := range jobs {
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err
			}
			run, err := modelRun(gctx, cfg, j.scenario, j.rep)
			if err != nil {
				return fmt.Errorf("model %s, rep %d: %w", j.scenario, j.rep, err)
			}
			out[k] = run
			if cfg.Progress != nil {
				mu.Lock()
				fmt.Fprintf(cfg.Progress, "model %s rep %d: p50/T* %.2f, max/T* %.2f, egress/S %.2f, computed in %s\n", j.scenario, j.rep,
					run.Summary.P50, run.Summary.Max, run.Summary.EgressOverSize, run.Wall.Round(time.Millisecond))
				mu.Unlock()
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		// The runs that finished, in order; a run stopped mid-way is none.
		var done []ModelRun
		for _, r := range out {
			if r.Record.Scenario != "" {
				done = append(done, r)
			}
		}
		if ctx.Err() != nil {
			return done, ctx.Err()
		}
		return done, err
	}
	return out, nil
}

// modelRun runs one scenario with seed rep.
func modelRun(ctx context.Context, cfg ModelConfig, scenario string, rep int) (ModelRun, error) {
	link, reg := cfg.LinkMbit*1e6/8, cfg.RegistryMbit*1e6/8
	mc := model.Config{
		Nodes: cfg.Nodes, Layers: cfg.Layers, LayerSize: cfg.LayerSize, Up: link, Down: link, RegistryUp: reg, Goodput: ModelGoodput,
		RTT: ModelRTT, Seed: uint64(rep), Done: ctx.Done(),
		Manifest: cfg.Manifest, Spread: cfg.Spread, Prefetch: cfg.Prefetch, Concurrent: cfg.Concurrent, UnpackPerByte: cfg.UnpackPerByte,
	}
	size := float64(cfg.Layers) * float64(cfg.LayerSize)
	// bound is T* of the nodes that pull at once, for the step.
	var bound float64
	var run func(model.Config) (model.Result, error)
	var notes []string
	switch scenario {
	case ScenarioCold:
		bound, run = report.ColdBound(size, reg, link, link, cfg.Nodes), model.Cold
	case ScenarioWarm:
		bound, run = report.WarmBound(size, link, link, cfg.Nodes), model.Warm
	case ScenarioRolling:
		k := ModelRollingBatch(cfg.Nodes)
		bound = report.ColdBound(size, reg, link, link, k)
		run = func(c model.Config) (model.Result, error) { return model.Rolling(c, k) }
		notes = append(notes, fmt.Sprintf("%d at a time; node times and the makespan run from the first batch's start", k))
	case ScenarioChurn:
		k := ModelChurn(cfg.Nodes)
		bound = report.ColdBound(size, reg, link, link, cfg.Nodes-k)
		run = func(c model.Config) (model.Result, error) { return model.Churn(c, k) }
		notes = append(notes, fmt.Sprintf("the last %d of %d nodes killed mid-pull, once each received half the image; their pulls are not counted", k, cfg.Nodes))
	default:
		return ModelRun{}, fmt.Errorf("scenario %q: the model mode runs %s", scenario, strings.Join(ModelScenarios, ", "))
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
		FailedPulls: r.Failed, NodeUploadBytes: r.NodeUploadBytes, LinkMbit: cfg.LinkMbit, RegistryMbit: cfg.RegistryMbit, Notes: notes,
	}
	for _, t := range r.NodeTimes {
		rec.NodeSeconds = append(rec.NodeSeconds, t.Seconds())
	}
	return ModelRun{Record: rec, Summary: r.Summary(), Step: mc.Step, Wall: wall, Sys: ms.Sys}, nil
}

// WriteModelTable writes what the report's table leaves out of a model
// run: its nodes' times over T*, what the nodes uploaded (results.json
// has each node's bytes), its step, and what computing it cost.
func WriteModelTable(w io.Writer, runs []ModelRun) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\trep\tp50/T*\tp99/T*\tmax/T*\tnode upload/S p50\tmax\tstep\tsim wall time\tmemory (Go Sys)")
	for _, r := range runs {
		up50, upMax := uploadOverSize(r.Record)
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%s\t%s\t%d MiB\n", r.Record.Scenario, r.Record.Rep,
			r.Summary.P50, r.Summary.P99, r.Summary.Max, up50, upMax, r.Step.Round(time.Microsecond), r.Wall.Round(time.Millisecond), r.Sys>>20)
	}
	return tw.Flush()
}

// uploadOverSize is the median and the most a node of rec uploaded, over S.
func uploadOverSize(rec report.Record) (p50, most float64) {
	if len(rec.NodeUploadBytes) == 0 || rec.ImageBytes == 0 {
		return 0, 0
	}
	up := make([]float64, len(rec.NodeUploadBytes))
	for i, b := range rec.NodeUploadBytes {
		up[i] = float64(b) / float64(rec.ImageBytes)
	}
	slices.Sort(up)
	return stat.Quantile(0.5, stat.Empirical, up, nil), up[len(up)-1]
}
