package p2p_test

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"

	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/p2p/p2ptest"
)

// connectedMesh starts n nodes and waits until node 0 has a connection to
// every other.
func connectedMesh(t *testing.T, n int) *p2ptest.Cluster {
	t.Helper()
	c := p2ptest.Start(t, n, p2ptest.Options{})
	c.WaitMembers(t, n, 20*time.Second)
	p2ptest.Eventually(t, 20*time.Second, func() error {
		for _, o := range c.Nodes[1:] {
			if p2p.Host(c.Nodes[0]).Network().Connectedness(o.ID()) != network.Connected {
				return fmt.Errorf("node 0 has no connection to %s", o.ID())
			}
		}
		return nil
	})
	return c
}

// TestOwnLinkSlow: a peer that kept this node waiting is laid to the
// node's own link only when none of its other peers, silent or not,
// answers a ping in time, and the peer judged does not answer at once
// either: its own answer counts only when it did not wait in a queue.
func TestOwnLinkSlow(t *testing.T) {
	t.Parallel()
	c := connectedMesh(t, 3)
	r := c.Nodes[0].Router()
	judged, other := c.Nodes[1], c.Nodes[2]
	// The budget is 250 ms whatever the wait, and on a loaded test
	// machine a ping answered at once can take longer, for seconds on
	// end, which the node rightly lays to its own link: where a peer
	// answers, the link is found fine by some probe within 30 s. Where
	// none answers, every probe finds it slow.
	answerable, unanswerable := 20*time.Second, time.Duration(0)
	foundFine := func(p, why string) {
		t.Helper()
		p2ptest.Eventually(t, 30*time.Second, func() error {
			if r.OwnLinkSlow(p, answerable) {
				return fmt.Errorf("own link slow while %s", why)
			}
			return nil
		})
	}
	foundFine(judged.ID().String(), "both peers answer")
	// From here on the judged peer answers 0.2 s after a ping, where it
	// once answered in a millisecond, as behind a full link: that answer
	// waited in a queue, and says nothing of this node's link.
	p2p.SawRoundTrip(c.Nodes[0], judged.ID(), time.Millisecond)
	p2p.Host(judged).SetStreamHandler(ping.ID, latePing(200*time.Millisecond))
	// The other peer answers within the budget, 0.2 s after a ping: the
	// ping waited in the queue of the node's own link, cut to a tenth.
	p2p.SawRoundTrip(c.Nodes[0], other.ID(), time.Millisecond)
	p2p.Host(other).SetStreamHandler(ping.ID, latePing(200*time.Millisecond))
	if !r.OwnLinkSlow(judged.ID().String(), time.Second) {
		t.Error("own link not slow while both peers answer 0.2 s past their quickest round trip of 1 ms")
	}
	// The other peer's pings go unanswered, as they would behind a full
	// link, or from a peer frozen itself.
	p2p.Host(other).RemoveStreamHandler(ping.ID)
	if !r.OwnLinkSlow(judged.ID().String(), unanswerable) {
		t.Error("own link not slow while the only other peer does not answer and the judged one answers late")
	}
	// The judged peer answers at once, the other still not at all: the
	// other peer is the one that is down, and nothing holds the judged
	// peer's answers up on the way, this node's link included.
	p2p.Host(judged).SetStreamHandler(ping.ID, latePing(0))
	foundFine(judged.ID().String(), "the judged peer answers at once")
	foundFine(other.ID().String(), "a peer other than the one judged answers at once")
	p2p.Host(judged).SetStreamHandler(ping.ID, latePing(200*time.Millisecond))
	// The other peer answers after 0.6 s, as a ping behind a link cut to
	// a tenth with its queue full does: however long the judged peer's
	// wait, that is the node's own link.
	p2p.Host(other).SetStreamHandler(ping.ID, latePing(600*time.Millisecond))
	if !r.OwnLinkSlow(judged.ID().String(), 3*time.Second) {
		t.Error("own link not slow while the only other peer answers a ping 0.6 s late, after a 3 s wait")
	}
	// The same, the other peer having been left out as silent, as a node
	// behind its own full link leaves its peers out in turn: it is still
	// what the link is measured by.
	c.Nodes[0].Silent(other.ID())
	if !r.OwnLinkSlow(judged.ID().String(), 3*time.Second) {
		t.Error("own link not slow while the only other peer, left out as silent, answers a ping 0.6 s late")
	}
}

