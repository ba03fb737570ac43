package p2p_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/p2p/p2ptest"
)

// TestRescan checks that content found by the periodic walk is announced,
// that Provide announces at once, that content which disappeared stops
// being counted and served, and that an avoided peer is left out.
func TestRescan(t *testing.T) {
	t.Parallel()
	c := p2ptest.Start(t, 2, p2ptest.Options{
		Config: func(i int, cfg *p2p.Config) {
			if i == 0 {
				cfg.RescanInterval = time.Hour // node 0 announces nothing by itself after start
			}
		},
	})
	c.WaitMembers(t, 2, 20*time.Second)
	client, holder := c.Nodes[0], c.Nodes[1]

	walked := c.Contents[1].Add([]byte("found by the rescan"))
	waitProviders(t, client, walked, []peer.ID{holder.ID()}, 20*time.Second)

	pushed := c.Contents[0].Add([]byte("announced at once"))
	if err := client.Provide(t.Context(), pushed); err != nil {
		t.Fatal(err)
	}
	waitProviders(t, holder, pushed, []peer.ID{client.ID()}, 5*time.Second)
	if err := client.Provide(t.Context(), "sha256:bad"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("Provide of a bad digest: %v", err)
	}

	// Gone from the content: no longer counted, and answered as not found.
	c.Contents[1].Remove(walked)
	p2ptest.Eventually(t, 20*time.Second, func() error {
		if got := holder.Status().BlobsProvided; got != 0 {
			return fmt.Errorf("holder still counts %d blobs provided", got)
		}
		return nil
	})
	if _, _, err := client.Fetch(t.Context(), holder.ID(), walked, 0); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("fetch of a removed blob: %v, want ErrNotFound", err)
	}

	// An avoided peer is not offered.
	again := c.Contents[1].Add([]byte("held, but by an avoided peer"))
	waitProviders(t, client, again, []peer.ID{holder.ID()}, 20*time.Second)
	client.Avoid(holder.ID(), errors.New("sent bytes that did not verify"))
	if got, err := client.Providers(t.Context(), again, 1); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("providers after Avoid: %v, %v; want ErrNotFound", got, err)
	}
	var avoided bool
	for _, p := range client.Status().Peers {
		if p.ID == holder.ID() && p.AvoidedUntil.After(time.Now()) && p.AvoidReason != "" {
			avoided = true
		}
	}
	if !avoided {
		t.Errorf("status does not show the avoided peer: %+v", client.Status().Peers)
	}
}

// TestWithdraw checks that a blob the node no longer holds stops being
// counted at once, that one it still holds is kept, and that Rescan walks
// the content without waiting for RescanInterval.
func TestWithdraw(t *testing.T) {
	t.Parallel()
	c := p2ptest.Start(t, 2, p2ptest.Options{
		Config: func(_ int, cfg *p2p.Config) { cfg.RescanInterval = time.Hour },
	})
	c.WaitMembers(t, 2, 20*time.Second)
	n, other := c.Nodes[0], c.Nodes[1]
	kept := c.Contents[0].Add([]byte("still held"))
	gone := c.Contents[0].Add([]byte("deleted by containerd"))
	// Until the routing table has a peer, there is nobody to announce to.
	p2ptest.Eventually(t, 20*time.Second, func() error {
		return errors.Join(n.Provide(t.Context(), kept), n.Provide(t.Context(), gone))
	})
	if got := n.Status().BlobsProvided; got != 2 {
		t.Fatalf("BlobsProvided = %d, want 2", got)
	}
	if n.Withdraw(t.Context(), kept) {
		t.Error("Withdraw of a blob the node still holds reported a withdrawal")
	}
	c.Contents[0].Remove(gone)
	if !n.Withdraw(t.Context(), gone) {
		t.Error("Withdraw of a deleted blob reported none")
	}
	if got := n.Status().BlobsProvided; got != 1 {
		t.Errorf("BlobsProvided after Withdraw = %d, want 1", got)
	}
	if n.Withdraw(t.Context(), gone) {
		t.Error("a second Withdraw reported a withdrawal again")
	}

	walked := c.Contents[0].Add([]byte("found by a rescan asked for"))
	n.Rescan()
	waitProviders(t, other, walked, []peer.ID{n.ID()}, 20*time.Second)
}

