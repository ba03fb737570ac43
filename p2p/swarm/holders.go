package swarm

import "github.com/opencontainers/go-digest"

// Holders is the rule for which members keep a pinned blob: of the peers
// ranked by Rendezvous over dgst, the first k that are each in a zone none
// before it is in, then, when fewer than k zones have members, the
// best-ranked of the rest. zone names a peer's zone; peers without one
// ("") share one zone. Every member that sees the same peers computes the
// same holders, and when a holder leaves only its blobs move, each to the
// next in its ranking.
func Holders[P ~string](dgst digest.Digest, peers []P, zone func(P) string, k int) []P {
	ranked := Rendezvous(dgst, peers)
	k = max(0, min(k, len(ranked)))
	out := make([]P, 0, k)
	taken := map[P]bool{}
	zones := map[string]bool{}
	for _, p := range ranked {
		if len(out) == k {
			break
		}
		if z := zone(p); !zones[z] {
			zones[z] = true
			taken[p] = true
			out = append(out, p)
		}
	}
	for _, p := range ranked {
		if len(out) == k {
			break
		}
		if !taken[p] {
			out = append(out, p)
		}
	}
	return out
}
