package model

import (
	"math"
	"testing"
)

func TestShare(t *testing.T) {
	t.Parallel()
	inf := math.Inf(1)
	tests := []struct {
		name     string
		capacity []float64
		flows    [][]int
		limit    []float64
		want     []float64
	}{
		{"one flow, the narrower link", []float64{10, 4}, [][]int{{0, 1}}, []float64{inf}, []float64{4}},
		{"two flows share a link", []float64{10}, [][]int{{0}, {0}}, []float64{inf, inf}, []float64{5, 5}},
		{"a flow held elsewhere leaves the rest", []float64{10, 2}, [][]int{{0, 1}, {0}}, []float64{inf, inf}, []float64{2, 8}},
		{"a flow's own limit", []float64{10}, [][]int{{0}, {0}}, []float64{1, inf}, []float64{1, 9}},
		{"a stopped flow", []float64{10}, [][]int{{0}, {0}}, []float64{0, inf}, []float64{0, 10}},
		{"classic: a long flow over two links", []float64{1, 1}, [][]int{{0, 1}, {0}, {1}}, []float64{inf, inf, inf}, []float64{0.5, 0.5, 0.5}},
		{"an unshaped link", []float64{inf, 3}, [][]int{{0, 1}, {0}}, []float64{inf, 7}, []float64{3, 7}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for name, alloc := range map[string]func([]float64, [][]int, []float64) []float64{"share": share, "waterShare": waterShare} {
				got := alloc(tc.capacity, tc.flows, tc.limit)
				for i := range got {
					if math.Abs(got[i]-tc.want[i]) > 1e-9 {
						t.Fatalf("%s = %v, want %v", name, got, tc.want)
					}
				}
			}
		})
	}
}
