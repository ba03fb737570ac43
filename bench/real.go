package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/bench/lab"
	"github.com/shoal-dev/shoal/bench/report"
	"github.com/shoal-dev/shoal/p2p"
)

// Scenarios only the real mode runs.
const (
	ScenarioRolling = "rolling" // k nodes at a time, as in a rolling update
	ScenarioChurn   = "churn"   // cold, with some nodes killed mid-pull
	ScenarioOutage  = "outage"  // warm, with the registry stopped after the first pull
	// ScenarioSlowPeers is cold, with --throttled nodes' links cut to a
	// tenth and --frozen nodes' mirrors frozen (SIGSTOP) mid-pull.
	ScenarioSlowPeers = "slowpeers"
	// ScenarioLone is one node pulling a new image while the others run
	// and pull nothing: what the others receive and keep for it.
	ScenarioLone = "lone"
)

// RealScenarios are every scenario the real mode knows, in the order it
// runs them.
var RealScenarios = []string{ScenarioCold, ScenarioWarm, ScenarioRolling, ScenarioChurn, ScenarioOutage, ScenarioSlowPeers, ScenarioLone}

// DefaultNamePrefix starts the names of the real mode's network namespaces
// and temp dirs; the process id follows, so that a run can tell the
// leftovers of a dead run from those of a live one.
const DefaultNamePrefix = "shoalbench"

// RealConfig describes a real run: a registry host and Nodes node hosts,
// each in its own network namespace on one bridge, with tc-shaped links.
type RealConfig struct {
	Nodes     int
	Layers    int
	LayerSize int64
	// LinkMbit caps each node's upload and download; 0 leaves them unshaped.
	LinkMbit float64
	// RegistryMbit caps the registry's upload; 0 leaves it unshaped.
	RegistryMbit float64
	Scenarios    []string
	// Candidates are run in this order: "direct", "shoal", or the Name of
	// one of Custom. Custom candidates not listed run after these.
	Candidates []string
	Custom     []Candidate
	Reps       int
	// RollingBatch is how many nodes pull at a time in the rolling scenario.
	RollingBatch int
	// Churn is how many nodes are killed mid-pull in the churn scenario:
	// the last ones, each once it has received half the image.
	Churn int
	// Throttled is how many nodes' links are cut to a tenth of LinkMbit
	// mid-pull in the slowpeers scenario, and Frozen how many nodes'
	// mirrors are stopped (SIGSTOP): the last ones, the frozen ones last,
	// each once it has received a quarter of the image. Running each
	// harm alone shows what it costs by itself.
	Throttled, Frozen int
	// Containerd is the flavor every node runs; "" is lab.Flavor2.
	Containerd lab.Flavor
	// ShoalBinary is the shoal executable the shoal candidate runs, and
	// {shoal} in templates. Required.
	ShoalBinary string
	// Settle is how long a custom candidate gets to notice the first
	// node's image before the warm and outage pulls start; shoal is asked
	// instead (its /status counts the blobs it advertises). 0 is 2 s.
	Settle time.Duration
	// Dir is where the session's temp dir goes; "" is os.TempDir(). Unix
	// socket paths hold 108 bytes, so keep it short.
	Dir string
	// NamePrefix starts namespace and temp dir names; "" is
	// DefaultNamePrefix. Leftovers of dead runs with the same prefix are
	// removed at the start.
	NamePrefix string
	// LogDir, if set, receives the logs of every run (each node's
	// containerd and mirror) and the registry's log, which holds the
	// egress figures; they are otherwise removed with the run.
	LogDir string
	// Progress receives progress lines; nil discards them.
	Progress io.Writer
	// Logger receives the lab's process and network events; nil discards them.
	Logger *slog.Logger
}

