package model

// plan is what a scenario does besides the nodes' pulls.
type plan struct {
	// warm: node 0 holds the image and does not pull.
	warm bool
	// bound is the scenario's T*, in seconds.
	bound float64
}

// scenario runs p and measures it against p.bound.
func scenario(cfg Config, p plan) (Result, error) {
	s := newSim(cfg)
	first := 0
	if p.warm {
		s.hold(0)
		first = 1
	}
	for i := first; i < cfg.Nodes; i++ {
		s.pull(i)
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
		if p.warm && i == 0 {
			continue
		}
		t := seconds(f)
		r.NodeTimes = append(r.NodeTimes, t)
		r.Makespan = max(r.Makespan, t)
	}
	return r, nil
}

// received is what node i has received of the image.
func (s *sim) received(i int) float64 {
	var sum float64
	for _, h := range s.held[i] {
		sum += h
	}
	return sum
}
