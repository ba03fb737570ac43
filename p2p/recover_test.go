package p2p

import "testing"

// TestEpisode: a node exchanges state once per span of doubt about its
// own side, again only when the doubt grew, and anew after it healed.
func TestEpisode(t *testing.T) {
	t.Parallel()
	var e episode
	steps := []struct {
		score int
		due   bool
		pings bool // a member answered: the exchange took place
	}{
		{0, false, false},
		{1, true, false}, // cut off: no member answers yet
		{3, true, false},
		{3, true, true}, // the link is back: exchange
		{3, false, false},
		{2, false, false}, // healing: nothing more to do
		{4, true, true},   // doubt grew again: exchange again
		{4, false, false},
		{0, false, false}, // healthy
		{1, true, true},   // a new episode
	}
	for i, s := range steps {
		if got := e.due(s.score); got != s.due {
			t.Fatalf("step %d, score %d: due %v, want %v", i, s.score, got, s.due)
		}
		if s.pings {
			e.reconciled(s.score)
		}
	}
}
