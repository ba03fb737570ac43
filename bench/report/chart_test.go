package report

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestTicks(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		ints   bool
		lo, hi float64
		want   []string
	}{
		{name: "seconds", lo: 0, hi: 29.9, want: []string{"0", "10", "20"}},
		{name: "fractions of a second", lo: 0, hi: 0.157, want: []string{"0.00", "0.05", "0.10", "0.15"}},
		{name: "ratios up to the target", lo: 0, hi: 1.68, want: []string{"0.0", "0.5", "1.0", "1.5"}},
		{name: "2.5 steps need a decimal", lo: 0, hi: 11, want: []string{"0.0", "2.5", "5.0", "7.5", "10.0"}},
		{name: "a flat axis", lo: 3, hi: 3, want: []string{"3"}},
		{name: "few nodes: every one", ints: true, lo: 0.5, hi: 8.5, want: []string{"1", "2", "3", "4", "5", "6", "7", "8"}},
		{name: "many nodes: round ones", ints: true, lo: 0.5, hi: 100.5, want: []string{"20", "40", "60", "80", "100"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ticks := (niceTicks{}).Ticks(tt.lo, tt.hi)
			if tt.ints {
				ticks = (intTicks{}).Ticks(tt.lo, tt.hi)
			}
			var got []string
			for _, tk := range ticks {
				if tk.Label != "" {
					got = append(got, tk.Label)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("labels = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestWriteHTMLOddInputs draws what a broken or unusual run leaves behind:
// a hundred nodes with a T* per candidate, and a scenario with neither node
// times nor a bound, whose figures must read n/a rather than fail.
func TestWriteHTMLOddInputs(t *testing.T) {
	t.Parallel()
	var recs []Record
	for _, c := range []string{"shoal", Direct} {
		r := Record{Candidate: c, Scenario: "cold", Mode: ModeReal, Rep: 1, Nodes: 100, ImageBytes: 300 << 10,
			RegistryEgressBytes: 310 << 10, BoundSeconds: 0.05, FailedPulls: 2}
		if c == Direct {
			r.BoundSeconds, r.RegistryEgressBytes = 0.08, 100*300<<10
		}
		for i := range 100 {
			r.NodeSeconds = append(r.NodeSeconds, 0.05+0.001*float64(i))
		}
		r.MakespanSeconds = r.NodeSeconds[99]
		recs = append(recs, r)
	}
	recs = append(recs, Record{Candidate: "shoal", Scenario: "outage", Mode: ModeReal, Nodes: 3,
		ImageBytes: 5 << 30, MakespanSeconds: 300})

	dir := t.TempDir()
	if err := WriteHTML(dir, recs, Meta{Mode: ModeReal}); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.png"))
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range files {
		files[i] = filepath.Base(f)
	}
	want := []string{"01-cold-egress.png", "01-cold-makespan.png", "01-cold-nodes.png",
		"02-outage-egress.png", "02-outage-makespan.png"}
	if !slices.Equal(files, want) {
		t.Errorf("charts = %q, want %q (no node chart without node times)", files, want)
	}
	b, err := os.ReadFile(filepath.Join(dir, HTMLFile))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "n/a") {
		t.Error("report does not say n/a for the ratio without a bound")
	}
}
