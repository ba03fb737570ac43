package bench

import (
	"bytes"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/bench/lab"
	"github.com/shoal-dev/shoal/bench/report"
)

// nop2p is the second mirror of the smoke test: shoal with its peers off,
// a pull-through cache per node, run as any third-party mirror would be.
const nop2p = "{shoal} daemon --p2p=false --mirror-addr 127.0.0.1:{mirror_port} --metrics-addr 127.0.0.1:7513" +
	" --data-dir {data_dir} --containerd-sock {containerd_sock} --containerd-content-dir {content_dir}" +
	" --insecure-registry {registry} --log-format json"

// TestRealSmoke runs the real mode small: three nodes, a 4 MiB image, cold,
// warm and slowpeers, for direct, shoal and a --candidate. It checks what
// is counted, not how fast: the registry's egress, the records, that every
// pull succeeds, and that nothing it started is left (slowpeers freezes a
// mirror and cuts a link; both must be healed for a clean shutdown).
func TestRealSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; -short runs unit tests only")
	}
	if err := CheckRealPrerequisites(lab.Flavor2); err != nil {
		t.Fatal(err) // a skip would hide the gap
	}
	bin := filepath.Join(t.TempDir(), "shoal")
	if out, err := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "../cmd/shoal").CombinedOutput(); err != nil {
		t.Fatalf("building shoal: %v\n%s", err, out)
	}
	const prefix = "shoalbenchtest"
	var progress bytes.Buffer
	cfg := RealConfig{
		Nodes: 3, Layers: 2, LayerSize: 2 << 20,
		LinkMbit: 400, RegistryMbit: 400,
		Scenarios:   []string{ScenarioCold, ScenarioWarm, ScenarioSlowPeers},
		Throttled:   1,
		Frozen:      1,
		Candidates:  []string{CandidateDirect, CandidateShoal},
		Custom:      []Candidate{{Name: "nop2p", Command: nop2p}},
		Reps:        1,
		Containerd:  lab.Flavor2,
		ShoalBinary: bin,
		NamePrefix:  prefix,
		Progress:    &progress,
		Logger:      slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	recs, err := RunReal(t.Context(), cfg)
	t.Logf("progress:\n%s", progress.String())
	if err != nil {
		t.Fatal(err)
	}
	checkNothingLeft(t, fmt.Sprintf("%s-%d-", prefix, os.Getpid()))

	if len(recs) != 9 {
		t.Fatalf("%d records, want 9", len(recs))
	}
	for _, r := range recs {
		name := r.Candidate + " " + r.Scenario
		S := float64(r.ImageBytes)
		egress := float64(r.RegistryEgressBytes) / S
		// slowpeers counts node 0 only: node 1's link is cut, node 2's
		// mirror frozen.
		pullers := map[string]int{ScenarioCold: 3, ScenarioWarm: 2, ScenarioSlowPeers: 1}[r.Scenario]
		if r.Mode != report.ModeReal || r.Nodes != 3 || r.BoundSeconds <= 0 || r.MakespanSeconds <= 0 || r.FailedPulls != 0 {
			t.Errorf("%s: %+v", name, r)
		}
		if len(r.NodeSeconds) != pullers || len(r.NodeUploadBytes) != 3 || len(r.RegistryEgressByNode) != 3 {
			t.Errorf("%s: %d node times, %d upload counts and %d registry shares, want %d, 3 and 3", name, len(r.NodeSeconds), len(r.NodeUploadBytes), len(r.RegistryEgressByNode), pullers)
		}
		// Every GET the registry answered came from a node, unless a
		// request was cut short and the interface's count replaced the
		// log's.
		if got := sum(r.RegistryEgressByNode); got != r.RegistryEgressBytes && !slices.ContainsFunc(r.Notes, func(n string) bool { return strings.Contains(n, "cut short") }) {
			t.Errorf("%s: the registry's log wrote the nodes %d bytes in all, its egress is %d", name, got, r.RegistryEgressBytes)
		}
		if r.Candidate == CandidateDirect && r.Scenario == ScenarioCold {
			// Each node pulls its own copy from the registry.
			for i, b := range r.RegistryEgressByNode {
				if math.Abs(float64(b)/S-1) > 0.02 {
					t.Errorf("%s: the registry wrote node %d %.4f × S, want 1 × S within 2%%", name, i, float64(b)/S)
				}
			}
		}
		// No node can finish faster than the image crosses its link; the
		// warm scenario's node 0 alone holds the image when the others start.
		if note := report.FasterThanLinkNote(r.NodeSeconds, S, report.MbitToBytes(cfg.LinkMbit)); note != "" {
			t.Errorf("%s: %s", name, note)
		}
		// slowpeers freezes a node whose requests the registry has
		// written into its sockets: those bytes may never leave.
		if r.Scenario != ScenarioSlowPeers && r.RegistryTxBytes < r.RegistryEgressBytes {
			t.Errorf("%s: the registry's interface sent %d bytes, less than the %d its log wrote", name, r.RegistryTxBytes, r.RegistryEgressBytes)
		}
		switch {
		case r.Scenario == ScenarioSlowPeers:
			// What the harmed nodes fetch depends on when the harm struck.
			if r.UnharmedOverCold <= 0 || !slices.ContainsFunc(r.Notes, func(n string) bool {
				return strings.Contains(n, "node 2's mirror") && strings.Contains(n, "wrote the unharmed nodes")
			}) {
				t.Errorf("%s: no comparison with cold (%v) or no word of the harm: %q", name, r.UnharmedOverCold, r.Notes)
			}
		case r.Candidate == CandidateShoal && r.Scenario == ScenarioWarm:
			// Node 0 holds the image: the others take it from the mesh,
			// each receiving about one copy.
			if egress > 0.01 {
				t.Errorf("%s: registry egress %.3f × S, want 0", name, egress)
			}
			if up := float64(sum(r.NodeUploadBytes)); up < 0.99*S || up > 2*1.05*S {
				t.Errorf("%s: nodes uploaded %.0f bytes, want between S and 2 × S (S = %.0f)", name, up, S)
			}
		case r.Candidate == CandidateShoal && r.Scenario == ScenarioCold:
			// Each blob is fetched once, by its designated node, for all.
			if egress < 0.99 || egress > 1.1 {
				t.Errorf("%s: registry egress %.4f × S, want 1 × S (at most 1.1)", name, egress)
			}
		default:
			// direct and shoal without peers: one copy per puller.
			if math.Abs(egress-float64(pullers)) > 0.02*float64(pullers) {
				t.Errorf("%s: registry egress %.4f × S, want %d × S within 2%%", name, egress, pullers)
			}
		}
	}
	if !strings.Contains(progress.String(), "[9/9] nop2p") {
		t.Errorf("progress shows no ninth run of the --candidate:\n%s", progress.String())
	}
}

