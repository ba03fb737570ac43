package model_test

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/bench/model"
)

// containerd is containerd's pull as the bench models it: the manifest a
// round trip, three blobs at a time, and unpacking at 1 GB/s.
func containerd(cfg model.Config) model.Config {
	cfg.Manifest, cfg.Concurrent, cfg.UnpackPerByte = cfg.RTT, 3, 1e-9
	return cfg
}

// Every scenario with containerd's pull, against physics: every node that
// survives finishes, none beats the bound, the registry sends the image
// at least once, no byte is lost or made up, and a seed gives the same
// run every time. At least one churn victim was feeding others when it
// died, so the readers' failures were taken.
func TestScenarioPhysics(t *testing.T) {
	t.Parallel()
	link := 200e6 / 8
	scenarios := []struct {
		name string
		run  func(model.Config) (model.Result, error)
		// survivors of n nodes: those whose times count
		survivors func(n int) int
		churn     bool
	}{
		{"cold", model.Cold, func(n int) int { return n }, false},
		{"warm", model.Warm, func(n int) int { return n - 1 }, false},
		{"rolling", func(c model.Config) (model.Result, error) { return model.Rolling(c, (c.Nodes+9)/10) }, func(n int) int { return n }, false},
		{"rolling by 3", func(c model.Config) (model.Result, error) { return model.Rolling(c, min(3, c.Nodes)) }, func(n int) int { return n }, false},
		{"churn", func(c model.Config) (model.Result, error) { return model.Churn(c, (c.Nodes+19)/20) }, func(n int) int { return n - (n+19)/20 }, true},
		{"churn of a quarter", func(c model.Config) (model.Result, error) { return model.Churn(c, (c.Nodes+3)/4) }, func(n int) int { return n - (n+3)/4 }, true},
	}
	nodes := []int{2, 3, 8, 16}
	if testing.Short() {
		nodes = []int{2, 3, 8}
	}
	var fed int
	for _, sc := range scenarios {
		for _, n := range nodes {
			for seed := range uint64(3) {
				t.Run(fmt.Sprintf("%s N=%d seed=%d", sc.name, n, seed), func(t *testing.T) {
					cfg := containerd(model.Config{Nodes: n, Layers: 4, LayerSize: 8 << 20, Up: link, Down: link, RegistryUp: link, RTT: time.Millisecond, Seed: seed})
					r, err := sc.run(cfg)
					if err != nil {
						t.Fatal(err)
					}
					check(t, r, n, sc.survivors(n), sc.name == "warm")
					for _, i := range victims(sc.churn, n, sc.survivors(n)) {
						if r.NodeUploadBytes[i] > 0 {
							fed++
						}
					}
					again, err := sc.run(cfg)
					if err != nil || !reflect.DeepEqual(again, r) {
						t.Fatalf("the same seed gave %+v, then %+v (%v)", r, again, err)
					}
					// In steps, as the bench runs it.
					cfg.Step = stepFor(r)
					r, err = sc.run(cfg)
					if err != nil {
						t.Fatal(err)
					}
					check(t, r, n, sc.survivors(n), sc.name == "warm")
				})
			}
		}
	}
	t.Logf("%d churn victims uploaded before they died", fed)
	if fed == 0 {
		t.Error("no churn victim uploaded anything before it died: its readers' failures were not tried")
	}
}

// check checks r, a run of n nodes of which survivors count, against
// physics; warm: a node held the image, and the registry need send
// nothing.
func check(t *testing.T, r model.Result, n, survivors int, warm bool) {
	t.Helper()
	s := r.Summary()
	if len(r.NodeTimes) != survivors || r.Failed != 0 {
		t.Fatalf("%d node times, %d failed; want %d, none", len(r.NodeTimes), r.Failed, survivors)
	}
	for i, nt := range r.NodeTimes {
		if nt <= 0 {
			t.Fatalf("node %d never finished", i)
		}
	}
	if s.MakespanOverBound < 1-1e-9 || (!warm && s.EgressOverSize < 1-1e-9) {
		t.Fatalf("%+v: beats the bound, or the registry sent less than the image", s)
	}
	sent := r.Egress
	for _, b := range r.NodeUploadBytes {
		sent += b
	}
	if d := sent - r.Received; d < -int64(n+1) || d > int64(n+1) {
		t.Fatalf("the registry and the peers sent %d bytes, the nodes received %d", sent, r.Received)
	}
	if least := int64(survivors) * r.Size; r.Received < least-int64(n+1) {
		t.Fatalf("the nodes received %d bytes, less than the survivors' %d", r.Received, least)
	}
}

// victims are the nodes a churn run killed: the last ones.
func victims(churn bool, n, survivors int) []int {
	if !churn {
		return nil
	}
	var out []int
	for i := survivors; i < n; i++ {
		out = append(out, i)
	}
	return out
}

func TestScenarioConfig(t *testing.T) {
	t.Parallel()
	cfg := model.Config{Nodes: 4, Layers: 1, LayerSize: 1, Up: 1, Down: 1, RegistryUp: 1}
	tests := []struct {
		name string
		run  func() (model.Result, error)
	}{
		{"rolling by none", func() (model.Result, error) { return model.Rolling(cfg, 0) }},
		{"rolling by more than N", func() (model.Result, error) { return model.Rolling(cfg, 5) }},
		{"churn of none", func() (model.Result, error) { return model.Churn(cfg, 0) }},
		{"churn of all", func() (model.Result, error) { return model.Churn(cfg, 4) }},
		{"negative concurrency", func() (model.Result, error) { c := cfg; c.Concurrent = -1; return model.Cold(c) }},
		{"negative unpack", func() (model.Result, error) { c := cfg; c.UnpackPerByte = -1; return model.Cold(c) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := tc.run(); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

// Two nodes, one layer, computed by hand: node 1 is killed once it
// received half the image (4 MiB at the registry's 2 MiB/s, at 2.01 s).
// When node 0 reads from it, waiting on it as its designated node, its
// stream fails there and it fetches the rest from the registry itself, a
// round trip and 2 s more: 4.02 s. When node 0 is designated, it loses a
// reader only: 4.01 s. Either way the registry sends the image once.
func TestChurnByHand(t *testing.T) {
	t.Parallel()
	cfg := model.Config{Nodes: 2, Layers: 1, LayerSize: 8 * mib, Up: 8 * mib, Down: 8 * mib, RegistryUp: 2 * mib, RTT: 10 * time.Millisecond}
	fed := map[bool]bool{}
	for seed := range uint64(6) { // either node may be designated
		cfg.Seed = seed
		r, err := model.Churn(cfg, 1)
		if err != nil {
			t.Fatal(err)
		}
		victimFed := r.NodeUploadBytes[1] > 0
		fed[victimFed] = true
		want := 4.01
		if victimFed {
			want = 4.02
		}
		if len(r.NodeTimes) != 1 || !near(r.Makespan.Seconds(), want, 1e-6) || r.Egress != r.Size || r.Failed != 0 {
			t.Fatalf("seed %d: times %v, egress %d, uploads %v, %d failed; want %.2fs, one copy", seed, r.NodeTimes, r.Egress, r.NodeUploadBytes, r.Failed, want)
		}
		if victimFed && r.NodeUploadBytes[1] != r.Size/2 {
			t.Fatalf("seed %d: the victim sent %d bytes before it died, want half the image", seed, r.NodeUploadBytes[1])
		}
	}
	if !fed[true] || !fed[false] {
		t.Errorf("the seeds did not designate each node once: %v", fed)
	}
}
