package model

import (
	"math"
	"slices"
)

// waterRounds is how many times waterShare settles every link's level.
// The links of a run here form shallow chains (a registry, a fetcher, its
// readers), which settle in two or three rounds; more rounds cost time
// and change rates by less than a part in a thousand.
const waterRounds = 6

// waterShare approximates share (the same arguments and answer) in
// O(rounds × flows): every link's level, the most any of its flows gets
// there, is set by filling the link with each flow's demand, which is
// what its other links' levels and its own limit let it carry; the
// levels are settled waterRounds times, each from the last. A link whose
// flows cannot fill it has no level. The rates are then scaled down, link
// by link, so that no link carries more than its capacity: an
// approximate rate is never one the links could not carry.
func waterShare(capacity []float64, flows [][]int, limit []float64) []float64 {
	var w water
	w.setFlows(len(capacity), flows)
	return w.share(capacity, limit)
}

// water is waterShare's working memory, kept from one step to the next
// so that a run of thousands of nodes does not allocate it at every step.
//
// The flows that cross each link are kept flat, link after link (first,
// flow), each with the flow's other link (other; -1 when the flow does
// not cross exactly two links), and with its limit (lim), so that a
// round over the links reads memory in order.
type water struct {
	flows               [][]int
	first               []int32 // by link: its entries are first[l]:first[l+1]
	flow, other         []int32 // by entry
	lim                 []float64
	level, rate, demand []float64
	scale               []float64
}

// setFlows takes flows (see share) for the next calls of share.
func (w *water) setFlows(links int, flows [][]int) {
	w.flows = flows
	w.first = slices.Grow(w.first[:0], links+1)[:links+1]
	clear(w.first)
	for _, ls := range flows {
		for _, l := range ls {
			w.first[l+1]++
		}
	}
	for l := range links {
		w.first[l+1] += w.first[l]
	}
	n := int(w.first[links])
	w.flow = slices.Grow(w.flow[:0], n)[:n]
	w.other = slices.Grow(w.other[:0], n)[:n]
	w.lim = grow(w.lim, n)
	// next[l] is where link l's next entry goes: first[l] shifted by one
	// link, so that after the loop first is as it was.
	next := w.first[:links]
	for f, ls := range flows {
		o := -1
		if len(ls) == 2 && ls[0] != ls[1] {
			o = ls[1]
		}
		for _, l := range ls {
			e := next[l]
			next[l]++
			w.flow[e], w.other[e] = int32(f), int32(o)
			if o >= 0 && o == l {
				w.other[e] = int32(ls[0])
			}
		}
	}
	copy(w.first[1:], w.first[:links])
	w.first[0] = 0
}

// share is waterShare for the flows of the last setFlows; the answer is
// valid until the next call.
func (w *water) share(capacity, limit []float64) []float64 {
	for e, f := range w.flow {
		w.lim[e] = max(0, limit[f])
	}
	w.level = grow(w.level, len(capacity))
	for l := range w.level {
		w.level[l] = math.Inf(1)
	}
	for range waterRounds {
		if !w.round(capacity) {
			// No level moved: every later round would give the same.
			break
		}
	}
	w.rate = grow(w.rate, len(w.flows))
	for f, links := range w.flows {
		w.rate[f] = max(0, limit[f])
		for _, l := range links {
			w.rate[f] = min(w.rate[f], w.level[l], capacity[l])
		}
	}
	return w.fit(capacity)
}

// round settles every link's level once, link after link, each from the
// levels so far, and says whether any level moved.
func (w *water) round(capacity []float64) bool {
	moved := false
	for l := range len(w.first) - 1 {
		lo, hi := w.first[l], w.first[l+1]
		if lo == hi {
			continue // no flow: no level
		}
		w.demand = w.demand[:0]
		for e := lo; e < hi; e++ {
			w.demand = append(w.demand, w.demandAt(l, e))
		}
		lv := fill(capacity[l], w.demand)
		moved = moved || lv != w.level[l]
		w.level[l] = lv
	}
	return moved
}

// grow is v with length n, its old contents undefined.
func grow(v []float64, n int) []float64 {
	if cap(v) < n {
		return make([]float64, n)
	}
	return v[:n]
}

// demandAt is what the flow of entry e could carry over link l: its
// limit, and the levels of its other links.
func (w *water) demandAt(l int, e int32) float64 {
	d := w.lim[e]
	if o := w.other[e]; o >= 0 {
		// A stream's two links, its source's uplink and its reader's
		// downlink: the common case, without the loop.
		return min(d, w.level[o])
	}
	for _, o := range w.flows[w.flow[e]] {
		if o != l {
			d = min(d, w.level[o])
		}
	}
	return d
}

// fill is the level of a link of capacity c shared by flows demanding
// demand (sorted in place): the smaller demands are met whole, the rest
// share what is left evenly. +Inf when every demand is met.
func fill(c float64, demand []float64) float64 {
	if math.IsInf(c, 1) {
		return c
	}
	// The first step of the loop below, without the sort: when the
	// smallest demand is over an even share, every flow gets one. A full
	// link's flows are mostly held there, so this is the common case.
	n := float64(len(demand))
	if len(demand) > 0 && slices.Min(demand)*n > c {
		return c / n
	}
	slices.Sort(demand)
	left := c
	for k, d := range demand {
		n := float64(len(demand) - k)
		if d*n > left {
			return left / n
		}
		left -= d
	}
	return math.Inf(1)
}

// fit scales each flow's rate down by the most any of its links is over
// its capacity.
func (w *water) fit(capacity []float64) []float64 {
	w.scale = grow(w.scale, len(capacity))
	for l := range w.scale {
		sum := 0.0
		for _, f := range w.flow[w.first[l]:w.first[l+1]] {
			sum += w.rate[f]
		}
		w.scale[l] = 1
		if sum > capacity[l] {
			w.scale[l] = capacity[l] / sum
		}
	}
	for f, links := range w.flows {
		k := 1.0
		for _, l := range links {
			k = min(k, w.scale[l])
		}
		w.rate[f] *= k
	}
	return w.rate
}
