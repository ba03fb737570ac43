package store

import (
	"slices"
	"testing"
)

func TestRanges(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		add    []span
		want   ranges
		prefix int64
		query  span
		gaps   []span
	}{
		{name: "empty", query: span{0, 10}, gaps: []span{{0, 10}}},
		{name: "in order", add: []span{{0, 4}, {4, 8}}, want: ranges{{0, 8}}, prefix: 8,
			query: span{2, 10}, gaps: []span{{8, 10}}},
		{name: "hole", add: []span{{0, 2}, {5, 8}}, want: ranges{{0, 2}, {5, 8}}, prefix: 2,
			query: span{0, 10}, gaps: []span{{2, 5}, {8, 10}}},
		{name: "hole filled", add: []span{{5, 8}, {0, 2}, {2, 5}}, want: ranges{{0, 8}}, prefix: 8,
			query: span{0, 8}},
		{name: "overlap spans several", add: []span{{1, 2}, {3, 4}, {6, 7}, {0, 5}}, want: ranges{{0, 5}, {6, 7}},
			prefix: 5, query: span{4, 9}, gaps: []span{{5, 6}, {7, 9}}},
		{name: "no prefix", add: []span{{3, 4}}, want: ranges{{3, 4}}, query: span{3, 4}},
		{name: "empty span ignored", add: []span{{3, 3}}, query: span{2, 5}, gaps: []span{{2, 5}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var r ranges
			for _, s := range tt.add {
				r.add(s)
			}
			if !slices.Equal(r, tt.want) {
				t.Errorf("ranges = %v, want %v", r, tt.want)
			}
			if got := r.prefix(); got != tt.prefix {
				t.Errorf("prefix = %d, want %d", got, tt.prefix)
			}
			if got := r.gaps(tt.query); !slices.Equal(got, tt.gaps) {
				t.Errorf("gaps(%v) = %v, want %v", tt.query, got, tt.gaps)
			}
		})
	}
}
