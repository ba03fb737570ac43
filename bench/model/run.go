package model

import (
	"errors"
	"math"
	"slices"
)

// flowing lists the streams whose bytes flow now, node after node; the
// answer is valid until the next call.
func (s *sim) flowing() []*stream {
	out := s.flows[:0]
	for k := s.reading.next(0); k >= 0; k = s.reading.next(k + 1) {
		if t := s.stream(k); s.now >= t.startAt {
			out = append(out, t)
			s.list(t)
		}
	}
	s.flows = out
	return out
}

// stream is the stream of key k.
func (s *sim) stream(k int) *stream {
	return s.streamAll[k]
}

// caughtUp says whether t reads all its source holds of a blob still
// arriving there: it then goes no faster than the source receives it.
func (s *sim) caughtUp(t *stream) bool {
	if t.src < 0 || !t.wait {
		return false
	}
	src := s.streamAll[t.srcKey]
	return !src.done && s.heldAll[t.key] >= s.heldAll[t.srcKey]*(1-eps)-1
}

// allocate sets the rate of every flowing stream: the links (node i's
// uplink i, its downlink N+i, the registry's uplink 2N) shared max-min
// fairly, a stream caught up with its source held to the source's own
// rate. The caps depend on the rates; a few passes settle a chain of
// relays.
func (s *sim) allocate(fl []*stream) {
	links := s.links(fl)
	if s.cfg.Step > 0 {
		s.water.setFlows(len(s.capacity), links)
	}
	// Which streams are caught up does not change from pass to pass;
	// only their sources' rates do.
	s.capSrc = s.capSrc[:0]
	for _, t := range fl {
		var src *stream
		if s.caughtUp(t) {
			src = s.streamAll[t.srcKey]
		}
		s.capSrc = append(s.capSrc, src)
	}
	s.limit = grow(s.limit, len(fl))
	limit := s.limit
	for pass := range 4 {
		capped, same := false, pass > 0
		for k, src := range s.capSrc {
			l := math.Inf(1)
			if src != nil {
				l, capped = src.rate, true
			}
			same = same && l == limit[k]
			limit[k] = l
		}
		if same {
			// The limits of the pass before, so its rates: none changed.
			return
		}
		changed := false
		for k, r := range s.share(s.capacity, links, limit) {
			changed = changed || r != fl[k].rate
			fl[k].rate = r
		}
		if !capped || (pass > 0 && !changed) {
			return
		}
	}
}

// links lists each of fl's links: its source's uplink, its reader's
// downlink (see allocate). The answer is valid until the next call.
func (s *sim) links(fl []*stream) [][]int {
	n := s.cfg.Nodes
	if s.capacity == nil {
		s.capacity = make([]float64, 2*n+1)
		for i := range n {
			s.capacity[i], s.capacity[n+i] = s.cfg.Up*s.cfg.Goodput, s.cfg.Down*s.cfg.Goodput
		}
		s.capacity[2*n] = s.cfg.RegistryUp * s.cfg.Goodput
	}
	s.linkBuf = slices.Grow(s.linkBuf[:0], 2*len(fl))[:2*len(fl)]
	links := slices.Grow(s.linkOf[:0], len(fl))[:len(fl)]
	s.linkOf = links
	for k, t := range fl {
		up := 2 * n
		if t.src >= 0 {
			up = t.src
		}
		links[k] = s.linkBuf[2*k : 2*k+2 : 2*k+2]
		links[k][0], links[k][1] = up, n+t.node
	}
	return links
}

// share is the exact allocation event by event, the approximate one
// (waterShare, its flows set by allocate) in steps.
func (s *sim) share(capacity []float64, flows [][]int, limit []float64) []float64 {
	if s.cfg.Step > 0 {
		return s.water.share(capacity, limit)
	}
	return share(capacity, flows, limit)
}

// next is how long until the next event: a stream reaches its end or
// catches up with its source, a round trip ends, a wait ends.
func (s *sim) next(fl []*stream) float64 {
	dt := math.Inf(1)
	for k := s.reading.next(0); k >= 0; k = s.reading.next(k + 1) {
		if t := s.stream(k); t.startAt > s.now {
			dt = min(dt, t.startAt-s.now)
		}
	}
	for k := s.waiting.next(0); k >= 0; k = s.waiting.next(k + 1) {
		dt = min(dt, max(0, s.retry[k]-s.now))
	}
	for _, t := range fl {
		if t.rate <= 0 {
			continue
		}
		dt = min(dt, (t.limit-s.heldAll[t.key])/t.rate)
		if t.src >= 0 && t.wait && !s.caughtUp(t) && !s.streamAll[t.srcKey].done {
			if gap, by := s.heldAll[t.srcKey]-s.heldAll[t.key], t.rate-s.streamAll[t.srcKey].rate; by > 0 {
				dt = min(dt, gap/by)
			}
		}
	}
	return max(0, dt)
}

