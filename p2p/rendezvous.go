package p2p

import (
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/p2p/swarm"
)

// Rendezvous orders peers by highest random weight for a digest; the
// first is the digest's designated fetcher (see swarm.Rendezvous).
func Rendezvous(dgst digest.Digest, peers []peer.ID) []peer.ID {
	return swarm.Rendezvous(dgst, peers)
}

// Spread orders peers for dgst so that an image's blobs go to distinct
// members first, and again when their fetchers fail (see swarm.Spread).
func Spread(dgst digest.Digest, group []digest.Digest, peers []peer.ID) []peer.ID {
	return swarm.Spread(dgst, group, peers)
}

// Designated orders this node and the live members by Spread for dgst
// within group (nil: by Rendezvous), leaving out the peers this node avoids
// for having sent bad bytes or gone silent (see Silent).
//
// The peers that departed lately are ranked too, then left out, as the
// avoided are: Spread gives each blob of an image its first peer in turn,
// so dropping a member from the ranking would move the first fetch of other
// blobs than its own. The nodes that learn of the departure at different
// moments then disagree on who fetches what: each may wait on the other
// (see resolver.Designator), or both fetch a blob from the registry. Kept
// in the ranking, a departed member hands on only the blobs it came first
// for, each to the next peer in its order, as its failure does for the
// nodes that still count it as live.
func (n *Node) Designated(dgst digest.Digest, group []digest.Digest) []peer.ID {
	ids := []peer.ID{n.id}
	use := map[peer.ID]bool{n.id: true}
	now := time.Now()
	for _, ai := range n.members.livePeers() {
		ids = append(ids, ai.ID)
		use[ai.ID] = !n.stats.avoided(ai.ID, now)
	}
	ids = append(ids, n.members.goneRecently()...)
	return swarm.Designated(dgst, group, ids, use)
}
