package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/bench/lab"
	"github.com/shoal-dev/shoal/bench/report"
)

// How far the registry's interface counters may differ from its access
// log before a run fails: 5 % of the payload, plus the headers the
// interface counts and the log does not (L2–L4 headers per packet, HTTP
// response headers per request, and some ARP).
const (
	egressSlack      = 0.05
	headerPerPacket  = 80
	headerPerRequest = 1024
	headerConstant   = 4096
	// retransSegBytes is what a TCP segment sent again costs the
	// interface at most: a full frame of the lab's 1500-byte MTU.
	retransSegBytes = 1514
)

// cpuBoundShare is how busy the host's CPUs may be during the pulls
// before a run's record says it was short of CPU.
const cpuBoundShare = 0.8

// snapshot is what the counters say at one moment of a run.
type snapshot struct {
	requests int // registry log entries so far
	reg      lab.Counters
	nodes    []lab.Counters
	// daemons is each node's mirror daemon's CPU time so far; the zero
	// value for a node that runs none or whose daemon was not read.
	daemons []lab.ProcTimes
}

// snapshot reads the counters, and the CPU time of the daemons of nodes,
// which are s.hosts' nodes of the current run.
func (s *session) snapshot(ctx context.Context, nodes []*node) (snapshot, error) {
	reqs, err := s.reg.Requests()
	if err != nil {
		return snapshot{}, fmt.Errorf("registry log: %w", err)
	}
	snap := snapshot{requests: len(reqs)}
	if snap.reg, err = s.regHost.Counters(ctx); err != nil {
		return snapshot{}, err
	}
	for i, h := range s.hosts {
		c, err := h.Counters(ctx)
		if err != nil {
			return snapshot{}, err
		}
		snap.nodes = append(snap.nodes, c)
		snap.daemons = append(snap.daemons, s.daemonCPU(nodes[i]))
	}
	return snap, nil
}

// pullResult is one node's pull in a run.
type pullResult struct {
	node    int
	seconds float64 // from the start of the scenario until the pull returned
	err     error
	harm    harm // what the scenario did to the node; a harmed node's pull is not counted
	// harmedAt is when the harm struck mid-pull (zero: after the pull
	// returned, or never).
	harmedAt time.Time
}

// harm is what a scenario does to a node mid-pull.
type harm int

const (
	unharmed     harm = iota
	harmKill          // churn: its mirror and containerd killed
	harmThrottle      // slowpeers: its link cut to a tenth
	harmFreeze        // slowpeers: its mirror (containerd, for direct) stopped
)

// at is the share of the image a node's interface has received when the
// harm strikes it.
func (h harm) at() float64 {
	if h == harmKill {
		return 0.5
	}
	return 0.25
}

// victims are the nodes a scenario harms: the last ones.
func (s *session) victims(scenario string, nodes []*node) map[int]harm {
	v := map[int]harm{}
	switch scenario {
	case ScenarioChurn:
		for _, n := range nodes[len(nodes)-s.cfg.Churn:] {
			v[n.i] = harmKill
		}
	case ScenarioSlowPeers:
		last := nodes[len(nodes)-s.cfg.Throttled-s.cfg.Frozen:]
		for _, n := range last[:s.cfg.Throttled] {
			v[n.i] = harmThrottle
		}
		for _, n := range last[s.cfg.Throttled:] {
			v[n.i] = harmFreeze
		}
	}
	return v
}

