package report

import (
	"math"
	"slices"
	"testing"
)

func TestSummarizeSpread(t *testing.T) {
	t.Parallel()
	rec := func(egress int64, makespan float64, failed int, notes ...string) Record {
		return Record{Candidate: "shoal", Scenario: "cold", Nodes: 4, ImageBytes: 100,
			RegistryEgressBytes: egress, BoundSeconds: 2, MakespanSeconds: makespan, FailedPulls: failed, Notes: notes}
	}
	tests := []struct {
		name                     string
		recs                     []Record
		median, lo, hi           float64 // makespan
		ratioMedian, egressRatio float64
		failed                   int
		notes                    []string
	}{
		{
			name:   "one rep",
			recs:   []Record{rec(110, 3, 0)},
			median: 3, lo: 3, hi: 3, ratioMedian: 1.5, egressRatio: 1.1,
		},
		{
			name:   "odd reps take the middle, unsorted input",
			recs:   []Record{rec(120, 5, 1, "a"), rec(100, 3, 0), rec(110, 4, 2, "a", "b")},
			median: 4, lo: 3, hi: 5, ratioMedian: 2, egressRatio: 1.1,
			failed: 3, notes: []string{"a", "b"},
		},
		{
			name:   "even reps average the middle two",
			recs:   []Record{rec(100, 6, 0), rec(100, 2, 0), rec(300, 3, 0), rec(200, 5, 0)},
			median: 4, lo: 2, hi: 6, ratioMedian: 2, egressRatio: 1.5,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sums := Summarize(tt.recs)
			if len(sums) != 1 {
				t.Fatalf("got %d summaries, want 1", len(sums))
			}
			s := sums[0]
			if s.Reps != len(tt.recs) {
				t.Errorf("Reps = %d, want %d", s.Reps, len(tt.recs))
			}
			for _, c := range []struct {
				name      string
				got, want float64
			}{
				{"MakespanMedian", s.MakespanMedian, tt.median},
				{"MakespanMin", s.MakespanMin, tt.lo},
				{"MakespanMax", s.MakespanMax, tt.hi},
				{"MakespanRatioMedian", s.MakespanRatioMedian, tt.ratioMedian},
				{"EgressRatioMedian", s.EgressRatioMedian, tt.egressRatio},
				{"BoundSeconds", s.BoundSeconds, 2},
			} {
				if math.Abs(c.got-c.want) > 1e-12 {
					t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
				}
			}
			if s.Failed != tt.failed {
				t.Errorf("Failed = %d, want %d", s.Failed, tt.failed)
			}
			if !slices.Equal(s.Notes, tt.notes) {
				t.Errorf("Notes = %q, want %q", s.Notes, tt.notes)
			}
		})
	}
}

func TestSummarizeUnknownReferenceIsNaN(t *testing.T) {
	t.Parallel()
	s := Summarize([]Record{{Candidate: "shoal", Scenario: "cold", MakespanSeconds: 3, RegistryEgressBytes: 10}})[0]
	if !math.IsNaN(s.EgressRatioMedian) || !math.IsNaN(s.MakespanRatioMedian) {
		t.Errorf("ratios without S or T* = %v, %v; want NaN, not a number that looks measured",
			s.EgressRatioMedian, s.MakespanRatioMedian)
	}
	if s.MakespanMedian != 3 {
		t.Errorf("MakespanMedian = %v, want 3", s.MakespanMedian)
	}
}

func TestSummarizeOrder(t *testing.T) {
	t.Parallel()
	rec := func(scenario, candidate string) Record { return Record{Scenario: scenario, Candidate: candidate} }
	type key struct{ scenario, candidate string }
	tests := []struct {
		name string
		recs []Record
		want []key
	}{
		{
			name: "scenarios as first seen, direct first within each",
			recs: []Record{rec("warm", "shoal"), rec("cold", "shoal"), rec("cold", Direct), rec("warm", Direct), rec("cold", "shoal")},
			want: []key{{"warm", Direct}, {"warm", "shoal"}, {"cold", Direct}, {"cold", "shoal"}},
		},
		{
			name: "other candidates keep their first-seen order in every scenario",
			recs: []Record{rec("cold", "kraken"), rec("cold", "shoal"), rec("cold", Direct), rec("warm", "shoal"), rec("warm", "kraken")},
			want: []key{{"cold", Direct}, {"cold", "kraken"}, {"cold", "shoal"}, {"warm", "kraken"}, {"warm", "shoal"}},
		},
		{
			name: "a scenario without the baseline",
			recs: []Record{rec("churn", "shoal"), rec("cold", Direct)},
			want: []key{{"churn", "shoal"}, {"cold", Direct}},
		},
		{name: "no records", recs: nil, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got []key
			for _, s := range Summarize(tt.recs) {
				got = append(got, key{s.Scenario, s.Candidate})
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("order = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSummarizeCoreSeconds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		figures []float64 // each repetition's core_seconds_per_gib; 0 is not measured
		want    float64   // NaN: none measured
	}{
		{name: "one rep", figures: []float64{7.5}, want: 7.5},
		{name: "odd reps take the middle", figures: []float64{9, 3, 4}, want: 4},
		{name: "even reps average the middle two", figures: []float64{2, 10, 4, 6}, want: 5},
		{name: "reps that measured nothing are left out", figures: []float64{0, 8, 0, 6}, want: 7},
		{name: "nothing measured", figures: []float64{0, 0}, want: math.NaN()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var recs []Record
			for i, f := range tt.figures {
				recs = append(recs, Record{Candidate: "shoal", Scenario: "cold", Rep: i + 1, CoreSecondsPerGiB: f})
			}
			got := Summarize(recs)[0].CoreSecondsPerGiB
			if math.IsNaN(tt.want) {
				if !math.IsNaN(got) {
					t.Errorf("CoreSecondsPerGiB = %v, want NaN: no repetition measured it", got)
				}
				return
			}
			if math.Abs(got-tt.want) > 1e-12 {
				t.Errorf("CoreSecondsPerGiB = %v, want %v", got, tt.want)
			}
		})
	}
}
