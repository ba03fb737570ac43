package model

import (
	"container/heap"
	"math"
)

// timers are the events a scenario sets for later: a manifest fetched, a
// batch of pulls started, a member's death known. onReturn, when set, is
// called at the time each node's pull returns.
type timers struct {
	due      timerHeap
	seq      int
	onReturn func(node int)
	// watch, when set, is called whenever the run settles: a scenario's
	// check on the bytes so far (a node to kill once it received half);
	// watchNext says how long, at the current rates, until watch has
	// something to do (+Inf: nothing), so that a run event by event
	// stops there.
	watch     func()
	watchNext func() float64
}

type timer struct {
	at  float64
	seq int
	fn  func()
}

// after calls fn dt seconds from now; timers due at the same time run in
// the order they were set.
func (s *sim) after(dt float64, fn func()) {
	s.seq++
	heap.Push(&s.due, timer{at: s.now + dt, seq: s.seq, fn: fn})
}

// pending says whether a timer is still to run.
func (s *sim) pending() bool { return len(s.due) > 0 }

// untilTimer is how long until the next timer or the watch's next
// event, +Inf with none.
func (s *sim) untilTimer() float64 {
	dt := math.Inf(1)
	if len(s.due) > 0 {
		dt = max(0, s.due[0].at-s.now)
	}
	if s.watchNext != nil {
		dt = min(dt, s.watchNext())
	}
	return dt
}

// tick runs the timers that are due, and the scenario's watch.
func (s *sim) tick() {
	for len(s.due) > 0 && s.due[0].at <= s.now+1e-12 {
		heap.Pop(&s.due).(timer).fn()
	}
	if s.stale {
		// Once for every member who left or came at this time.
		s.stale = false
		s.rankings()
	}
	if s.watch != nil {
		s.watch()
	}
}

type timerHeap []timer

func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(a, b int) bool {
	if h[a].at != h[b].at {
		return h[a].at < h[b].at
	}
	return h[a].seq < h[b].seq
}
func (h timerHeap) Swap(a, b int) { h[a], h[b] = h[b], h[a] }
func (h *timerHeap) Push(x any)   { *h = append(*h, x.(timer)) }
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	*h = old[:len(old)-1]
	return t
}
