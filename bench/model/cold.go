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
	// NodeTimes is each node's pull time from the scenario's start, for
	// the nodes that pull and are not killed.
	NodeTimes []time.Duration
	// Makespan is the slowest node's time.
	Makespan time.Duration
	// Bound is the scenario's physical bound T*.
	Bound time.Duration
	// NodeUploadBytes is what each node sent to its peers.
	NodeUploadBytes []int64
	// Received is what the pulling nodes received, the killed nodes' part
	// of the image included: Egress and the uploads added up.
	Received int64
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
	return scenario(cfg, plan{bound: report.ColdBound(size, cfg.RegistryUp, cfg.Down, cfg.Up, cfg.Nodes)})
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
	return scenario(cfg, plan{warm: true, bound: report.WarmBound(size, cfg.Up, cfg.Down, cfg.Nodes)})
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