// TestRejoin checks that a node retries its seeds until one answers, that
// seeds given by name are resolved, and that a node left alone joins again.
func TestRejoin(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	seed := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))

	// B starts first and keeps retrying its seed, named "localhost".
	cfg := p2ptest.Config(t, "b")
	cfg.Join = []string{net.JoinHostPort("localhost", strconv.Itoa(port))}
	b := startNode(t, cfg)
	p2ptest.Eventually(t, 10*time.Second, func() error {
		if b.Status().LastJoinError == "" {
			return errors.New("no failed join attempt yet")
		}
		return nil
	})

	startSeed := func() (*p2p.Node, func()) {
		cfg := p2ptest.Config(t, "a")
		cfg.GossipAddr = seed
		ctx, cancel := context.WithCancel(context.Background())
		n, err := p2p.New(cfg, p2ptest.NewContent())
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- n.Run(ctx) }()
		return n, func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("seed: %v", err)
			}
		}
	}
	waitLive := func(want int, nodes ...*p2p.Node) {
		t.Helper()
		p2ptest.Eventually(t, 20*time.Second, func() error {
			for _, n := range nodes {
				if got := n.Status().LiveMembers; got != want {
					return fmt.Errorf("%s sees %d live members, want %d", n.Status().NodeName, got, want)
				}
			}
			return nil
		})
	}

	a, stopA := startSeed()
	waitLive(2, a, b)
	// The members merge inside the join call, before it returns and the
	// error is cleared: give the attempt its moment.
	p2ptest.Eventually(t, 5*time.Second, func() error {
		if got := b.Status().LastJoinError; got != "" {
			return fmt.Errorf("joined, but status still shows %q", got)
		}
		return nil
	})

	// The seed goes away: B is alone, and joins the seed's successor.
	stopA()
	waitLive(1, b)
	a2, stopA2 := startSeed()
	defer stopA2()
	waitLive(2, a2, b)
}

// freePort returns a port free for both TCP and UDP on loopback, as
// memberlist needs.
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", l.Addr().String())
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// startNode runs a node until the test ends.
func startNode(t *testing.T, cfg p2p.Config) *p2p.Node {
	t.Helper()
	n, err := p2p.New(cfg, p2ptest.NewContent())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s: %v", cfg.NodeName, err)
		}
	})
	return n
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	cfg := p2ptest.Config(t, "m")
	cfg.Metrics = reg
	n, err := p2p.New(cfg, p2ptest.NewContent())
	if err != nil {
		t.Fatal(err)
	}
	defer runStopped(n)
	// A second node on the same registry is refused, not a panic.
	cfg2 := p2ptest.Config(t, "m2")
	cfg2.Metrics = reg
	if n2, err := p2p.New(cfg2, p2ptest.NewContent()); err == nil {
		_ = runStopped(n2)
		t.Errorf("two nodes registered the same metrics")
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, want := range []string{"shoal_p2p_members", "shoal_p2p_blobs_provided", "shoal_p2p_uploads_active", "shoal_p2p_served_bytes_total"} {
		if !names[want] {
			t.Errorf("metric %s not registered; have %v", want, names)
		}
	}
}

// TestJoinMergesIslands: nodes that start together can pair up into
// islands, each joined and so not alone, that would stay apart until the
// next RejoinInterval. A node whose seeds lie in several islands must join
// all of them, which merges them at once.
func TestJoinMergesIslands(t *testing.T) {
	t.Parallel()
	cfg := func(name string, join ...string) p2p.Config {
		c := p2ptest.Config(t, name)
		c.Join = join
		c.Timing.RejoinInterval = time.Hour // only the first join may merge them
		return c
	}
	a1 := startNode(t, cfg("a1"))
	a2 := startNode(t, cfg("a2", a1.Status().GossipAddr))
	c1 := startNode(t, cfg("c1"))
	c2 := startNode(t, cfg("c2", c1.Status().GossipAddr))
	islands := []*p2p.Node{a1, a2, c1, c2}
	p2ptest.Eventually(t, 20*time.Second, func() error {
		for _, n := range islands {
			if got := n.Status().LiveMembers; got != 2 {
				return fmt.Errorf("%s sees %d live members, want its island's 2", n.Status().NodeName, got)
			}
		}
		return nil
	})
	e := startNode(t, cfg("e", a1.Status().GossipAddr, c1.Status().GossipAddr))
	p2ptest.Eventually(t, 20*time.Second, func() error {
		for _, n := range append(islands, e) {
			if got := n.Status().LiveMembers; got != 5 {
				return fmt.Errorf("%s sees %d live members, want 5", n.Status().NodeName, got)
			}
		}
		return nil
	})
}