// runOnce starts fresh nodes for one candidate, runs one scenario and
// measures it.
func (s *session) runOnce(ctx context.Context, run int, cand, scenario string, rep int, p *progress) (rec report.Record, err error) {
	rec = report.Record{
		Candidate: cand, Scenario: scenario, Mode: report.ModeReal, Nodes: s.cfg.Nodes,
		ImageBytes: s.im.Size, LinkMbit: s.cfg.LinkMbit, RegistryMbit: s.cfg.RegistryMbit,
	}
	// Short names: containerd's socket path must fit in 108 bytes.
	runDir := filepath.Join(s.dir, fmt.Sprintf("r%d", run))
	if err := os.Mkdir(runDir, 0o755); err != nil {
		return rec, err
	}
	defer func() { err = errors.Join(err, os.RemoveAll(runDir)) }()
	nodes := make([]*node, len(s.hosts))
	defer func() {
		if err != nil && ctx.Err() == nil {
			err = fmt.Errorf("%w%s", err, logTails(nodes, 8))
		}
		if s.cfg.LogDir != "" {
			err = errors.Join(err, keepLogs(filepath.Join(s.cfg.LogDir, fmt.Sprintf("%02d-%s-%s-rep%d", run, scenario, cand, rep)), nodes))
		}
		err = errors.Join(err, closeNodes(nodes))
	}()
	pullers, restore, err := s.bringUp(ctx, runDir, cand, scenario, nodes, p)
	if restore != nil {
		defer func() { err = errors.Join(err, restore()) }()
	}
	if err != nil {
		return rec, err
	}
	before, err := s.snapshot(ctx, nodes)
	if err != nil {
		return rec, err
	}
	results, start, err := s.pullAll(ctx, &rec, scenario, nodes, pullers, before, p)
	if err != nil {
		return rec, err
	}
	after, err := s.snapshot(ctx, nodes)
	if err != nil {
		return rec, err
	}
	s.checkComplete(ctx, nodes, results)
	firstErr := s.countPulls(&rec, results)
	for i := range nodes {
		rec.NodeUploadBytes = append(rec.NodeUploadBytes, after.nodes[i].TxBytes-before.nodes[i].TxBytes)
	}
	if scenario == ScenarioLone {
		if err := s.idleCost(&rec, nodes[1:], before, after); err != nil {
			return rec, err
		}
	}
	rec.Daemons = daemonCost(before, after)
	if cand == CandidateShoal {
		rec.Tail = s.tails(ctx, nodes, results, start)
		if note := report.TailNote(rec.Tail); note != "" {
			rec.Notes = append(rec.Notes, note)
		}
	}
	rec.CoreSecondsPerGiB = report.CoreSecondsPerGiB(rec.Daemons)
	gets, err := s.countEgress(&rec, before, after)
	if err != nil {
		return rec, err
	}
	rec.BoundSeconds = s.bound(scenario)
	rec.Notes = append(rec.Notes, s.runNotes(rec, results, gets)...)
	p.line("%s", runLine(rec, firstErr))
	return rec, nil
}

// bringUp starts the run's nodes as the scenario wants them and returns
// the nodes that pull in the timed part. In warm and outage node 0 pulls
// first, alone; in outage the registry is then stopped, and restore starts
// it again (nil when there is nothing to restore).
func (s *session) bringUp(ctx context.Context, runDir, cand, scenario string, nodes []*node, p *progress) (pullers []*node, restore func() error, err error) {
	t0 := time.Now()
	what := fmt.Sprintf("%d × containerd %s", len(nodes), s.cfg.Containerd)
	if cand != CandidateDirect {
		what += " + " + cand
	}
	if scenario != ScenarioWarm && scenario != ScenarioOutage {
		if err := s.startNodes(ctx, runDir, cand, scenario, nodes, 0, len(nodes)); err != nil {
			return nil, nil, err
		}
		p.line("%s up in %s", what, since(t0))
		if scenario == ScenarioLone {
			return nodes[:1], nil, nil
		}
		return nodes, nil, nil
	}
	// Node 0 pulls before the others start, so that it alone holds the
	// image, as the scenario says: with the others up, shoal would have
	// them fetch some layers for the cluster, and keep them.
	if err := s.startNodes(ctx, runDir, cand, scenario, nodes, 0, 1); err != nil {
		return nil, nil, err
	}
	t := time.Now()
	if err := s.pull(ctx, nodes[0]); err != nil {
		return nil, nil, fmt.Errorf("node 0's first pull: %w", err)
	}
	msg := fmt.Sprintf("node 0 pulled alone in %s", since(t))
	if err := s.startNodes(ctx, runDir, cand, scenario, nodes, 1, len(nodes)); err != nil {
		return nil, nil, err
	}
	p.line("%s up in %s", what, since(t0))
	if err := s.settle(ctx, nodes[0]); err != nil {
		return nil, nil, err
	}
	if scenario == ScenarioOutage {
		s.reg.Stop()
		restore = func() error {
			// The next run needs the registry; a cancelled session
			// closes it instead.
			if ctx.Err() != nil {
				return nil
			}
			return s.reg.Start(ctx)
		}
		msg += "; registry stopped"
	}
	p.line("%s", msg)
	return nodes[1:], restore, nil
}

