package model

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/p2p/swarm"
)

// registry is the source index of the registry.
const registry = -1

// stream is one node's download of one blob.
type stream struct {
	node, blob int
	// key is the stream's place among the streams (sim.key), srcKey
	// that of its source's stream of the blob, while it reads from a
	// node.
	key, srcKey int
	sw          *swarm.Download
	// src is the source the stream reads from (a node, or registry);
	// none while it waits or is done.
	src     int
	reading bool
	// wait: the source sends bytes it does not hold yet as they arrive;
	// limit is where the stream ends (the size, or what the source held).
	wait    bool
	limit   float64
	startAt float64 // the first byte arrives then (a round trip)
	done    bool
	rate    float64
	// endAt is when the stream's last byte of the latest step arrived.
	endAt float64
	// listed: the node is among the blob's holders (sim.known).
	listed bool
	// inStep and movedIn: the step (sim.stepNo) in which the stream last
	// flowed, and was last moved on (see advance).
	inStep, movedIn int
	// forPeer: the download was started for a peer that asked this node,
	// designated, to fetch the blob for the cluster; it asks no
	// designated peer itself (swarm.Sources).
	forPeer bool
	// leads: the stream reads the registry while its node leads for the
	// blob (swarm.LeadsNow); its readers may wait on it.
	leads bool
}

const none = -2

// sim is one model run in virtual time (seconds from the start).
type sim struct {
	cfg   Config
	rng   *rand.Rand
	now   float64
	epoch time.Time
	ids   []string
	index map[string]int // by id
	// prefix is every id's, before the node's index.
	prefix string
	// picked is holders' working memory.
	picked []int
	blobs  []digest.Digest
	// order is, by blob, the designated ranking of the members in use,
	// and rank each node's place in it; computed again when a member
	// leaves (see members).
	order [][]string
	rank  [][]int
	// known lists, by blob, the nodes that became holders of it, in the
	// order they did.
	known   [][]int
	size    float64
	held    [][]float64 // by node, by blob: bytes from the start
	streams [][]*stream // by node, by blob
	// waiting and reading are the streams, by key, that wait for their
	// next round and that read from a source: the walks over the streams
	// go over these, in the streams' order, node after node.
	waiting, reading bitset
	// retry is, by key, when a waiting stream's next round is due.
	retry []float64
	// heldAll and streamAll are every node's row of held and streams
	// end to end, and slab the streams themselves, by key (see
	// newStream), so that a walk in the streams' order reads memory in
	// order.
	heldAll   []float64
	streamAll []*stream
	slab      []stream
	slabUsed  []bool
	uploads   []swarm.BlobUploads
	open      []int // upload streams by node
	egress    float64
	sent      []float64 // by node: bytes uploaded to peers
	finish    []float64
	// lastByte is, by node, when it last received bytes of any blob.
	lastByte []float64
	// stepNo counts advance's steps.
	stepNo int
	// stale: the members changed since the rankings were computed.
	stale bool
	// capacity, linkBuf, linkOf, capSrc, limit and water are allocate's
	// working memory.
	capacity []float64
	linkBuf  []int
	linkOf   [][]int
	capSrc   []*stream
	limit    []float64
	water    water
	// flows is flowing's answer.
	flows  []*stream
	left   int // streams not done
	failed int
	// pulls are the nodes' pulls as containerd runs them, by node (nil:
	// not pulling); timers the scenario's events; members who died and
	// who left; coord what the designated nodes left to askers.
	pulls []*nodePull
	timers
	members
	coord
}

func newSim(cfg Config) *sim {
	s := &sim{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, 0x5eed)), epoch: time.Unix(0, 0), size: float64(cfg.LayerSize), index: make(map[string]int, cfg.Nodes)}
	s.prefix = fmt.Sprintf("node-%d-", cfg.Seed)
	for i := range cfg.Nodes {
		s.ids = append(s.ids, s.prefix+strconv.Itoa(i))
		s.index[s.ids[i]] = i
	}
	for l := range cfg.Layers {
		s.blobs = append(s.blobs, digest.FromString(fmt.Sprintf("layer-%d-%d", cfg.Seed, l)))
	}
	s.members = newMembers(cfg.Nodes)
	s.rankings()
	s.known = make([][]int, cfg.Layers)
	s.held = make([][]float64, cfg.Nodes)
	s.streams = make([][]*stream, cfg.Nodes)
	s.waiting, s.reading = newBitset(cfg.Nodes*cfg.Layers), newBitset(cfg.Nodes*cfg.Layers)
	s.retry = make([]float64, cfg.Nodes*cfg.Layers)
	s.heldAll = make([]float64, cfg.Nodes*cfg.Layers)
	s.streamAll = make([]*stream, cfg.Nodes*cfg.Layers)
	s.slab, s.slabUsed = make([]stream, cfg.Nodes*cfg.Layers), make([]bool, cfg.Nodes*cfg.Layers)
	s.uploads = make([]swarm.BlobUploads, cfg.Nodes)
	s.open = make([]int, cfg.Nodes)
	s.finish = make([]float64, cfg.Nodes)
	s.lastByte = make([]float64, cfg.Nodes)
	s.sent = make([]float64, cfg.Nodes)
	s.pulls = make([]*nodePull, cfg.Nodes)
	s.coord = coord{given: map[[2]int]leftTo{}, first: map[[2]int]leftTo{}, led: map[[2]int]float64{}}
	return s
}

