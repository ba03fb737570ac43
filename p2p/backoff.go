package p2p

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/shoal-dev/shoal/resolver"
)

// A registry's request to slow down travels the gossip as a user message:
// a kind byte (msgBackoff), a 4-byte big-endian count of milliseconds the
// registry is to be left alone from when the message was sent, a byte of
// length and the name of the member the registry answered, then the
// registry's host[:port]. Members pass a message on when it moves their
// own back-off later, so it reaches every member in a few gossip rounds
// and stops spreading once everyone has it. With a cluster key, the gossip
// is encrypted and authenticated: only members can send one.
const (
	msgBackoff       byte = 1
	maxBackoffMsg         = 1 + 4 + 1 + 255 + 255
	backoffStateKeep      = 256 // registries remembered at most
)

type backoffMsg struct {
	origin   string
	registry string
	left     time.Duration
}

func (m backoffMsg) encode() []byte {
	b := make([]byte, 0, 6+len(m.origin)+len(m.registry))
	b = append(b, msgBackoff)
	b = binary.BigEndian.AppendUint32(b, uint32(m.left/time.Millisecond))
	b = append(b, byte(len(m.origin)))
	b = append(b, m.origin...)
	return append(b, m.registry...)
}

// parseBackoffMsg reads a gossip message; anything that is not a
// well-formed back-off for a valid registry name is an error.
func parseBackoffMsg(b []byte) (backoffMsg, error) {
	if len(b) < 7 || len(b) > maxBackoffMsg {
		return backoffMsg{}, fmt.Errorf("message of %d bytes", len(b))
	}
	if b[0] != msgBackoff {
		return backoffMsg{}, fmt.Errorf("unknown message kind %d", b[0])
	}
	left := time.Duration(binary.BigEndian.Uint32(b[1:])) * time.Millisecond
	n := int(b[5])
	if 6+n >= len(b) {
		return backoffMsg{}, errors.New("message ends inside the member name")
	}
	m := backoffMsg{origin: string(b[6 : 6+n]), registry: string(b[6+n:]), left: left}
	if !validRegistry(m.registry) {
		return backoffMsg{}, fmt.Errorf("bad registry %q", m.registry)
	}
	if m.left <= 0 {
		return backoffMsg{}, errors.New("back-off of no time")
	}
	// Whatever a member says, no longer than the resolver's cap.
	m.left = min(m.left, resolver.MaxRetryAfter)
	return m, nil
}

// validRegistry checks a registry host[:port] against the distribution
// grammar.
func validRegistry(registry string) bool {
	return len(registry) <= 255 && validSource(registry, "x")
}

// backoffGossip spreads back-offs over the gossip and remembers until when
// each registry is backed off, to pass on only what is news.
type backoffGossip struct {
	queue *memberlist.TransmitLimitedQueue
	// heard is called with each back-off that is news to this node.
	heard func(registry string, left time.Duration, origin string)

	mu    sync.Mutex
	until map[string]time.Time
}

// news records m and says whether it moves the registry's back-off later.
func (g *backoffGossip) news(m backoffMsg, now time.Time) bool {
	until := now.Add(m.left)
	g.mu.Lock()
	defer g.mu.Unlock()
	for reg, u := range g.until {
		if !now.Before(u) || len(g.until) > backoffStateKeep {
			delete(g.until, reg)
		}
	}
	// A second's slack: the same back-off heard twice, once a little
	// later through a longer path, is not news.
	if u, ok := g.until[m.registry]; ok && !until.After(u.Add(time.Second)) {
		return false
	}
	g.until[m.registry] = until
	return true
}

func (g *backoffGossip) send(m backoffMsg) {
	g.queue.QueueBroadcast(backoffBroadcast{registry: m.registry, msg: m.encode()})
}

// receive handles a message from the gossip. It runs on memberlist's
// goroutine, so it does not block.
func (g *backoffGossip) receive(b []byte, now time.Time) error {
	m, err := parseBackoffMsg(b)
	if err != nil {
		return err
	}
	if !g.news(m, now) {
		return nil
	}
	g.send(m)
	if g.heard != nil {
		g.heard(m.registry, m.left, m.origin)
	}
	return nil
}