// pullAll runs the timed pulls (in batches for rolling, harming the
// scenario's victims), records how busy the host's CPUs were, and waits
// for a frozen node's peers to go quiet. It returns each pull's result and
// when the pulls started.
func (s *session) pullAll(ctx context.Context, rec *report.Record, scenario string, nodes, pullers []*node, before snapshot, p *progress) ([]pullResult, time.Time, error) {
	victims := s.victims(scenario, nodes)
	p.line("%d nodes pulling %s", len(pullers), human(s.im.Size))
	cpuBefore, cpuErr := lab.HostCPU()
	start := time.Now()
	var results []pullResult
	if scenario == ScenarioRolling {
		batches := (len(pullers) + s.cfg.RollingBatch - 1) / s.cfg.RollingBatch
		for b := range batches {
			batch := pullers[b*s.cfg.RollingBatch : min((b+1)*s.cfg.RollingBatch, len(pullers))]
			label := fmt.Sprintf("batch %d/%d", b+1, batches)
			results = append(results, s.pullGroup(ctx, batch, start, p, nil, before, label)...)
			p.line("%s returned at %s", label, since(start))
		}
	} else {
		results = s.pullGroup(ctx, pullers, start, p, victims, before, "")
	}
	if ctx.Err() != nil {
		return nil, start, ctx.Err()
	}
	if cpuAfter, err := lab.HostCPU(); err == nil && cpuErr == nil {
		rec.HostCPUBusy = lab.BusyShare(cpuBefore, cpuAfter)
	} else {
		s.log.Warn("host CPU not measured", "err", errors.Join(cpuErr, err))
	}
	if slices.ContainsFunc(results, func(r pullResult) bool { return r.harm == harmFreeze }) {
		if err := s.quiet(ctx); err != nil {
			return nil, start, err
		}
	}
	return results, start, nil
}

// checkComplete fails every unharmed pull that returned while its node's
// containerd does not hold the whole image: an image is usable once ctr
// says all of its content is there.
func (s *session) checkComplete(ctx context.Context, nodes []*node, results []pullResult) {
	for i, r := range results {
		if r.err != nil || r.harm != unharmed {
			continue
		}
		if ok, err := nodes[r.node].ctrd.HasImage(ctx, s.im.Ref); err != nil || !ok {
			results[i].err = fmt.Errorf("pull returned but the image is not complete (%v)", err)
		}
	}
}

// countPulls puts the unharmed pulls' times and failures into rec and
// returns the first failure's line, "" when none failed.
func (s *session) countPulls(rec *report.Record, results []pullResult) (firstErr string) {
	for _, r := range results {
		if r.harm != unharmed {
			continue
		}
		rec.NodeSeconds = append(rec.NodeSeconds, r.seconds)
		rec.MakespanSeconds = max(rec.MakespanSeconds, r.seconds)
		if r.err != nil {
			rec.FailedPulls++
			s.log.Warn("pull failed", "candidate", rec.Candidate, "scenario", rec.Scenario, "node", r.node, "err", r.err)
			if firstErr == "" {
				firstErr = fmt.Sprintf("node %d: %s", r.node, lastLine(r.err.Error(), 200))
			}
		}
	}
	return firstErr
}

