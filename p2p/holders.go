package p2p

import (
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/p2p/swarm"
)

// ZoneLabel is the node label (--node-labels zone=...) whose values the
// holders of a pinned blob are spread over.
const ZoneLabel = "zone"

// Candidate is a live member, or this node, that may hold pinned blobs.
type Candidate struct {
	ID   peer.ID
	Name string
	Zone string // "" when the member has no zone label
	Self bool
}

// Holders is the rule for which members keep a pinned blob, spread over
// the candidates' zones (see swarm.Holders). A candidate listed twice
// counts once, as first listed.
func Holders(dgst digest.Digest, cands []Candidate, k int) []Candidate {
	byID := make(map[peer.ID]Candidate, len(cands))
	ids := make([]peer.ID, 0, len(cands))
	for _, c := range cands {
		if _, dup := byID[c.ID]; !dup {
			byID[c.ID] = c
			ids = append(ids, c.ID)
		}
	}
	held := swarm.Holders(dgst, ids, func(id peer.ID) string { return byID[id].Zone }, k)
	out := make([]Candidate, 0, len(held))
	for _, id := range held {
		out = append(out, byID[id])
	}
	return out
}

// PinCandidates lists this node and the live members with usable
// metadata, each with its zone label: the members Holders chooses from.
func (n *Node) PinCandidates() []Candidate {
	out := []Candidate{{ID: n.id, Name: n.cfg.NodeName, Zone: n.cfg.Labels[ZoneLabel], Self: true}}
	seen := map[peer.ID]bool{n.id: true}
	for _, m := range n.members.snapshot() {
		if !m.alive || m.id == "" || seen[m.id] {
			continue
		}
		seen[m.id] = true
		out = append(out, Candidate{ID: m.id, Name: m.name, Zone: metaLabels(m.meta)[ZoneLabel]})
	}
	return out
}