// TestSilentPeer: a peer marked silent is left out of Providers and
// Designated until it answers a ping; then it is offered again.
func TestSilentPeer(t *testing.T) {
	t.Parallel()
	c := p2ptest.Start(t, 2, p2ptest.Options{})
	c.WaitMembers(t, 2, 20*time.Second)
	client, holder := c.Nodes[0], c.Nodes[1]
	blob := c.Contents[1].Add([]byte("held by a peer that goes silent"))
	waitProviders(t, client, blob, []peer.ID{holder.ID()}, 20*time.Second)

	// The holder stops answering pings, as a frozen process would, while
	// memberlist still counts it alive.
	p2p.Host(holder).RemoveStreamHandler(ping.ID)
	client.Silent(holder.ID())
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if got, err := client.Providers(t.Context(), blob, 0); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("providers of a silent peer's blob: %v, %v; want ErrNotFound", got, err)
		}
		if slices.Contains(client.Designated(blob, nil), holder.ID()) {
			t.Fatal("a silent peer is still designated")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !slices.ContainsFunc(client.Status().Peers, func(p p2p.PeerStatus) bool { return p.ID == holder.ID() && p.Silent }) {
		t.Errorf("status does not show the silent peer: %+v", client.Status().Peers)
	}

	// It answers again: offered again.
	ping.NewPingService(p2p.Host(holder))
	waitProviders(t, client, blob, []peer.ID{holder.ID()}, 5*time.Second)
	if !slices.Contains(client.Designated(blob, nil), holder.ID()) {
		t.Error("a peer that answers again is not designated")
	}
}

// TestSilentPeerLeftOutOfLookups: a peer that stops answering both pings
// and the DHT, as a frozen process does, holds every provider look-up up
// until its timeout while the look-up asks it. Once left out as silent it
// is no longer asked, and a look-up finds the other holders at once; when
// it answers again it is back in the routing table.
func TestSilentPeerLeftOutOfLookups(t *testing.T) {
	t.Parallel()
	const findTimeout = 20 * time.Second
	client, holder, frozen, blob := lookupMesh(t, findTimeout, "held by a peer that keeps answering")

	// The frozen peer takes DHT requests and never answers them.
	thawed := make(chan struct{})
	defer close(thawed)
	fh := p2p.Host(frozen)
	fh.RemoveStreamHandler(ping.ID)
	fh.SetStreamHandler(p2p.DHTPrefix+"/kad/1.0.0", func(s network.Stream) {
		<-thawed
		_ = s.Reset()
	})
	// The client's DHT keeps a stream per peer: the new handler takes the
	// next one.
	_ = fh.Network().ClosePeer(client.ID())
	client.Silent(frozen.ID())
	if p2p.InRoutingTable(client, frozen.ID()) {
		t.Error("a silent peer is still in the routing table")
	}
	start := time.Now()
	got, err := client.Providers(t.Context(), blob, 0)
	if took := time.Since(start); err != nil || !samePeers(got, []peer.ID{holder.ID()}) || took >= findTimeout/2 {
		t.Fatalf("a look-up with a silent peer: %v, %v after %v; want the holder, well before the %v timeout", got, err, took, findTimeout)
	}

	// It answers a ping again: back in the routing table.
	ping.NewPingService(fh)
	p2ptest.Eventually(t, 5*time.Second, func() error {
		if !p2p.InRoutingTable(client, frozen.ID()) {
			return errors.New("a peer that answers again is not back in the routing table")
		}
		return nil
	})
}

// lookupMesh starts three nodes whose look-ups last up to findTimeout:
// the client, a holder of a blob made of content, and a third member,
// once the client finds the holder and has the third in its routing
// table.
func lookupMesh(t *testing.T, findTimeout time.Duration, content string) (client, holder, third *p2p.Node, blob digest.Digest) {
	t.Helper()
	c := p2ptest.Start(t, 3, p2ptest.Options{Config: func(_ int, cfg *p2p.Config) {
		cfg.Timing.FindTimeout = findTimeout
	}})
	c.WaitMembers(t, 3, 20*time.Second)
	client, holder, third = c.Nodes[0], c.Nodes[1], c.Nodes[2]
	blob = c.Contents[1].Add([]byte(content))
	waitProviders(t, client, blob, []peer.ID{holder.ID()}, 20*time.Second)
	p2ptest.Eventually(t, 20*time.Second, func() error {
		if !p2p.InRoutingTable(client, third.ID()) {
			return errors.New("the third member is not in the client's routing table yet")
		}
		return nil
	})
	return client, holder, third, blob
}

