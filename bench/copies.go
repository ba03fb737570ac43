package bench

import (
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"
)

// blobGet is one GET of a blob in the registry's log: the node that asked
// (-1: not a node), when the request began, and the bytes written.
type blobGet struct {
	digest digest.Digest
	node   int
	start  time.Time
	bytes  int64
}

// copies is what the registry sent of an image's blobs past one copy of
// each (Beyond), and of that, what it sent past a second copy of a blob a
// harmed node began to fetch first, or past one copy of any other blob
// (Over). A harmed node that fetched a blob for the cluster leaves what it
// had not passed on to be fetched again, once: Over is what no harm
// excuses, and the excess is at least that.
type copies struct {
	Beyond, Over int64
}

// countCopies sums gets into copies; sizes are the image's blobs, harmed
// the nodes a scenario harmed. Blobs outside sizes are left out.
func countCopies(gets []blobGet, sizes map[digest.Digest]int64, harmed map[int]bool) copies {
	sent := map[digest.Digest]int64{}
	first := map[digest.Digest]blobGet{}
	for _, g := range gets {
		if _, ok := sizes[g.digest]; !ok {
			continue
		}
		sent[g.digest] += g.bytes
		if f, ok := first[g.digest]; !ok || g.start.Before(f.start) {
			first[g.digest] = g
		}
	}
	var c copies
	for d, n := range sent {
		size := sizes[d]
		extra := max(0, n-size)
		allowed := int64(0)
		if harmed[first[d].node] {
			allowed = size
		}
		c.Beyond += extra
		c.Over += max(0, extra-allowed)
	}
	return c
}

// note says what the registry sent past one copy of each blob, × S.
func (c copies) note(S float64) string {
	return fmt.Sprintf("past one copy of each blob the registry's log wrote %.2f × S, %.2f × S of it past a second copy of the blobs a harmed node began to fetch first and past one copy of the others (what no harm excuses)", float64(c.Beyond)/S, float64(c.Over)/S)
}