// TestSilentWatchKeepsTheConnectionWhenTheOwnLinkIsSlow: a peer left out
// as silent, whose pings go unanswered while no blob byte crosses its
// connection, has that connection closed, and a stream from it ends; unless
// the node's other peers do not answer either: the node's own link holds
// the pings up, and the stream carries on once read again. Nor is it
// closed when the peer answers the pings late, as it does behind a full
// link: the connection carries its bytes.
func TestSilentWatchKeepsTheConnectionWhenTheOwnLinkIsSlow(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		otherSilent bool
		lateAnswers bool
		kept        bool
	}{
		{"another peer answers", false, false, false},
		{"no other peer answers", true, false, true},
		{"another peer answers, the peer answers late", false, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := connectedMesh(t, 3)
			client, holder, other := c.Nodes[0], c.Nodes[1], c.Nodes[2]
			data := bytes.Repeat([]byte("a blob read after a pause "), 40<<10) // about 1 MiB
			blob := c.Contents[1].Add(data)
			waitProviders(t, client, blob, []peer.ID{holder.ID()}, 20*time.Second)
			p2p.Host(holder).RemoveStreamHandler(ping.ID)
			if tc.lateAnswers {
				p2p.Host(holder).SetStreamHandler(ping.ID, latePing(700*time.Millisecond))
			}
			if tc.otherSilent {
				p2p.Host(other).RemoveStreamHandler(ping.ID)
			}
			body, _, err := client.Fetch(t.Context(), holder.ID(), blob, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer body.Close()
			head := make([]byte, 1024)
			if _, err := io.ReadFull(body, head); err != nil {
				t.Fatal(err)
			}
			// Nothing read for long enough for the watch to ping the
			// holder several times, each ping unanswered, more than 2 s
			// after the last byte crossed (a connection whose bytes
			// crossed within 2 s is kept). Where the connection is to be
			// closed, up to 30 s: the watch closes it once one of its
			// own-link probes finds the other peer's ping back within
			// 250 ms, which on a loaded test machine can take a while.
			closed := make(chan struct{})
			var once sync.Once
			p2p.Host(client).Network().Notify(&network.NotifyBundle{DisconnectedF: func(_ network.Network, cn network.Conn) {
				if cn.RemotePeer() == holder.ID() {
					once.Do(func() { close(closed) })
				}
			}})
			client.Silent(holder.ID())
			time.Sleep(4 * time.Second)
			if !tc.kept {
				select {
				case <-closed:
				case <-time.After(30 * time.Second):
				}
			}
			rest, err := io.ReadAll(body)
			got := append(head, rest...)
			kept := err == nil && bytes.Equal(got, data)
			if kept != tc.kept {
				t.Errorf("read %d of %d bytes after the pause (err %v); want the stream kept: %v", len(got), len(data), err, tc.kept)
			}
		})
	}
}

// TestPeerLinkQueued: a peer whose answer to a ping does not come within
// the budget, or comes 0.2 s past its quickest round trip of 1 ms, while
// another peer answers at once, holds its bytes up on its own link; one
// that answers at once does not, nor one that is late beside another as
// late (the node's own link).
func TestPeerLinkQueued(t *testing.T) {
	t.Parallel()
	c := connectedMesh(t, 3)
	r := c.Nodes[0].Router()
	judged, other := c.Nodes[1], c.Nodes[2]
	// On a loaded test machine a ping answered at once can take longer,
	// for seconds on end: each verdict that needs one peer to answer at
	// once is reached within 30 s.
	eventually := func(want bool, why string) {
		t.Helper()
		p2ptest.Eventually(t, 30*time.Second, func() error {
			if got := r.PeerLinkQueued(judged.ID().String()); got != want {
				return fmt.Errorf("peer link queued = %v while %s", got, why)
			}
			return nil
		})
	}
	p2p.Host(judged).SetStreamHandler(ping.ID, latePing(400*time.Millisecond))
	eventually(true, "the peer does not answer within the budget and another answers at once")
	p2p.SawRoundTrip(c.Nodes[0], judged.ID(), time.Millisecond)
	p2p.Host(judged).SetStreamHandler(ping.ID, latePing(200*time.Millisecond))
	eventually(true, "the peer answers 0.2 s past its quickest round trip of 1 ms and another answers at once")
	p2p.Host(judged).SetStreamHandler(ping.ID, latePing(0))
	eventually(false, "the peer answers at once")
	// Both late: the node's own link. A loaded machine only delays the
	// answers further.
	p2p.Host(judged).SetStreamHandler(ping.ID, latePing(400*time.Millisecond))
	p2p.Host(other).SetStreamHandler(ping.ID, latePing(400*time.Millisecond))
	if r.PeerLinkQueued(judged.ID().String()) {
		t.Error("peer link queued while no other peer answers within the budget either")
	}
}

// latePing answers libp2p's ping protocol after wait, each ping.
func latePing(wait time.Duration) network.StreamHandler {
	return func(s network.Stream) {
		buf := make([]byte, ping.PingSize)
		for {
			if _, err := io.ReadFull(s, buf); err != nil {
				_ = s.Reset()
				return
			}
			time.Sleep(wait)
			if _, err := s.Write(buf); err != nil {
				_ = s.Reset()
				return
			}
		}
	}
}