// countEgress puts what the registry sent during the run into rec, by its
// access log, checked against its interface (see crossCheck), and returns
// the run's blob GETs.
func (s *session) countEgress(rec *report.Record, before, after snapshot) ([]blobGet, error) {
	reqs, err := s.reg.Requests()
	if err != nil {
		return nil, fmt.Errorf("registry log: %w", err)
	}
	reqs = reqs[before.requests:]
	node := make(map[string]int, len(s.hosts))
	for i, h := range s.hosts {
		node[h.IP.String()] = i
	}
	rec.RegistryEgressByNode = make([]int64, len(s.hosts))
	var gets []blobGet
	for _, q := range reqs {
		if q.Method != http.MethodGet {
			continue
		}
		rec.RegistryEgressBytes += q.BytesWritten
		i := -1
		if host, _, err := net.SplitHostPort(q.RemoteAddr); err == nil {
			if n, ok := node[host]; ok {
				i = n
				rec.RegistryEgressByNode[i] += q.BytesWritten
			}
		}
		if q.Blob {
			gets = append(gets, blobGet{digest: q.Digest, node: i, start: q.Time.Add(-q.Duration), bytes: q.BytesWritten})
		}
	}
	rec.RegistryTxBytes = after.reg.TxBytes - before.reg.TxBytes
	cut, err := crossCheck(rec.RegistryEgressBytes, rec.RegistryTxBytes, after.reg.TxPackets-before.reg.TxPackets,
		after.reg.RetransSegs-before.reg.RetransSegs, len(reqs))
	if err != nil {
		return nil, err
	}
	if cut {
		rec.Notes = append(rec.Notes, fmt.Sprintf("requests to the registry were cut short: egress counts the %d bytes that left its interface, not the %d its log says it wrote into its sockets", rec.RegistryTxBytes, rec.RegistryEgressBytes))
		rec.RegistryEgressBytes = rec.RegistryTxBytes
	}
	return gets, nil
}

// runNotes are the notes a run's figures call for: a baseline slower than
// its links, faster than a link, the scenario's own, failures, a host
// short of CPU.
func (s *session) runNotes(rec report.Record, results []pullResult, gets []blobGet) []string {
	var notes []string
	S := float64(s.im.Size)
	U, l := bytesPerSec(s.cfg.RegistryMbit), bytesPerSec(s.cfg.LinkMbit)
	if rec.Candidate == CandidateDirect && rec.Scenario == ScenarioCold {
		if note := report.BaselineNote(rec.MakespanSeconds, report.DirectBound(S, U, l, s.cfg.Nodes)); note != "" {
			notes = append(notes, note)
		}
		if e := float64(rec.RegistryEgressBytes) / (float64(s.cfg.Nodes) * S); rec.FailedPulls == 0 && math.Abs(e-1) > 0.02 {
			notes = append(notes, fmt.Sprintf("registry egress is %.3f × N·S, not N·S within 2%%: containerd fetched more, or less, than one copy per node", e))
		}
	}
	var succeeded []float64
	var harmed []string
	for _, r := range results {
		switch {
		case r.harm != unharmed:
			harmed = append(harmed, fmt.Sprint(r.node))
		case r.err == nil:
			succeeded = append(succeeded, r.seconds)
		}
	}
	if note := report.FasterThanLinkNote(succeeded, S, report.MbitToBytes(s.cfg.LinkMbit)); note != "" {
		notes = append(notes, note)
	}
	switch rec.Scenario {
	case ScenarioChurn:
		what := "node " + harmed[0] + " was killed mid-pull (containerd and mirror); its pull is"
		if len(harmed) > 1 {
			what = "nodes " + strings.Join(harmed, ", ") + " were killed mid-pull (containerd and mirror); their pulls are"
		}
		notes = append(notes, what+" expected to fail and not counted")
	case ScenarioRolling:
		notes = append(notes, fmt.Sprintf("%d nodes at a time; node times and the makespan run from the first batch's start", s.cfg.RollingBatch))
	case ScenarioSlowPeers:
		notes = append(notes, slowPeersNote(results, s.cfg.LinkMbit, rec.RegistryEgressByNode, S)+"; "+s.copies(results, gets).note(S))
	}
	if rec.FailedPulls > 0 {
		notes = append(notes, "pulls failed (see the failed column); the makespan counts the time they took to fail")
	}
	if rec.HostCPUBusy >= cpuBoundShare {
		// One wording for every repetition, so the table lists it once;
		// each run's line gives its own figure.
		notes = append(notes, fmt.Sprintf("the host's CPUs were %.0f%% busy or more during the pulls (each run's line and host_cpu_busy give the figure): every node runs on this one host, so the runs were short of CPU as well as of link, and T* counts only the links", 100*cpuBoundShare))
	}
	return notes
}