// checkNothingLeft fails if a namespace, process, mount or temp dir whose
// name starts with prefix is still there.
func checkNothingLeft(t *testing.T, prefix string) {
	t.Helper()
	names, err := lab.ListNetns()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if strings.HasPrefix(n, prefix) {
			t.Errorf("namespace %s left behind", n)
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(prefix)) {
			t.Errorf("process %s left behind: %s", filepath.Base(filepath.Dir(p)), bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatalf("listing mounts: %v", err)
	}
	if bytes.Contains(mounts, []byte(prefix)) {
		t.Errorf("mounts left behind under %s*", prefix)
	}
	if left, _ := filepath.Glob(filepath.Join(os.TempDir(), prefix+"*")); len(left) > 0 {
		t.Errorf("temp dirs left behind: %v", left)
	}
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestParseCandidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, name, cmd string
		wantErr       bool
	}{
		{in: "spegel=spegel --port {mirror_port}", name: "spegel", cmd: "spegel --port {mirror_port}"},
		{in: " a.b_c-1 = x=y ", name: "a.b_c-1", cmd: "x=y"},
		{in: "noequals", wantErr: true},
		{in: "name=", wantErr: true},
		{in: "Upper=x", wantErr: true},
		{in: "=x", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			name, cmd, err := ParseCandidate(tt.in)
			if (err != nil) != tt.wantErr || name != tt.name || cmd != tt.cmd {
				t.Errorf("ParseCandidate(%q) = %q, %q, %v", tt.in, name, cmd, err)
			}
		})
	}
}

func TestCandidateTemplates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		c       Candidate
		wantErr string
	}{
		{name: "every placeholder", c: Candidate{Name: "x", Command: "{" + strings.Join(Placeholders, "} {") + "}"}},
		{name: "shell braces are the shell's", c: Candidate{Name: "x", Command: "echo ${data_dir} ${foo} {mirror_port}"}},
		{name: "unknown placeholder", c: Candidate{Name: "x", Command: "run {mirorr_port}"}, wantErr: "unknown placeholder {mirorr_port}"},
		{name: "unknown in setup", c: Candidate{Name: "x", Command: "run", Setup: "cfg {host_dir}"}, wantErr: "{host_dir}"},
		{name: "built-in name", c: Candidate{Name: "shoal", Command: "run"}, wantErr: "built-in"},
		{name: "empty command", c: Candidate{Name: "x"}, wantErr: "empty command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.c.check()
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("check: %v, want %q", err, tt.wantErr)
			}
		})
	}
	got := expand("a {ip}:{mirror_port} ${ip} {nope} {data_dir}", map[string]string{"ip": "10.0.0.2", "mirror_port": "7500", "data_dir": "/d"})
	if want := "a 10.0.0.2:7500 ${ip} {nope} /d"; got != want {
		t.Errorf("expand = %q, want %q", got, want)
	}
}