// DefaultRealConfig is a run of a few minutes: four nodes, a 32 MiB image,
// every scenario, direct and shoal, twice.
func DefaultRealConfig() RealConfig {
	return RealConfig{
		Nodes: 4, Layers: 4, LayerSize: 8 << 20,
		LinkMbit: 200, RegistryMbit: 200,
		Scenarios:    slices.Clone(RealScenarios),
		Candidates:   []string{CandidateDirect, CandidateShoal},
		Reps:         2,
		RollingBatch: 2,
		Churn:        1,
		Throttled:    1,
		Frozen:       1,
		Containerd:   lab.Flavor2,
	}
}

// checkSlowPeers checks the slowpeers scenario's harms: at least one, and
// at least one node left unharmed to measure.
func (c *RealConfig) checkSlowPeers() error {
	switch {
	case c.Throttled < 0 || c.Frozen < 0:
		return fmt.Errorf("--throttled %d --frozen %d: must not be negative", c.Throttled, c.Frozen)
	case c.Throttled+c.Frozen == 0:
		return errors.New("--throttled 0 --frozen 0: slowpeers wants a node to harm")
	case c.Throttled+c.Frozen >= c.Nodes:
		return fmt.Errorf("--throttled %d --frozen %d: slowpeers harms at most %d of %d nodes, so that some node is unharmed", c.Throttled, c.Frozen, c.Nodes-1, c.Nodes)
	case c.Throttled > 0 && c.LinkMbit == 0:
		return fmt.Errorf("--throttled %d: slowpeers needs a shaped link (--link-mbit) to cut", c.Throttled)
	}
	return nil
}