// runLine is the run's line on the progress output.
func runLine(rec report.Record, firstErr string) string {
	S := float64(rec.ImageBytes)
	msg := fmt.Sprintf("slowest %.2fs (%.2f × T*), registry sent %.2f × S by its log (%.2f × S on the wire), nodes uploaded %.2f × S, %d failed",
		rec.MakespanSeconds, rec.MakespanSeconds/rec.BoundSeconds, float64(rec.RegistryEgressBytes)/S,
		float64(rec.RegistryTxBytes)/S, float64(sum(rec.NodeUploadBytes))/S, rec.FailedPulls)
	if rec.HostCPUBusy > 0 {
		msg += fmt.Sprintf(", host CPU %.0f%% busy", 100*rec.HostCPUBusy)
	}
	msg += daemonCostPhrase(rec)
	if firstErr != "" {
		msg += " (first: " + firstErr + ")"
	}
	return msg
}

// crossCheck compares the registry's interface with its access log. They
// agree within egressSlack of the payload plus headers and the TCP
// segments sent again (retrans: a link that drops, as a throttled one
// does, has the registry send those bytes twice), unless requests were
// cut short: the log counts what the registry wrote into its sockets,
// and what a client that went away never read did not leave the
// interface. That case is reported as cut, and the interface is the
// egress. The interface sending more than all that is an error: then one
// of the two does not count what the benchmark thinks.
func crossCheck(logBytes, txBytes, txPackets, retrans int64, requests int) (cut bool, err error) {
	headers := txPackets*headerPerPacket + int64(requests)*headerPerRequest + headerConstant
	again := retrans * retransSegBytes
	slack := egressSlack*float64(logBytes) + float64(headers+again)
	switch d := float64(txBytes - logBytes); {
	case d > slack:
		return false, fmt.Errorf("registry egress: its access log says %d bytes, its interface sent %d (%d packets, %d requests, %d segments sent again): "+
			"more apart than %.0f%% plus %d bytes of headers and %d sent again", logBytes, txBytes, txPackets, requests, retrans, egressSlack*100, headers, again)
	case -d > slack:
		return true, nil
	}
	return false, nil
}

// bound is T* of the scenario (docs/benchmarks.md), for the nodes that must
// finish.
func (s *session) bound(scenario string) float64 {
	cfg := s.cfg
	S, U, l := float64(s.im.Size), bytesPerSec(cfg.RegistryMbit), bytesPerSec(cfg.LinkMbit)
	switch scenario {
	case ScenarioWarm, ScenarioOutage:
		return report.WarmBound(S, l, l, cfg.Nodes)
	case ScenarioLone:
		return report.ColdBound(S, U, l, l, 1)
	case ScenarioChurn:
		return report.ColdBound(S, U, l, l, cfg.Nodes-cfg.Churn)
	case ScenarioRolling:
		return report.RollingBound(S, U, l, l, cfg.Nodes, cfg.RollingBatch)
	default:
		return report.ColdBound(S, U, l, l, cfg.Nodes)
	}
}

// pullTimeout is ten times the slowest a pull straight from the registry
// can be, plus two minutes: a pull that takes longer has hung.
func (s *session) pullTimeout() time.Duration {
	t := report.DirectBound(float64(s.im.Size), bytesPerSec(s.cfg.RegistryMbit), bytesPerSec(s.cfg.LinkMbit), s.cfg.Nodes)
	if math.IsInf(t, 0) || math.IsNaN(t) {
		t = 0
	}
	return 2*time.Minute + time.Duration(10*t*float64(time.Second))
}

