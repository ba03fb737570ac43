package resolver

import (
	"testing"
	"time"
)

// linkJudge is a Router whose other peers answer a ping in time or not;
// only OwnLinkSlow may be called.
type linkJudge struct {
	Router
	othersSilent bool
}

func (l linkJudge) OwnLinkSlow(string, time.Duration) bool { return l.othersSilent }

// TestOwnLinkExcusesOnlyANodeThatSlowed: a peer's wait is laid to the
// node's own link only when the node as a whole receives under half its
// best second and none of its other peers answers in time: a node that
// receives at its best carries bytes fine, whatever the peers it could
// ask (frozen or throttled themselves) say.
func TestOwnLinkExcusesOnlyANodeThatSlowed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name         string
		othersSilent bool
		atItsBest    bool // the node receives at its best up to now
		wait         time.Duration
		want         bool
	}{
		{name: "node slowed, other peers silent", othersSilent: true, wait: time.Second, want: true},
		{name: "node at its best, other peers silent", othersSilent: true, atItsBest: true, wait: time.Second},
		{name: "node slowed, another peer answers", wait: time.Second},
		{name: "node slowed, other peers silent, the wait past the stall timeout", othersSilent: true, wait: 10 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// Three seconds ago the node began receiving 3.2 MB/s; it
			// still does, or stopped a second ago.
			now := time.Now()
			start := now.Add(-3 * time.Second)
			node := newNodePace(time.Second)
			node.p.at = start.Truncate(paceBucket)
			end := start.Add(2 * time.Second)
			if tc.atItsBest {
				end = now
			}
			for at := start; at.Before(end); at = at.Add(10 * time.Millisecond) {
				node.read(at, 32<<10)
			}
			r := &Resolver{router: linkJudge{othersSilent: tc.othersSilent}, cfg: Config{StallTimeout: 10 * time.Second}, pace: node, m: newMetrics(nil)}
			if got := r.ownLinkExcuses("p", tc.wait); got != tc.want {
				t.Errorf("excused = %v, want %v", got, tc.want)
			}
		})
	}
}
