package bench

import (
	"reflect"
	"testing"

	"github.com/shoal-dev/shoal/bench/lab"
	"github.com/shoal-dev/shoal/bench/report"
)

func TestDaemonCost(t *testing.T) {
	t.Parallel()
	link := func(rx, tx int64) lab.Counters { return lab.Counters{RxBytes: rx, TxBytes: tx} }
	daemon := func(pid int, start uint64, sec float64) lab.ProcTimes {
		return lab.ProcTimes{Pid: pid, Start: start, Seconds: sec}
	}
	before := snapshot{
		nodes: []lab.Counters{link(100, 10), link(200, 20), link(300, 30), link(400, 40), link(500, 50)},
		daemons: []lab.ProcTimes{
			daemon(11, 7, 1.1), // runs throughout
			daemon(12, 7, 2.0), // killed mid-run
			daemon(13, 7, 3.0), // restarted under another pid
			daemon(14, 7, 4.0), // its pid reused by a later process
			lab.ProcTimes{},    // not read before
		},
	}
	after := snapshot{
		nodes: []lab.Counters{link(1100, 510), link(900, 20), link(800, 30), link(900, 40), link(900, 50)},
		daemons: []lab.ProcTimes{
			daemon(11, 7, 3.48),
			{},
			daemon(31, 90, 0.5),
			daemon(14, 95, 0.1),
			daemon(15, 7, 9),
		},
	}
	want := []report.DaemonCost{{Node: 0, CPUSeconds: 2.38, LinkBytes: 1000 + 500}}
	if got := daemonCost(before, after); !reflect.DeepEqual(got, want) {
		t.Errorf("daemonCost = %+v, want %+v: only node 0 ran the same daemon from one snapshot to the other", got, want)
	}

	direct := snapshot{nodes: before.nodes, daemons: make([]lab.ProcTimes, len(before.nodes))}
	if got := daemonCost(direct, direct); got != nil {
		t.Errorf("daemonCost with no daemons = %+v, want none", got)
	}
}

func TestDaemonCostPhrase(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		rec  report.Record
		want string
	}{
		{"direct runs no daemon", report.Record{Candidate: CandidateDirect}, ""},
		{"a measured mirror", report.Record{Candidate: CandidateShoal, CoreSecondsPerGiB: 3.456}, ", daemons 3.46 core-s per GiB moved"},
		{"a mirror whose daemons were all left out", report.Record{Candidate: "spegel"}, ", daemons' CPU not measured"},
	} {
		if got := daemonCostPhrase(tt.rec); got != tt.want {
			t.Errorf("%s: daemonCostPhrase = %q, want %q", tt.name, got, tt.want)
		}
	}
}
