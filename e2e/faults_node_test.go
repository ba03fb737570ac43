package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoal-dev/shoal/bench/lab"
	"github.com/shoal-dev/shoal/p2p"
)

// replaceShoal stops n's daemon and starts another with the same flags and
// libp2p identity on dataDir ("" for a new temp dir): the same member,
// another store.
func replaceShoal(ctx context.Context, t *testing.T, n *meshNode, dataDir string) error {
	t.Helper()
	key, err := os.ReadFile(filepath.Join(n.shoal.DataDir(), "identity.key"))
	if err != nil {
		return err
	}
	if err := n.shoal.Close(); err != nil {
		return err
	}
	cfg := lab.ShoalConfig{Binary: shoalBin, Netns: n.host.Netns, MirrorAddr: "127.0.0.1:7500", MetricsAddr: "127.0.0.1:7503",
		Args: slices.Clone(n.args), DataDir: dataDir, Logger: testLogger(t)}
	if dataDir == "" {
		// The daemon makes its data dir; the key goes in first.
		dir, err := os.MkdirTemp("", "e2e-shoal-data-")
		if err != nil {
			return err
		}
		cleanup(n.owner, func() error { return os.RemoveAll(dir) })
		cfg.DataDir = dir
	}
	if err := os.WriteFile(filepath.Join(cfg.DataDir, "identity.key"), key, 0o600); err != nil {
		return err
	}
	s, err := lab.StartShoal(ctx, cfg)
	if err != nil {
		return err
	}
	n.shoal = s
	cleanup(n.owner, s.Close)
	return nil
}

// diskFull runs one node's shoal on a tmpfs smaller than the layer it is
// asked for. The pull must complete (shoal streams it, or containerd goes
// around it), shoal must keep no partial blob, and what the node holds
// afterwards must serve the mesh whole.
func (e *faultEnv) diskFull(t *testing.T) {
	ctx := t.Context()
	n := e.nodes[len(e.nodes)-1]
	tmpfsSize := e.p.bigLayer / 4
	dir := t.TempDir()
	if out, err := exec.CommandContext(ctx, "mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", tmpfsSize), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v\n%s", dir, err, out)
		}
	})
	if err := replaceShoal(ctx, t, n, dir); err != nil {
		t.Fatal(err)
	}
	// Back on a roomy data dir before the tmpfs goes, whatever happens.
	t.Cleanup(func() {
		if err := replaceShoal(context.Background(), t, n, ""); err != nil {
			t.Errorf("%s back off the tmpfs: %v", n.name, err)
		}
	})
	e.converged(t, e.nodes, len(e.nodes), 60*time.Second)

	im := e.push(t, "faults/disk-full", 1, e.p.bigLayer)
	layer := im.Layers[0]
	base := takeBaseline(t, e.nodes)
	errorsBefore := metric(t, ctx, n.shoal, "shoal_downloads_total", map[string]string{"result": "error"})
	start := time.Now()
	pullTime := e.pull(t, n, im)
	g := e.blobGets(im, start)
	outcome := "shoal"
	var recovery time.Duration // how long containerd was held before it went around shoal
	if len(g.direct[layer]) > 0 {
		outcome = "fallback"
		if len(g.shoal[layer]) > 0 {
			recovery = g.direct[layer][0].Start.Sub(g.shoal[layer][0].Start)
		}
	}
	e.verifyAll(t)
	if stored(t, n.shoal.DataDir(), layer) {
		t.Errorf("shoal stored a %d-byte layer on a %d-byte disk", im.LayerSizes[0], tmpfsSize)
	}
	// The failed ingest is removed, and its space given back.
	waitFor(t, "shoal removes the failed ingest", 30*time.Second, func() error {
		left, err := os.ReadDir(filepath.Join(n.shoal.DataDir(), "ingest"))
		if err != nil && !os.IsNotExist(err) {
			return err
		}
		if len(left) > 0 {
			return fmt.Errorf("ingest files left: %v", left)
		}
		return nil
	})
	failed := metric(t, ctx, n.shoal, "shoal_downloads_total", map[string]string{"result": "error"}) - errorsBefore
	logged := strings.Contains(tailFile(n.shoal.LogPath(), 400), "no space left on device")
	if !logged {
		t.Errorf("shoal's log does not say the disk is full")
	}
	// What the node holds now (containerd's copy) serves another node
	// whole, with the registry's blobs down: a half-written copy, if shoal
	// served one, would fail this pull.
	other := e.nodes[0]
	e.proxy.SetFault(lab.Fault{Kind: lab.FaultStatus, Status: 503})
	crossTime := e.pull(t, other, im)
	e.proxy.SetFault(lab.Fault{})
	e.verifyAll(t)
	leak := checkNoLeak(t, base, e.nodes)
	e.record(t, "disk-full", outcome, recovery, pullTime, leak,
		fmt.Sprintf("%d-byte layer, %d-byte tmpfs: %v downloads failed on the full disk, none kept; %s then pulled it from the node's containerd copy in %v with the registry's blobs down",
			im.LayerSizes[0], tmpfsSize, failed, other.name, crossTime.Round(10*time.Millisecond)))
}