// TestSlowMemberNotWaitedForInLookups: a member that still answers pings
// but answers DHT requests late (its link is throttled, its queue full)
// is not waited for: once another member answered and a holder is found,
// the look-up ends after FindQuiet without it.
func TestSlowMemberNotWaitedForInLookups(t *testing.T) {
	t.Parallel()
	const (
		findTimeout = 20 * time.Second
		slowBy      = 8 * time.Second
	)
	client, holder, slow, blob := lookupMesh(t, findTimeout, "held by a peer that answers at once")

	// The slow peer reads DHT requests and gives up on them after slowBy.
	done := make(chan struct{})
	defer close(done)
	sh := p2p.Host(slow)
	sh.SetStreamHandler(p2p.DHTPrefix+"/kad/1.0.0", func(s network.Stream) {
		select {
		case <-time.After(slowBy):
		case <-done:
		}
		_ = s.Reset()
	})
	// The client's DHT keeps a stream per peer: the new handler takes the
	// next one. A DHT request of the client's that the close cuts takes the
	// slow peer out of its routing table, and the DHT's check of a peer
	// that connects again (one request, answered late) keeps it out: the
	// test puts it back, as a member that answered earlier stays in.
	_ = sh.Network().ClosePeer(client.ID())
	p2ptest.Eventually(t, 20*time.Second, func() error {
		if !p2p.InRoutingTable(client, slow.ID()) {
			p2p.AddToRoutingTable(client, slow.ID())
			return errors.New("the slow peer is not back in the client's routing table")
		}
		return nil
	})
	start := time.Now()
	got, err := client.Providers(t.Context(), blob, 0)
	if took := time.Since(start); err != nil || !samePeers(got, []peer.ID{holder.ID()}) || took >= slowBy/2 {
		t.Fatalf("a look-up with a slow member: %v, %v after %v; want the holder, well before the slow member's %v", got, err, took, slowBy)
	}
}

// TestSilentReaderWhoseUploadFlowsKeepsItsConnection:
// TestSilentPeerWhoseBytesFlowKeepsItsConnection from the other side. A
// node left a peer out as silent (its pings queue behind a full link)
// while it uploads a blob to that peer at 200 KB/s: each piece of the
// upload that goes out shows the connection carries bytes, and the watch
// does not close it under the upload, though one of the upload's 256 KiB
// buffers takes over a second to go. Nor when the pieces go out over a
// second apart (flowKeeps).
func TestSilentReaderWhoseUploadFlowsKeepsItsConnection(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		rate  int64
		read  int
		pause time.Duration
	}{
		{"200 KB/s", 200 << 10, 64 << 10, 0},
		// The reader takes 64 KiB each 600 ms, and its window opens by
		// 128 KiB at a time: the upload's writes go out in bursts over a
		// second apart, as behind a full queue.
		{"bursts over a second apart", 0, 64 << 10, 600 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := p2ptest.Start(t, 2, p2ptest.Options{Config: func(i int, cfg *p2p.Config) {
				if i == 1 {
					cfg.MaxUploadRate = tc.rate
				}
			}})
			c.WaitMembers(t, 2, 20*time.Second)
			reader, server := c.Nodes[0], c.Nodes[1]
			data := bytes.Repeat([]byte("a blob sent slowly to a reader behind a full link "), 20<<10) // about 1 MiB
			blob := c.Contents[1].Add(data)
			waitProviders(t, reader, blob, []peer.ID{server.ID()}, 20*time.Second)
			p2p.Host(reader).RemoveStreamHandler(ping.ID)

			body, _, err := reader.Fetch(t.Context(), server.ID(), blob, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer body.Close()
			server.Silent(reader.ID())
			readWhole(t, body, data, tc.read, tc.pause, nil)
		})
	}
}

// readWhole reads body to its end in reads of chunk bytes, pause apart,
// calling before (when set) with each read's number first, and fails t
// unless it gets want.
func readWhole(t *testing.T, body io.Reader, want []byte, chunk int, pause time.Duration, before func(i int)) {
	t.Helper()
	var got bytes.Buffer
	buf := make([]byte, chunk)
	for i := 0; ; i++ {
		if before != nil {
			before(i)
		}
		n, err := body.Read(buf)
		got.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d bytes: %v", got.Len(), err)
		}
		time.Sleep(pause)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("read %d bytes, want %d", got.Len(), len(want))
	}
}

