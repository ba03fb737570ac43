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
	flows [][]int
	first []int32 // by link: its entries are first[l]:first[l+1]
	// active lists the links some flow crosses, in order: the others
	// have no level, and are not walked.
	active      []int32
	flow, other []int32 // by entry
	lim         []float64
	// dirty: the link is to be settled again (see round).
	dirty               []bool
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
	w.active = w.active[:0]
	for l := range links {
		if w.first[l+1] > 0 {
			w.active = append(w.active, int32(l))
		}
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
	w.dirty = slices.Grow(w.dirty[:0], len(capacity))[:len(capacity)]
	for _, l := range w.active {
		w.level[l], w.dirty[l] = math.Inf(1), true
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

// round settles the level of every link, link after link, each from the
// levels so far, and says whether any level moved. A link none of whose
// flows' other links moved since it was last settled would be settled
// to the same level: it is skipped (see touch).
func (w *water) round(capacity []float64) bool {
	moved := false
	for _, a := range w.active {
		l := int(a)
		if !w.dirty[l] {
			continue
		}
		w.dirty[l] = false
		w.demand = w.demand[:0]
		for e := w.first[l]; e < w.first[l+1]; e++ {
			w.demand = append(w.demand, w.demandAt(l, e))
		}
		lv := fill(capacity[l], w.demand)
		moved = moved || lv != w.level[l]
		if math.Float64bits(lv) != math.Float64bits(w.level[l]) {
			w.touch(l)
		}
		w.level[l] = lv
	}
	return moved
}

// touch marks for settling again every link whose flows cross link l,
// whose level moved.
func (w *water) touch(l int) {
	for e := w.first[l]; e < w.first[l+1]; e++ {
		if o := w.other[e]; o >= 0 {
			w.dirty[o] = true
			continue
		}
		for _, o := range w.flows[w.flow[e]] {
			if o != l {
				w.dirty[o] = true
			}
		}
	}
}

// grow is v with length n, its old contents undefined; it grows as
// append does, so that a count of flows that creeps up from step to
// step does not allocate at every step.
func grow(v []float64, n int) []float64 {
	return slices.Grow(v[:0], n)[:n]
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
	// Two shortcuts give the loop's answer without the sort. When the
	// smallest demand is over an even share, its first step returns: a
	// full link's flows are mostly held there. When the largest demand
	// is well under an even share, every step goes on to the end: no
	// rounding of a sum of fewer than a billion demands comes near the
	// margin of a part in a million.
	low, high := slices.Min(demand), slices.Max(demand)
	n := float64(len(demand))
	if low*n > c {
		return c / n
	}
	if high*n <= c*(1-1e-6) {
		return math.Inf(1)
	}
	sortFloats(demand)
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

// sortFloats is slices.Sort, in its own order (an insertion sort up to 12
// elements) without its generic call for the few demands of most links.
func sortFloats(v []float64) {
	if len(v) > 12 {
		slices.Sort(v)
		return
	}
	for i := 1; i < len(v); i++ {
		for j := i; j > 0 && less(v[j], v[j-1]); j-- {
			v[j], v[j-1] = v[j-1], v[j]
		}
	}
}

// less is cmp.Less: a NaN is below any number.
func less(x, y float64) bool {
	return (x != x && y == y) || x < y
}

// fit scales each flow's rate down by the most any of its links is over
// its capacity.
func (w *water) fit(capacity []float64) []float64 {
	w.scale = grow(w.scale, len(capacity))
	for _, a := range w.active {
		l := int(a)
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
