package bench

import (
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/bench/lab"
	"github.com/shoal-dev/shoal/bench/report"
	"github.com/shoal-dev/shoal/pulls"
)

func TestNodeTailTimesFromThePullRecord(t *testing.T) {
	start := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	sec := func(s float64) time.Time { return start.Add(time.Duration(s * float64(time.Second))) }
	p := pulls.Pull{Blobs: []pulls.Blob{
		{Digest: digest.FromString("a"), Size: 100, State: pulls.StateStored, Started: sec(0.5), Ended: sec(3.2), Sources: []pulls.SourceBytes{
			{Source: "peer", Bytes: 60, First: sec(1.5), Last: sec(3.0)},
			{Source: "upstream", Bytes: 40, First: sec(1.0), Last: sec(2.0)},
		}},
		{Digest: digest.FromString("b"), Size: 50, State: pulls.StateLocal, Started: sec(0.6), Ended: sec(0.7), Sources: []pulls.SourceBytes{
			{Source: "containerd", Bytes: 50, First: sec(0.6), Last: sec(0.7)},
		}},
	}}
	got := nodeTail(1, 4, p, start)
	want := report.NodeTail{Node: 1, PullSeconds: 4, Blobs: []report.BlobTail{
		{Digest: digest.FromString("a").String(), Size: 100, Started: 0.5, FirstByte: 1, LastByte: 3, Verified: 3.2},
		{Digest: digest.FromString("b").String(), Size: 50, Started: 0.6},
	}}
	if len(got.Blobs) != 2 || got.Node != want.Node || got.PullSeconds != want.PullSeconds {
		t.Fatalf("tail %+v, want %+v", got, want)
	}
	for i := range want.Blobs {
		g, w := got.Blobs[i], want.Blobs[i]
		near := func(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }
		if g.Digest != w.Digest || g.Size != w.Size || !near(g.Started, w.Started) || !near(g.FirstByte, w.FirstByte) || !near(g.LastByte, w.LastByte) || !near(g.Verified, w.Verified) {
			t.Errorf("blob %d: %+v, want %+v", i, g, w)
		}
	}
}

func TestAddUnpacksByLayerDigest(t *testing.T) {
	start := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	a, b := digest.FromString("a"), digest.FromString("b")
	nt := report.NodeTail{Blobs: []report.BlobTail{{Digest: a.String()}, {Digest: b.String()}}}
	addUnpacks(&nt, map[digest.Digest]lab.Applied{b: {At: start.Add(2500 * time.Millisecond), Took: 300 * time.Millisecond}}, start)
	if nt.Blobs[0].Unpacked != 0 || nt.Blobs[1].Unpacked != 2.5 || nt.Blobs[1].UnpackSeconds != 0.3 {
		t.Fatalf("blobs %+v: want only the second unpacked, at 2.5 s, taking 0.3 s", nt.Blobs)
	}
}
