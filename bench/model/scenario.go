package model

import (
	"errors"
	"math"
	"slices"

	"github.com/shoal-dev/shoal/bench/report"
)

// plan is what a scenario does besides the nodes' pulls.
type plan struct {
	// warm: node 0 holds the image and does not pull.
	warm bool
	// batch, when positive: the nodes pull this many at a time, in node
	// order, each batch once every pull of the one before returned.
	batch int
	// kill lists the nodes killed once they received half the image.
	kill []int
	// join lists the nodes that are no members at the start, and join
	// the cluster and pull the image at joinAt seconds. Their times run
	// from the scenario's start.
	join   []int
	joinAt float64
	// bound is the scenario's T*, in seconds.
	bound float64
}

// Rolling runs the rolling scenario, as the real mode's: the nodes pull
// batch at a time, in node order, each batch once every pull of the one
// before returned; the nodes not pulling yet are members and are asked
// as designated fetchers (see swarm.Coordinate). Node times run from the
// first batch's start; T* adds up the batches' bounds
// (report.RollingBound).
func Rolling(cfg Config, batch int) (Result, error) {
	if err := cfg.defaults(); err != nil {
		return Result{}, err
	}
	if batch < 1 || batch > cfg.Nodes {
		return Result{}, errors.New("model: a rolling batch must be 1 to N nodes")
	}
	size := float64(cfg.Layers) * float64(cfg.LayerSize)
	return scenario(cfg, plan{batch: batch, bound: report.RollingBound(size, cfg.RegistryUp, cfg.Down, cfg.Up, cfg.Nodes, batch)})
}

// Churn runs the churn scenario, as the real mode's: a cold pull in which
// the last killed nodes are killed, containerd and daemon, once each
// received half the image (see sim.kill). Their times are not counted;
// T* is the cold bound of the nodes that survive.
func Churn(cfg Config, killed int) (Result, error) {
	if err := cfg.defaults(); err != nil {
		return Result{}, err
	}
	if killed < 1 || killed >= cfg.Nodes {
		return Result{}, errors.New("model: churn kills 1 to N−1 nodes, so that some node survives")
	}
	size := float64(cfg.Layers) * float64(cfg.LayerSize)
	p := plan{bound: report.ColdBound(size, cfg.RegistryUp, cfg.Down, cfg.Up, cfg.Nodes-killed)}
	for i := cfg.Nodes - killed; i < cfg.Nodes; i++ {
		p.kill = append(p.kill, i)
	}
	return scenario(cfg, p)
}

// killAt is the share of the image a churn victim has received when it
// is killed, as in the real mode.
const killAt = 0.5

// scenario runs p and measures it against p.bound.
func scenario(cfg Config, p plan) (Result, error) {
	s := newSim(cfg)
	first := 0
	if p.warm {
		s.hold(0)
		first = 1
	}
	if len(p.join) > 0 {
		for _, i := range p.join {
			s.gone[i] = true
		}
		s.rankings()
	}
	if p.batch > 0 {
		s.batches(p.batch)
	} else {
		for i := first; i < cfg.Nodes; i++ {
			if !slices.Contains(p.join, i) {
				s.pull(i)
			}
		}
	}
	for _, i := range p.join {
		s.after(p.joinAt, func() { s.join(i) })
	}
	if len(p.kill) > 0 {
		s.strikeAt(p.kill, killAt*float64(cfg.Layers)*s.size)
	}
	if err := s.run(); err != nil {
		return Result{}, err
	}
	r := Result{
		Size:   int64(cfg.Layers) * cfg.LayerSize,
		Egress: int64(s.egress + 0.5),
		Bound:  seconds(p.bound),
		Failed: s.failed,
	}
	var received float64
	for i, b := range s.sent {
		r.NodeUploadBytes = append(r.NodeUploadBytes, int64(b+0.5))
		if s.pulls[i] != nil {
			received += s.received(i)
		}
	}
	r.Received = int64(received + 0.5)
	for i, f := range s.finish {
		if (p.warm && i == 0) || slices.Contains(p.kill, i) {
			continue
		}
		t := seconds(f)
		r.NodeTimes = append(r.NodeTimes, t)
		r.Makespan = max(r.Makespan, t)
	}
	return r, nil
}

// batches starts the first k nodes' pulls now, and each next k once every
// pull of the batch before returned.
func (s *sim) batches(k int) {
	next, left := 0, 0
	start := func() {
		for ; next < s.cfg.Nodes && left < k; next++ {
			left++
			s.pull(next)
		}
	}
	s.onReturn = func(int) {
		if left--; left == 0 {
			start()
		}
	}
	start()
}

// strikeAt kills each of victims once it received at least at bytes (at
// most the image: a pull returns only once it received it all).
func (s *sim) strikeAt(victims []int, at float64) {
	s.watch = func() {
		for _, i := range victims {
			if !s.dead[i] && s.held[i] != nil && s.received(i) >= at*(1-eps) {
				s.kill(i)
			}
		}
	}
	s.watchNext = func() float64 {
		dt := math.Inf(1)
		for _, i := range victims {
			if s.dead[i] || s.held[i] == nil {
				continue
			}
			var rate float64
			for _, t := range s.streams[i] {
				if t != nil && t.reading && s.now >= t.startAt {
					rate += t.rate
				}
			}
			if rate > 0 {
				dt = min(dt, max(0, at-s.received(i))/rate)
			}
		}
		return dt
	}
}

// received is what node i has received of the image.
func (s *sim) received(i int) float64 {
	var sum float64
	for _, h := range s.held[i] {
		sum += h
	}
	return sum
}