func (c *RealConfig) check() error {
	switch {
	case c.Nodes < 2 || c.Nodes > 200:
		return fmt.Errorf("--nodes %d: want 2..200", c.Nodes)
	case c.Layers < 1:
		return errors.New("--layers must be positive")
	case c.LayerSize < 2048:
		return errors.New("--layer-size must be at least 2KiB")
	case c.LinkMbit < 0 || c.RegistryMbit < 0:
		return errors.New("--link-mbit and --registry-mbit must not be negative (0 leaves a link unshaped)")
	case c.Reps < 1:
		return fmt.Errorf("--reps %d: need at least 1", c.Reps)
	case c.ShoalBinary == "":
		return errors.New("real mode: no shoal binary")
	}
	if c.Containerd == "" {
		c.Containerd = lab.Flavor2
	}
	if c.Containerd != lab.Flavor2 && c.Containerd != lab.Flavor16 {
		return fmt.Errorf("--containerd %q: want 2 or 1.6", c.Containerd)
	}
	if len(c.Scenarios) == 0 {
		return errors.New("no scenario to run")
	}
	for _, s := range c.Scenarios {
		if !slices.Contains(RealScenarios, s) {
			return fmt.Errorf("scenario %q: want one of %s", s, strings.Join(RealScenarios, ", "))
		}
	}
	if slices.Contains(c.Scenarios, ScenarioRolling) && (c.RollingBatch < 1 || c.RollingBatch > c.Nodes) {
		return fmt.Errorf("--rolling-batch %d: want 1..%d", c.RollingBatch, c.Nodes)
	}
	if slices.Contains(c.Scenarios, ScenarioChurn) && (c.Churn < 1 || c.Churn >= c.Nodes) {
		return fmt.Errorf("--churn %d: want 1..%d, so that some node survives", c.Churn, c.Nodes-1)
	}
	if slices.Contains(c.Scenarios, ScenarioSlowPeers) {
		if err := c.checkSlowPeers(); err != nil {
			return err
		}
	}
	seen := map[string]bool{}
	for _, cand := range c.Custom {
		if err := cand.check(); err != nil {
			return err
		}
		if seen[cand.Name] {
			return fmt.Errorf("candidate %s: given twice", cand.Name)
		}
		seen[cand.Name] = true
	}
	var order []string
	for _, name := range c.Candidates {
		if name != CandidateDirect && name != CandidateShoal && !seen[name] {
			return fmt.Errorf("candidate %q: want direct, shoal, or a name given with --candidate", name)
		}
		if !slices.Contains(order, name) {
			order = append(order, name)
		}
	}
	for _, cand := range c.Custom {
		if !slices.Contains(order, cand.Name) {
			order = append(order, cand.Name)
		}
	}
	if len(order) == 0 {
		return errors.New("no candidate to run")
	}
	c.Candidates = order
	if c.Settle <= 0 {
		c.Settle = 2 * time.Second
	}
	if c.NamePrefix == "" {
		c.NamePrefix = DefaultNamePrefix
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// CheckRealPrerequisites says what the real mode lacks on this machine:
// root, iproute2, the registry and the containerd binaries of flavor.
func CheckRealPrerequisites(flavor lab.Flavor) error {
	if os.Geteuid() != 0 {
		return errors.New("the real mode needs root (network namespaces, tc, containerd)")
	}
	bins := []string{lab.DefaultRegistryBinary}
	switch flavor {
	case lab.Flavor16:
		bins = append(bins, "/usr/bin/containerd", "/usr/bin/ctr")
	default:
		bins = append(bins, filepath.Join(lab.GoBin(), "containerd"), filepath.Join(lab.GoBin(), "ctr"))
	}
	var missing []string
	for _, b := range bins {
		if _, err := os.Stat(b); err != nil {
			missing = append(missing, b)
		}
	}
	for _, tool := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(tool); err != nil {
			if _, err := os.Stat("/usr/sbin/" + tool); err != nil {
				missing = append(missing, tool)
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("the real mode needs %s (make deps installs them)", strings.Join(missing, ", "))
	}
	return nil
}

// session is what the runs of one RunReal share: the network, the
// registry with the pushed image, and the cluster key.
type session struct {
	cfg     RealConfig
	log     *slog.Logger
	dir     string
	net     *lab.Network
	regHost *lab.Host
	hosts   []*lab.Host // the node hosts, node i on hosts[i]
	reg     *lab.Registry
	im      lab.Image
	keyFile string
	custom  map[string]Candidate
}

// RunReal runs every candidate in every scenario Reps times on real
// processes in network namespaces and returns one record per run. Whatever
// it started is gone when it returns, also when ctx is cancelled; a
// cancelled run returns the records finished so far with ctx's error.
func RunReal(ctx context.Context, cfg RealConfig) (_ []report.Record, err error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if err := CheckRealPrerequisites(cfg.Containerd); err != nil {
		return nil, err
	}
	s := &session{cfg: cfg, log: cfg.Logger, custom: map[string]Candidate{}}
	for _, c := range cfg.Custom {
		s.custom[c.Name] = c
	}
	sweepStale(ctx, cfg.Dir, cfg.NamePrefix, s.log)
	if cfg.LogDir != "" {
		if err := os.MkdirAll(cfg.LogDir, 0o755); err != nil {
			return nil, err
		}
	}
	name := fmt.Sprintf("%s-%d", cfg.NamePrefix, os.Getpid())
	if s.dir, err = os.MkdirTemp(cfg.Dir, name+"-"); err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, os.RemoveAll(s.dir)) }()

	fmt.Fprintf(cfg.Progress, "setting up: a registry host and %d node hosts in network namespaces (%s-*)\n", cfg.Nodes, name)
	if s.net, err = lab.NewNetwork(ctx, name, cfg.Nodes+1, lab.NetworkConfig{Subnet: "10.213.90.0/24", Logger: s.log}); err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, s.net.Close()) }()
	s.regHost, s.hosts = s.net.Hosts[0], s.net.Hosts[1:]
	// The registry's download stays unshaped: only the push crosses it.
	if err := s.regHost.Shape(ctx, cfg.RegistryMbit, 0); err != nil {
		return nil, err
	}
	for _, h := range s.hosts {
		if err := h.Shape(ctx, cfg.LinkMbit, cfg.LinkMbit); err != nil {
			return nil, err
		}
	}
	if s.reg, err = lab.StartRegistry(ctx, lab.RegistryConfig{Netns: s.regHost.Netns, Addr: s.regHost.Addr(5000), Dir: s.dir, Logger: s.log}); err != nil {
		return nil, err
	}
	defer func() {
		if cfg.LogDir != "" {
			err = errors.Join(err, copyFile(s.reg.LogPath(), filepath.Join(cfg.LogDir, "registry.log")))
		}
		err = errors.Join(err, s.reg.Close())
	}()
	push := lab.TransportIn(s.regHost.Netns)
	s.im, err = lab.PushImage(ctx, s.reg.Addr(), "bench/app", "v1", cfg.Layers, cfg.LayerSize, lab.WithTransport(push), lab.WithLogger(s.log))
	push.CloseIdleConnections()
	if err != nil {
		return nil, fmt.Errorf("push the benchmark image: %w", err)
	}
	if err := s.writeKey(); err != nil {
		return nil, err
	}
	fmt.Fprintf(cfg.Progress, "pushed %s: %d layers, S = %s; links: nodes %s up and down, registry %s up; containerd %s\n",
		s.im.Ref, cfg.Layers, human(s.im.Size), mbit(cfg.LinkMbit), mbit(cfg.RegistryMbit), cfg.Containerd)

	var out []report.Record
	total := len(cfg.Scenarios) * len(cfg.Candidates) * cfg.Reps
	n := 0
	for rep := 1; rep <= cfg.Reps; rep++ {
		for _, sc := range cfg.Scenarios {
			for _, cand := range cfg.Candidates {
				n++
				if ctx.Err() != nil {
					return out, ctx.Err()
				}
				p := &progress{w: cfg.Progress, prefix: fmt.Sprintf("[%d/%d] %-8s %-7s rep %d:", n, total, cand, sc, rep)}
				rec, err := s.runOnce(ctx, n, cand, sc, rep, p)
				if err == nil {
					rec.Rep = rep
					if sc == ScenarioSlowPeers {
						compareWithCold(&rec, out, p)
					}
					out = append(out, rec)
				}
				if ctx.Err() != nil {
					// Whatever failed, it failed because of the interruption.
					p.line("interrupted")
					return out, ctx.Err()
				}
				if err != nil {
					p.line("error: %v", err)
					return out, fmt.Errorf("%s %s rep %d: %w", cand, sc, rep, err)
				}
			}
		}
	}
	compareMedians(out, cfg.Progress)
	return out, nil
}