// pull is one `ctr images pull` on node n, which unpacks the image.
func (s *session) pull(ctx context.Context, n *node) error {
	ctx, cancel := context.WithTimeout(ctx, s.pullTimeout())
	defer cancel()
	return n.ctrd.CtrPull(ctx, s.im.Ref)
}

// pullGroup pulls on every node of group at once and waits for all. A node
// in victims is harmed once its interface has received the harm's share of
// the image (see strike). A progress line, with label if any, comes every
// ten seconds.
func (s *session) pullGroup(ctx context.Context, group []*node, start time.Time, p *progress, victims map[int]harm, base snapshot, label string) []pullResult {
	res := make([]pullResult, len(group))
	cancels := make([]context.CancelFunc, len(group))
	var done atomic.Int32
	var wg sync.WaitGroup
	for i, n := range group {
		pctx, cancel := context.WithCancel(ctx)
		cancels[i] = cancel
		res[i].node = n.i
		wg.Go(func() {
			defer cancel()
			err := s.pull(pctx, n)
			res[i].seconds = time.Since(start).Seconds()
			res[i].err = err
			done.Add(1)
		})
	}
	finished := make(chan struct{})
	go func() {
		wg.Wait()
		close(finished)
	}()
	defer s.heal(ctx, group, res, p)

	S := float64(s.im.Size)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	lastLine := time.Now()
	for wait := true; wait; {
		select {
		case <-finished:
			wait = false
			continue
		case <-tick.C:
		}
		for i, n := range group {
			h := victims[n.i]
			if h == unharmed || res[i].harm != unharmed {
				continue
			}
			c, err := n.host.Counters(ctx)
			if err != nil {
				continue
			}
			if got := c.RxBytes - base.nodes[n.i].RxBytes; float64(got) >= h.at()*S {
				s.strike(ctx, n, h, cancels[i], p, fmt.Sprintf("after it received %s", human(got)))
				res[i].harm, res[i].harmedAt = h, time.Now()
			}
		}
		if time.Since(lastLine) >= 10*time.Second {
			lastLine = time.Now()
			msg := fmt.Sprintf("  %s: %d/%d pulls returned", since(start), done.Load(), len(group))
			if label != "" {
				msg = fmt.Sprintf("  %s: %s: %d/%d pulls returned", since(start), label, done.Load(), len(group))
			}
			if c, err := s.regHost.Counters(ctx); err == nil {
				msg += fmt.Sprintf(", registry interface sent %.2f × S so far", float64(c.TxBytes-base.reg.TxBytes)/S)
			}
			p.line("%s", msg)
		}
	}
	// A victim whose pull ended before the harm struck is harmed anyway:
	// the scenario harms those nodes, and their pulls are not counted.
	for i, n := range group {
		if h := victims[n.i]; h != unharmed && res[i].harm == unharmed {
			s.strike(ctx, n, h, cancels[i], p, "after its pull returned")
			res[i].harm = h
		}
	}
	return res
}

// strike harms node n; cancel ends its pull.
func (s *session) strike(ctx context.Context, n *node, h harm, cancel context.CancelFunc, p *progress, why string) {
	switch h {
	case harmKill:
		n.kill()
		cancel()
		p.line("killed node %d (containerd and mirror) %s", n.i, why)
	case harmThrottle:
		if err := n.host.Shape(ctx, s.cfg.LinkMbit/10, s.cfg.LinkMbit/10); err != nil {
			p.line("node %d: cutting its link: %v", n.i, err)
		}
		p.line("cut node %d's link to %s %s", n.i, mbit(s.cfg.LinkMbit/10), why)
	case harmFreeze:
		n.signal(syscall.SIGSTOP)
		// Its containerd waits on the frozen mirror; its pull is not
		// counted, and nobody waits for it.
		cancel()
		p.line("froze node %d's mirror (SIGSTOP) %s", n.i, why)
	}
}

