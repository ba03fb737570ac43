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
// each (Beyond), and of that, what it sent past the copies a harm excuses
// (Over). A harmed node that was fetching a blob from the registry when
// the harm struck leaves what it had not passed on to be fetched again,
// once: each such node excuses one more copy of that blob, and so does a
// harmed node that began the blob's first GET, whenever it did. Over is
// what no harm excuses, and the excess is at least that.
type copies struct {
	Beyond, Over int64
}

// countCopies sums gets into copies; sizes are the image's blobs,
// harmedAt the nodes a scenario harmed and when (the zero time for one
// harmed after its pull returned). Blobs outside sizes are left out.
func countCopies(gets []blobGet, sizes map[digest.Digest]int64, harmedAt map[int]time.Time) copies {
	sent := map[digest.Digest]int64{}
	first := map[digest.Digest]blobGet{}
	before := map[digest.Digest]map[int]bool{} // harmed nodes that began a GET before their harm
	for _, g := range gets {
		if _, ok := sizes[g.digest]; !ok {
			continue
		}
		sent[g.digest] += g.bytes
		if f, ok := first[g.digest]; !ok || g.start.Before(f.start) {
			first[g.digest] = g
		}
		if at, ok := harmedAt[g.node]; ok && g.start.Before(at) {
			if before[g.digest] == nil {
				before[g.digest] = map[int]bool{}
			}
			before[g.digest][g.node] = true
		}
	}
	var c copies
	for d, n := range sent {
		size := sizes[d]
		extra := max(0, n-size)
		excused := int64(len(before[d]))
		if _, ok := harmedAt[first[d].node]; ok {
			excused = max(excused, 1)
		}
		c.Beyond += extra
		c.Over += max(0, extra-excused*size)
	}
	return c
}

// note says what the registry sent past one copy of each blob, × S.
func (c copies) note(S float64) string {
	return fmt.Sprintf("past one copy of each blob the registry's log wrote %.2f × S, %.2f × S of it past one more copy of a blob for each harmed node that was fetching it when harmed, or that began its first GET (what no harm excuses)", float64(c.Beyond)/S, float64(c.Over)/S)
}