func (s *session) writeKey() error {
	key, err := p2p.GenerateClusterKey()
	if err != nil {
		return err
	}
	s.keyFile = filepath.Join(s.dir, "cluster.key")
	return os.WriteFile(s.keyFile, p2p.EncodeClusterKey(key), 0o600)
}

// sweepStale removes the namespaces and temp dirs that runs with this
// prefix left behind when they died before their clean-up (see
// lab.DeadRun).
func sweepStale(ctx context.Context, dir, prefix string, log *slog.Logger) {
	if _, err := lab.SweepDead(ctx, prefix+"-", log); err != nil {
		log.Warn("sweeping a dead run's namespaces", "err", err)
	}
	if dir == "" {
		dir = os.TempDir()
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if _, dead := lab.DeadRun(e.Name(), prefix+"-"); dead && e.IsDir() {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				log.Warn("removing a dead run's temp dir", "dir", e.Name(), "err", err)
			}
		}
	}
}

// progress writes a run's lines, each starting with the run's label.
type progress struct {
	w      io.Writer
	prefix string
}

func (p *progress) line(format string, args ...any) {
	fmt.Fprintf(p.w, "%s %s\n", p.prefix, fmt.Sprintf(format, args...))
}

func mbit(v float64) string {
	if v <= 0 {
		return "unshaped"
	}
	return strconv.FormatFloat(v, 'f', -1, 64) + " Mbit/s"
}

// bytesPerSec is a flag's Mbit/s as bytes per second; an unshaped link
// (0) has no limit.
func bytesPerSec(mbit float64) float64 {
	if mbit <= 0 {
		return math.Inf(1)
	}
	return report.MbitToBytes(mbit)
}

