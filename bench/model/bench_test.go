package model_test

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/bench/model"
	"github.com/shoal-dev/shoal/bench/report"
)

// BenchmarkCold runs the cold scenario with a 4 × 32 MiB image in steps
// of T*/500 on 1 Gbit/s links, up to 10,000 nodes, every blob asked for
// at once (no Concurrent: containerd's three at a time, as shoal bench
// --model runs it, makes the runs of docs/benchmarks.md, "Model mode"),
// one repetition each:
//
//	go test -run - -bench Cold/N=10000 -benchtime 1x ./bench/model
func BenchmarkCold(b *testing.B) {
	for _, n := range []int{512, 2048, 10000} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			link := 1000e6 / 8
			cfg := model.Config{Nodes: n, Layers: 4, LayerSize: 32 << 20, Up: link, Down: link, RegistryUp: link, RTT: time.Millisecond}
			bound := report.ColdBound(float64(cfg.Layers)*float64(cfg.LayerSize), link, link, link, n)
			cfg.Step = time.Duration(bound / 500 * float64(time.Second))
			for b.Loop() {
				r, err := model.Cold(cfg)
				if err != nil {
					b.Fatal(err)
				}
				s := r.Summary()
				b.ReportMetric(s.MakespanOverBound, "makespan/T*")
				b.ReportMetric(s.EgressOverSize, "egress/S")
			}
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			b.ReportMetric(float64(m.HeapSys)/(1<<20), "heap-MiB")
		})
	}
}
