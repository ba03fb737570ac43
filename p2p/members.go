package p2p

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// departedRetention is how long a member that left stays listed in Status.
const departedRetention = 10 * time.Minute

var errClaimsOurID = errors.New("metadata claims this node's peer ID")

// member is what this node knows of another member.
type member struct {
	name    string
	addr    string // gossip host:port
	meta    []byte
	id      peer.ID // empty when the metadata is unusable
	addrs   []ma.Multiaddr
	metaErr error
	alive   bool
	// failed says a departed member died (or was cut off) rather than
	// left: it may be on the other side of a partition, still running.
	failed bool
	since  time.Time // of the last state change
}

// members is the member table, fed by memberlist's event delegate. It is the
// one place that says which peer IDs belong to live members.
//
// Several members may claim one peer ID: a node restarted under a new name
// with the same data directory is listed under both names until the old
// one is declared dead. A peer ID stays live while any live member claims it.
type members struct {
	self peer.ID
	log  *slog.Logger

	mu     sync.RWMutex
	byName map[string]*member
	byPeer map[peer.ID]map[string]*member // live members with usable metadata
	gone   []peer.ID                      // no longer claimed since the connector last looked
	goneAt map[peer.ID]time.Time
	change chan struct{} // poked on every change, capacity 1
	// also is poked with change, when set (the pin table's holders
	// depend on the members).
	also chan struct{}
}

func newMembers(self peer.ID, log *slog.Logger) *members {
	return &members{
		self:   self,
		log:    log,
		byName: make(map[string]*member),
		byPeer: make(map[peer.ID]map[string]*member),
		goneAt: make(map[peer.ID]time.Time),
		change: make(chan struct{}, 1),
	}
}

// eventDelegate adapts members to memberlist.EventDelegate. memberlist
// calls it one event at a time with its node lock held: it must neither
// block nor call back into memberlist.
type eventDelegate struct {
	m        *members
	selfName string
}

func (d eventDelegate) NotifyJoin(n *memberlist.Node) {
	if n.Name != d.selfName {
		d.m.upsert(n)
	}
}

func (d eventDelegate) NotifyUpdate(n *memberlist.Node) {
	if n.Name != d.selfName {
		d.m.upsert(n)
	}
}

func (d eventDelegate) NotifyLeave(n *memberlist.Node) {
	if n.Name != d.selfName {
		d.m.depart(n.Name, n.State != memberlist.StateLeft)
	}
}

func (m *members) upsert(n *memberlist.Node) {
	addr := net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.byName[n.Name]
	if old != nil && old.alive && bytes.Equal(old.meta, n.Meta) && old.addr == addr {
		return
	}
	mem := &member{name: n.Name, addr: addr, meta: bytes.Clone(n.Meta), alive: true, since: time.Now()}
	mem.id, mem.addrs, mem.metaErr = decodeMeta(n.Meta)
	if mem.metaErr == nil && mem.id == m.self {
		mem.id, mem.addrs, mem.metaErr = "", nil, errClaimsOurID
	}
	if mem.metaErr != nil {
		m.log.Warn("ignoring member with unusable metadata", "member", n.Name, "addr", addr, "error", mem.metaErr)
	}
	if old != nil && old.alive {
		m.unclaimLocked(old)
	}
	if mem.id != "" {
		claims := m.byPeer[mem.id]
		if claims == nil {
			claims = make(map[string]*member)
			m.byPeer[mem.id] = claims
		}
		for other := range claims {
			m.log.Warn("two members claim one peer ID", "peer", mem.id, "member", mem.name, "other", other)
		}
		claims[mem.name] = mem
		delete(m.goneAt, mem.id)
	}
	m.byName[n.Name] = mem
	m.poke()
}

func (m *members) depart(name string, failed bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mem := m.byName[name]
	if mem == nil || !mem.alive {
		return
	}
	gone := *mem
	gone.alive, gone.failed, gone.since = false, failed, time.Now()
	m.byName[name] = &gone
	m.unclaimLocked(mem)
	m.poke()
}

