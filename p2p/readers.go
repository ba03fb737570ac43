package p2p

import (
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/p2p/swarm"
)

// maxReaders bounds the blobs firstReaders remembers; past it, the
// entries older than swarm.LeftFor are dropped.
const maxReaders = 4096

// firstReaders remembers, by blob, the first peer this node streamed a
// blob it holds whole to from the blob's first byte, and when it last
// streamed a blob still arriving: what swarm.PointAtReader asks.
type firstReaders struct {
	mu    sync.Mutex
	first map[digest.Digest]firstReader
	led   map[digest.Digest]time.Time
}

type firstReader struct {
	peer peer.ID
	at   time.Time
}

func newFirstReaders() *firstReaders {
	return &firstReaders{first: map[digest.Digest]firstReader{}, led: map[digest.Digest]time.Time{}}
}

// pointAt says which reader the peer asker, asking for dgst from its first
// byte as the node to fetch it for the cluster, is pointed at
// (swarm.PointAtReader), or false when it is streamed the blob.
func (f *firstReaders) pointAt(dgst digest.Digest, asker peer.ID, now time.Time) (peer.ID, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.first[dgst]
	h := swarm.Holding{Since: r.at, Asker: asker.String(), Led: now.Sub(f.led[dgst]) < swarm.LeftFor}
	if r.peer != "" {
		h.Reader = r.peer.String()
	}
	if !swarm.PointAtReader(h, now) {
		return "", false
	}
	return r.peer, true
}

// streaming notes that dgst is streamed to p from its first byte at now:
// p becomes its first reader as swarm.NewReader says.
func (f *firstReaders) streaming(dgst digest.Digest, p peer.ID, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r, ok := f.first[dgst]; ok && !swarm.NewReader(swarm.Holding{Reader: r.peer.String(), Since: r.at}, now) {
		return
	}
	f.prune(now)
	f.first[dgst] = firstReader{peer: p, at: now}
}

// arriving notes that dgst is streamed to a peer while it still arrives.
func (f *firstReaders) arriving(dgst digest.Digest, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.prune(now)
	f.led[dgst] = now
}

// prune drops the expired entries once a table is full; the caller holds
// mu.
func (f *firstReaders) prune(now time.Time) {
	if len(f.first) >= maxReaders {
		for d, r := range f.first {
			if now.Sub(r.at) >= swarm.LeftFor {
				delete(f.first, d)
			}
		}
	}
	if len(f.led) >= maxReaders {
		for d, at := range f.led {
			if now.Sub(at) >= swarm.LeftFor {
				delete(f.led, d)
			}
		}
	}
}
