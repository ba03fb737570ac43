package report

import (
	"math"
	"slices"
)

// Direct is the name of the baseline candidate: nodes pull straight from the
// registry with no mirror. Summaries and charts put it first.
const Direct = "direct"

// Summary is the repetitions of one candidate in one scenario, reduced to a
// median and a spread.
type Summary struct {
	Scenario  string
	Candidate string
	// Reps is the number of records summarised.
	Reps int
	// Nodes and ImageBytes are N and S of the first record; a session runs
	// every record of a scenario with the same image and nodes.
	Nodes      int
	ImageBytes int64
	// BoundSeconds is the median T* over the repetitions.
	BoundSeconds float64
	// EgressRatio* are registry egress / S over the repetitions; NaN if S is
	// not known.
	EgressRatioMedian, EgressRatioMin, EgressRatioMax float64
	// EgressMedian, EgressMin and EgressMax are registry egress in bytes.
	EgressMedian, EgressMin, EgressMax float64
	// Makespan* are the slowest node's time in seconds.
	MakespanMedian, MakespanMin, MakespanMax float64
	// MakespanRatio* are makespan / T*; NaN if T* is not known.
	MakespanRatioMedian, MakespanRatioMin, MakespanRatioMax float64
	// CoreSecondsPerGiB is the median of the records' figure over the
	// repetitions that measured it; NaN if none did (direct, the simulated
	// mode).
	CoreSecondsPerGiB float64
	// Failed is the sum of failed pulls over the repetitions.
	Failed int
	// Notes are the records' notes, each once, in the order first seen.
	Notes []string
}

// Summarize groups records by scenario and candidate and reduces each group
// to a Summary. The order is stable: scenarios in the order first seen, and
// within each scenario the direct baseline first, then the other candidates
// in the order first seen anywhere, so that every scenario lists them alike.
func Summarize(records []Record) []Summary {
	type key struct{ scenario, candidate string }
	var scenarios, candidates []string
	groups := make(map[key][]Record)
	for _, r := range records {
		if !slices.Contains(scenarios, r.Scenario) {
			scenarios = append(scenarios, r.Scenario)
		}
		if !slices.Contains(candidates, r.Candidate) {
			candidates = append(candidates, r.Candidate)
		}
		k := key{r.Scenario, r.Candidate}
		groups[k] = append(groups[k], r)
	}
	candidates = directFirst(candidates)

	var out []Summary
	for _, s := range scenarios {
		for _, c := range candidates {
			if g, ok := groups[key{s, c}]; ok {
				out = append(out, summarize(s, c, g))
			}
		}
	}
	return out
}

func summarize(scenario, candidate string, g []Record) Summary {
	s := Summary{
		Scenario:   scenario,
		Candidate:  candidate,
		Reps:       len(g),
		Nodes:      g[0].Nodes,
		ImageBytes: g[0].ImageBytes,
	}
	var bound, egress, egressRatio, makespan, makespanRatio, cpu []float64
	for _, r := range g {
		bound = append(bound, r.BoundSeconds)
		egress = append(egress, float64(r.RegistryEgressBytes))
		egressRatio = append(egressRatio, ratio(float64(r.RegistryEgressBytes), float64(r.ImageBytes)))
		makespan = append(makespan, r.MakespanSeconds)
		makespanRatio = append(makespanRatio, ratio(r.MakespanSeconds, r.BoundSeconds))
		if r.CoreSecondsPerGiB > 0 {
			cpu = append(cpu, r.CoreSecondsPerGiB)
		}
		s.Failed += r.FailedPulls
		for _, n := range r.Notes {
			if !slices.Contains(s.Notes, n) {
				s.Notes = append(s.Notes, n)
			}
		}
	}
	s.BoundSeconds, _, _ = Spread(bound)
	s.EgressMedian, s.EgressMin, s.EgressMax = Spread(egress)
	s.EgressRatioMedian, s.EgressRatioMin, s.EgressRatioMax = Spread(egressRatio)
	s.MakespanMedian, s.MakespanMin, s.MakespanMax = Spread(makespan)
	s.MakespanRatioMedian, s.MakespanRatioMin, s.MakespanRatioMax = Spread(makespanRatio)
	s.CoreSecondsPerGiB, _, _ = Spread(cpu)
	return s
}

// directFirst moves the baseline to the front and keeps the rest in order.
func directFirst(names []string) []string {
	i := slices.Index(names, Direct)
	if i <= 0 {
		return names
	}
	out := append([]string{Direct}, names[:i]...)
	return append(out, names[i+1:]...)
}

// ratio is a/b, or NaN when b is not a positive, finite reference: a figure
// with no denominator is shown as unknown rather than as zero or infinity.
func ratio(a, b float64) float64 {
	if b <= 0 || math.IsInf(b, 0) || math.IsNaN(b) {
		return math.NaN()
	}
	return a / b
}

// Spread returns the median, minimum and maximum of the finite values in vs
// (the mean of the middle two when their count is even), or NaN three times
// if there are none.
func Spread(vs []float64) (median, lo, hi float64) {
	var xs []float64
	for _, v := range vs {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			xs = append(xs, v)
		}
	}
	if len(xs) == 0 {
		nan := math.NaN()
		return nan, nan, nan
	}
	slices.Sort(xs)
	n := len(xs)
	median = xs[n/2]
	if n%2 == 0 {
		median = (xs[n/2-1] + xs[n/2]) / 2
	}
	return median, xs[0], xs[n-1]
}
