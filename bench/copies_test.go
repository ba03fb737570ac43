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
	// Node 2 harmed at 2 s, node 3 after its pull returned.
	harmed := map[int]time.Time{2: at(2), 3: {}}
	node4 := map[int]time.Time{2: at(2), 3: {}, 4: at(1)}
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
		{"a harmed node fetching, after its harm, a blob an unharmed node began first", []blobGet{
			{b, 0, at(0), 100}, {b, 2, at(3), 60},
		}, copies{Beyond: 60, Over: 60}},
		{"a blob an unharmed node began first, fetched again by a node harmed while fetching it", []blobGet{
			{b, 0, at(0), 60}, {b, 2, at(1), 80}, {b, 1, at(2.5), 40},
		}, copies{Beyond: 80, Over: 0}},
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
	// Two harmed nodes fetching a blob when harmed excuse a copy each.
	two := []blobGet{{a, 4, at(0), 50}, {a, 2, at(0.5), 100}, {a, 0, at(2.5), 100}}
	if got, want := countCopies(two, sizes, node4), (copies{Beyond: 150, Over: 0}); got != want {
		t.Errorf("two harmed fetchers: countCopies = %+v, want %+v", got, want)
	}
	if got, want := countCopies(two, sizes, harmed), (copies{Beyond: 150, Over: 50}); got != want {
		t.Errorf("one harmed fetcher of two: countCopies = %+v, want %+v", got, want)
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