func TestRealConfigCheck(t *testing.T) {
	t.Parallel()
	base := func() RealConfig {
		c := DefaultRealConfig()
		c.ShoalBinary = "/bin/true"
		return c
	}
	tests := []struct {
		name    string
		mod     func(*RealConfig)
		wantErr string
		want    []string // candidates after check
	}{
		{name: "defaults", mod: func(*RealConfig) {}, want: []string{"direct", "shoal"}},
		{name: "custom runs after the built-ins", mod: func(c *RealConfig) {
			c.Custom = []Candidate{{Name: "spegel", Command: "spegel"}}
		}, want: []string{"direct", "shoal", "spegel"}},
		{name: "custom listed first", mod: func(c *RealConfig) {
			c.Candidates = []string{"spegel", "direct"}
			c.Custom = []Candidate{{Name: "spegel", Command: "spegel"}}
		}, want: []string{"spegel", "direct"}},
		{name: "unknown candidate", mod: func(c *RealConfig) { c.Candidates = []string{"kraken"} }, wantErr: `candidate "kraken"`},
		{name: "unknown scenario", mod: func(c *RealConfig) { c.Scenarios = []string{"storm"} }, wantErr: `scenario "storm"`},
		{name: "churn kills everyone", mod: func(c *RealConfig) { c.Churn = c.Nodes }, wantErr: "--churn"},
		{name: "churn not run", mod: func(c *RealConfig) { c.Churn, c.Scenarios = 0, []string{ScenarioCold} }, want: []string{"direct", "shoal"}},
		{name: "slowpeers harms everyone", mod: func(c *RealConfig) { c.Throttled = c.Nodes - 1 }, wantErr: "--throttled"},
		{name: "slowpeers without a link to cut", mod: func(c *RealConfig) { c.LinkMbit = 0 }, wantErr: "--throttled"},
		{name: "slowpeers frozen alone, unshaped", mod: func(c *RealConfig) { c.Throttled, c.LinkMbit = 0, 0 }, want: []string{"direct", "shoal"}},
		{name: "slowpeers harms nobody", mod: func(c *RealConfig) { c.Throttled, c.Frozen = 0, 0 }, wantErr: "--frozen 0"},
		{name: "slowpeers freezes everyone", mod: func(c *RealConfig) { c.Throttled, c.Frozen = 0, c.Nodes }, wantErr: "some node is unharmed"},
		{name: "slowpeers negative", mod: func(c *RealConfig) { c.Frozen = -1 }, wantErr: "negative"},
		{name: "rolling batch", mod: func(c *RealConfig) { c.RollingBatch = 0 }, wantErr: "--rolling-batch"},
		{name: "flavor", mod: func(c *RealConfig) { c.Containerd = "1.7" }, wantErr: "--containerd"},
		{name: "one node", mod: func(c *RealConfig) { c.Nodes = 1 }, wantErr: "--nodes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := base()
			tt.mod(&c)
			err := c.check()
			switch {
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("check: %v, want %q", err, tt.wantErr)
				}
			case err != nil:
				t.Errorf("check: %v", err)
			case strings.Join(c.Candidates, ",") != strings.Join(tt.want, ","):
				t.Errorf("candidates %v, want %v", c.Candidates, tt.want)
			}
		})
	}
}

func TestCrossCheck(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name             string
		log, tx, packets int64
		retrans          int64
		requests         int
		wantErr, cut     bool
	}{
		{name: "headers on top", log: 100 << 20, tx: 100<<20 + 1600*66, packets: 1600, requests: 10},
		{name: "within 5%", log: 100 << 20, tx: 104 << 20, packets: 10, requests: 1},
		{name: "cut transfer, log a little ahead of the wire", log: 100 << 20, tx: 97 << 20, packets: 10, requests: 1},
		{name: "cut transfers, log far ahead of the wire", log: 7616771, tx: 3956224, packets: 204, requests: 16, cut: true},
		{name: "interface sent much more", log: 100 << 20, tx: 120 << 20, packets: 10, requests: 1, wantErr: true},
		{name: "log counts nothing", log: 0, tx: 8 << 20, packets: 200, requests: 4, wantErr: true},
		{name: "only HEADs", log: 0, tx: 3000, packets: 20, requests: 2},
		// The log, interface and packet counts of a slowpeers run whose
		// throttled node fetched from the registry through its 10 Mbit/s
		// link, from before retransmissions were counted: 134 segments
		// sent again and more explain the gap.
		{name: "segments sent again over a throttled link", log: 128801232, tx: 136831799, packets: 17091, retrans: 200, requests: 17},
		{name: "more than the segments sent again", log: 128801232, tx: 136831799, packets: 17091, retrans: 100, requests: 17, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cut, err := crossCheck(tt.log, tt.tx, tt.packets, tt.retrans, tt.requests)
			if (err != nil) != tt.wantErr || cut != tt.cut {
				t.Errorf("crossCheck: cut %v, %v; want cut %v, error %v", cut, err, tt.cut, tt.wantErr)
			}
		})
	}
}

