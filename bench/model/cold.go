package model

import (
	"errors"
	"slices"
	"time"

	"gonum.org/v1/gonum/stat"

	"github.com/shoal-dev/shoal/bench/report"
)

// Result is what a model run measured.
type Result struct {
	// Size is the image's bytes, S.
	Size int64
	// Egress is what the registry sent.
	Egress int64
	// NodeTimes is each node's pull time from the scenario's start.
	NodeTimes []time.Duration
	// Makespan is the slowest node's time.
	Makespan time.Duration
	// Bound is the scenario's physical bound T*.
	Bound time.Duration
	// NodeUploadBytes is what each node sent to its peers.
	NodeUploadBytes []int64
	// Failed counts the blobs a node's download gave up on.
	Failed int
}

// Summary is a Result as the report's ratios.
type Summary struct {
	// MakespanOverBound is makespan/T*; EgressOverSize egress/S.
	MakespanOverBound, EgressOverSize float64
	// P50, P99 and Max are the nodes' times over T*.
	P50, P99, Max float64
}

// Summary gives r's ratios.
func (r Result) Summary() Summary {
	b := r.Bound.Seconds()
	over := make([]float64, len(r.NodeTimes))
	for i, t := range r.NodeTimes {
		over[i] = t.Seconds() / b
	}
	slices.Sort(over)
	s := Summary{MakespanOverBound: r.Makespan.Seconds() / b, EgressOverSize: float64(r.Egress) / float64(r.Size)}
	if len(over) > 0 {
		s.P50 = stat.Quantile(0.5, stat.Empirical, over, nil)
		s.P99 = stat.Quantile(0.99, stat.Empirical, over, nil)
		s.Max = over[len(over)-1]
	}
	return s
}

// Cold runs the cold scenario: every node pulls a new image at once, the
// registry the only source of its bytes at the start.
func Cold(cfg Config) (Result, error) {
	if err := cfg.defaults(); err != nil {
		return Result{}, err
	}
	size := float64(cfg.Layers) * float64(cfg.LayerSize)
	return scenario(cfg, false, report.ColdBound(size, cfg.RegistryUp, cfg.Down, cfg.Up, cfg.Nodes))
}

// Warm runs the warm scenario: node 0 holds the image, the other N−1
// nodes pull it at once. NodeTimes lists the pullers only.
func Warm(cfg Config) (Result, error) {
	if err := cfg.defaults(); err != nil {
		return Result{}, err
	}
	if cfg.Nodes < 2 {
		return Result{}, errors.New("model: the warm scenario needs a holder and a puller")
	}
	size := float64(cfg.Layers) * float64(cfg.LayerSize)
	return scenario(cfg, true, report.WarmBound(size, cfg.Up, cfg.Down, cfg.Nodes))
}

// scenario runs every node's pull at once, node 0 holding the image
// already when warm, and measures it against bound (seconds).
func scenario(cfg Config, warm bool, bound float64) (Result, error) {
	s := newSim(cfg)
	for i := range cfg.Nodes {
		s.pull(i)
	}
	if warm {
		s.hold(0)
	}
	if err := s.run(); err != nil {
		return Result{}, err
	}
	r := Result{
		Size:   int64(cfg.Layers) * cfg.LayerSize,
		Egress: int64(s.egress + 0.5),
		Bound:  seconds(bound),
		Failed: s.failed,
	}
	for _, b := range s.sent {
		r.NodeUploadBytes = append(r.NodeUploadBytes, int64(b+0.5))
	}
	for i, f := range s.finish {
		if warm && i == 0 {
			continue
		}
		t := seconds(f)
		r.NodeTimes = append(r.NodeTimes, t)
		r.Makespan = max(r.Makespan, t)
	}
	return r, nil
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
