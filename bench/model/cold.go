package model

import (
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
	s := newSim(cfg)
	for i := range cfg.Nodes {
		s.pull(i)
	}
	if err := s.run(); err != nil {
		return Result{}, err
	}
	size := int64(cfg.Layers) * cfg.LayerSize
	r := Result{
		Size:   size,
		Egress: int64(s.egress + 0.5),
		Bound:  seconds(report.ColdBound(float64(size), cfg.RegistryUp, cfg.Down, cfg.Up, cfg.Nodes)),
		Failed: s.failed,
	}
	for _, b := range s.sent {
		r.NodeUploadBytes = append(r.NodeUploadBytes, int64(b+0.5))
	}
	for _, f := range s.finish {
		t := seconds(f)
		r.NodeTimes = append(r.NodeTimes, t)
		r.Makespan = max(r.Makespan, t)
	}
	return r, nil
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