// TestCompareMedians: the last slowpeers record of a candidate gets each
// unharmed node's median time over its median cold time, with the spread
// of its cold times; a candidate run once gets none.
func TestCompareMedians(t *testing.T) {
	t.Parallel()
	rec := func(cand, sc string, rep int, secs ...float64) report.Record {
		return report.Record{Candidate: cand, Scenario: sc, Rep: rep, NodeSeconds: secs}
	}
	out := []report.Record{
		rec("shoal", ScenarioCold, 1, 6.0, 7.0, 6.5, 6.5),
		rec("shoal", ScenarioSlowPeers, 1, 6.6, 7.7),
		rec("once", ScenarioCold, 1, 5, 5, 5, 5),
		rec("once", ScenarioSlowPeers, 1, 9, 9),
		rec("shoal", ScenarioCold, 2, 5.0, 6.0, 6.5, 6.5),
		rec("shoal", ScenarioSlowPeers, 2, 6.0, 6.0),
		rec("shoal", ScenarioCold, 3, 7.0, 8.0, 6.5, 6.5),
		rec("shoal", ScenarioSlowPeers, 3, 5.0, 7.2),
	}
	var w strings.Builder
	compareMedians(out, &w)
	// Node 0: median 6.0 over median 6.0; node 1: 7.2 over 7.0.
	if got, want := out[7].UnharmedOverColdMedian, 7.2/7.0; math.Abs(got-want) > 1e-9 {
		t.Errorf("UnharmedOverColdMedian = %v, want %v", got, want)
	}
	if !slices.ContainsFunc(out[7].Notes, func(n string) bool {
		return strings.Contains(n, "node 0 1.00 (6.00 s over 6.00 s; its cold times 5.00–7.00 s, the slowest 1.40 × the fastest)")
	}) {
		t.Errorf("notes %q lack node 0's comparison", out[7].Notes)
	}
	for _, i := range []int{1, 3, 5} {
		if out[i].UnharmedOverColdMedian != 0 || len(out[i].Notes) != 0 {
			t.Errorf("record %d (%s rep %d) got a comparison: %v %q", i, out[i].Candidate, out[i].Rep, out[i].UnharmedOverColdMedian, out[i].Notes)
		}
	}
	if !strings.Contains(w.String(), "slowpeers/shoal: unharmed nodes' median times") || strings.Contains(w.String(), "once") {
		t.Errorf("progress: %q", w.String())
	}
}

// TestSlowPeersVictims checks which nodes slowpeers harms: the last ones,
// the throttled before the frozen, and no other scenario harms anyone but
// churn's.
func TestSlowPeersVictims(t *testing.T) {
	t.Parallel()
	nodes := make([]*node, 5)
	for i := range nodes {
		nodes[i] = &node{i: i}
	}
	tests := []struct {
		throttled, frozen int
		want              map[int]harm
	}{
		{1, 1, map[int]harm{3: harmThrottle, 4: harmFreeze}},
		{0, 1, map[int]harm{4: harmFreeze}},
		{1, 0, map[int]harm{4: harmThrottle}},
		{2, 2, map[int]harm{1: harmThrottle, 2: harmThrottle, 3: harmFreeze, 4: harmFreeze}},
	}
	for _, tt := range tests {
		s := &session{cfg: RealConfig{Nodes: len(nodes), Throttled: tt.throttled, Frozen: tt.frozen}}
		if got := s.victims(ScenarioSlowPeers, nodes); !maps.Equal(got, tt.want) {
			t.Errorf("--throttled %d --frozen %d: harmed %v, want %v", tt.throttled, tt.frozen, got, tt.want)
		}
		if got := s.victims(ScenarioCold, nodes); len(got) != 0 {
			t.Errorf("cold harmed %v", got)
		}
	}
}
