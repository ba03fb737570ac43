package bench

import (
	"errors"
	"fmt"
	"math"

	"github.com/shoal-dev/shoal/bench/lab"
	"github.com/shoal-dev/shoal/bench/report"
)

// daemonCPU reads the CPU time of node n's mirror daemon, its whole process
// group (a --candidate runs under sh, which forks it). It is the zero value
// when the node runs no daemon or the read fails, which leaves the node
// out of the daemons' cost.
func (s *session) daemonCPU(n *node) lab.ProcTimes {
	if n == nil {
		return lab.ProcTimes{}
	}
	pid := n.daemonPid()
	if pid == 0 {
		return lab.ProcTimes{}
	}
	t, err := lab.GroupCPU(pid)
	switch {
	case errors.Is(err, lab.ErrNoProcess):
		// Killed by the scenario (churn, slowpeers): expected.
		s.log.Debug("daemon CPU not read: it is gone", "node", n.i, "pid", pid)
		return lab.ProcTimes{}
	case err != nil:
		s.log.Warn("daemon CPU not read", "node", n.i, "pid", pid, "err", err)
		return lab.ProcTimes{}
	}
	return t
}

// daemonCost is what each node's daemon spent between two snapshots: its
// CPU time and the bytes its node's link carried, both ways. Inside a node,
// containerd reaches its mirror over loopback, so the link carries the
// daemon's traffic. A node is left out when it runs no daemon, when a
// snapshot could not read it, or when the two read different processes:
// a daemon killed mid-run, or restarted, is not the one measured before.
func daemonCost(before, after snapshot) []report.DaemonCost {
	var out []report.DaemonCost
	for i, b := range before.daemons {
		a := after.daemons[i]
		if !b.Same(a) {
			continue
		}
		moved := after.nodes[i].RxBytes + after.nodes[i].TxBytes - before.nodes[i].RxBytes - before.nodes[i].TxBytes
		// The kernel counts CPU time in hundredths of a second.
		cpu := math.Round((a.Seconds-b.Seconds)*100) / 100
		out = append(out, report.DaemonCost{Node: i, CPUSeconds: cpu, LinkBytes: moved})
	}
	return out
}

// daemonCostPhrase ends a run's progress line with the daemons' CPU per
// byte moved; it is empty for direct, which runs none.
func daemonCostPhrase(rec report.Record) string {
	switch {
	case rec.Candidate == CandidateDirect:
		return ""
	case rec.CoreSecondsPerGiB > 0:
		return fmt.Sprintf(", daemons %.2f core-s per GiB moved", rec.CoreSecondsPerGiB)
	default:
		return ", daemons' CPU not measured"
	}
}
