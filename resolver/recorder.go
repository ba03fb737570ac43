package resolver

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
)

// Recorder is told where the node's blobs come from, for the records of
// its pulls (`shoal explain`, the status page). Its methods are called
// from downloads' goroutines, once per read of a stream among others:
// they must be safe for concurrent use, quick, and never call back into
// the resolver.
type Recorder interface {
	// Tagged: a tag of req's repository resolved to the manifest m.
	Tagged(req ManifestRequest, m Manifest)
	// Fetched: containerd fetched manifest m (an image manifest starts a
	// pull: its blobs come next).
	Fetched(req ManifestRequest, m Manifest)
	// Started: a download of dgst began; size is 0 when unknown yet.
	Started(dgst digest.Digest, size int64)
	// Trying: the download of dgst asks src (peer names it for SourcePeer).
	Trying(dgst digest.Digest, src Source, peer string)
	// Received: n bytes of dgst arrived from src, or were read for
	// containerd from the node's own copy (SourceContainerd, SourceStore).
	Received(dgst digest.Digest, src Source, peer string, n int)
	// FellBack: the download of dgst gave src up for the next source, for
	// reason (see FallbackReason); err says what happened.
	FellBack(dgst digest.Digest, src Source, peer, reason string, err error)
	// Ended: the download of dgst ended; err is nil when the blob was
	// stored.
	Ended(dgst digest.Digest, err error)
}

// noRecorder records nothing.
type noRecorder struct{}

func (noRecorder) Tagged(ManifestRequest, Manifest)                      {}
func (noRecorder) Fetched(ManifestRequest, Manifest)                     {}
func (noRecorder) Started(digest.Digest, int64)                          {}
func (noRecorder) Trying(digest.Digest, Source, string)                  {}
func (noRecorder) Received(digest.Digest, Source, string, int)           {}
func (noRecorder) FellBack(digest.Digest, Source, string, string, error) {}
func (noRecorder) Ended(digest.Digest, error)                            {}

// Reasons a source was given up for the next, as FallbackReason names
// them.
const (
	ReasonStalled     = "stalled"      // no byte for the stall time
	ReasonSlow        = "slow"         // far below the rate it had shown
	ReasonRelaying    = "relaying"     // silent, waiting on its own source; asked once more
	ReasonNotGrowing  = "not growing"  // a peer's own copy stopped arriving
	ReasonBusy        = "busy"         // a peer out of upload slots
	ReasonNotYet      = "not yet"      // a peer that does not hold the bytes yet
	ReasonRateLimited = "rate limited" // 429, or 503 with Retry-After
	ReasonNotFound    = "not found"
	ReasonLocalStore  = "local store"    // shoal's own store failed
	ReasonRegistry    = "registry error" // any other failure of the registry
	ReasonFailed      = "failed"         // any other failure of a peer
)

// FallbackReason names why src was given up after err, in a word or two.
func FallbackReason(src Source, err error) string {
	if _, ok := rateLimited(err); ok {
		return ReasonRateLimited
	}
	switch {
	case errors.Is(err, errRelaying):
		return ReasonRelaying
	case errors.Is(err, errSlow):
		return ReasonSlow
	case errors.Is(err, errNotArriving):
		return ReasonNotGrowing
	case errors.Is(err, errStalled):
		return ReasonStalled
	case errors.Is(err, errLocalStore):
		return ReasonLocalStore
	case errdefs.IsResourceExhausted(err):
		return ReasonBusy
	case errdefs.IsOutOfRange(err), errors.Is(err, errHeldInPart):
		return ReasonNotYet
	case errdefs.IsNotFound(err):
		return ReasonNotFound
	case src == SourceUpstream:
		return ReasonRegistry
	}
	return ReasonFailed
}

// fellBack tells the recorder that src failed the download of dgst with
// err, unless err is no failure.
func (r *Resolver) fellBack(dgst digest.Digest, src source, err error) {
	if err == nil || errors.Is(err, context.Canceled) && r.ctx.Err() != nil {
		return
	}
	if errors.Is(err, ErrFetchYourself) || errors.As(err, new(*FetchingAtError)) {
		// A designated peer's answer, not its failure: no time was lost.
		return
	}
	r.rec.FellBack(dgst, src.kind, src.peer, FallbackReason(src.kind, err), err)
}

// byteCounter counts a stream's bytes in the metric of bytes by source and
// in the pull records, from the one place both are fed.
type byteCounter struct {
	metric prometheus.Counter
	last   *atomic.Int64 // Resolver.lastByte
	rec    Recorder
	dgst   digest.Digest
	src    Source
	peer   string
}

func (r *Resolver) counter(dgst digest.Digest, src Source, peer string) byteCounter {
	return byteCounter{metric: r.m.sourceBytes.WithLabelValues(string(src)), last: &r.lastByte, rec: r.rec, dgst: dgst, src: src, peer: peer}
}

// Add counts n bytes, received now.
func (c byteCounter) Add(n int) {
	c.last.Store(time.Now().UnixNano())
	c.metric.Add(float64(n))
	c.rec.Received(c.dgst, c.src, c.peer, n)
}

// lastByteAt is when this node last received bytes of any blob from a
// source (zero: never). A download whose peers are all busy counts it as
// progress (see swarm.Download.Idle).
func (r *Resolver) lastByteAt() time.Time {
	if ns := r.lastByte.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// ended tells the recorder how the download of dgst, whose flight f was,
// ended.
func (r *Resolver) ended(dgst digest.Digest, f *flight) {
	if f == nil {
		return
	}
	err := f.err
	if err == nil && f.ingest != nil {
		err = f.ingest.Err()
	} else if err == nil {
		err = errors.New("no source sent it")
	}
	r.rec.Ended(dgst, err)
}

// countedLocal makes b's readers tell the recorder what they read of a
// blob the node holds (containerd's content, shoal's store).
func (r *Resolver) countedLocal(b *Blob) *Blob {
	if _, none := r.rec.(noRecorder); none || (b.Source != SourceContainerd && b.Source != SourceStore) {
		return b
	}
	open := b.reader
	b.reader = func(ctx context.Context, off int64) (io.ReadCloser, error) {
		rd, err := open(ctx, off)
		if err != nil {
			return nil, err
		}
		return &countingReader{ReadCloser: rd, rec: r.rec, dgst: b.Digest, src: b.Source}, nil
	}
	return b
}

type countingReader struct {
	io.ReadCloser
	rec  Recorder
	dgst digest.Digest
	src  Source
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	if n > 0 {
		c.rec.Received(c.dgst, c.src, "", n)
	}
	return n, err
}
