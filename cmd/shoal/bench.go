package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/shoal-dev/shoal/bench"
	"github.com/shoal-dev/shoal/bench/lab"
	"github.com/shoal-dev/shoal/bench/report"
)

// benchFlags are the bench command's flags; the shared ones feed both
// modes' configs.
type benchFlags struct {
	real, model            bool
	nodes, layers, reps    int
	layerSize, out         string
	linkMbit, registryMbit float64
	scenarios, candidates  []string
	// --real only
	custom, setup       []string
	containerd          string
	rollingBatch, churn int
	throttled, frozen   int
	logLevel, labDir    string
	keepLogs            bool
}

// realOnly are the flags the simulated mode does not take.
var realOnly = []string{"candidate", "candidate-setup", "containerd", "rolling-batch", "churn", "throttled", "frozen", "lab-log-level", "keep-logs", "lab-dir"}

func newBenchCommand() *cobra.Command {
	sim, rc := bench.DefaultSimConfig(), bench.DefaultRealConfig()
	fl := benchFlags{
		nodes: sim.Nodes, layers: sim.Layers, reps: sim.Reps, layerSize: "8MiB", out: "bench-out",
		linkMbit: sim.LinkMbit, registryMbit: sim.RegistryMbit,
		scenarios: sim.Scenarios, candidates: sim.Candidates,
		containerd: string(rc.Containerd), rollingBatch: rc.RollingBatch, churn: rc.Churn, throttled: rc.Throttled, frozen: rc.Frozen,
		logLevel: "off",
	}
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure registry egress and pull times with and without shoal",
		Long: `Pull one generated image on N nodes, straight from the registry (the
"direct" baseline) and through shoal, in the same run, and report the
registry's egress and each node's pull time against the physical bound T*
(see docs/benchmarks.md).

With --model, the MODEL mode: no daemon runs; the swarm's rules decide
every node's downloads on model links (max-min fair, a round trip per
connection) in virtual time, so thousands of nodes take minutes; the runs
are computed side by side, one per core. Each node pulls as containerd
does with shoal's prefetch: the manifest first, every layer prefetched,
three read at a time, each layer unpacked in order (the times measured
in the real mode). Scenarios, all run by default: cold, warm,
rolling (a tenth of the nodes at a time) and churn (cold, with a
twentieth of the nodes killed mid-pull); the figures are computed, not
measured.

Without --real or --model this is the SIMULATED mode: an in-process registry,
in-process shoal nodes on loopback forming one encrypted mesh, and an
in-process puller that follows containerd's mirror and fallback rules; rate
limiters stand in for shaped links. It needs no root and no containerd.
Scenarios: cold (all nodes pull a new image at once) and warm (one node
pulls, then all the others at once).

With --real (root): a registry host and N node hosts, each in its own
network namespace on one bridge, their links shaped with tc; a real
docker-registry, a fresh containerd per node and run, and real shoal
daemons in one mesh. Pulls are 'ctr images pull' (the image unpacked).
Scenarios, all run by default: cold, warm, rolling (--rolling-batch nodes at
a time), churn (cold, with --churn nodes killed mid-pull, containerd and
mirror), outage (warm, with the registry stopped after the first node),
slowpeers (cold, with --throttled nodes' links cut to a tenth and --frozen
nodes' mirrors stopped with SIGSTOP, each once it received a quarter of the
image; the other nodes' times are compared with theirs in cold) and lone
(every daemon up, node 0 alone pulls; what the idle nodes received and
kept is recorded).
Registry egress comes from the registry's access log and is checked against
its interface counters. Any other mirror can be compared on the same links:

  --candidate 'NAME=COMMAND'        run COMMAND on every node, in its namespace
  --candidate-setup 'NAME=COMMAND'  write that node's hosts.toml (default: shoal
                                    configure containerd with the mirror at
                                    http://127.0.0.1:{mirror_port})

Placeholders, filled in per node: {` + strings.Join(bench.Placeholders, "} {") + `}.`,
		Example: `  shoal bench
  shoal bench --model --nodes 10000 --layers 8 --layer-size 128MiB
  shoal bench --real --nodes 8 --layers 4 --layer-size 32MiB --churn 2
  shoal bench --real --scenarios cold,warm --candidate 'nop2p={shoal} daemon --p2p=false
      --mirror-addr 127.0.0.1:{mirror_port} --metrics-addr 127.0.0.1:7513 --data-dir {data_dir}
      --containerd-sock {containerd_sock} --containerd-content-dir {content_dir}
      --insecure-registry {registry}'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			size, err := parseBytes("layer-size", fl.layerSize)
			if err != nil || size <= 0 {
				return fmt.Errorf("--layer-size %q: want a size such as 8MiB", fl.layerSize)
			}
			if fl.model {
				return runModelBench(cmd, fl, size)
			}
			if !fl.real {
				for _, name := range realOnly {
					if cmd.Flags().Changed(name) {
						return fmt.Errorf("--%s needs --real", name)
					}
				}
				sim.Nodes, sim.Layers, sim.LayerSize, sim.Reps = fl.nodes, fl.layers, size, fl.reps
				sim.LinkMbit, sim.RegistryMbit = fl.linkMbit, fl.registryMbit
				sim.Scenarios, sim.Candidates = fl.scenarios, fl.candidates
				return runSimBench(cmd, sim, fl.out)
			}
			if err := fl.realConfig(cmd, &rc, size); err != nil {
				return err
			}
			return runRealBench(cmd, rc, fl.out)
		},
	}
	fl.register(cmd.Flags())
	return cmd
}

// realConfig fills rc, the real mode's configuration, from the flags.
func (fl *benchFlags) realConfig(cmd *cobra.Command, rc *bench.RealConfig, size int64) error {
	var err error
	rc.Nodes, rc.Layers, rc.LayerSize, rc.Reps = fl.nodes, fl.layers, size, fl.reps
	rc.LinkMbit, rc.RegistryMbit = fl.linkMbit, fl.registryMbit
	if cmd.Flags().Changed("scenarios") {
		rc.Scenarios = fl.scenarios
	}
	if cmd.Flags().Changed("candidates") {
		rc.Candidates = fl.candidates
	}
	rc.Containerd = lab.Flavor(fl.containerd)
	rc.Dir = fl.labDir
	if fl.labDir == "auto" {
		rc.Dir = bench.AutoDir(fl.nodes, int64(fl.layers)*size)
	}
	if rc.Dir == "" {
		fmt.Fprintf(cmd.ErrOrStderr(), "node disks: %s (shared by every node)\n", os.TempDir())
	} else {
		fmt.Fprintf(cmd.ErrOrStderr(), "node disks: %s\n", rc.Dir)
	}
	rc.RollingBatch, rc.Churn, rc.Throttled, rc.Frozen = fl.rollingBatch, fl.churn, fl.throttled, fl.frozen
	if rc.Custom, err = parseCandidates(fl.custom, fl.setup); err != nil {
		return err
	}
	if fl.keepLogs {
		// The logs of one session: an earlier one's would mix in.
		rc.LogDir = filepath.Join(fl.out, "logs")
		if err := os.RemoveAll(rc.LogDir); err != nil {
			return err
		}
	}
	if rc.ShoalBinary, err = os.Executable(); err != nil {
		return fmt.Errorf("finding the shoal binary: %w", err)
	}
	if fl.logLevel != "off" {
		var lv slog.Level
		if err := lv.UnmarshalText([]byte(fl.logLevel)); err != nil {
			return fmt.Errorf("--lab-log-level %q: want off, debug, info, warn or error", fl.logLevel)
		}
		rc.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: lv}))
	}
	return nil
}

// register defines the bench command's flags on f, their defaults from fl.
func (fl *benchFlags) register(f *pflag.FlagSet) {
	f.BoolVar(&fl.model, "model", false, "run the model mode: the swarm's rules for N nodes on model links in virtual time (cold, warm, rolling, churn; thousands of nodes in minutes; nothing measured)")
	f.BoolVar(&fl.real, "real", false, "run the real mode: network namespaces, tc, real containerd, registry and shoal processes (root)")
	f.IntVar(&fl.nodes, "nodes", fl.nodes, "nodes pulling the image")
	f.IntVar(&fl.layers, "layers", fl.layers, "layers in the generated image (random, incompressible)")
	f.StringVar(&fl.layerSize, "layer-size", fl.layerSize, "size of each layer")
	f.Float64Var(&fl.linkMbit, "link-mbit", fl.linkMbit, "each node's upload and download rate, Mbit/s (--real: 0 leaves them unshaped)")
	f.Float64Var(&fl.registryMbit, "registry-mbit", fl.registryMbit, "the registry's upload rate, Mbit/s (--real: 0 leaves it unshaped)")
	f.StringSliceVar(&fl.scenarios, "scenarios", fl.scenarios, "scenarios to run: cold, warm; with --model also rolling, churn, and all four are the default; with --real also rolling, churn, outage, slowpeers, lone, and all seven are the default")
	f.StringSliceVar(&fl.candidates, "candidates", fl.candidates, "built-in candidates to compare: direct, shoal (with --real, --candidate names may be listed too, to set the order)")
	f.IntVar(&fl.reps, "reps", fl.reps, "repetitions of each run; the table shows the median and the spread")
	f.StringVar(&fl.out, "out", fl.out, "directory for results.json, report.html and the charts")
	f.StringArrayVar(&fl.custom, "candidate", nil, "--real: another mirror, 'NAME=COMMAND' run on every node in its namespace, listening on 127.0.0.1:{mirror_port} (repeatable)")
	f.StringArrayVar(&fl.setup, "candidate-setup", nil, "--real: 'NAME=COMMAND' that writes a --candidate's hosts.toml on every node (default: "+bench.DefaultSetup+")")
	f.StringVar(&fl.containerd, "containerd", fl.containerd, "--real: containerd on every node: 2 (2.x from GOBIN) or 1.6 (Debian's)")
	f.IntVar(&fl.rollingBatch, "rolling-batch", fl.rollingBatch, "--real: nodes that pull at a time in the rolling scenario")
	f.IntVar(&fl.churn, "churn", fl.churn, "--real: nodes killed mid-pull in the churn scenario (the last ones)")
	f.IntVar(&fl.throttled, "throttled", fl.throttled, "--real: nodes whose links are cut to a tenth mid-pull in the slowpeers scenario (the last ones before the frozen)")
	f.IntVar(&fl.frozen, "frozen", fl.frozen, "--real: nodes whose mirrors are frozen (SIGSTOP) mid-pull in the slowpeers scenario (the last ones); 0 with --throttled 1, or 1 with --throttled 0, shows one harm's cost alone")
	f.StringVar(&fl.labDir, "lab-dir", "auto", "--real: where the nodes' disks (containerd's root, shoal's data dir) and the registry's storage go; auto is "+bench.RAMDir+" when it is a tmpfs with room for the run, so the nodes do not all wait on the machine's one disk, else the temp dir")
	f.BoolVar(&fl.keepLogs, "keep-logs", false, "--real: keep every run's containerd and mirror logs, and the registry's, in OUT/logs")
	f.StringVar(&fl.logLevel, "lab-log-level", fl.logLevel, "--real: log the lab's processes and network to stderr at this level (off, debug, info, warn, error)")
}

// parseCandidates pairs --candidate and --candidate-setup values by name.
func parseCandidates(cmds, setups []string) ([]bench.Candidate, error) {
	var out []bench.Candidate
	for _, v := range cmds {
		name, command, err := bench.ParseCandidate(v)
		if err != nil {
			return nil, fmt.Errorf("--candidate %w", err)
		}
		out = append(out, bench.Candidate{Name: name, Command: command})
	}
	for _, v := range setups {
		name, command, err := bench.ParseCandidate(v)
		if err != nil {
			return nil, fmt.Errorf("--candidate-setup %w", err)
		}
		found := false
		for i := range out {
			if out[i].Name == name {
				out[i].Setup, found = command, true
			}
		}
		if !found {
			return nil, fmt.Errorf("--candidate-setup %s: no --candidate of that name", name)
		}
	}
	return out, nil
}

func runSimBench(cmd *cobra.Command, cfg bench.SimConfig, out string) error {
	cfg.Progress = cmd.ErrOrStderr()
	mode, _ := report.ModeLine(report.ModeSimulated)
	fmt.Fprintln(cmd.ErrOrStderr(), mode)
	start := time.Now()
	records, err := bench.RunSimulated(cmd.Context(), cfg)
	if err != nil {
		return err
	}
	meta := report.Meta{
		Command: "shoal " + strings.Join(os.Args[1:], " "), Date: start, Machine: runtime.GOOS + "/" + runtime.GOARCH,
		Cores: runtime.NumCPU(), Layers: cfg.Layers, LayerBytes: cfg.LayerSize,
		LinkMbit: cfg.LinkMbit, RegistryMbit: cfg.RegistryMbit, Mode: report.ModeSimulated,
	}
	return writeResults(cmd, records, meta, out, start)
}

// runModelBench runs the model mode: shoal's swarm rules alone, on model
// links, so it takes neither --real's flags nor --candidates.
func runModelBench(cmd *cobra.Command, fl benchFlags, size int64) error {
	for _, name := range append([]string{"real", "candidates"}, realOnly...) {
		if cmd.Flags().Changed(name) {
			return fmt.Errorf("--%s does not go with --model", name)
		}
	}
	mode, _ := report.ModeLine(report.ModeModel)
	fmt.Fprintln(cmd.ErrOrStderr(), mode)
	start := time.Now()
	cfg := bench.ModelConfig{
		Nodes: fl.nodes, Layers: fl.layers, LayerSize: size, LinkMbit: fl.linkMbit, RegistryMbit: fl.registryMbit,
		Scenarios: bench.ModelScenarios, Reps: fl.reps, Progress: cmd.ErrOrStderr(),
	}.WithContainerdPull()
	if cmd.Flags().Changed("scenarios") {
		cfg.Scenarios = fl.scenarios
	}
	runs, err := bench.RunModel(cmd.Context(), cfg)
	if err != nil {
		return err
	}
	records := make([]report.Record, 0, len(runs))
	for _, r := range runs {
		records = append(records, r.Record)
	}
	meta := report.Meta{
		Command: "shoal " + strings.Join(os.Args[1:], " "), Date: start, Machine: runtime.GOOS + "/" + runtime.GOARCH,
		Cores: runtime.NumCPU(), Layers: cfg.Layers, LayerBytes: cfg.LayerSize,
		LinkMbit: cfg.LinkMbit, RegistryMbit: cfg.RegistryMbit, Mode: report.ModeModel,
	}
	if err := writeResults(cmd, records, meta, fl.out, start); err != nil {
		return err
	}
	fmt.Fprintln(cmd.OutOrStdout())
	return bench.WriteModelTable(cmd.OutOrStdout(), runs)
}

func runRealBench(cmd *cobra.Command, cfg bench.RealConfig, out string) error {
	cfg.Progress = cmd.ErrOrStderr()
	mode, _ := report.ModeLine(report.ModeReal)
	fmt.Fprintln(cmd.ErrOrStderr(), mode)
	start := time.Now()
	records, err := bench.RunReal(cmd.Context(), cfg)
	if err != nil {
		if cmd.Context().Err() != nil {
			return fmt.Errorf("interrupted after %d finished runs; the namespaces, processes and files it started are removed", len(records))
		}
		return err
	}
	meta := report.Meta{
		Command: "shoal " + strings.Join(os.Args[1:], " "), Date: start,
		Machine: fmt.Sprintf("%s/%s, containerd %s", runtime.GOOS, runtime.GOARCH, cfg.Containerd),
		Cores:   runtime.NumCPU(), Layers: cfg.Layers, LayerBytes: cfg.LayerSize,
		LinkMbit: cfg.LinkMbit, RegistryMbit: cfg.RegistryMbit, Mode: report.ModeReal,
	}
	return writeResults(cmd, records, meta, out, start)
}

// writeResults prints the table and writes results.json and the report.
func writeResults(cmd *cobra.Command, records []report.Record, meta report.Meta, out string, start time.Time) error {
	w := cmd.OutOrStdout()
	fmt.Fprintln(w)
	if err := report.WriteTable(w, report.Summarize(records), meta.Mode); err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	if err := report.WriteJSON(filepath.Join(out, "results.json"), records); err != nil {
		return err
	}
	if err := report.WriteHTML(out, records, meta); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nwrote %s and %s (%s)\n", filepath.Join(out, "results.json"), filepath.Join(out, report.HTMLFile), time.Since(start).Round(time.Second))
	return nil
}
