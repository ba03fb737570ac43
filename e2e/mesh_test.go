package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/bench/lab"
	"github.com/shoal-dev/shoal/p2p"
)

// meshNode is one network-namespace host with its containerd and shoal.
type meshNode struct {
	name  string
	host  *lab.Host
	ctrd  *lab.Containerd
	shoal *lab.Shoal
	args  []string
	owner *testing.T // the test that started the node and cleans it up
}

// restartShoal replaces the node's daemon by one with more flags.
func (n *meshNode) restartShoal(t *testing.T, extra ...string) {
	t.Helper()
	if err := n.shoal.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := lab.StartShoal(t.Context(), lab.ShoalConfig{Binary: shoalBin, Netns: n.host.Netns, MirrorAddr: "127.0.0.1:7500", MetricsAddr: "127.0.0.1:7503", Args: append(slices.Clone(n.args), extra...), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	n.shoal = s
	// Cleaned up with the node, not with the subtest that restarted it.
	cleanup(n.owner, s.Close)
}

type meshStatus struct {
	Mesh *p2p.Status `json:"mesh"`
}

func (n *meshNode) status(t *testing.T) p2p.Status {
	t.Helper()
	b, err := n.shoal.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var st meshStatus
	if err := json.Unmarshal(b, &st); err != nil || st.Mesh == nil {
		t.Fatalf("status %s: %v", b, err)
	}
	return *st.Mesh
}

func (n *meshNode) metric(t *testing.T, name string, match map[string]string) float64 {
	t.Helper()
	return metric(t, t.Context(), n.shoal, name, match)
}

// startMeshNode starts containerd and shoal in host h, joined to seed.
func startMeshNode(t *testing.T, name string, h *lab.Host, flavor lab.Flavor, registry string, seeds []string, keyFile string, extra ...string) *meshNode {
	t.Helper()
	return startMeshNodeBin(t, shoalBin, name, h, flavor, registry, seeds, keyFile, extra...)
}

// startMeshNodeBin is startMeshNode with the shoal binary bin.
func startMeshNodeBin(t *testing.T, bin, name string, h *lab.Host, flavor lab.Flavor, registry string, seeds []string, keyFile string, extra ...string) *meshNode {
	t.Helper()
	ctx := t.Context()
	log := testLogger(t)
	c, err := lab.StartContainerd(ctx, lab.ContainerdConfig{Flavor: flavor, Netns: h.Netns, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	cleanup(t, c.Close)
	ip := h.IP.String()
	args := append([]string{
		"--node-name", name,
		"--containerd-sock", c.Socket(),
		"--containerd-content-dir", c.ContentDir(),
		"--hosts-dir", c.HostsDir(),
		"--insecure-registry", registry,
		"--gossip-addr", ip + ":7502",
		"--p2p-addr", ip + ":7501",
		"--advertise-ip", ip,
		"--join", strings.Join(seeds, ","),
		"--cluster-key-file", keyFile,
		"--stall-timeout", "3s",
		"--peer-stall", patientPeerStall,
		"--rescan-interval", "2s",
	}, extra...)
	s, err := lab.StartShoal(ctx, lab.ShoalConfig{Binary: bin, Netns: h.Netns, MirrorAddr: "127.0.0.1:7500", MetricsAddr: "127.0.0.1:7503", Args: args, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	cleanup(t, func() error {
		if t.Failed() {
			t.Logf("%s shoal log:\n%s", name, tailFile(s.LogPath(), 30))
		}
		return s.Close()
	})
	out, err := runShoal(ctx, "configure", "containerd", "--hosts-dir", c.HostsDir(), "--mirror", "http://127.0.0.1:7500",
		"--registry", "http://"+registry, "--containerd-config", c.ConfigPath())
	if err != nil {
		t.Fatalf("configure %s: %v\n%s", name, err, out)
	}
	return &meshNode{name: name, host: h, ctrd: c, shoal: s, args: args, owner: t}
}

// refusedFrom returns the line of n's log in which its gossip refused a
// message from ip that it could not decrypt, or "".
func refusedFrom(t *testing.T, n *meshNode, ip string) string {
	t.Helper()
	b, err := os.ReadFile(n.shoal.LogPath())
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "decrypt") && strings.Contains(line, "from="+ip+":") {
			return line
		}
	}
	return ""
}

func writeKey(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "cluster.key")
	if out, err := runShoal(t.Context(), "keygen", "--out", p); err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	return p
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() error) {
	t.Helper()
	if err := lab.WaitFor(t.Context(), what, timeout, cond); err != nil {
		t.Fatal(err)
	}
}

// waitProvided waits until node n's status counts at least want provided blobs.
func waitProvided(t *testing.T, n *meshNode, want int) {
	waitFor(t, n.name+" advertises its blobs", 30*time.Second, func() error {
		if got := n.status(t).BlobsProvided; got < want {
			return fmt.Errorf("%d blobs provided, want %d", got, want)
		}
		return nil
	})
}

// TestMesh drives four nodes in their own network namespaces (containerd
// 1.6 and 2.4 alternating, one shoal each) and a registry host, plus a
// stranger with another cluster key:
//  1. node 1 pulls; the registry stops; nodes 2-4 pull by tag from peers;
//  2. the peer serving a layer is killed mid-transfer: the pull resumes at
//     the same offset from another peer;
//  3. a peer that corrupts what it serves never gets a bad blob committed,
//     and is avoided afterwards;
//  4. a daemon with another key cannot join or fetch.
func TestMesh(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	ctx := t.Context()
	log := testLogger(t)
	net, err := lab.NewNetwork(ctx, netName(t, "mesh"), 6, lab.NetworkConfig{Subnet: "10.213.7.0/24", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	cleanup(t, net.Close)
	regHost := net.Hosts[0]
	reg, err := lab.StartRegistry(ctx, lab.RegistryConfig{Netns: regHost.Netns, Addr: regHost.Addr(5000), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	cleanup(t, reg.Close)
	push := func(repo string, layers int, size int64) lab.Image {
		im, err := lab.PushImage(ctx, reg.Addr(), repo, "v1", layers, size, lab.WithTransport(lab.TransportIn(regHost.Netns)))
		if err != nil {
			t.Fatal(err)
		}
		return im
	}
	shared := push("mesh/shared", 3, 4<<20)     // phase 1
	big := push("mesh/big", 1, 48<<20)          // phase 2
	poisoned := push("mesh/poisoned", 1, 4<<20) // phase 3

	key := writeKey(t)
	// Every node is given every node's address, as the headless Service's
	// DNS name gives them in a cluster: a restarted node finds the others.
	var seeds []string
	for _, h := range net.Hosts[1:5] {
		seeds = append(seeds, h.IP.String()+":7502")
	}
	nodes := make([]*meshNode, 5) // 1..4
	var wg sync.WaitGroup
	for i := 1; i <= 4; i++ {
		flavor := lab.Flavor16
		if i%2 == 0 {
			flavor = lab.Flavor2
		}
		wg.Go(func() {
			nodes[i] = startMeshNode(t, fmt.Sprintf("node%d", i), net.Hosts[i], flavor, reg.Addr(), seeds, key)
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	ref := func(im lab.Image) string { return reg.Addr() + "/" + im.Repo + ":" + im.Tag }
	converged := func() {
		waitFor(t, "mesh converges", 30*time.Second, func() error {
			for _, n := range nodes[1:] {
				if got := n.status(t).LiveMembers; got != 4 {
					return fmt.Errorf("%s sees %d live members", n.name, got)
				}
			}
			return nil
		})
	}
	converged()

	// Node 1 pulls both images through shoal, from the registry.
	for _, im := range []lab.Image{shared, big} {
		if err := nodes[1].ctrd.CtrPull(ctx, ref(im)); err != nil {
			t.Fatalf("node1 pull %s: %v", im.Ref, err)
		}
	}
	waitProvided(t, nodes[1], len(shared.Blobs())+len(big.Blobs())+2)
	before, err := reg.Requests()
	if err != nil {
		t.Fatal(err)
	}
	reg.Stop()

	t.Run("registry down, nodes 2-4 pull from peers", func(t *testing.T) {
		var servedBefore []float64
		for _, n := range nodes[2:] {
			servedBefore = append(servedBefore, n.metric(t, "shoal_served_bytes_total", map[string]string{"source": "peer"})+
				n.metric(t, "shoal_served_bytes_total", map[string]string{"source": "store"}))
		}
		var wg sync.WaitGroup
		for _, n := range nodes[2:] {
			wg.Go(func() {
				if err := n.ctrd.CtrPull(ctx, ref(shared)); err != nil {
					t.Errorf("%s pull with the registry down: %v", n.name, err)
				}
			})
		}
		wg.Wait()
		var fromPeers float64
		for i, n := range nodes[2:] {
			verifyHolds(t, n.ctrd.ContentDir(), shared.Blobs()...)
			if ok, err := n.ctrd.HasImage(ctx, ref(shared)); err != nil || !ok {
				t.Errorf("%s has the image: %v %v", n.name, ok, err)
			}
			// Every byte containerd got came from the mesh: from peers, or
			// from what this node fetched earlier for the cluster.
			layers := float64(shared.Size - shared.ManifestSize)
			got := n.metric(t, "shoal_served_bytes_total", map[string]string{"source": "peer"}) +
				n.metric(t, "shoal_served_bytes_total", map[string]string{"source": "store"}) - servedBefore[i]
			if got < layers {
				t.Errorf("%s served containerd %v bytes from peers and its store, want at least the %v bytes of config and layers", n.name, got, layers)
			}
			fromPeers += n.metric(t, "shoal_fetched_bytes_total", map[string]string{"source": "peer"})
		}
		if fromPeers < float64(shared.Size-shared.ManifestSize) {
			t.Errorf("nodes 2-4 fetched %v bytes from peers in all", fromPeers)
		}
		after, err := reg.Requests()
		if err != nil {
			t.Fatal(err)
		}
		if len(after) != len(before) {
			t.Errorf("registry log grew from %d to %d requests after node 1's pull", len(before), len(after))
		}
	})

	t.Run("serving peer killed mid-transfer", func(t *testing.T) {
		// Node 2 gets the big layer from node 1, so two peers hold it.
		if err := nodes[2].ctrd.CtrPull(ctx, ref(big)); err != nil {
			t.Fatalf("node2 pull: %v", err)
		}
		waitProvided(t, nodes[2], len(shared.Blobs())+len(big.Blobs())+2)
		// The puller is a node that holds no copy: the one designated to
		// fetch the layer for node 1 may be node 3 or node 4, not both.
		puller := nodes[3]
		if stored(t, puller.shoal.DataDir(), big.Layers[0]) {
			puller = nodes[4]
		}
		// Slow the puller's download so the layer is in flight long enough.
		if err := puller.host.Shape(ctx, 0, 80); err != nil {
			t.Fatal(err)
		}
		fetched := func() float64 {
			return puller.metric(t, "shoal_fetched_bytes_total", map[string]string{"source": "peer"})
		}
		fetchedBase := fetched()
		done := make(chan error, 1)
		go func() { done <- puller.ctrd.CtrPull(ctx, ref(big)) }()
		layer := float64(big.LayerSizes[0])
		// Once 8 MiB arrived, the peer the puller is streaming from is
		// killed: the layer must still be short of complete then.
		var (
			victim   *meshNode
			victimID peer.ID
			atKill   float64
		)
		waitFor(t, puller.name+" streams 8 MiB of the big layer from a peer", 60*time.Second, func() error {
			if atKill = fetched() - fetchedBase; atKill < 8<<20 {
				return fmt.Errorf("%s fetched %v bytes", puller.name, atKill)
			}
			for _, p := range puller.status(t).Peers {
				if p.Inflight == 0 {
					continue
				}
				for _, n := range nodes[1:] {
					if n != puller && n.status(t).ID == p.ID {
						victim, victimID = n, p.ID
						return nil
					}
				}
			}
			return fmt.Errorf("no transfer in flight on %s", puller.name)
		})
		if atKill >= layer {
			t.Fatalf("%s had fetched %v bytes, the whole %v-byte layer, before the kill: nothing was in flight", puller.name, atKill, layer)
		}
		fromOthers := func() int64 {
			var n int64
			for _, p := range puller.status(t).Peers {
				if p.ID != victimID {
					n += p.BytesFetched
				}
			}
			return n
		}
		othersAtKill := fromOthers()
		victim.shoal.Kill()
		if err := <-done; err != nil {
			t.Fatalf("%s pull after %s died: %v", puller.name, victim.name, err)
		}
		if err := puller.host.Shape(ctx, 0, 0); err != nil {
			t.Fatal(err)
		}
		verifyHolds(t, puller.ctrd.ContentDir(), big.Blobs()...)
		if ok, err := puller.ctrd.HasImage(ctx, ref(big)); err != nil || !ok {
			t.Fatalf("%s has the image: %v %v", puller.name, ok, err)
		}
		// With the registry down, the rest came from the other peer.
		if got := fromOthers() - othersAtKill; got <= 0 {
			t.Errorf("%s fetched nothing from peers other than %s after the kill: the transfer did not resume elsewhere", puller.name, victim.name)
		}
		// The puller resumed at the offset it had reached: it received
		// the layer about once, not the part before the kill twice.
		if got := fetched() - fetchedBase; got > layer+float64(1<<20) {
			t.Errorf("%s fetched %v bytes from peers for a %v-byte layer: the transfer restarted from 0", puller.name, got, layer)
		}
		t.Logf("killed %s after %s had fetched %v bytes; %s fetched %v bytes for the %v-byte layer, %d of them from the other peers after the kill",
			victim.name, puller.name, atKill, puller.name, fetched()-fetchedBase, layer, fromOthers()-othersAtKill)
		if err := victim.shoal.Start(ctx); err != nil {
			t.Fatal(err)
		}
		converged()
	})

	t.Run("corrupting peer", func(t *testing.T) {
		// Node 4 alone gets an image, straight from the registry, not
		// through shoal, so no other node holds a copy; then it turns
		// bad: its daemon corrupts whatever it serves.
		if err := reg.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if out, err := nodes[4].ctrd.Ctr(ctx, "images", "pull", "--plain-http", ref(poisoned)); err != nil {
			t.Fatalf("node4 direct pull: %v\n%s", err, out)
		}
		reg.Stop()
		nodes[4].restartShoal(t, "--fault-corrupt-uploads")
		converged()
		waitProvided(t, nodes[4], len(poisoned.Blobs())+1)
		// Only node 4, which corrupts what it serves, holds this image.
		puller := nodes[3]
		servedBefore := nodes[4].status(t).BytesServed
		if err := puller.ctrd.CtrPull(ctx, ref(poisoned)); err == nil {
			t.Fatal("pull succeeded with only a corrupting peer and no registry")
		}
		// What it pulled before is committed and whole; the corrupted
		// layer is not committed.
		verifyHolds(t, puller.ctrd.ContentDir(), shared.Blobs()...)
		verifyHolds(t, puller.shoal.DataDir(), shared.Blobs()...)
		have, err := puller.ctrd.ContentDigests(ctx)
		if err != nil {
			t.Fatalf("%s's containerd content: %v", puller.name, err)
		}
		if slices.Contains(have, poisoned.Layers[0]) {
			t.Fatal("node3's containerd committed the corrupted layer")
		}
		if stored(t, puller.shoal.DataDir(), poisoned.Layers[0]) {
			t.Fatal("node3's shoal stored the corrupted layer")
		}
		waitMetric(t, puller.shoal, "shoal_verify_failures_total", nil, 1)
		// Whoever received node 4's bytes (node 3, or the node designated
		// to fetch the layer for the cluster) set it aside, just after it
		// rejected them.
		id4 := nodes[4].status(t).ID
		var avoiders []string
		waitFor(t, "a node to avoid node4", 10*time.Second, func() error {
			avoiders = nil
			for _, n := range nodes[1:4] {
				for _, p := range n.status(t).Peers {
					if p.ID == id4 && p.AvoidedUntil.After(time.Now()) {
						avoiders = append(avoiders, n.name)
					}
				}
			}
			if len(avoiders) == 0 {
				return errors.New("no node avoids node4")
			}
			return nil
		})
		t.Logf("node4 avoided by %v", avoiders)
		// With the registry back, the pull succeeds, and node 4 is not asked.
		if err := reg.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer reg.Stop()
		servedMid := nodes[4].status(t).BytesServed
		fromNode4 := func() int64 {
			for _, p := range puller.status(t).Peers {
				if p.ID == id4 {
					return p.BytesFetched
				}
			}
			return 0
		}
		fetchedMid := fromNode4()
		if err := puller.ctrd.CtrPull(ctx, ref(poisoned)); err != nil {
			t.Fatalf("pull with the registry back: %v", err)
		}
		verifyHolds(t, puller.ctrd.ContentDir(), poisoned.Blobs()...)
		for _, n := range nodes[1:4] {
			verifyHolds(t, n.ctrd.ContentDir(), shared.Blobs()...)
			verifyHolds(t, n.shoal.DataDir(), shared.Blobs()...)
		}
		if slices.Contains(avoiders, puller.name) {
			if got := fromNode4(); got != fetchedMid {
				t.Errorf("%s fetched %d more bytes from node4, which it avoids", puller.name, got-fetchedMid)
			}
		}
		t.Logf("node4 served %d corrupted bytes before it was avoided", servedMid-servedBefore)
	})

	t.Run("a daemon with another key stays out", func(t *testing.T) {
		stranger := startMeshNode(t, "stranger", net.Hosts[5], lab.Flavor2, reg.Addr(), seeds, writeKey(t))
		// It tried and was refused: its own join failed, and a member
		// could not decrypt what it sent.
		strangerIP := net.Hosts[5].IP.String()
		var joinErr, refusal string
		waitFor(t, "the stranger's join to fail and a member to refuse it", 30*time.Second, func() error {
			if joinErr = stranger.status(t).LastJoinError; joinErr == "" {
				return errors.New("the stranger reports no failed join")
			}
			for _, n := range nodes[1:] {
				if refusal = refusedFrom(t, n, strangerIP); refusal != "" {
					return nil
				}
			}
			return fmt.Errorf("no member logged a message from %s it could not decrypt", strangerIP)
		})
		t.Logf("the stranger's join failed: %s; a member logged: %s", joinErr, refusal)
		st := stranger.status(t)
		if st.LiveMembers != 1 {
			t.Errorf("stranger sees %d live members, want only itself", st.LiveMembers)
		}
		for _, n := range nodes[1:] {
			for _, m := range n.status(t).Members {
				if m.Name == "stranger" {
					t.Errorf("%s lists the stranger as %s", n.name, m.State)
				}
			}
		}
		if err := stranger.ctrd.CtrPull(ctx, ref(shared)); err == nil {
			t.Error("stranger pulled with the registry down: it got blobs from the mesh")
		}
		if got := stranger.metric(t, "shoal_fetched_bytes_total", map[string]string{"source": "peer"}); got != 0 {
			t.Errorf("stranger fetched %v bytes from peers", got)
		}
		// And it cannot fetch a blob directly from a member's libp2p port.
		d := digest.Digest(shared.Layers[0])
		if got := stranger.metric(t, "shoal_resolver_lookups_total", map[string]string{"kind": "blob", "source": "peer"}); got != 0 {
			t.Errorf("stranger resolved %v blobs from peers (%s)", got, d)
		}
	})
}
