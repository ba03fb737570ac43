package model_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/bench/model"
)

// stepFor is the step the bench uses: T*/500.
func stepFor(r model.Result) time.Duration { return r.Bound / 500 }

// A run in steps with approximate rates lands near the exact run: the
// nodes' median time over T* within 5%, the makespan within 20%, the
// registry's egress within a tenth of S. The two runs may take different
// decisions (a round that falls a step later finds another source busy),
// so they are compared by their figures, not event by event; the slowest
// node's time hangs on its waits (backoffs of up to a second), which a
// step can move by a whole backoff.
func TestStepNearExact(t *testing.T) {
	t.Parallel()
	// Not fewer in -short: at N = 24 (warm, seed 0) a round a step late
	// leaves one node a second of backoff behind, 1.7 times the exact
	// makespan.
	n := 64
	link := 1000e6 / 8
	for _, sc := range []struct {
		name string
		run  func(model.Config) (model.Result, error)
	}{{"cold", model.Cold}, {"warm", model.Warm}} {
		for seed := range uint64(2) {
			t.Run(fmt.Sprintf("%s N=%d seed=%d", sc.name, n, seed), func(t *testing.T) {
				t.Parallel()
				cfg := model.Config{Nodes: n, Layers: 4, LayerSize: 8 << 20, Up: link, Down: link, RegistryUp: link, RTT: time.Millisecond, Seed: seed}
				exact, err := sc.run(cfg)
				if err != nil {
					t.Fatal(err)
				}
				cfg.Step = stepFor(exact)
				approx, err := sc.run(cfg)
				if err != nil {
					t.Fatal(err)
				}
				e, a := exact.Summary(), approx.Summary()
				t.Logf("exact %+v, in steps %+v", e, a)
				if !near(a.MakespanOverBound, e.MakespanOverBound, 0.2) || !near(a.P50, e.P50, 0.05) || abs(a.EgressOverSize-e.EgressOverSize) > 0.1 || approx.Failed != exact.Failed {
					t.Fatalf("in steps %+v, %d failed; exact %+v, %d failed", a, approx.Failed, e, exact.Failed)
				}
			})
		}
	}
}

func abs(x float64) float64 { return max(x, -x) }

// TestStopEndsARun: a run whose Done is closed ends with ErrStopped rather
// than running its course.
func TestStopEndsARun(t *testing.T) {
	done := make(chan struct{})
	close(done)
	const mib = 1 << 20
	cfg := model.Config{Nodes: 64, Layers: 4, LayerSize: 32 * mib, Up: 100 * mib, Down: 100 * mib, RegistryUp: 100 * mib, Step: time.Millisecond, Done: done}
	if _, err := model.Cold(cfg); !errors.Is(err, model.ErrStopped) {
		t.Fatalf("Cold with Done closed: %v, want ErrStopped", err)
	}
}
