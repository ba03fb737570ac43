package report

import (
	"fmt"
	"slices"
	"strings"
)

// NodeTail is one node's pull seen through its daemon's record of it
// (real mode, shoal): when each blob's bytes came and when it was
// verified, against when the node's `ctr images pull` returned. Times are
// seconds from the start of the run's pulls.
type NodeTail struct {
	Node int `json:"node"`
	// PullSeconds is when the node's pull returned, its image unpacked.
	PullSeconds float64    `json:"pull_seconds"`
	Blobs       []BlobTail `json:"blobs"`
}

// BlobTail is one blob of a node's pull. A blob the node held already
// has no byte times; one that failed has no Verified.
type BlobTail struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
	// Started is when the daemon began to download the blob, FirstByte
	// and LastByte when its first and last bytes arrived from any source,
	// and Verified when the whole blob matched its digest and was stored.
	Started   float64 `json:"started"`
	FirstByte float64 `json:"first_byte,omitempty"`
	LastByte  float64 `json:"last_byte,omitempty"`
	Verified  float64 `json:"verified,omitempty"`
	// Unpacked is when containerd finished unpacking the layer, and
	// UnpackSeconds how long that took (from containerd's debug log; 0
	// for the config, and for a layer not unpacked during the pulls).
	Unpacked      float64 `json:"unpacked,omitempty"`
	UnpackSeconds float64 `json:"unpack_seconds,omitempty"`
}

// TailSplit names where a node's pull time went after its last byte: the
// last blob's verification and storing (LastByte to Verified), then
// containerd's own work (Verified to PullSeconds: reading the rest from
// the mirror, committing it, unpacking, of which the last unpack ended at
// Unpacked, 0 when unknown). Unpacking is the sum of the layers' unpack
// times. Times in seconds.
type TailSplit struct {
	LastByte, Verified, Unpacked, Pull float64
	Unpacking                          float64
}

// Split returns t's split, from the blob verified last; false when no blob
// was downloaded.
func (t NodeTail) Split() (TailSplit, bool) {
	var last BlobTail
	var s TailSplit
	for _, b := range t.Blobs {
		if b.Verified > last.Verified {
			last = b
		}
		s.Unpacked = max(s.Unpacked, b.Unpacked)
		s.Unpacking += b.UnpackSeconds
	}
	if last.Verified == 0 {
		return TailSplit{}, false
	}
	s.LastByte, s.Verified, s.Pull = last.LastByte, last.Verified, t.PullSeconds
	return s, true
}

// TailNote sums up tails for a run's notes: per node, when its last byte
// arrived, how long verifying it took, and how long containerd took after
// it; empty when no node downloaded anything.
func TailNote(tails []NodeTail) string {
	var parts []string
	var after []float64
	for _, t := range tails {
		s, ok := t.Split()
		if !ok {
			continue
		}
		after = append(after, s.Pull-s.Verified)
		part := fmt.Sprintf("node %d last byte %.2f s, verified +%.0f ms", t.Node, s.LastByte, 1000*(s.Verified-s.LastByte))
		if s.Unpacked > 0 {
			part += fmt.Sprintf(", last layer unpacked %+.2f s (unpacking took %.2f s in all)", s.Unpacked-s.Verified, s.Unpacking)
		}
		parts = append(parts, part+fmt.Sprintf(", pull returned +%.2f s", s.Pull-s.Verified))
	}
	if len(parts) == 0 {
		return ""
	}
	slices.Sort(after)
	return fmt.Sprintf("tail: after its last blob was verified, containerd took %.2f s (median; %.2f–%.2f) to take the rest, commit and unpack: %s",
		after[len(after)/2], after[0], after[len(after)-1], strings.Join(parts, "; "))
}