// shoalRestart restarts the daemon of the only node holding two images
// while it streams one of them. The pull in flight must complete; the
// node must advertise what it holds again, and another node fetch from it,
// within a bounded time.
func (e *faultEnv) shoalRestart(t *testing.T) {
	ctx := t.Context()
	holder, puller, checker := e.nodes[1], e.nodes[2], e.nodes[0]
	x := e.push(t, "faults/restart-x", e.p.layers, e.p.layerSize)
	y := e.push(t, "faults/restart-y", 1, e.p.bigLayer)
	e.holdOnly(t, holder, x)
	e.holdOnly(t, holder, y)
	provided := holder.status(t).BlobsProvided
	base := takeBaseline(t, e.nodes)
	pullStart := time.Now()
	// The holder's upload is the slow link, so it is busy for seconds
	// whoever streams y from it (the puller, or a peer fetching for it).
	_, done := e.inFlight(t, puller, holder, y)
	waitFor(t, holder.name+" uploads", 30*time.Second, func() error {
		if st, err := statusOf(t, holder); err != nil || st.ActiveUploads == 0 {
			return fmt.Errorf("%s has no upload running: %v", holder.name, err)
		}
		return nil
	})
	restartAt := time.Now()
	holder.shoal.Stop()
	if err := holder.shoal.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ready := time.Since(restartAt)
	if err := <-done; err != nil {
		t.Fatalf("%s pull across %s's restart: %v", puller.name, holder.name, err)
	}
	pullTime := time.Since(pullStart)
	_ = holder.host.Shape(ctx, 0, 0)
	waitFor(t, holder.name+" advertises again", 60*time.Second, func() error {
		st, err := statusOf(t, holder)
		if err != nil {
			return err
		}
		if st.BlobsProvided < provided {
			return fmt.Errorf("%d blobs provided, %d before the restart", st.BlobsProvided, provided)
		}
		return nil
	})
	readvertised := time.Since(restartAt)
	// Only the holder has x: with the registry's blobs down, the checker's
	// pull must come from it, directly or through the peers designated to
	// fetch x. Tried until it works: the time to the first success is what
	// an operator waits after a restart.
	served := func() int64 { return holder.status(t).BytesServed }
	before := served()
	e.proxy.SetFault(lab.Fault{Kind: lab.FaultStatus, Status: 503})
	attempts := 0
	waitFor(t, checker.name+" pulls from the restarted "+holder.name, 90*time.Second, func() error {
		attempts++
		return checker.ctrd.CtrPull(ctx, e.ref(x))
	})
	e.proxy.SetFault(lab.Fault{})
	fetchedAt := time.Since(restartAt)
	if got := served() - before; got < x.Size-x.ManifestSize {
		t.Errorf("%s served %d bytes to peers, want at least the %d of x's config and layers", holder.name, got, x.Size-x.ManifestSize)
	}
	e.verifyAll(t)
	leak := checkNoLeak(t, base, e.nodes)
	e.record(t, "shoal-restart", "readvertised", readvertised, pullTime, leak,
		fmt.Sprintf("%s back up in %v; %d blobs advertised again %v after the restart; %s fetched from it %v after the restart (%d attempts)",
			holder.name, ready.Round(10*time.Millisecond), provided, readvertised.Round(10*time.Millisecond), checker.name, fetchedAt.Round(10*time.Millisecond), attempts))
}

