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
	on := linkFlows(len(capacity), flows)
	level := make([]float64, len(capacity))
	for l := range level {
		level[l] = math.Inf(1)
	}
	rate := make([]float64, len(flows))
	var demand []float64
	for range waterRounds {
		for l, fs := range on {
			demand = demand[:0]
			for _, f := range fs {
				demand = append(demand, demandAt(l, f, flows, limit, level))
			}
			level[l] = fill(capacity[l], demand)
		}
	}
	for f, links := range flows {
		rate[f] = max(0, limit[f])
		for _, l := range links {
			rate[f] = min(rate[f], level[l], capacity[l])
		}
	}
	return fit(capacity, on, flows, rate)
}

// linkFlows lists, by link, the flows that cross it.
func linkFlows(links int, flows [][]int) [][]int {
	on := make([][]int, links)
	for f, ls := range flows {
		for _, l := range ls {
			on[l] = append(on[l], f)
		}
	}
	return on
}

// demandAt is what flow f could carry over link l: its limit, and the
// levels of its other links.
func demandAt(l, f int, flows [][]int, limit, level []float64) float64 {
	d := max(0, limit[f])
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
func fit(capacity []float64, on, flows [][]int, rate []float64) []float64 {
	scale := make([]float64, len(capacity))
	for l, fs := range on {
		sum := 0.0
		for _, f := range fs {
			sum += rate[f]
		}
		scale[l] = 1
		if sum > capacity[l] {
			scale[l] = capacity[l] / sum
		}
	}
	for f, links := range flows {
		k := 1.0
		for _, l := range links {
			k = min(k, scale[l])
		}
		rate[f] *= k
	}
	return rate
}