// backoffBroadcast is one queued message; a newer one for the same
// registry replaces it.
type backoffBroadcast struct {
	registry string
	msg      []byte
}

func (b backoffBroadcast) Invalidates(other memberlist.Broadcast) bool {
	o, ok := other.(backoffBroadcast)
	return ok && o.registry == b.registry
}
func (b backoffBroadcast) Message() []byte { return b.msg }
func (b backoffBroadcast) Finished()       {}

// ShareBackoff tells every member that registry asked to slow down and is
// to be left alone for left from now. Safe for concurrent use.
func (n *Node) ShareBackoff(registry string, left time.Duration) {
	if !validRegistry(registry) || left <= 0 {
		return
	}
	m := backoffMsg{origin: n.cfg.NodeName, registry: registry, left: min(left, resolver.MaxRetryAfter)}
	if len(m.origin) > 255 {
		m.origin = m.origin[:255]
	}
	if n.backoffs.news(m, time.Now()) {
		n.backoffs.send(m)
		n.tellMembers(m.encode())
	}
}

// tellMembers sends msg, a back-off this node heard from the registry
// itself, to every other member over memberlist's TCP path too, a few at
// a time in the background. The gossip carries it on a few UDP messages;
// on a loaded host a member can miss them all, and would then ask the
// registry again itself, which the back-off is there to spare. A back-off
// starts at most once per registry and Retry-After at each node, so the
// sends are few. A member that does not take the message within
// GossipTCPTimeout is skipped; it hears the gossip, or the registry.
func (n *Node) tellMembers(msg []byte) {
	if n.ml == nil || !n.enterHandler() {
		return
	}
	members := n.ml.Members()
	self := n.ml.LocalNode().Name
	go func() {
		defer n.handlers.Done()
		var wg sync.WaitGroup
		slots := make(chan struct{}, backoffSends)
		for _, m := range members {
			if m.Name == self || n.life.Err() != nil {
				continue
			}
			slots <- struct{}{}
			wg.Go(func() {
				defer func() { <-slots }()
				if err := n.ml.SendReliable(m, msg); err != nil {
					n.log.Debug("back-off not sent to a member directly", "member", m.Name, "err", err)
				}
			})
		}
		wg.Wait()
	}()
}

// backoffSends is how many members tellMembers sends to at once.
const backoffSends = 8

// ShareBackoff implements resolver.BackoffSharer.
func (r *Router) ShareBackoff(registry string, left time.Duration) {
	r.n.ShareBackoff(registry, left)
}

var _ resolver.BackoffSharer = (*Router)(nil)

// gossipDelegate hands memberlist this node's metadata, carries the
// back-off, pin and silent-peer messages, and exchanges the pin table.
type gossipDelegate struct {
	meta []byte
	n    *Node
}

func (d gossipDelegate) NodeMeta(limit int) []byte {
	if len(d.meta) > limit {
		return nil
	}
	return d.meta
}

func (d gossipDelegate) NotifyMsg(b []byte) {
	var err error
	switch {
	case len(b) > 0 && b[0] == msgPin:
		err = d.n.receivePin(b)
	case len(b) > 0 && b[0] == msgSilent:
		err = d.n.receiveSilent(b)
	default:
		err = d.n.backoffs.receive(b, time.Now())
	}
	if err != nil {
		d.n.metrics.badGossip.Inc()
		d.n.log.Debug("gossip message refused", "err", err)
	}
}

func (d gossipDelegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.n.backoffs.queue.GetBroadcasts(overhead, limit)
}

// LocalState is the pin table, sent in every push-pull exchange.
func (d gossipDelegate) LocalState(join bool) []byte { return d.n.pins.encode() }

// MergeRemoteState merges a member's pin table into this node's.
func (d gossipDelegate) MergeRemoteState(buf []byte, join bool) {
	if len(buf) == 0 {
		return
	}
	ps, err := decodePins(buf)
	if err != nil {
		d.n.metrics.badGossip.Inc()
		d.n.log.Debug("pin table from a member refused", "err", err)
		return
	}
	d.n.learnPins(ps)
}
