package p2p

import (
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/libp2p/go-libp2p/core/peer"
)

// A member that found a peer silent mid-blob (see Node.Silent) says so
// over the gossip, so that the other members do not each wait for the
// same peer's answer before they find it silent too: a kind byte
// (msgSilent), a byte of length and the name of the member that found it,
// then the silent peer's ID. A member that hears it checks for itself: it
// leaves the peer out only while the peer does not answer its own pings
// (the watch of Node.Silent, which pings at once), and not at all when
// the peer's bytes or an answer reached it within hintFresh. A hint is
// not passed on by those who hear it: each member that finds the peer
// silent itself says so once.
const (
	msgSilent     byte = 3
	maxSilentMsg       = 1 + 1 + 255 + 128
	minSilentMsg       = 1 + 1 + 1
	hintFresh          = watchPingTimeout
	noteSilentMsg      = "peer found silent by a member: left out until it answers this node's ping"
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
// on memberlist's goroutine, so the check of the peer happens in the
// watch Node.silence starts.
func (n *Node) receiveSilent(b []byte) error {
	m, err := parseSilentMsg(b)
	if err != nil {
		return err
	}
	switch {
	case m.peer == n.id, !n.members.live(m.peer):
		return nil // this node knows better, or the peer is not a member
	case n.stats.receivedSince(m.peer, time.Now().Add(-hintFresh)),
		n.stats.answeredSince(m.peer, time.Now().Add(-hintFresh)):
		return nil // it reaches this node
	}
	n.silence(m.peer, m.origin)
	return nil
}
