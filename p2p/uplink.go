package p2p

import (
	"sync"
	"time"
)

// uplinkBucket and uplinkBuckets: the node's upload rate is measured over
// uplinkBuckets buckets of uplinkBucket, a second.
const (
	uplinkBucket  = 100 * time.Millisecond
	uplinkBuckets = 10
)

// uplink measures what the node's uploads send: the rate over the last
// second, and the best second it has seen (see swarm.SlowReaders). It is
// safe for concurrent use.
type uplink struct {
	mu      sync.Mutex
	at      time.Time // start of the newest bucket
	buckets [uplinkBuckets]int64
	filled  int // buckets that saw a whole bucket's time
	best    float64
}

// sent adds k bytes sent at now.
func (u *uplink) sent(now time.Time, k int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.advance(now)
	u.buckets[len(u.buckets)-1] += int64(k)
}

// rates is the rate over the last second at now, and the best second's,
// in bytes per second.
func (u *uplink) rates(now time.Time) (rate, best float64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.advance(now)
	return u.rate(), u.best
}

func (u *uplink) rate() float64 {
	var sum int64
	for _, b := range u.buckets {
		sum += b
	}
	return float64(sum) / (uplinkBuckets * uplinkBucket).Seconds()
}

// advance moves the buckets on to now, noting each whole second's rate
// as the best when it is.
func (u *uplink) advance(now time.Time) {
	if u.at.IsZero() {
		u.at = now.Truncate(uplinkBucket)
		return
	}
	for steps := 0; now.Sub(u.at) >= uplinkBucket; steps++ {
		if steps == uplinkBuckets {
			// Idle for a whole window: every bucket is empty.
			u.buckets = [uplinkBuckets]int64{}
			u.at = now.Truncate(uplinkBucket)
			break
		}
		u.filled = min(u.filled+1, uplinkBuckets)
		if u.filled == uplinkBuckets {
			u.best = max(u.best, u.rate())
		}
		copy(u.buckets[:], u.buckets[1:])
		u.buckets[uplinkBuckets-1] = 0
		u.at = u.at.Add(uplinkBucket)
	}
}