// TestSilentPeerWhoseBytesFlowKeepsItsConnection: a peer left out as
// silent whose pings go unanswered (they queue behind data on a full
// link), while a blob's bytes from it still cross the connection. The
// watch does not close that connection: it would end the stream, and the
// peer's own downloads from this node with it.
func TestSilentPeerWhoseBytesFlowKeepsItsConnection(t *testing.T) {
	t.Parallel()
	c := p2ptest.Start(t, 2, p2ptest.Options{})
	c.WaitMembers(t, 2, 20*time.Second)
	client, holder := c.Nodes[0], c.Nodes[1]
	data := bytes.Repeat([]byte("a blob read slowly over a full link "), 32<<10) // about 1 MiB
	blob := c.Contents[1].Add(data)
	waitProviders(t, client, blob, []peer.ID{holder.ID()}, 20*time.Second)
	p2p.Host(holder).RemoveStreamHandler(ping.ID)

	body, _, err := client.Fetch(t.Context(), holder.ID(), blob, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	readWhole(t, body, data, 16<<10, 20*time.Millisecond, func(i int) {
		if i == 4 {
			client.Silent(holder.ID())
		}
	})
}

// TestSilentPeerHeardFromAMember: a member that finds a peer silent says
// so over the gossip, and another member whose ping the peer does not
// answer either leaves it out, without waiting on the peer in a download
// of its own, and takes it back once it answers a ping. A member whose
// ping the peer answers, or that read the peer's bytes just now, does
// not take the word.
func TestSilentPeerHeardFromAMember(t *testing.T) {
	t.Parallel()
	c := p2ptest.Start(t, 5, p2ptest.Options{})
	c.WaitMembers(t, 5, 20*time.Second)
	finder, other, holder, answering, sender := c.Nodes[0], c.Nodes[1], c.Nodes[2], c.Nodes[3], c.Nodes[4]
	blob := c.Contents[2].Add([]byte("held by a peer another member finds silent"))
	sent := c.Contents[4].Add([]byte("read from a peer just before it goes quiet"))
	waitProviders(t, other, blob, []peer.ID{holder.ID()}, 20*time.Second)

	// The finder's own link may be the cause: a peer that answers stays.
	p2p.HearSilent(other, "finder", answering.ID())
	if silentAt(other, answering.ID()) {
		t.Fatal("a peer that answers a ping was left out on a member's word")
	}
	// A ping refused at once (here: no ping protocol; in a node, a
	// resource limit) says nothing of the peer.
	p2p.Host(finder).RemoveStreamHandler(ping.ID)
	p2p.HearSilent(other, "holder", finder.ID())
	if silentAt(other, finder.ID()) {
		t.Fatal("a peer whose ping was refused at once was left out on a member's word")
	}
	ping.NewPingService(p2p.Host(finder))

	// memberlist sends a broadcast to three members at random in a mesh
	// this size: at least two of the three that can hear it do.
	muteForPings(holder)
	said := time.Now()
	finder.Silent(holder.ID())
	p2ptest.Eventually(t, 10*time.Second, func() error {
		heard, told := 0, 0
		for _, n := range []*p2p.Node{other, answering, sender} {
			if silentAt(n, holder.ID()) {
				heard++
			}
			// The word is kept, for the members' judges of the peer's
			// streams (see swarm.LeavesWithPeer).
			if at, ok := n.Router().HeardSilent(holder.ID().String()); ok && !at.Before(said) {
				told++
			}
		}
		if heard < 2 || told < 2 {
			return fmt.Errorf("%d of the other members left out the peer the finder found silent, %d kept the word; want 2 or more of each", heard, told)
		}
		return nil
	})
	if silentAt(other, holder.ID()) {
		if got, err := other.Providers(t.Context(), blob, 0); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("providers of a silent peer's blob: %v, %v; want ErrNotFound", got, err)
		}
	}
	ping.NewPingService(p2p.Host(holder))
	waitProviders(t, other, blob, []peer.ID{holder.ID()}, 5*time.Second)

	// Bytes from a peer, then its pings go unanswered and a member's word
	// comes at once: the bytes count for more.
	rc, _, err := other.Fetch(t.Context(), sender.ID(), sent, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, rc); err != nil {
		t.Fatal(err)
	}
	_ = rc.Close()
	muteForPings(sender)
	p2p.HearSilent(other, "finder", sender.ID())
	if silentAt(other, sender.ID()) {
		t.Error("a peer whose bytes arrived just now was left out on a member's word")
	}
}

// muteForPings makes n take pings and never answer them, as a frozen
// process does (a peer without the protocol refuses them at once).
func muteForPings(n *p2p.Node) {
	p2p.Host(n).SetStreamHandler(ping.ID, func(s network.Stream) {
		_, _ = io.Copy(io.Discard, s)
		_ = s.Reset()
	})
}

// silentAt says whether n's status shows p left out as silent.
func silentAt(n *p2p.Node, p peer.ID) bool {
	return slices.ContainsFunc(n.Status().Peers, func(s p2p.PeerStatus) bool { return s.ID == p && s.Silent })
}
