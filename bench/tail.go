package bench

import (
	"context"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/bench/lab"
	"github.com/shoal-dev/shoal/bench/report"
	"github.com/shoal-dev/shoal/pulls"
)

// tails reads each unharmed node's record of its pull from its shoal
// daemon (see report.NodeTail). A node whose record cannot be read is left
// out, with a warning: the tail is a breakdown, not a result.
func (s *session) tails(ctx context.Context, nodes []*node, results []pullResult, start time.Time) []report.NodeTail {
	var out []report.NodeTail
	for _, r := range results {
		n := nodes[r.node]
		if r.harm != unharmed || r.err != nil || n == nil || n.shoal == nil {
			continue
		}
		p, err := n.shoal.Pull(ctx, s.im.Ref)
		if err != nil {
			s.log.Warn("pull record not read", "node", r.node, "err", err)
			continue
		}
		t := nodeTail(r.node, r.seconds, p, start)
		if applied, err := n.ctrd.AppliedLayers(start); err != nil {
			s.log.Warn("containerd's unpacks not read", "node", r.node, "err", err)
		} else {
			addUnpacks(&t, applied, start)
		}
		out = append(out, t)
	}
	return out
}

// nodeTail turns a daemon's pull record into the node's tail, in seconds
// from start.
func nodeTail(i int, pullSeconds float64, p pulls.Pull, start time.Time) report.NodeTail {
	at := func(t time.Time) float64 {
		if t.IsZero() {
			return 0
		}
		return t.Sub(start).Seconds()
	}
	t := report.NodeTail{Node: i, PullSeconds: pullSeconds}
	for _, b := range p.Blobs {
		bt := report.BlobTail{Digest: b.Digest.String(), Size: b.Size, Started: at(b.Started)}
		var first, last time.Time
		for _, src := range b.Sources {
			if src.Source == "containerd" || src.Source == "store" {
				continue // the node's own copy: no transfer
			}
			if !src.First.IsZero() && (first.IsZero() || src.First.Before(first)) {
				first = src.First
			}
			if src.Last.After(last) {
				last = src.Last
			}
		}
		bt.FirstByte, bt.LastByte = at(first), at(last)
		if b.State == pulls.StateStored {
			bt.Verified = at(b.Ended)
		}
		t.Blobs = append(t.Blobs, bt)
	}
	return t
}

// addUnpacks adds to t's layers when containerd unpacked them.
func addUnpacks(t *report.NodeTail, applied map[digest.Digest]lab.Applied, start time.Time) {
	for i, b := range t.Blobs {
		if a, ok := applied[digest.Digest(b.Digest)]; ok {
			t.Blobs[i].Unpacked = a.At.Sub(start).Seconds()
			t.Blobs[i].UnpackSeconds = a.Took.Seconds()
		}
	}
}
