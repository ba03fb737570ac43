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
// and the registry sends the image once (direct would send it 4 times),
// plus what the victim had received and passed to no one (of its layer,
// and of the blobs it was fetching for itself), plus a twentieth of the
// image at most. The next node in the layer's ranking takes what the
// peers hold and asks the registry for the rest only; the peers that fed on
// the dead node wait on it, never on each other. The victim dies once part
// of the layer, not all of it, has reached it; the mesh runs with
// patientTiming and patientPeerStall, so that what the registry sends depends on the mesh's
// choices and not on how busy the machine is.
func TestDesignatedFetcherKilled(t *testing.T) {
	ctx := t.Context()
	var logs bytes.Buffer
	var logMu sync.Mutex
	cfg := SimConfig{Nodes: 4, Layers: 4, LayerSize: 4 << 20, LinkMbit: 100, RegistryMbit: 100, Reps: 1,
		Logger: slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, &slog.HandlerOptions{Level: slog.LevelInfo})),
		Timing: patientTiming(), PeerStall: patientPeerStall}
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
	delivered := mostHeld(ctx, nodes, victim, layer, size)
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
	// What the registry sent the victim and the victim passed to nobody:
	// of its layer, what it received past what the survivors held; of
	// the other blobs, all it received (it fetched none of them for the
	// cluster). Counted when the registry is done: a node stopping
	// in-process closes its streams a while after it is told to, and the
	// registry sends it bytes until then (up to 1.7 MB under -race on a
	// loaded machine), as it would fill a dying node's socket buffers.
	var undelivered int64
	for d, n := range reg.blobEgressFrom(nodes[victim].host) {
		if d == layer {
			n = max(0, n-delivered)
		}
		undelivered += n
	}
	for d, n := range reg.blobEgress() {
		t.Logf("registry sent %d bytes of %s", n, d)
	}
	t.Logf("node %d killed with %d of the layer's %d bytes; the registry sent it %d bytes that no other node received from it; its pull had received %d of the image's %d",
		victim, have, size, undelivered, received[victim], im.Size)
	// The registry sends the image once, and again what the victim had
	// received and passed to nobody; allowance covers the bytes a
	// survivor asks again when the ranking changes under it.
	allowance := im.Size / 20
	if sent := reg.egress() - egressBefore; sent > im.Size+undelivered+allowance {
		t.Errorf("registry sent %d bytes (%.2f × S), want at most S + %d undelivered + %d", sent, float64(sent)/float64(im.Size), undelivered, allowance)
	} else {
		t.Logf("designated node %d killed; registry sent %.2f × S", victim, float64(sent)/float64(im.Size))
	}
}

// mostHeld returns the most bytes of layer any node but skip holds or has
// received so far.
func mostHeld(ctx context.Context, nodes []*simNode, skip int, layer digest.Digest, size int64) int64 {
	var most int64
	for i, n := range nodes {
		if i == skip {
			continue
		}
		if _, err := n.store.Stat(ctx, layer); err == nil {
			return size
		}
		if b, ok := n.res.InFlight(layer); ok {
			if a, ok := b.(interface{ Have() int64 }); ok {
				most = max(most, a.Have())
			}
		}
	}
	return most
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
