package p2p

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
)

// A member that found a peer silent mid-blob (see Node.Silent) says so
// over the gossip, so that the other members do not each wait for the
// same peer's answer before they find it silent too: a kind byte
// (msgSilent), a byte of length and the name of the member that found it,
// then the silent peer's ID. A member that hears it checks for itself: it
// pings the peer, and leaves it out (as Node.Silent does) only when the
// ping times out after watchPingTimeout, as the silent watch's would; not
// at all when the peer's bytes or an answer reached it within hintFresh
// (behind a full link a stream's bytes come a second and more apart), nor
// when the ping fails at once (refused by a resource limit: no word on
// the peer). A node whose own link is cut finds its healthy peers silent
// and says so; they answer the others' pings. One check per peer runs at
// a time, and at most maxHintChecks at once; more words are dropped. A
// hint is not passed on by those who hear it: memberlist sends each
// broadcast to a few members at random, a few times (RetransmitMult ×
// log10(N+1)), which reaches every member only up to four, and each member
// that finds the peer silent itself says so too.
const (
	msgSilent     byte = 3
	maxSilentMsg       = 1 + 1 + 255 + 128
	minSilentMsg       = 1 + 1 + 1
	hintFresh          = flowKeeps
	maxHintChecks      = 8
	noteSilentMsg      = "peer found silent by a member did not answer this node's ping either: left out until it answers one"
)

type silentMsg struct {
	origin string
	peer   peer.ID
}

func (m silentMsg) encode() []byte {
	b := make([]byte, 0, 2+len(m.origin)+len(m.peer))
	b = append(b, msgSilent, byte(len(m.origin)))
	b = append(b, m.origin...)
	return append(b, m.peer...)
}

// parseSilentMsg reads a silent-peer message; anything that is not a
// well-formed one naming a valid peer ID is an error.
func parseSilentMsg(b []byte) (silentMsg, error) {
	if len(b) < minSilentMsg || len(b) > maxSilentMsg {
		return silentMsg{}, fmt.Errorf("silent-peer message of %d bytes", len(b))
	}
	if b[0] != msgSilent {
		return silentMsg{}, fmt.Errorf("unknown message kind %d", b[0])
	}
	n := int(b[1])
	if 2+n >= len(b) {
		return silentMsg{}, errors.New("silent-peer message ends inside the member name")
	}
	id, err := peer.IDFromBytes(b[2+n:])
	if err != nil {
		return silentMsg{}, fmt.Errorf("silent-peer message: %w", err)
	}
	return silentMsg{origin: string(b[2 : 2+n]), peer: id}, nil
}

// silentBroadcast is one queued message; a newer one about the same peer
// replaces it.
type silentBroadcast struct {
	peer peer.ID
	msg  []byte
}

func (b silentBroadcast) Invalidates(other memberlist.Broadcast) bool {
	o, ok := other.(silentBroadcast)
	return ok && o.peer == b.peer
}
func (b silentBroadcast) Message() []byte { return b.msg }
func (b silentBroadcast) Finished()       {}

// tellSilent tells the members that this node found p silent.
func (n *Node) tellSilent(p peer.ID) {
	if n.ml == nil {
		return
	}
	m := silentMsg{origin: n.cfg.NodeName, peer: p}
	if len(m.origin) > 255 {
		m.origin = m.origin[:255]
	}
	n.backoffs.queue.QueueBroadcast(silentBroadcast{peer: p, msg: m.encode()})
}

// receiveSilent handles a member's word that a peer went silent. It runs
// on memberlist's goroutine, so the peer is pinged on another.
func (n *Node) receiveSilent(b []byte) error {
	m, err := parseSilentMsg(b)
	if err != nil {
		return err
	}
	if m.peer != n.id && n.members.live(m.peer) {
		n.stats.peer(m.peer).heardSilent.Store(time.Now().UnixNano())
	}
	if !n.ready.Load() || !n.mayBeSilent(m.peer) || !n.startCheck(m.peer) {
		return nil
	}
	go func() {
		defer n.endCheck(m.peer)
		n.checkSilent(m.peer, m.origin)
	}()
	return nil
}

// checkSilent leaves p out, as member origin said, if p may be silent and
// its ping times out.
func (n *Node) checkSilent(p peer.ID, origin string) {
	if n.mayBeSilent(p) && n.pingTimesOut(p) && n.mayBeSilent(p) {
		n.silence(p, origin)
	}
}

// mayBeSilent says whether a member's word that p went silent is worth a
// ping: p is another live member, not left out already, and neither its
// bytes nor an answer reached this node within hintFresh.
func (n *Node) mayBeSilent(p peer.ID) bool {
	since := time.Now().Add(-hintFresh)
	return p != n.id && n.members.live(p) && !n.stats.isSilent(p) &&
		!n.stats.receivedSince(p, since) && !n.stats.answeredSince(p, since)
}

// pingTimesOut pings p and says whether no answer came within
// watchPingTimeout. An answer is noted (see stats.answeredSince); a ping
// that fails at once says nothing of p and counts as no time-out.
func (n *Node) pingTimesOut(p peer.ID) bool {
	ctx, cancel := context.WithTimeout(n.life, watchPingTimeout)
	defer cancel() // ends the pinging
	res, ok := <-ping.Ping(network.WithForceDirectDial(ctx, "silent hint"), n.host, p)
	if ok && res.Error == nil {
		n.stats.peer(p).roundTrip(res.RTT)
		n.stats.answered(p, time.Now())
		return false
	}
	return errors.Is(ctx.Err(), context.DeadlineExceeded)
}

// startCheck takes a check slot for p, unless p is being checked already
// or every slot is taken; endCheck gives it back.
func (n *Node) startCheck(p peer.ID) bool {
	n.hintMu.Lock()
	defer n.hintMu.Unlock()
	if n.checking[p] || !n.enterHandler() {
		return false
	}
	select {
	case n.hints <- struct{}{}:
	default:
		n.handlers.Done()
		return false
	}
	n.checking[p] = true
	return true
}

func (n *Node) endCheck(p peer.ID) {
	n.hintMu.Lock()
	delete(n.checking, p)
	<-n.hints
	n.hintMu.Unlock()
	n.handlers.Done()
}