// heal gives the harmed nodes back their link and their mirror, for the
// next run on these hosts and for a clean shutdown.
func (s *session) heal(ctx context.Context, group []*node, res []pullResult, p *progress) {
	for i, n := range group {
		switch res[i].harm {
		case harmThrottle:
			if err := n.host.Shape(ctx, s.cfg.LinkMbit, s.cfg.LinkMbit); err != nil {
				p.line("node %d: restoring its link: %v", n.i, err)
			}
		case harmFreeze:
			// Killed, not resumed: its requests to the registry end now
			// and the registry logs them (see quiet), where a resumed
			// mirror would go on fetching after the run is measured.
			n.kill()
		}
	}
}

// quiet waits until the registry's access log has had no new line for
// logQuiet (at most logQuietMax): a request is logged when it ends, and
// one cut short by a killed node ends a moment later. Counted before that,
// its bytes would have left the interface with no line in the log.
func (s *session) quiet(ctx context.Context) error {
	const logQuiet, logQuietMax = 500 * time.Millisecond, 10 * time.Second
	deadline := time.Now().Add(logQuietMax)
	last, since := -1, time.Now()
	for time.Now().Before(deadline) {
		reqs, err := s.reg.Requests()
		if err != nil {
			return fmt.Errorf("registry log: %w", err)
		}
		if len(reqs) != last {
			last, since = len(reqs), time.Now()
		} else if time.Since(since) >= logQuiet {
			return nil
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// copies counts what the registry sent past one copy of each of the
// image's blobs in the run (see countCopies).
func (s *session) copies(results []pullResult, gets []blobGet) copies {
	sizes := map[digest.Digest]int64{s.im.Config: s.im.ConfigSize}
	for i, l := range s.im.Layers {
		sizes[l] = s.im.LayerSizes[i]
	}
	harmedAt := map[int]time.Time{}
	for _, r := range results {
		if r.harm != unharmed {
			harmedAt[r.node] = r.harmedAt
		}
	}
	return countCopies(gets, sizes, harmedAt)
}

// slowPeersNote says what slowpeers did to which node and, from the
// registry's log (byNode, in node order), what the registry sent the
// harmed nodes and the unharmed ones.
func slowPeersNote(results []pullResult, linkMbit float64, byNode []int64, S float64) string {
	var parts []string
	var unharmed int64
	for _, r := range results {
		var sent string
		if r.node < len(byNode) {
			sent = fmt.Sprintf("; the registry's log wrote it %.2f × S", float64(byNode[r.node])/S)
		}
		switch r.harm {
		case harmThrottle:
			parts = append(parts, fmt.Sprintf("node %d's link was cut to %s once it had received S/4 (its pull took %.1f s)%s", r.node, mbit(linkMbit/10), r.seconds, sent))
		case harmFreeze:
			parts = append(parts, fmt.Sprintf("node %d's mirror (containerd, for direct) was frozen with SIGSTOP once it had received S/4%s", r.node, sent))
		default:
			if r.node < len(byNode) {
				unharmed += byNode[r.node]
			}
		}
	}
	note := strings.Join(parts, "; ") + "; their pulls are not counted"
	if len(byNode) > 0 {
		note += fmt.Sprintf("; the registry's log wrote the unharmed nodes %.2f × S together", float64(unharmed)/S)
	}
	return note
}

// lastLine is the last non-empty line of s, the one a tool's error ends
// with, cut to its last n bytes, where the root cause is.
func lastLine(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	l := strings.TrimSpace(lines[len(lines)-1])
	if len(l) > n {
		l = "…" + l[len(l)-n:]
	}
	return l
}

func since(t time.Time) string {
	return time.Since(t).Round(100 * time.Millisecond).String()
}

func sum(xs []int64) int64 {
	var t int64
	for _, x := range xs {
		t += x
	}
	return t
}
