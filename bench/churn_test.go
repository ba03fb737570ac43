package bench

import (
	"github.com/opencontainers/go-digest"

	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/bench/lab"
	"github.com/shoal-dev/shoal/bench/report"
)

// TestDesignatedFetcherKilled stops the node designated to fetch a layer
// for the cluster while it downloads: every other node's pull completes,
// and the registry sends at most 1.2 × S (shoal's target; direct
// would send 4 × S). The next node in the layer's ranking takes what the
// peers hold and asks the registry for the rest only; the peers that fed on
// the dead node wait on it, never on each other. The victim dies once part
// of the layer, not all of it, has reached it; the mesh runs with
// patientTiming, so that what the registry sends depends on the mesh's
// choices and not on how busy the machine is.
func TestDesignatedFetcherKilled(t *testing.T) {
	ctx := t.Context()
	var logs bytes.Buffer
	var logMu sync.Mutex
	cfg := SimConfig{Nodes: 4, Layers: 4, LayerSize: 4 << 20, LinkMbit: 100, RegistryMbit: 100, Reps: 1,
		Logger: slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, &slog.HandlerOptions{Level: slog.LevelInfo})),
		Timing: patientTiming()}
	defer func() {
		if t.Failed() {
			logMu.Lock()
			t.Log(logs.String())
			logMu.Unlock()
		}
	}()
	if err := cfg.check(); err != nil {
		t.Fatal(err)
	}
	sn := newSimNet()
	reg, err := startRegistry(sn, report.MbitToBytes(cfg.RegistryMbit))
	if err != nil {
		t.Fatal(err)
	}
	defer reg.close()
	im, err := lab.PushImage(ctx, reg.addr, "bench/churn", "v1", cfg.Layers, cfg.LayerSize)
	if err != nil {
		t.Fatal(err)
	}
	m, err := startMesh(ctx, cfg, sn, reg.addr, report.MbitToBytes(cfg.LinkMbit))
	if err != nil {
		t.Fatal(err)
	}
	defer m.stop()
	nodes := m.nodes
	layer := im.Layers[0]
	// The nodes learn the image's blobs from its manifest, as they prefetch.
	group := append([]digest.Digest{im.Config}, im.Layers...)
	victim := -1
	for i, n := range nodes {
		if n.node.ID() == nodes[0].node.Designated(layer, group)[0] {
			victim = i
		}
	}
	if victim < 0 {
		t.Fatal("no designated node for the layer")
	}
	egressBefore := reg.egress()
	errs := make([]error, len(nodes))
	received := make([]int64, len(nodes))
	var wg sync.WaitGroup
	pctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	// The whole victim node dies, its containerd too: its pull ends.
	vctx, killVictim := context.WithCancel(pctx)
	for i, n := range nodes {
		p := n.puller(reg.addr)
		c := pctx
		if i == victim {
			c = vctx
		}
		wg.Go(func() { received[i], errs[i] = p.pull(c, im.Repo, im.Tag) })
	}
	// The victim dies once the registry has sent a fifth of the image and
	// the victim is part way through the layer it fetches for the cluster.
	size := im.LayerSizes[0]
	var have int64
	if err := pollFast(time.Minute, func() error {
		if sent := reg.egress() - egressBefore; sent < im.Size/5 {
			return fmt.Errorf("the registry sent %d of the image's %d bytes", sent, im.Size)
		}
		b, ok := nodes[victim].res.InFlight(layer)
		if !ok {
			return fmt.Errorf("node %d has no download of the layer running", victim)
		}
		arriving, ok := b.(interface{ Have() int64 })
		if !ok {
			return fmt.Errorf("node %d's download of the layer (%T) does not say how much has arrived", victim, b)
		}
		have = arriving.Have()
		if have == 0 || have >= size {
			return fmt.Errorf("node %d has %d of the layer's %d bytes", victim, have, size)
		}
		return nil
	}); err != nil {
		t.Fatalf("waiting for node %d to be part way through the layer it was designated for: %v", victim, err)
	}
	killVictim()
	nodes[victim].stop()
	nodes[victim].client.CloseIdleConnections()
	wg.Wait()
	// Killed mid-download: its store never completed the layer, and its
	// own pull had received part of the image, not all of it.
	if _, err := nodes[victim].store.Stat(ctx, layer); err == nil {
		t.Errorf("node %d completed the layer it was designated for: it was not killed mid-download", victim)
	}
	if errs[victim] == nil || received[victim] <= 0 || received[victim] >= im.Size {
		t.Errorf("node %d's pull received %d of the image's %d bytes (error %v): want part of it, cut short by the kill", victim, received[victim], im.Size, errs[victim])
	}
	for i, err := range errs {
		if i != victim && err != nil {
			t.Errorf("node %d: %v", i, err)
		}
	}
	if err := reg.settle(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("node %d killed with %d of the layer's %d bytes, its pull having received %d of the image's %d", victim, have, size, received[victim], im.Size)
	const bound = 1.2
	if ratio := float64(reg.egress()-egressBefore) / float64(im.Size); ratio > bound {
		t.Errorf("registry sent %.2f × S, want at most %.1f × S", ratio, bound)
	} else {
		t.Logf("designated node %d killed; registry sent %.2f × S", victim, ratio)
	}
}

// pollFast calls cond every 5 ms until it returns nil, and returns its last
// error once timeout has passed: what it waits for may last under a second.
func pollFast(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
