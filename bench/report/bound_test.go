package report

import (
	"math"
	"strings"
	"testing"
)

func TestBounds(t *testing.T) {
	t.Parallel()
	inf := math.Inf(1)
	const S = 100.0 // bytes; rates below are bytes/s, so bounds are in seconds
	tests := []struct {
		name string
		got  float64
		want float64
	}{
		// cold: max(S/U, S/d, N·S/(U+N·u))
		{"cold: the registry uplink limits", ColdBound(S, 10, 100, 100, 4), 10},     // 10, 1, 400/410
		{"cold: the node downlink limits", ColdBound(S, 100, 5, 100, 4), 20},        // 1, 20, 400/500
		{"cold: the swarm's total upload limits", ColdBound(S, 10, 100, 1, 30), 75}, // 10, 1, 3000/40
		{"cold: one node is S/min(U,d)", ColdBound(S, 50, 20, 1, 1), 5},             // 2, 5, 100/51
		{"cold: unshaped node links leave S/U", ColdBound(S, 25, inf, inf, 8), 4},   // 4, 0, 0
		{"cold: nothing unshaped takes no time", ColdBound(S, inf, inf, inf, 8), 0}, //
		{"cold: a dead registry never finishes", ColdBound(S, 0, 10, 10, 2), inf},   //
		{"cold: no nodes, no time", ColdBound(S, 10, 10, 10, 0), 0},                 //
		{"cold: 200 Mbit/s, 64 MiB, N=4", ColdBound(64<<20, 25e6, 25e6, 25e6, 4), 2.68435456},
		// warm: max(S/u, S/d, (N−1)·S/(N·u))
		{"warm: the holder's uplink limits", WarmBound(S, 10, 100, 8), 10},   // 10, 1, 700/80
		{"warm: the node downlink limits", WarmBound(S, 100, 4, 8), 25},      // 1, 25, 700/800
		{"warm: one node has nothing to fetch", WarmBound(S, 10, 10, 1), 10}, // 10, 10, 0
		{"warm: a node with no uplink cannot serve", WarmBound(S, 0, 10, 2), inf},
		{"warm: N=1 with no uplink is still S/u", WarmBound(S, 0, 10, 1), inf}, // no 0/0 NaN
		// direct: max(N·S/U, S/d)
		{"direct: the registry serves N copies", DirectBound(S, 10, 100, 8), 80},
		{"direct: the node downlink limits", DirectBound(S, 1000, 10, 8), 10}, // 0.8, 10
		{"direct: unshaped registry", DirectBound(S, inf, 20, 8), 5},
		{"direct: no nodes, no time", DirectBound(S, 10, 10, 0), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if !(tt.got == tt.want || math.Abs(tt.got-tt.want) < 1e-9*tt.want) {
				t.Errorf("bound = %v, want %v", tt.got, tt.want)
			}
		})
	}
}

func TestRollingBound(t *testing.T) {
	t.Parallel()
	const S, r = 100.0, 10.0
	// First batch of 2 from the registry alone: max(S/U, S/d, 2S/(U+2u)) = 10.
	// Then each batch of 2 also has the holders' uploads: S/d = 10 dominates.
	if got := RollingBound(S, r, r, r, 8, 2); math.Abs(got-40) > 1e-9 {
		t.Errorf("RollingBound(8 nodes, batches of 2) = %v, want 40", got)
	}
	// One batch of everyone is the cold bound.
	if got, want := RollingBound(S, r, r, r, 4, 4), ColdBound(S, r, r, r, 4); got != want {
		t.Errorf("one batch: %v, want the cold bound %v", got, want)
	}
	if got := RollingBound(S, math.Inf(1), math.Inf(1), math.Inf(1), 4, 2); got != 0 {
		t.Errorf("unshaped: %v, want 0", got)
	}
}

func TestMbitToBytes(t *testing.T) {
	t.Parallel()
	if got := MbitToBytes(200); got != 25e6 {
		t.Errorf("MbitToBytes(200) = %v, want 25e6", got)
	}
}

func TestBaselineNote(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name            string
		makespan, bound float64
		wantHas         string
	}{
		{name: "at the bound", makespan: 10, bound: 10},
		{name: "exactly 1.2×", makespan: 12, bound: 10},
		{name: "1.4× says so", makespan: 14, bound: 10, wantHas: "1.40× its bound N·S/U: CPU or disk limited"},
		{name: "unknown bound says nothing", makespan: 14, bound: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := BaselineNote(tt.makespan, tt.bound)
			if tt.wantHas == "" && got != "" {
				t.Errorf("BaselineNote = %q, want none", got)
			}
			if tt.wantHas != "" && !strings.Contains(got, tt.wantHas) {
				t.Errorf("BaselineNote = %q, want it to contain %q", got, tt.wantHas)
			}
		})
	}
}

func TestFasterThanLinkNote(t *testing.T) {
	t.Parallel()
	const S, d = 100e6, 25e6 // 4 s across the link
	for _, tc := range []struct {
		name  string
		times []float64
		d     float64
		note  bool
	}{
		{"every node slower than its link", []float64{4.0, 5.2, 7}, d, false},
		{"within the slack", []float64{3.97}, d, false},
		{"one node faster", []float64{4.5, 3.5}, d, true},
		{"unshaped link", []float64{0.1}, math.Inf(1), false},
		{"no link", []float64{0.1}, 0, false},
		{"no pulls", nil, d, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := FasterThanLinkNote(tc.times, S, tc.d); (got != "") != tc.note {
				t.Fatalf("note %q, want one: %v", got, tc.note)
			}
		})
	}
}
