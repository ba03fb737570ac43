package p2p

import (
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// gater keeps libp2p connections to members. In strict mode (a keyed
// cluster with ProtectGater) it admits only peer IDs that live members
// announced through the encrypted gossip, in both directions; otherwise it
// only stops dials to peers that memberlist reports gone, so that a lookup
// does not wait on a dead node.
type gater struct {
	m      *members
	strict bool
}

func (g *gater) InterceptPeerDial(p peer.ID) bool {
	if g.strict {
		return g.m.live(p)
	}
	return !g.m.departed(p)
}

func (g *gater) InterceptAddrDial(peer.ID, ma.Multiaddr) bool { return true }

func (g *gater) InterceptAccept(network.ConnMultiaddrs) bool { return true }

func (g *gater) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return !g.strict || g.m.live(p)
}

func (g *gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }
