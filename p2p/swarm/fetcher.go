package swarm

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"slices"

	"github.com/opencontainers/go-digest"
)

// Rendezvous orders peers by highest random weight for a digest: each
// peer's weight is sha256(digest || 0 || peer). Every node that knows the
// same members computes the same order, with no coordination, and when a
// member leaves only the digests it came first for move, each to the next
// peer in its order. The first peer is the digest's designated fetcher.
// Duplicate peers are listed once.
func Rendezvous[P ~string](dgst digest.Digest, peers []P) []P {
	type scored struct {
		id    P
		score [sha256.Size]byte
	}
	s := make([]scored, 0, len(peers))
	for _, p := range peers {
		h := sha256.New()
		h.Write([]byte(dgst))
		h.Write([]byte{0})
		h.Write([]byte(p))
		sc := scored{id: p}
		copy(sc.score[:], h.Sum(nil))
		s = append(s, sc)
	}
	slices.SortFunc(s, func(a, b scored) int {
		if c := bytes.Compare(b.score[:], a.score[:]); c != 0 {
			return c
		}
		return bytes.Compare([]byte(a.id), []byte(b.id))
	})
	out := make([]P, 0, len(s))
	for _, sc := range s {
		if len(out) == 0 || out[len(out)-1] != sc.id {
			out = append(out, sc.id)
		}
	}
	return out
}

// Spread orders peers for dgst within group (an image's blobs in the
// order GroupOrder gives; dgst among them) so that the image's blobs are
// fetched from the registry by as many nodes as there are blobs, first and
// again when fetchers fail:
//
//   - first, the blob's fetcher (see firsts): each blob in turn gets the
//     best-ranked peer (Rendezvous) that no earlier blob got first, until
//     every peer has one, and then again. Rendezvous alone often gives one
//     node two or three layers of a four-layer image, and that node's links
//     then carry them all;
//   - then its spare (see spares): a peer that is first for no blob of the
//     group, each blob in turn getting the best-ranked one that no earlier
//     blob got, while any is left;
//   - then the other blobs' first peers around the ring of first peers, in
//     the group's order: the next blob's, the previous blob's, the one
//     after next, and so on (see around). When any two fetchers fail, their
//     blobs pass to two different peers, where Rendezvous order often hands
//     both to one node, whose uplink then carries three layers;
//   - then the rest in Rendezvous order.
//
// Every node that knows the same members and the same manifest computes
// the same order. With no group, or dgst not in it, it is Rendezvous.
func Spread[P ~string](dgst digest.Digest, group []digest.Digest, peers []P) []P {
	order := Rendezvous(dgst, peers)
	if len(order) < 2 || !slices.Contains(group, dgst) {
		return order
	}
	var blobs []digest.Digest
	ranked := map[digest.Digest][]P{}
	for _, g := range group {
		if _, ok := ranked[g]; !ok {
			blobs = append(blobs, g)
			ranked[g] = Rendezvous(g, order)
		}
	}
	first, ring := firsts(blobs, ranked)
	out := make([]P, 0, len(order))
	out = append(out, first[dgst])
	if p, ok := spares(blobs, ranked, ring)[dgst]; ok {
		out = append(out, p)
	}
	for _, p := range append(around(ring, first[dgst]), order...) {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// firsts gives each of blobs in turn the best-ranked peer that no earlier
// blob got first, until every peer has one, and then again; ring lists
// the distinct first peers in the blobs' order.
func firsts[P ~string](blobs []digest.Digest, ranked map[digest.Digest][]P) (first map[digest.Digest]P, ring []P) {
	first = map[digest.Digest]P{}
	taken := map[P]bool{}
	for _, g := range blobs {
		if len(taken) == len(ranked[g]) {
			clear(taken)
		}
		for _, p := range ranked[g] {
			if !taken[p] {
				first[g], taken[p] = p, true
				break
			}
		}
		if !slices.Contains(ring, first[g]) {
			ring = append(ring, first[g])
		}
	}
	return first, ring
}

// spares gives each of blobs in turn the best-ranked peer outside ring
// (first for no blob) that no earlier blob got, while any is left.
func spares[P ~string](blobs []digest.Digest, ranked map[digest.Digest][]P, ring []P) map[digest.Digest]P {
	spare := map[digest.Digest]P{}
	taken := map[P]bool{}
	for _, g := range blobs {
		for _, p := range ranked[g] {
			if !taken[p] && !slices.Contains(ring, p) {
				spare[g], taken[p] = p, true
				break
			}
		}
	}
	return spare
}

// around lists ring from after p outwards: the next, the previous, the
// one after next, the one before the previous, and so on.
func around[P ~string](ring []P, p P) []P {
	i, m := slices.Index(ring, p), len(ring)
	var out []P
	for k := 1; k <= m/2; k++ {
		out = append(out, ring[(i+k)%m], ring[(i-k+m)%m])
	}
	return out
}

// GroupOrder is the rule for the order of an image's blobs that Spread
// takes: the largest first, blobs of one size in the manifest's order
// (size gives a blob's size; 0 when unknown). Spread gives each blob in
// turn the best-ranked peer that no earlier blob got first, so the blobs
// that carry the image's bytes get distinct first peers. In the
// manifest's order the config, a few hundred bytes, comes first and takes
// a node of its own: an image with as many layers as there are nodes then
// has one node fetch two layers from the registry and serve both first
// copies, and another fetch none.
func GroupOrder(blobs []digest.Digest, size func(digest.Digest) int64) []digest.Digest {
	out := slices.Clone(blobs)
	slices.SortStableFunc(out, func(a, b digest.Digest) int {
		return cmp.Compare(size(b), size(a))
	})
	return out
}

// Designated is the designated-fetcher rule: peers (this node among them)
// ordered by Spread for dgst within group (nil: by Rendezvous), keeping
// only those in use. The peers left out (avoided for bad bytes or silence,
// departed lately) are still ranked: Spread gives each blob of an image its
// first peer in turn, so dropping a peer from the ranking would move the
// first fetch of other blobs than its own, and nodes that learn of a
// departure at different moments would disagree on who fetches what.
// Ranked then left out, a peer hands on only the blobs it came first for,
// each to the next peer in its order.
func Designated[P ~string](dgst digest.Digest, group []digest.Digest, peers []P, use map[P]bool) []P {
	return slices.DeleteFunc(Spread(dgst, group, peers), func(p P) bool { return !use[p] })
}

// Above lists the peers ranked before self in order (the result of
// Designated), best first, and says whether self comes first. A node waits
// only on the peers above it (see MayWait). When self is not in order, every
// peer is above it.
func Above[P ~string](order []P, self P) (above []P, first bool) {
	i := slices.Index(order, self)
	if i < 0 {
		return order, false
	}
	return order[:i], i == 0
}