// advance moves virtual time on by dt, the bytes with it. A stream that
// reaches its end within dt ends when its rate takes it there, and never
// goes past what its source holds: a source still receiving the blob is
// moved first, so that a reader that caught up with it takes no byte the
// source does not have: counting the source's bytes of the step twice
// would let a churn victim pass on bytes the registry never sent.
func (s *sim) advance(fl []*stream, dt float64) {
	s.stepNo++
	for _, t := range fl {
		t.inStep = s.stepNo
	}
	for _, t := range fl {
		s.move(t, dt)
	}
	s.now += dt
}

// move moves t dt on, once in a step, after its source's own stream of the
// blob if that flows in this step too.
func (s *sim) move(t *stream, dt float64) {
	if t.movedIn == s.stepNo {
		return
	}
	t.movedIn = s.stepNo
	moved := t.rate * dt
	if t.src >= 0 {
		if u := s.streamAll[t.srcKey]; u != nil && u.inStep == s.stepNo {
			s.move(u, dt)
		}
		moved = min(moved, max(0, s.heldAll[t.srcKey]-s.heldAll[t.key]))
	}
	t.endAt = s.now + dt
	if left := t.limit - s.heldAll[t.key]; moved >= left {
		moved = left
		if t.rate > 0 {
			t.endAt = s.now + min(dt, left/t.rate)
		}
	}
	if t.src >= 0 {
		s.sent[t.src] += moved
	} else {
		s.egress += moved
	}
	s.heldAll[t.key] += moved
	if moved > 0 {
		s.lastByte[t.node] = t.endAt
	}
}

// settle ends the streams that reached their end, runs the timers that
// are due, and the rounds.
func (s *sim) settle(fl []*stream) {
	for _, t := range fl {
		h := s.heldAll[t.key]
		switch {
		case h >= s.size-1e-6:
			s.heldAll[t.key] = s.size
			s.complete(t, t.endAt)
		case h >= t.limit-1e-6:
			s.end(t)
		}
	}
	s.tick()
	// A round may start another download, which is taken in this walk
	// if it comes after the stream whose round started it.
	for k := s.waiting.next(0); k >= 0; k = s.waiting.next(k + 1) {
		if s.retry[k] <= s.now {
			s.round(s.stream(k))
		}
	}
}

// errStuck ends a run in which nothing can move.
var errStuck = errors.New("model: no stream can move and none is due")

// maxSteps bounds a run's events.
const maxSteps = 10_000_000

// ErrStopped says a run ended because Config.Done was closed.
var ErrStopped = errors.New("model: run stopped")

// run runs until every pull ended and no timer is left.
func (s *sim) run() error {
	for step := 0; s.left > 0 || s.pending(); step++ {
		if step == maxSteps {
			return errors.New("model: too many events")
		}
		if step%1024 == 0 && s.stopped() {
			return ErrStopped
		}
		s.settle(s.flowing())
		if s.left == 0 && !s.pending() {
			return nil
		}
		fl := s.flowing()
		s.allocate(fl)
		dt, err := s.stepFor(fl)
		if err != nil {
			return err
		}
		s.advance(fl, dt)
	}
	return nil
}

// stopped says whether Config.Done is closed.
func (s *sim) stopped() bool {
	select {
	case <-s.cfg.Done:
		return true
	default:
		return false
	}
}

// stepFor is how far virtual time moves next: to the next event, or by
// Config.Step while bytes flow (with none flowing, to the next event or
// timer, so that waits cost no steps).
func (s *sim) stepFor(fl []*stream) (float64, error) {
	if s.cfg.Step > 0 && len(fl) > 0 {
		return s.cfg.Step.Seconds(), nil
	}
	dt := min(s.next(fl), s.untilTimer())
	if math.IsInf(dt, 1) {
		return 0, errStuck
	}
	return dt, nil
}
