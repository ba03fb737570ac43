package pulls

import (
	"time"

	"github.com/opencontainers/go-digest"
)

// Pull is the record of one pull: containerd fetched an image manifest,
// then the blobs it names.
type Pull struct {
	ID       int64         `json:"id"`
	Image    string        `json:"image"` // registry/repo:tag, or registry/repo@digest when no tag was seen
	Manifest digest.Digest `json:"manifest"`
	Started  time.Time     `json:"started"`
	// Ended is when the last blob ended; zero while a blob is running.
	Ended   time.Time     `json:"ended,omitzero"`
	Running bool          `json:"running"`
	Blobs   []Blob        `json:"blobs"`
	Totals  []SourceBytes `json:"totals"`    // bytes by source over every blob
	Falls   int           `json:"fallbacks"` // fallbacks over every blob
	LostMS  int64         `json:"lost_ms"`   // time lost to them
	Omitted int           `json:"omitted_blobs,omitempty"`
}

// Blob states.
const (
	StateRunning = "running" // a download, or a read of the node's copy, in progress
	StateStored  = "stored"  // downloaded, verified and stored
	StateFailed  = "failed"  // the download failed (containerd then asks the registry)
	StateLocal   = "local"   // read from the node's own copy
	StateHeld    = "held"    // never asked for: containerd held it already
)

// Blob is what happened to one blob of a pull.
type Blob struct {
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"media_type,omitempty"`
	Size      int64         `json:"size"`
	State     string        `json:"state"`
	Error     string        `json:"error,omitempty"`
	Started   time.Time     `json:"started,omitzero"`
	Ended     time.Time     `json:"ended,omitzero"`
	Sources   []SourceBytes `json:"sources"`
	Fallbacks []Fallback    `json:"fallbacks"`
	// MoreFallbacks counts fallbacks past the ones kept.
	MoreFallbacks int `json:"more_fallbacks,omitempty"`
}

// SourceBytes is what one source sent.
type SourceBytes struct {
	Source string    `json:"source"`         // containerd, store, peer, upstream
	Peer   string    `json:"peer,omitempty"` // the peer's ID, for peer
	Name   string    `json:"name,omitempty"` // the peer's member name, when known
	Bytes  int64     `json:"bytes"`
	First  time.Time `json:"first,omitzero"` // first and last byte
	Last   time.Time `json:"last,omitzero"`
}

// Fallback is a source given up for the next.
type Fallback struct {
	At     time.Time `json:"at"`
	Source string    `json:"source"`
	Peer   string    `json:"peer,omitempty"`
	Name   string    `json:"name,omitempty"`
	Reason string    `json:"reason"` // see resolver.FallbackReason
	Error  string    `json:"error,omitempty"`
	// LostMS is the time from the source's last byte (or from when it was
	// asked, if it sent none) to when it was given up.
	LostMS int64 `json:"lost_ms"`
}

// Transfer is a download running now.
type Transfer struct {
	Digest  digest.Digest `json:"digest"`
	Size    int64         `json:"size"`
	Bytes   int64         `json:"bytes"`
	Started time.Time     `json:"started"`
	// Source and Peer are the source the download asks now; Waiting says
	// no byte came from it for a second or more. Between sources, they
	// name the last one given up, and Reason why (busy, not yet: the
	// download waits for it to have room or bytes).
	Source  string        `json:"source,omitempty"`
	Peer    string        `json:"peer,omitempty"`
	Name    string        `json:"name,omitempty"`
	Waiting bool          `json:"waiting"`
	Reason  string        `json:"reason,omitempty"`
	Rate    float64       `json:"rate"` // bytes per second, over the last seconds
	Sources []SourceBytes `json:"sources"`
}

// Namer names a peer (a member name for its ID); "" when unknown.
type Namer func(peer string) string
