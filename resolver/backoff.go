package resolver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/containerd/errdefs"
)

// Rate limits. A registry that answers 429 Too Many Requests (or 503 with
// a Retry-After) is not asked again by this node, nor by any member that
// heard of it, until the time it named has passed: every further request
// would count against the same quota (Docker Hub counts each manifest
// GET), and containerd, which goes to the registry itself after shoal's
// miss, may have a quota of its own.
const (
	// DefaultRetryAfter is the back-off when the registry names none.
	DefaultRetryAfter = time.Minute
	// MaxRetryAfter caps the back-off whatever the registry or a member
	// says, so that one answer cannot keep shoal away for hours: after it,
	// one request finds out whether the limit still holds.
	MaxRetryAfter = 10 * time.Minute
)

// RateLimitedError reports a registry that asked shoal to slow down. It
// wraps errdefs.ErrResourceExhausted.
type RateLimitedError struct {
	Registry string
	// RetryAfter is how long the registry asked to wait; 0 when it did
	// not say.
	RetryAfter time.Duration
	// Via names the peer that passed the answer on, "" when the registry
	// answered this node.
	Via string
	// held marks the answer of this node's own back-off: no request was
	// sent, and there is nothing new to record.
	held bool
}

func (e *RateLimitedError) Error() string {
	s := fmt.Sprintf("registry %s asked shoal to slow down", e.Registry)
	if e.held {
		s = fmt.Sprintf("registry %s is backed off", e.Registry)
	}
	if e.RetryAfter > 0 {
		s += fmt.Sprintf(" for %s", e.RetryAfter.Round(time.Second))
	}
	if e.Via != "" {
		s += " (said by peer " + e.Via + ")"
	}
	return s
}

func (e *RateLimitedError) Unwrap() error { return errdefs.ErrResourceExhausted }

// rateLimited returns the RateLimitedError in err's chain.
func rateLimited(err error) (*RateLimitedError, bool) {
	var rl *RateLimitedError
	ok := errors.As(err, &rl)
	return rl, ok
}

// BackoffFor is the rule for how long a registry is left alone after it
// asked for retryAfter (0: it named no time).
func BackoffFor(retryAfter time.Duration) time.Duration {
	switch {
	case retryAfter <= 0:
		return DefaultRetryAfter
	case retryAfter > MaxRetryAfter:
		return MaxRetryAfter
	}
	return retryAfter
}

// BackoffSharer is a Router that also tells the other members of the mesh
// that a registry asked to slow down, so that they do not ask it either.
type BackoffSharer interface {
	ShareBackoff(registry string, retryAfter time.Duration)
}

// backoffs holds, per registry, until when it is not asked. Its methods are
// safe for concurrent use.
type backoffs struct {
	mu    sync.Mutex
	until map[string]time.Time
}

func newBackoffs() *backoffs { return &backoffs{until: make(map[string]time.Time)} }

// note backs registry off for BackoffFor(retryAfter) from now, unless it
// is backed off about as long already. It says until when, and whether
// that moved.
func (b *backoffs) note(registry string, retryAfter time.Duration, now time.Time) (time.Time, bool) {
	until := now.Add(BackoffFor(retryAfter))
	b.mu.Lock()
	defer b.mu.Unlock()
	for reg, u := range b.until {
		if !now.Before(u) {
			delete(b.until, reg)
		}
	}
	// A second's slack: the same answer seen again (by the download that
	// got it, or from a member) is not a new back-off.
	if u, ok := b.until[registry]; ok && !until.After(u.Add(time.Second)) {
		return u, false
	}
	b.until[registry] = until
	return until, true
}

// left says how much longer registry is backed off (0: it is not).
func (b *backoffs) left(registry string, now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	u, ok := b.until[registry]
	if !ok || !now.Before(u) {
		return 0
	}
	return u.Sub(now)
}

// NoteBackoff records that registry asked to slow down for retryAfter, as
// told by the member named from (the gossip), and is safe to call from any
// goroutine. This node then answers requests that would need the registry
// as misses until the back-off ends.
func (r *Resolver) NoteBackoff(registry string, retryAfter time.Duration, from string) {
	r.noteBackoff(&RateLimitedError{Registry: registry, RetryAfter: retryAfter, Via: from})
}

// noteBackoff records a rate-limit answer, says so once in the log, and,
// when the registry answered this node itself, tells the mesh.
func (r *Resolver) noteBackoff(rl *RateLimitedError) {
	if rl.held {
		return // this node's own back-off, recorded already
	}
	now := time.Now()
	until, moved := r.backoffs.note(rl.Registry, rl.RetryAfter, now)
	if !moved {
		return
	}
	r.m.backoffUntil.WithLabelValues(rl.Registry).Set(float64(until.Unix()))
	r.m.rateLimited.WithLabelValues(rl.Registry).Inc()
	from := rl.Via
	if from == "" {
		from = "registry"
	}
	r.cfg.Logger.Warn("registry asked shoal to slow down: not asking it until then, containerd fetches from it directly",
		"registry", rl.Registry, "until", until.UTC().Format(time.RFC3339), "retry_after", rl.RetryAfter, "told_by", from)
	if s, ok := r.router.(BackoffSharer); ok && rl.Via == "" {
		s.ShareBackoff(rl.Registry, until.Sub(now))
	}
}

// backedOff returns the error a request that needs registry gets while it
// is backed off, or nil.
func (r *Resolver) backedOff(registry string) error {
	left := r.backoffs.left(registry, time.Now())
	if left <= 0 {
		return nil
	}
	return &RateLimitedError{Registry: registry, RetryAfter: left, held: true}
}

// upstreamBlob asks the registry for a blob unless it is backed off, and
// records a rate-limit answer. Every request a download makes to the
// registry goes through here or upstreamManifest.
func (r *Resolver) upstreamBlob(ctx context.Context, req BlobRequest, off int64) (io.ReadCloser, int64, error) {
	if err := r.backedOff(req.Registry); err != nil {
		return nil, 0, err
	}
	body, size, err := r.upstream.Blob(ctx, req, off)
	r.noteUpstreamBackoff(req.Registry, err)
	return body, size, err
}

// upstreamManifest is upstreamBlob for manifests.
func (r *Resolver) upstreamManifest(ctx context.Context, req ManifestRequest) (Manifest, error) {
	if err := r.backedOff(req.Registry); err != nil {
		return Manifest{}, err
	}
	m, err := r.upstream.Manifest(ctx, req)
	r.noteUpstreamBackoff(req.Registry, err)
	return m, err
}

// noteUpstreamBackoff records a rate-limit answer of the registry under
// the name the request used (docker.io, not the host that serves it).
func (r *Resolver) noteUpstreamBackoff(registry string, err error) {
	if rl, ok := rateLimited(err); ok {
		rl.Registry = registry
		r.noteBackoff(rl)
	}
}

// Backoffs returns the registries backed off now, and until when.
func (r *Resolver) Backoffs() map[string]time.Time {
	now := time.Now()
	r.backoffs.mu.Lock()
	defer r.backoffs.mu.Unlock()
	out := make(map[string]time.Time, len(r.backoffs.until))
	for reg, u := range r.backoffs.until {
		if now.Before(u) {
			out[reg] = u
		}
	}
	return out
}