// copyFile copies a log; a log that was never written is not an error.
func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o644)
}

// compareWithCold sets rec.UnharmedOverCold from the cold record of the
// same candidate and repetition in done, if there is one. The unharmed
// nodes come first in both, in node order.
func compareWithCold(rec *report.Record, done []report.Record, p *progress) {
	i := slices.IndexFunc(done, func(r report.Record) bool {
		return r.Scenario == ScenarioCold && r.Candidate == rec.Candidate && r.Rep == rec.Rep
	})
	if i < 0 {
		return
	}
	cold := done[i].NodeSeconds
	var parts []string
	for n, t := range rec.NodeSeconds {
		if n >= len(cold) || cold[n] <= 0 {
			return
		}
		r := t / cold[n]
		rec.UnharmedOverCold = max(rec.UnharmedOverCold, r)
		parts = append(parts, fmt.Sprintf("node %d %.2f (%+.1f s)", n, r, t-cold[n]))
	}
	note := fmt.Sprintf("unharmed nodes' times over their cold times in the same repetition: %s", strings.Join(parts, ", "))
	rec.Notes = append(rec.Notes, note)
	p.line("%s", note)
}

// compareMedians sets, on each candidate's last slowpeers record, when cold
// and slowpeers each ran more than once, UnharmedOverColdMedian: the
// largest ratio of an unharmed node's median slowpeers time to its median
// cold time. A node's cold time is a draw as much as its slowpeers time,
// and a ratio to one repetition's cold time carries the spread of both:
// the note states beside each ratio how far apart the node's own cold
// times were.
func compareMedians(out []report.Record, w io.Writer) {
	done := map[string]bool{}
	for i := len(out) - 1; i >= 0; i-- {
		rec := &out[i]
		if rec.Scenario != ScenarioSlowPeers || done[rec.Candidate] {
			continue
		}
		done[rec.Candidate] = true
		if note := medianNote(rec, nodeTimes(out, rec.Candidate, ScenarioCold), nodeTimes(out, rec.Candidate, ScenarioSlowPeers)); note != "" {
			rec.Notes = append(rec.Notes, note)
			fmt.Fprintf(w, "%s/%s: %s\n", rec.Scenario, rec.Candidate, note)
		}
	}
}

// medianNote sets rec.UnharmedOverColdMedian from each unharmed node's
// times in cold and slow, and says so; it says nothing when a node lacks
// two of either.
func medianNote(rec *report.Record, cold, slow [][]float64) string {
	var parts []string
	for n, ts := range slow {
		if n >= len(cold) || len(cold[n]) < 2 || len(ts) < 2 {
			return ""
		}
		c, lo, hi := report.Spread(cold[n])
		t, _, _ := report.Spread(ts)
		r := t / c
		rec.UnharmedOverColdMedian = max(rec.UnharmedOverColdMedian, r)
		parts = append(parts, fmt.Sprintf("node %d %.2f (%.2f s over %.2f s; its cold times %.2f–%.2f s, the slowest %.2f × the fastest)",
			n, r, t, c, lo, hi, hi/lo))
	}
	if len(parts) == 0 {
		return ""
	}
	return fmt.Sprintf("unharmed nodes' median times over their median cold times (%d and %d repetitions): %s",
		len(slow[0]), len(cold[0]), strings.Join(parts, ", "))
}

// nodeTimes is, per node, its pull times in every record of the candidate
// and scenario in out, in the order of NodeSeconds.
func nodeTimes(out []report.Record, cand, scenario string) [][]float64 {
	var times [][]float64
	for _, r := range out {
		if r.Candidate != cand || r.Scenario != scenario {
			continue
		}
		for n, t := range r.NodeSeconds {
			if n == len(times) {
				times = append(times, nil)
			}
			times[n] = append(times[n], t)
		}
	}
	return times
}