// unclaimLocked withdraws mem's claim on its peer ID; the peer is gone when
// no live member claims it any more.
func (m *members) unclaimLocked(mem *member) {
	if mem.id == "" {
		return
	}
	claims := m.byPeer[mem.id]
	if claims[mem.name] != mem {
		return
	}
	delete(claims, mem.name)
	if len(claims) == 0 {
		delete(m.byPeer, mem.id)
		m.gone = append(m.gone, mem.id)
		m.goneAt[mem.id] = time.Now()
	}
}

func (m *members) poke() {
	select {
	case m.change <- struct{}{}:
	default:
	}
	if m.also != nil {
		select {
		case m.also <- struct{}{}:
		default:
		}
	}
}

// live reports whether p is the peer ID of a live member.
func (m *members) live(p peer.ID) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.byPeer[p]) > 0
}

// departed reports whether p belonged to a member that left or died and
// has not come back.
func (m *members) departed(p peer.ID) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	_, ok := m.goneAt[p]
	return ok
}

// goneRecently lists the peers that departed within departedRetention and
// have not come back.
func (m *members) goneRecently() []peer.ID {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]peer.ID, 0, len(m.goneAt))
	for p := range m.goneAt {
		out = append(out, p)
	}
	return out
}

// livePeers returns the peers of live members, each with the addresses its
// latest claimant announced.
func (m *members) livePeers() []peer.AddrInfo {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]peer.AddrInfo, 0, len(m.byPeer))
	for id, claims := range m.byPeer {
		var latest *member
		for _, mem := range claims {
			if latest == nil || mem.since.After(latest.since) {
				latest = mem
			}
		}
		out = append(out, peer.AddrInfo{ID: id, Addrs: latest.addrs})
	}
	return out
}

// liveAddrs returns the gossip addresses of the live members.
func (m *members) liveAddrs() []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []string
	for _, mem := range m.byName {
		if mem.alive {
			out = append(out, mem.addr)
		}
	}
	return out
}

// addrsOf returns the addresses the latest live claimant of p announced.
func (m *members) addrsOf(p peer.ID) []ma.Multiaddr {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var latest *member
	for _, mem := range m.byPeer[p] {
		if latest == nil || mem.since.After(latest.since) {
			latest = mem
		}
	}
	if latest == nil {
		return nil
	}
	return latest.addrs
}

// livePeerCount is the number of distinct live peers, this node excluded.
func (m *members) livePeerCount() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.byPeer)
}

// takeGone returns the peers that departed since the last call.
func (m *members) takeGone() []peer.ID {
	m.mu.Lock()
	defer m.mu.Unlock()
	g := m.gone
	m.gone = nil
	return g
}

// lost lists the gossip addresses of members that failed (not left) within
// departedRetention: after a partition heals, memberlist gossips to them
// for a short while only, and each side, still having members, is not
// alone; joining them again is what merges the sides.
func (m *members) lost(now time.Time) []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []string
	for _, mem := range m.byName {
		if !mem.alive && mem.failed && now.Sub(mem.since) <= departedRetention {
			out = append(out, mem.addr)
		}
	}
	slices.Sort(out)
	return out
}

// failedAt returns the gossip and libp2p addresses of a member that
// claimed p and failed (not left), when p has no live claimant.
func (m *members) failedAt(p peer.ID) (string, []ma.Multiaddr, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if len(m.byPeer[p]) > 0 {
		return "", nil, false
	}
	for _, mem := range m.byName {
		if mem.id == p && !mem.alive && mem.failed {
			return mem.addr, mem.addrs, true
		}
	}
	return "", nil, false
}

// prune forgets members that departed long ago.
func (m *members) prune(now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, mem := range m.byName {
		if !mem.alive && now.Sub(mem.since) > departedRetention {
			delete(m.byName, name)
		}
	}
	for p, at := range m.goneAt {
		if now.Sub(at) > departedRetention {
			delete(m.goneAt, p)
		}
	}
}

// snapshot lists the members, sorted by name.
func (m *members) snapshot() []member {
	m.mu.RLock()
	out := make([]member, 0, len(m.byName))
	for _, mem := range m.byName {
		out = append(out, *mem)
	}
	m.mu.RUnlock()
	slices.SortFunc(out, func(a, b member) int { return cmpString(a.name, b.name) })
	return out
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
