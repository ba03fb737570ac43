package p2p

import (
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// MemberState is a member's state as this node last heard it.
type MemberState string

const (
	MemberAlive MemberState = "alive"
	// MemberGone: the member left, or memberlist declared it dead. Gone
	// members stay listed for ten minutes.
	MemberGone MemberState = "gone"
)

// Status is a snapshot of the node, for `shoal status` and logs.
type Status struct {
	ID       peer.ID
	NodeName string
	// Labels are this node's labels (Config.Labels).
	Labels     map[string]string `json:",omitempty"`
	GossipAddr string            // host:port memberlist listens on, as advertised
	Addrs      []ma.Multiaddr    // libp2p addresses
	// Encrypted is false for an open mesh (no cluster key).
	Encrypted  bool
	Protection Protection // empty when not encrypted
	// LastJoinError is the last failure to join the seeds, empty once joined.
	LastJoinError string

	Members       []MemberStatus // other members, by name
	LiveMembers   int            // distinct peers of live members with usable metadata, this node included
	BlobsProvided int
	ActiveUploads int
	BytesServed   int64
	BytesFetched  int64
	Peers         []PeerStatus // by peer ID
}

// MemberStatus describes another member.
type MemberStatus struct {
	Name  string
	Addr  string // gossip host:port
	State MemberState
	Since time.Time
	ID    peer.ID // empty when its metadata was unusable
	// MetaError says why the member's metadata was ignored.
	MetaError string
	Connected bool // a libp2p connection is open to it
	// Failed: a gone member that memberlist declared dead (or cut off),
	// rather than one that left.
	Failed bool `json:",omitempty"`
	// Version is the shoal version the member announces, when it does.
	Version string `json:",omitempty"`
	// Labels are the node labels the member announces (Config.Labels).
	Labels map[string]string `json:",omitempty"`
}

// PeerStatus is what this node measured of a peer.
type PeerStatus struct {
	ID           peer.ID
	BytesServed  int64 // sent to the peer
	BytesFetched int64 // received from the peer
	Inflight     int   // fetches from the peer open now
	Latency      time.Duration
	AvoidedUntil time.Time
	AvoidReason  string
	// Silent: its stream went silent mid-blob and it has not answered a
	// ping since; it is left out until it does (see Node.Silent).
	Silent bool
}

// Status returns a snapshot of the node.
func (n *Node) Status() Status {
	s := Status{
		ID:            n.id,
		NodeName:      n.cfg.NodeName,
		Labels:        n.cfg.Labels,
		GossipAddr:    n.gossipAddr,
		Addrs:         n.host.Addrs(),
		Encrypted:     n.protection != "",
		Protection:    n.protection,
		BlobsProvided: n.adv.count(),
		ActiveUploads: n.activeUploads(),
		BytesServed:   n.stats.served.Load(),
		BytesFetched:  n.stats.fetched.Load(),
	}
	n.joinMu.Lock()
	s.LastJoinError = n.lastJoinErr
	n.joinMu.Unlock()

	s.LiveMembers = 1 + n.members.livePeerCount()
	for _, m := range n.members.snapshot() {
		ms := MemberStatus{Name: m.name, Addr: m.addr, State: MemberGone, Since: m.since, ID: m.id}
		if m.alive {
			ms.State = MemberAlive
		}
		ms.Failed = !m.alive && m.failed
		ms.Version = metaShoalVersion(m.meta)
		ms.Labels = metaLabels(m.meta)
		if m.metaErr != nil {
			ms.MetaError = m.metaErr.Error()
		}
		if m.id != "" {
			ms.Connected = n.host.Network().Connectedness(m.id) == network.Connected
		}
		s.Members = append(s.Members, ms)
	}

	n.stats.mu.Lock()
	for p, st := range n.stats.peers {
		s.Peers = append(s.Peers, PeerStatus{
			ID:           p,
			BytesServed:  st.served.Load(),
			BytesFetched: st.fetched.Load(),
			Inflight:     st.inflight,
			AvoidedUntil: st.avoidUntil,
			AvoidReason:  st.avoidWhy,
			Silent:       st.silent,
		})
	}
	n.stats.mu.Unlock()
	for i := range s.Peers {
		s.Peers[i].Latency = n.host.Peerstore().LatencyEWMA(s.Peers[i].ID)
	}
	slices.SortFunc(s.Peers, func(a, b PeerStatus) int { return cmpString(string(a.ID), string(b.ID)) })
	return s
}
