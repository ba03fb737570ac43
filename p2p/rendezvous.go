package p2p

import (
	"bytes"
	"crypto/sha256"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
)

// Rendezvous orders peers by highest random weight for a digest: each
// peer's weight is sha256(digest || peer ID). Every node that knows the
// same members computes the same order, with no coordination, and when a
// member leaves only the digests it came first for move, each to the next
// peer in its order. The first peer is the digest's designated fetcher.
func Rendezvous(dgst digest.Digest, peers []peer.ID) []peer.ID {
	type scored struct {
		id    peer.ID
		score [sha256.Size]byte
	}
	s := make([]scored, 0, len(peers))
	for _, p := range peers {
		h := sha256.New()
		h.Write([]byte(dgst))
		h.Write([]byte{0})
		h.Write([]byte(p))
		var sc scored
		sc.id = p
		copy(sc.score[:], h.Sum(nil))
		s = append(s, sc)
	}
	slices.SortFunc(s, func(a, b scored) int {
		if c := bytes.Compare(b.score[:], a.score[:]); c != 0 {
			return c
		}
		return bytes.Compare([]byte(a.id), []byte(b.id))
	})
	out := make([]peer.ID, 0, len(s))
	for _, sc := range s {
		if len(out) == 0 || out[len(out)-1] != sc.id {
			out = append(out, sc.id)
		}
	}
	return out
}

// Spread orders peers for dgst as Rendezvous does, except that the first
// peer is chosen among the blobs of group (an image's blobs, in the
// manifest's order; dgst among them): each blob in turn gets the best-ranked
// peer that no earlier blob of the group got first, until every peer has one,
// and then again. Rendezvous alone often gives one node two or three layers
// of a four-layer image, and that node's links then carry them all; spread,
// the first copies of an image's layers go to as many nodes as there are
// layers. Every node that knows the same members and the same manifest
// computes the same order. With no group, or dgst not in it, it is
// Rendezvous.
func Spread(dgst digest.Digest, group []digest.Digest, peers []peer.ID) []peer.ID {
	order := Rendezvous(dgst, peers)
	if len(order) < 2 || !slices.Contains(group, dgst) {
		return order
	}
	taken := map[peer.ID]bool{}
	seen := map[digest.Digest]bool{}
	for _, g := range group {
		if seen[g] {
			continue
		}
		seen[g] = true
		if len(taken) == len(order) {
			clear(taken)
		}
		ranked := order
		if g != dgst {
			ranked = Rendezvous(g, peers)
		}
		var first peer.ID
		for _, p := range ranked {
			if !taken[p] {
				first = p
				break
			}
		}
		taken[first] = true
		if g == dgst {
			out := append(make([]peer.ID, 0, len(order)), first)
			for _, p := range order {
				if p != first {
					out = append(out, p)
				}
			}
			return out
		}
	}
	return order
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
	return slices.DeleteFunc(Spread(dgst, group, ids), func(p peer.ID) bool { return !use[p] })
}
