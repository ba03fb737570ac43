package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoal-dev/shoal/bench"
	"github.com/shoal-dev/shoal/bench/report"
)

func newBenchCommand() *cobra.Command {
	cfg := bench.DefaultSimConfig()
	var layerSize, out string
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure registry egress and pull times with and without shoal",
		Long: `Pull one generated image on N nodes, straight from the registry (the
"direct" baseline) and through shoal, in the same run, and report the
registry's egress and each node's pull time against the physical bound T*
(see docs/benchmarks.md).

This is the SIMULATED mode: an in-process registry, in-process shoal nodes
on loopback forming one encrypted mesh, and an in-process puller that
follows containerd's mirror and fallback rules; rate limiters stand in for
shaped links. It needs no root and no containerd.

Scenarios: cold (all nodes pull a new image at once) and warm (one node
pulls, then all the others at once).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			size, err := parseBytes("layer-size", layerSize)
			if err != nil || size <= 0 {
				return fmt.Errorf("--layer-size %q: want a size such as 8MiB", layerSize)
			}
			cfg.LayerSize = size
			cfg.Progress = cmd.ErrOrStderr()
			mode, _ := report.ModeLine(report.ModeSimulated)
			fmt.Fprintln(cmd.ErrOrStderr(), mode)
			start := time.Now()
			records, err := bench.RunSimulated(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintln(w)
			if err := report.WriteTable(w, report.Summarize(records), report.ModeSimulated); err != nil {
				return err
			}
			if err := os.MkdirAll(out, 0o755); err != nil {
				return err
			}
			if err := report.WriteJSON(filepath.Join(out, "results.json"), records); err != nil {
				return err
			}
			meta := report.Meta{
				Command: "shoal " + strings.Join(os.Args[1:], " "), Date: start, Machine: runtime.GOOS + "/" + runtime.GOARCH,
				Cores: runtime.NumCPU(), Layers: cfg.Layers, LayerBytes: cfg.LayerSize,
				LinkMbit: cfg.LinkMbit, RegistryMbit: cfg.RegistryMbit, Mode: report.ModeSimulated,
			}
			if err := report.WriteHTML(out, records, meta); err != nil {
				return err
			}
			fmt.Fprintf(w, "\nwrote %s and %s (%s)\n", filepath.Join(out, "results.json"), filepath.Join(out, report.HTMLFile), time.Since(start).Round(time.Second))
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Nodes, "nodes", cfg.Nodes, "nodes pulling the image")
	f.IntVar(&cfg.Layers, "layers", cfg.Layers, "layers in the generated image (random, incompressible)")
	f.StringVar(&layerSize, "layer-size", "8MiB", "size of each layer")
	f.Float64Var(&cfg.LinkMbit, "link-mbit", cfg.LinkMbit, "each node's upload and download rate, Mbit/s")
	f.Float64Var(&cfg.RegistryMbit, "registry-mbit", cfg.RegistryMbit, "the registry's upload rate, Mbit/s")
	f.StringSliceVar(&cfg.Scenarios, "scenarios", cfg.Scenarios, "scenarios to run: cold, warm")
	f.StringSliceVar(&cfg.Candidates, "candidates", cfg.Candidates, "candidates to compare: direct, shoal")
	f.IntVar(&cfg.Reps, "reps", cfg.Reps, "repetitions of each run; the table shows the median and the spread")
	f.StringVar(&out, "out", "bench-out", "directory for results.json, report.html and the charts")
	return cmd
}
