package model

import "math"

// share is the max-min fair allocation of link capacities to flows: each
// flow crosses the links listed in flows[i] and may carry at most limit[i]
// (+Inf: no limit of its own). It returns each flow's rate. Progressive
// filling: every flow not yet frozen grows at the same pace until a link
// it crosses is full or it reaches its limit, which freezes it; the rest
// grow on. A link of infinite capacity never fills.
func share(capacity []float64, flows [][]int, limit []float64) []float64 {
	rate := make([]float64, len(flows))
	left := append([]float64(nil), capacity...)
	frozen := make([]bool, len(flows))
	users := make([]int, len(capacity))
	active := 0
	for i, links := range flows {
		if limit[i] <= 0 {
			frozen[i] = true
			continue
		}
		active++
		for _, l := range links {
			users[l]++
		}
	}
	for active > 0 {
		step := math.Inf(1)
		for l, n := range users {
			if n > 0 {
				step = min(step, left[l]/float64(n))
			}
		}
		for i := range flows {
			if !frozen[i] {
				step = min(step, limit[i]-rate[i])
			}
		}
		if math.IsInf(step, 1) {
			// No link nor limit bounds what is left: it is unbounded.
			for i := range flows {
				if !frozen[i] {
					rate[i] = math.Inf(1)
				}
			}
			return rate
		}
		for i, links := range flows {
			if frozen[i] {
				continue
			}
			rate[i] += step
			for _, l := range links {
				left[l] -= step
			}
		}
		for i, links := range flows {
			if frozen[i] {
				continue
			}
			full := rate[i] >= limit[i]*(1-eps)
			for _, l := range links {
				full = full || (!math.IsInf(capacity[l], 1) && left[l] <= capacity[l]*eps)
			}
			if full {
				frozen[i] = true
				active--
				for _, l := range links {
					users[l]--
				}
			}
		}
	}
	return rate
}

// eps is the relative slack below which a link counts as full.
const eps = 1e-9