// askedRepo returns a repository name, prefix or prefix-N, whose tag v1
// asker's mesh look-up asks holder about: holder is among the first
// members in the name's rendezvous order (p2p.ImageOrder), which are all
// the mesh asks while the registry is down.
func (e *faultEnv) askedRepo(t *testing.T, prefix string, asker, holder *meshNode) string {
	t.Helper()
	var others []peer.ID
	for _, m := range e.nodes {
		if m != asker {
			others = append(others, m.status(t).ID)
		}
	}
	asked := p2p.DefaultConfig().ImagePeers
	want := holder.status(t).ID
	for k := range 100 {
		repo := prefix
		if k > 0 {
			repo = fmt.Sprintf("%s-%d", prefix, k)
		}
		order := p2p.ImageOrder(e.registry()+"/"+repo+":v1", others)
		if slices.Contains(order[:min(asked, len(order))], want) {
			return repo
		}
	}
	t.Fatalf("no repository name under %s whose tag %s asks %s about", prefix, asker.name, holder.name)
	return ""
}

// containerdRestart restarts a node's containerd under its running shoal.
// shoal must keep answering while containerd is down, reconnect on its own,
// resolve tags and serve blobs from that containerd to the mesh again, and
// the node's own pulls through shoal must work.
func (e *faultEnv) containerdRestart(t *testing.T) {
	ctx := t.Context()
	targets := []*meshNode{e.nodes[1]}
	if *faultsFull {
		targets = append(targets, e.nodes[0]) // both flavors
	}
	for i, n := range targets {
		other := e.nodes[2]
		z := e.push(t, e.askedRepo(t, fmt.Sprintf("faults/ctrd-restart-z%d", i), other, n), e.p.layers, e.p.layerSize)
		w := e.push(t, fmt.Sprintf("faults/ctrd-restart-w%d", i), e.p.layers, e.p.layerSize)
		e.holdOnly(t, n, z)
		base := takeBaseline(t, e.nodes)
		restartAt := time.Now()
		n.ctrd.Stop()
		if _, err := n.shoal.Get(ctx, "/healthz"); err != nil {
			t.Errorf("%s's shoal with containerd down: %v", n.name, err)
		}
		// What an operator sees while it is down.
		var downStatus string
		if st, err := statusOf(t, n); err != nil {
			t.Errorf("%s's shoal status with containerd down: %v", n.name, err)
		} else {
			downStatus = st.Containerd
		}
		if err := n.ctrd.Start(ctx); err != nil {
			t.Fatal(err)
		}
		// With the registry down as a whole, the other node's pull by tag
		// resolves through this node's containerd images (gRPC, which shoal
		// must have reconnected) and reads its content.
		e.proxy.SetFault(lab.Fault{Kind: lab.FaultStatus, Status: 503, Manifests: true})
		attempts := 0
		waitFor(t, other.name+" pulls "+n.name+"'s image by tag with the registry down", 60*time.Second, func() error {
			attempts++
			return other.ctrd.CtrPull(ctx, e.ref(z))
		})
		e.proxy.SetFault(lab.Fault{})
		recovery := time.Since(restartAt)
		st, err := statusOf(t, n)
		if err != nil || !strings.HasPrefix(st.Containerd, "connected") {
			t.Errorf("%s's status after containerd came back: %q %v", n.name, st.Containerd, err)
		}
		// The node's own pull goes through shoal, not around it.
		start := time.Now()
		pullTime := e.pull(t, n, w)
		g := e.blobGets(w, start)
		for _, d := range w.Blobs() {
			if len(g.direct[d]) > 0 {
				t.Errorf("%s fetched %s from the registry itself after containerd restarted: shoal did not serve it", n.name, d)
			}
		}
		e.verifyAll(t)
		leak := checkNoLeak(t, base, e.nodes)
		e.record(t, "containerd-restart-"+string(n.ctrd.Flavor()), "reconnected", recovery, pullTime, leak,
			fmt.Sprintf("%s's containerd %s restarted (status while down: %q); %s pulled its image by tag with the registry down %v after the restart (%d attempts); its own next pull went through shoal",
				n.name, n.ctrd.Flavor(), downStatus, other.name, recovery.Round(10*time.Millisecond), attempts))
	}
}