// at is virtual time t as the rules take it.
func (s *sim) at(t float64) time.Time {
	return s.epoch.Add(time.Duration(t * float64(time.Second)))
}

// rankings computes every blob's designated ranking: the rule
// (swarm.Designated) depends only on the members in use, so it is
// computed again only when one leaves. A member that left has no place:
// its rank is past the end.
func (s *sim) rankings() {
	use := make(map[string]bool, len(s.ids))
	for i, id := range s.ids {
		use[id] = !s.isGone(i)
	}
	s.order, s.rank = nil, nil
	for _, dg := range s.blobs {
		order := swarm.Designated(dg, s.blobs, s.ids, use)
		rank := make([]int, len(s.ids))
		for i := range rank {
			rank[i] = len(order)
		}
		for k, id := range order {
			rank[s.index[id]] = k
		}
		s.order, s.rank = append(s.order, order), append(s.rank, rank)
	}
}

// key is the place of node i's stream of blob b among the streams.
func (s *sim) key(i, b int) int { return i*len(s.blobs) + b }

// newRow gives node i new rows of held bytes and streams, none yet.
func (s *sim) newRow(i int) {
	lo, hi := s.key(i, 0), s.key(i+1, 0)
	s.held[i], s.streams[i] = s.heldAll[lo:hi:hi], s.streamAll[lo:hi:hi]
	clear(s.held[i])
	clear(s.streams[i])
	s.waiting.clearRange(lo, hi)
	s.reading.clearRange(lo, hi)
}

// newStream is t, a new stream, in its place in the slab; a second one
// for the same node and blob (a node that began again) is allocated
// apart, so that no stream in use is overwritten.
func (s *sim) newStream(t stream) *stream {
	k := s.key(t.node, t.blob)
	t.key = k
	if s.slabUsed[k] {
		return &t
	}
	s.slabUsed[k] = true
	s.slab[k] = t
	return &s.slab[k]
}

// hold makes node i hold the whole image, with no pull.
func (s *sim) hold(i int) {
	s.newRow(i)
	for b := range s.blobs {
		s.held[i][b] = s.size
		t := s.newStream(stream{node: i, blob: b, sw: swarm.NewDownload(s.cfg.Limits, s.at(s.now)), src: none, done: true})
		s.streams[i][b] = t
		s.list(t)
	}
}

// list makes t's node one of its blob's holders, once.
func (s *sim) list(t *stream) {
	if !t.listed {
		t.listed = true
		s.known[t.blob] = append(s.known[t.blob], t.node)
	}
}

// holds says whether node j answers a look-up for blob b: it holds some
// of it or reads it from a source. A member that died is listed until the
// others know it left; one that joined, once they know it did.
func (s *sim) holds(j, b int) bool {
	switch {
	case s.dead[j]:
		return !s.isGone(j)
	case s.isGone(j):
		return false
	}
	t := s.streams[j][b]
	return s.held[j][b] > 0 || t.done || (t.reading && s.now >= t.startAt)
}

// sampleFrom is how many holders a look-up shuffles whole; among more it
// draws at random, so that a look-up costs the same in a cluster of any
// size.
const sampleFrom = 64

// holders are the peers a look-up for blob b returns to node i: those
// that hold some of it or read it from a source, in an order the seed
// sets, at most Config.Holders.
func (s *sim) holders(i, b int) []string {
	known := s.known[b]
	// pick gathers the nodes by index, in s.picked's memory; the names
	// are looked up at the end.
	pick := s.picked[:0]
	if len(known) > sampleFrom {
		for range 4 * s.cfg.Holders {
			if len(pick) == s.cfg.Holders {
				break
			}
			j := known[s.rng.IntN(len(known))]
			if j != i && s.holds(j, b) && !slices.Contains(pick, j) {
				pick = append(pick, j)
			}
		}
	} else {
		for _, j := range known {
			if j != i && s.holds(j, b) {
				pick = append(pick, j)
			}
		}
		s.rng.Shuffle(len(pick), func(a, c int) { pick[a], pick[c] = pick[c], pick[a] })
		pick = pick[:min(len(pick), s.cfg.Holders)]
	}
	s.picked = pick
	out := make([]string, len(pick))
	for k, j := range pick {
		out[k] = s.ids[j]
	}
	return out
}

// node is the index of the node named id. The names are the run's
// prefix and the index (newSim), read here, rather than hashed, as a
// round does for every source it asks.
func (s *sim) node(id string) int {
	if rest, ok := strings.CutPrefix(id, s.prefix); ok {
		if j, err := strconv.Atoi(rest); err == nil && j >= 0 && j < len(s.ids) && s.ids[j] == id {
			return j
		}
	}
	return s.index[id]
}
