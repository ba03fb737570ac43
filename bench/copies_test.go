package bench

import (
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func TestCountCopies(t *testing.T) {
	t.Parallel()
	a, b, c, other := digest.FromString("a"), digest.FromString("b"), digest.FromString("c"), digest.FromString("not the image's")
	sizes := map[digest.Digest]int64{a: 100, b: 100, c: 10}
	t0 := time.Unix(1000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	harmed := map[int]bool{2: true, 3: true}
	tests := []struct {
		name string
		gets []blobGet
		want copies
	}{
		{"one copy of each: nothing past it", []blobGet{
			{a, 0, at(0), 100}, {b, 1, at(0), 100}, {c, 2, at(0), 10},
		}, copies{}},
		{"a blob a harmed node began first, fetched again once: excused", []blobGet{
			{a, 2, at(0), 30}, {a, 0, at(1), 70}, {a, 1, at(1.5), 70},
		}, copies{Beyond: 70, Over: 0}},
		{"the same, fetched a third time: past the second copy", []blobGet{
			{a, 2, at(0), 100}, {a, 0, at(1), 100}, {a, 1, at(1.5), 40},
		}, copies{Beyond: 140, Over: 40}},
		{"a harmed node fetching a blob an unharmed node began first", []blobGet{
			{b, 0, at(0), 100}, {b, 2, at(3), 60},
		}, copies{Beyond: 60, Over: 60}},
		{"two unharmed nodes leading one blob", []blobGet{
			{b, 1, at(0.2), 50}, {b, 0, at(0), 100},
		}, copies{Beyond: 50, Over: 50}},
		{"not a node (-1) began first: nothing excused", []blobGet{
			{c, -1, at(0), 10}, {c, 3, at(1), 10},
		}, copies{Beyond: 10, Over: 10}},
		{"blobs outside the image are left out", []blobGet{
			{other, 0, at(0), 500}, {other, 1, at(0), 500},
		}, copies{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := countCopies(tc.gets, sizes, harmed); got != tc.want {
				t.Fatalf("countCopies = %+v, want %+v", got, tc.want)
			}
		})
	}
	if n := (copies{Beyond: 64, Over: 16}).note(64); !strings.Contains(n, "1.00 × S, 0.25 × S of it") {
		t.Fatalf("note %q", n)
	}
}
