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
	return w.share(capacity, flows, limit)
}

// water is waterShare's working memory, kept from one step to the next
// so that a run of thousands of nodes does not allocate it at every step.
type water struct {
	on                  [][]int // by link, the flows that cross it
	level, rate, demand []float64
	scale               []float64
}

// share is waterShare; the answer is valid until the next call.
func (w *water) share(capacity []float64, flows [][]int, limit []float64) []float64 {
	w.linkFlows(len(capacity), flows)
	w.level = grow(w.level, len(capacity))
	for l := range w.level {
		w.level[l] = math.Inf(1)
	}
	for range waterRounds {
		for l, fs := range w.on {
			if len(fs) == 0 {
				continue // no flow: no level
			}
			w.demand = w.demand[:0]
			for _, f := range fs {
				w.demand = append(w.demand, demandAt(l, f, flows, limit, w.level))
			}
			w.level[l] = fill(capacity[l], w.demand)
		}
	}
	w.rate = grow(w.rate, len(flows))
	for f, links := range flows {
		w.rate[f] = max(0, limit[f])
		for _, l := range links {
			w.rate[f] = min(w.rate[f], w.level[l], capacity[l])
		}
	}
	return w.fit(capacity, flows)
}

// linkFlows lists, by link, the flows that cross it.
func (w *water) linkFlows(links int, flows [][]int) {
	if len(w.on) < links {
		w.on = make([][]int, links)
	}
	w.on = w.on[:links]
	for l := range w.on {
		w.on[l] = w.on[l][:0]
	}
	for f, ls := range flows {
		for _, l := range ls {
			w.on[l] = append(w.on[l], f)
		}
	}
}

// grow is v with length n, its old contents undefined.
func grow(v []float64, n int) []float64 {
	if cap(v) < n {
		return make([]float64, n)
	}
	return v[:n]
}

// demandAt is what flow f could carry over link l: its limit, and the
// levels of its other links.
func demandAt(l, f int, flows [][]int, limit, level []float64) float64 {
	d := max(0, limit[f])
	if ls := flows[f]; len(ls) == 2 && ls[0] != ls[1] {
		// A stream's two links, its source's uplink and its reader's
		// downlink: the common case, without the loop.
		o := ls[0]
		if o == l {
			o = ls[1]
		}
		return min(d, level[o])
	}
	for _, o := range flows[f] {
		if o != l {
			d = min(d, level[o])
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
func (w *water) fit(capacity []float64, flows [][]int) []float64 {
	w.scale = grow(w.scale, len(capacity))
	for l, fs := range w.on {
		sum := 0.0
		for _, f := range fs {
			sum += w.rate[f]
		}
		w.scale[l] = 1
		if sum > capacity[l] {
			w.scale[l] = capacity[l] / sum
		}
	}
	for f, links := range flows {
		k := 1.0
		for _, l := range links {
			k = min(k, w.scale[l])
		}
		w.rate[f] *= k
	}
	return w.rate
}
