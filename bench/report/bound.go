package report

import (
	"fmt"
	"math"
)

// The bounds below take sizes in bytes and rates in bytes per second and
// return seconds. A link that is not shaped has no limit: pass math.Inf(1) for
// its rate. A rate of zero or less carries nothing, so any term that must
// cross it is infinite. N is the number of nodes that pull.

// ColdBound is T* for N nodes pulling an S-byte image at once through a swarm:
// the registry must send every byte once (S/U), each node must receive every
// byte (S/d), and the N·S bytes delivered can arrive no faster than the
// registry's upload plus the N nodes' uploads together (N·S/(U+N·u)).
func ColdBound(S, U, d, u float64, N int) float64 {
	if N < 1 {
		return 0
	}
	n := float64(N)
	return math.Max(math.Max(seconds(S, U), seconds(S, d)), seconds(n*S, U+n*u))
}

// WarmBound is T* when one node already holds the image and serves the other
// N−1 in the registry's place: the holder sends every byte once (S/u), each
// node receives every byte (S/d), and the (N−1)·S bytes to deliver share the N
// nodes' uploads ((N−1)·S/(N·u)).
func WarmBound(S, u, d float64, N int) float64 {
	if N < 1 {
		return 0
	}
	n := float64(N)
	return math.Max(math.Max(seconds(S, u), seconds(S, d)), seconds((n-1)*S, n*u))
}

// RollingBound is T* when N nodes pull k at a time, each batch once the
// previous one finished: the batches' bounds added up. A batch of k nodes
// pulls while h nodes already hold the image; their uploads add to the
// registry's, so each batch is a cold pull from a source of U + h·u.
func RollingBound(S, U, d, u float64, N, k int) float64 {
	if k < 1 {
		return 0
	}
	var t float64
	for h := 0; h < N; h += k {
		src := U
		if h > 0 { // 0 × an unshaped link is NaN, not 0
			src += float64(h) * u
		}
		t += ColdBound(S, src, d, u, min(k, N-h))
	}
	return t
}

// DirectBound is the least time N nodes take to pull an S-byte image straight
// from the registry, with no mirror: the registry sends it N times (N·S/U) and
// each node receives it once (S/d). The `direct` baseline is measured against
// it to show that the machine, not the method, is not the bottleneck.
func DirectBound(S, U, d float64, N int) float64 {
	if N < 1 {
		return 0
	}
	return math.Max(seconds(float64(N)*S, U), seconds(S, d))
}

// MbitToBytes converts a link rate in Mbit/s, as the bench flags take it, to
// bytes per second. Zero stays zero; the caller decides whether that means
// "not shaped" (math.Inf(1)) before computing a bound.
func MbitToBytes(mbit float64) float64 { return mbit * 1e6 / 8 }

// BaselineSlack is how far above DirectBound the `direct` baseline may finish
// before the report says that CPU or disk, not the links, set the pace.
const BaselineSlack = 1.2

// BaselineNote returns the note a record of the `direct` baseline should carry
// when its makespan exceeds BaselineSlack × its bound N·S/U, and "" otherwise.
func BaselineNote(makespanSeconds, directBoundSeconds float64) string {
	if directBoundSeconds <= 0 || math.IsInf(directBoundSeconds, 0) {
		return ""
	}
	r := makespanSeconds / directBoundSeconds
	if r <= BaselineSlack {
		return ""
	}
	return "direct baseline reached only " + formatRatio(r) + "× its bound N·S/U: CPU or disk limited"
}

// seconds is bytes/rate with the edge cases spelled out: nothing to move takes
// no time whatever the rate (so 0/0 is not NaN), a rate of zero or less never
// finishes, and an unlimited rate takes no time.
func seconds(bytes, rate float64) float64 {
	switch {
	case bytes <= 0:
		return 0
	case rate <= 0:
		return math.Inf(1)
	default:
		return bytes / rate
	}
}

// LinkSlack is how far below the time its own link needs (S/d) a node may
// finish before the report calls the measurement wrong: timers and token
// buckets start a little early, no link carries more than it can.
const LinkSlack = 0.99

// FasterThanLinkNote returns the note a record should carry when one of
// its nodes' successful pulls (nodeSeconds) finished sooner than LinkSlack × S/d, the time it takes an
// S-byte image to cross the node's downlink of d bytes per second; "" when
// none did, or the link is not shaped. Such a run measured something else
// than what its scenario says (a node that held part of the image, or bytes
// that went around a link).
func FasterThanLinkNote(nodeSeconds []float64, S, d float64) string {
	if d <= 0 || math.IsInf(d, 1) || S <= 0 {
		return ""
	}
	floor := S / d
	for _, t := range nodeSeconds {
		if t < LinkSlack*floor {
			return fmt.Sprintf("a node finished in %.3f s, faster than the %.3f s its link needs for the image: the run did not measure its scenario", t, floor)
		}
	}
	return ""
}
