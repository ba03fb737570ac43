package p2p

import (
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
)

// AddAddrs tells n's libp2p host where p is, as if n had learned it.
func AddAddrs(n *Node, ai peer.AddrInfo) {
	n.host.Peerstore().AddAddrs(ai.ID, ai.Addrs, time.Hour)
}

// WriteRequest writes a well-formed transfer request.
func WriteRequest(w io.Writer, d digest.Digest, off int64) error {
	return writeRequest(w, request{dgst: d, off: off})
}

// ReadHeader reads a transfer response header.
func ReadHeader(r io.Reader) (status string, size int64, msg string, err error) {
	h, err := readHeader(r)
	return h.status.String(), h.size, h.msg, err
}

// ReadRangeHeader reads a ProtocolID response header.
func ReadRangeHeader(r io.Reader) (status string, size, have int64, msg string, err error) {
	h, err := readRangeHeader(r)
	return h.status.String(), h.size, h.have, h.msg, err
}

// Host is n's libp2p host, for benchmarks against a bare stream.
func Host(n *Node) host.Host { return n.host }

// UseNoise makes the node cfg configures secure its libp2p connections
// with Noise instead of TLS, for benchmarks that compare the two.
func UseNoise(cfg *Config) { cfg.noise = true }

// Burst is the burst of a bandwidth cap of bytesPerSec: the most a capped
// transfer moves ahead of the rate.
func Burst(bytesPerSec int64) int { return newBandwidth(bytesPerSec, realClock{}).burst }

// ResourceManager exposes the node's libp2p resource manager for tests.
var ResourceManager = resourceManager

// InRoutingTable says whether p is in n's DHT routing table.
func InRoutingTable(n *Node, p peer.ID) bool { return n.dht.RoutingTable().Find(p) != "" }

// AddToRoutingTable puts p in n's DHT routing table, as a peer that
// answered n's DHT request would be.
func AddToRoutingTable(n *Node, p peer.ID) { _, _ = n.dht.RoutingTable().TryAddPeer(p, true, false) }

// SawRoundTrip records a round trip of d from n to p, as a ping or a
// request's answer would.
func SawRoundTrip(n *Node, p peer.ID, d time.Duration) { n.stats.peer(p).roundTrip(d) }

// HearSilent does what n does when member origin says over the gossip
// that it found p silent, and returns when n has checked p.
func HearSilent(n *Node, origin string, p peer.ID) { n.checkSilent(p, origin) }

// HandleTag is n's handler of tag questions.
func HandleTag(n *Node) network.StreamHandler { return n.handleTag }
