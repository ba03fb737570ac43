package resolver

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/singleflight"
)

// Tags. With imagePullPolicy: Always every node asks the registry for a
// tag's manifest at every pull, and registries such as Docker Hub count
// each manifest GET. Within Config.TagTTL, the look-ups of one tag in the
// whole cluster are answered from one registry answer: the tag's designated
// node (rendezvous hashing over the live members, as for blobs) asks the
// registry, a HEAD where it answers one, and keeps the answer for TagTTL;
// every other node asks it over the mesh. So a tag moved upstream is seen
// at most TagTTL later.

// TagHeader is an Upstream that resolves a tag with a HEAD request, which
// Docker Hub does not count against its pull limit. An error wrapping
// errdefs.ErrNotImplemented says the registry answered no usable HEAD: the
// resolver then GETs the manifest by tag.
type TagHeader interface {
	ResolveTag(ctx context.Context, req ManifestRequest) (ocispec.Descriptor, error)
}

// TagAsker is a Router that can ask a tag's designated node to resolve it
// for the cluster.
type TagAsker interface {
	// TagDesignated names the node that resolves ref (registry/repo:tag)
	// for the cluster; self says it is this node, "" that there is none.
	TagDesignated(ref string) (peer string, self bool)
	// AskTag asks peer p to resolve req. The answer's body is not
	// verified: the caller checks it against the digest.
	AskTag(ctx context.Context, p string, req ManifestRequest) (TagAnswer, error)
}

// TagAnswer is a tag's manifest as a node's registry look-up found it, and
// how long ago that look-up was sent.
type TagAnswer struct {
	Manifest Manifest
	Age      time.Duration
}

// tagEntry is a registry's answer for a tag, and when it was asked. body
// is the manifest, kept in memory when the node answered the tag for a
// peer: the store keeps only what this node's own clients asked for, so a
// node that answers a tag it never pulls keeps nothing on disk for it.
type tagEntry struct {
	desc ocispec.Descriptor
	at   time.Time
	body []byte
}

// tagCache holds the last answer for each tag, fresh or not, and the
// registry look-ups in flight. Its methods are safe for concurrent use.
type tagCache struct {
	mu        sync.Mutex
	entries   map[string]tagEntry
	bodyBytes int // the bodies' bytes the entries hold
	flights   singleflight.Group
}

// maxTags bounds the tags a node remembers, and maxTagBodyBytes the
// manifests it keeps in memory with them.
const (
	maxTags         = 4096
	maxTagBodyBytes = 16 << 20
)

func newTagCache() *tagCache { return &tagCache{entries: make(map[string]tagEntry)} }

func (c *tagCache) get(ref string) (tagEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[ref]
	return e, ok
}

// put keeps e unless the cache holds a later answer. It keeps e's body
// while the bodies fit in maxTagBodyBytes, and says when it had no room
// for it.
func (c *tagCache) put(ref string, e tagEntry) (noRoom bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old, ok := c.entries[ref]
	if ok && old.at.After(e.at) {
		return false
	}
	c.bodyBytes -= len(old.body)
	if len(c.entries) >= maxTags {
		clear(c.entries)
		c.bodyBytes = 0
	}
	if c.bodyBytes+len(e.body) > maxTagBodyBytes {
		e.body, noRoom = nil, true
	}
	c.bodyBytes += len(e.body)
	c.entries[ref] = e
	return noRoom
}

// cachedManifest is the manifest a tag's answer names: the body kept with it,
// else the copy in containerd or the store.
func (r *Resolver) cachedManifest(ctx context.Context, e tagEntry) (Manifest, error) {
	if e.body != nil {
		return Manifest{MediaType: e.desc.MediaType, Digest: e.desc.Digest, Body: e.body, Source: SourceStore}, nil
	}
	return r.localManifest(ctx, e.desc.Digest, e.desc.MediaType)
}

// tagStep is where a tag look-up goes.
type tagStep int

const (
	tagFromCache tagStep = iota
	tagAskDesignated
	tagAskRegistry
)

// tagRoute is the rule for where a tag look-up goes: the node's answer
// while it is younger than ttl; else the tag's designated node, when there
// is one and it is not this node; else the registry. A ttl of zero or less
// is off: every look-up goes to the registry.
func tagRoute(ttl time.Duration, e tagEntry, cached bool, now time.Time, designated string, self bool) tagStep {
	switch {
	case ttl <= 0:
		return tagAskRegistry
	case cached && now.Sub(e.at) < ttl:
		return tagFromCache
	case designated != "" && !self:
		return tagAskDesignated
	}
	return tagAskRegistry
}

func tagName(req ManifestRequest) string {
	return req.Registry + "/" + req.Repo + ":" + req.Reference
}

// tag resolves a tag: within TagTTL from the node's last answer, else from
// its designated node, else (or when that fails) from the registry.
func (r *Resolver) tag(ctx context.Context, req ManifestRequest) (Manifest, error) {
	ref := tagName(req)
	e, cached := r.tags.get(ref)
	var designated string
	var self bool
	if ta, ok := r.router.(TagAsker); ok && r.cfg.TagTTL > 0 {
		designated, self = ta.TagDesignated(ref)
	}
	switch tagRoute(r.cfg.TagTTL, e, cached, time.Now(), designated, self) {
	case tagFromCache:
		if m, err := r.cachedManifest(ctx, e); err == nil {
			if e.body != nil {
				r.remember(ctx, m) // answered for a peer before; now wanted here
			}
			r.m.tagLookups.WithLabelValues("cache").Inc()
			return m, nil
		}
	case tagAskDesignated:
		m, err := r.askDesignated(ctx, designated, req)
		if err == nil {
			r.m.tagLookups.WithLabelValues("designated").Inc()
			return m, nil
		}
		r.m.tagFallbacks.WithLabelValues(fallbackReason(err)).Inc()
		r.cfg.Logger.Info("tag's designated node did not answer, asking the registry", "peer", designated, "tag", ref, "err", err)
	}
	m, _, err := r.registryTag(ctx, req)
	if err == nil {
		r.remember(ctx, m)
		r.m.tagLookups.WithLabelValues("registry").Inc()
	}
	return m, err
}

// fallbackReason names why the designated node's answer was not used.
func fallbackReason(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, ErrDigestMismatch):
		return "mismatch"
	}
	return "error"
}

// askDesignated asks peer, within tagPeerWait, for its answer, checks
// the body against the digest, keeps the manifest, and remembers the
// answer for what is left of TagTTL.
func (r *Resolver) askDesignated(ctx context.Context, peer string, req ManifestRequest) (Manifest, error) {
	actx, cancel := context.WithTimeout(ctx, r.tagPeerWait(req.Registry))
	defer cancel()
	ans, err := r.router.(TagAsker).AskTag(actx, peer, req)
	if err != nil {
		if actx.Err() != nil && ctx.Err() == nil {
			err = fmt.Errorf("%w: %w", err, context.DeadlineExceeded)
		}
		return Manifest{}, err
	}
	m := ans.Manifest
	if err := checkManifest(m); err != nil {
		r.router.Avoid(peer, err)
		return Manifest{}, err
	}
	r.remember(ctx, m)
	if ans.Age >= 0 && ans.Age < r.cfg.TagTTL {
		r.tags.put(tagName(req), tagEntry{desc: descriptorOf(m), at: time.Now().Add(-ans.Age)})
	}
	m.Source = SourcePeer
	return m, nil
}

// tagPeerWait is how long a node waits for a tag's designated node:
// TagPeerTimeout, and the time the registry's chain may spend on hosts it
// cannot reach before the last one (see fetcherStall). The designated
// node asks the registry through the same chain, and may be the first in
// the cluster to meet a host that is down; a node that stopped waiting
// sooner would ask the registry for the tag itself, through the same dead
// host.
func (r *Resolver) tagPeerWait(registry string) time.Duration {
	if c, ok := r.upstream.(Chained); ok && registry != "" {
		return r.cfg.TagPeerTimeout + c.FailoverTime(registry)
	}
	return r.cfg.TagPeerTimeout
}

// checkManifest verifies a manifest a peer sent: its size, its bytes
// against its digest, and a media type fit for a Content-Type header.
func checkManifest(m Manifest) error {
	if len(m.Body) > MaxManifestBytes {
		return fmt.Errorf("manifest %s: %d bytes: %w", m.Digest, len(m.Body), ErrManifestTooLarge)
	}
	if err := validDigest(m.Digest); err != nil {
		return err
	}
	if got := digest.SHA256.FromBytes(m.Body); got != m.Digest {
		return fmt.Errorf("manifest %s: body is %s: %w", m.Digest, got, ErrDigestMismatch)
	}
	if !validMediaType(m.MediaType) {
		return fmt.Errorf("manifest %s: media type %q: %w", m.Digest, m.MediaType, errdefs.ErrInvalidArgument)
	}
	return nil
}

func descriptorOf(m Manifest) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: m.MediaType, Digest: m.Digest, Size: int64(len(m.Body))}
}

// registryTag asks the registry for a tag once however many look-ups of it
// run on this node at the same time, and remembers the answer. It says
// when the registry was asked.
func (r *Resolver) registryTag(ctx context.Context, req ManifestRequest) (Manifest, time.Time, error) {
	type result struct {
		m  Manifest
		at time.Time
	}
	ref := tagName(req)
	ch := r.tags.flights.DoChan(ref, func() (any, error) {
		// A look-up that ended between this caller's look in the cache
		// and this flight left its answer there: the registry is not
		// asked twice within the TTL.
		if e, ok := r.tags.get(ref); ok && r.cfg.TagTTL > 0 && time.Since(e.at) < r.cfg.TagTTL {
			if m, err := r.cachedManifest(r.ctx, e); err == nil {
				return result{m, e.at}, nil
			}
		}
		// The look-up outlives the request that started it: others share it.
		uctx, cancel := context.WithTimeout(r.ctx, r.cfg.MissTimeout)
		defer cancel()
		at := time.Now()
		m, err := r.upstreamTag(uctx, req)
		if err != nil {
			return nil, err
		}
		if r.tags.put(ref, tagEntry{desc: descriptorOf(m), at: at, body: m.Body}) {
			// No room for it in memory: the store keeps it, so that the
			// answers within the TTL need no registry.
			r.remember(r.ctx, m)
		}
		return result{m, at}, nil
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return Manifest{}, time.Time{}, res.Err
		}
		got := res.Val.(result)
		return got.m, got.at, nil
	case <-ctx.Done():
		return Manifest{}, time.Time{}, fmt.Errorf("tag %s: %w", ref, ctx.Err())
	}
}

// upstreamTag resolves a tag at the registry: a HEAD, then the manifest
// by digest unless the node holds it; a GET by tag where the registry
// answers no HEAD. It keeps nothing: the caller does (see tagEntry).
func (r *Resolver) upstreamTag(ctx context.Context, req ManifestRequest) (Manifest, error) {
	if r.upstream == nil {
		return Manifest{}, fmt.Errorf("manifest %s: no upstream: %w", req.Reference, errdefs.ErrUnavailable)
	}
	th, ok := r.upstream.(TagHeader)
	if !ok {
		return r.checkedUpstreamManifest(ctx, req)
	}
	if err := r.backedOff(req.Registry); err != nil {
		return Manifest{}, err
	}
	desc, err := th.ResolveTag(ctx, req)
	r.noteUpstreamBackoff(req.Registry, err)
	if errdefs.IsNotImplemented(err) {
		return r.checkedUpstreamManifest(ctx, req)
	}
	if err != nil {
		return Manifest{}, err
	}
	if m, err := r.localManifest(ctx, desc.Digest, desc.MediaType); err == nil {
		m.Source = SourceUpstream
		return m, nil
	}
	byDigest := req
	byDigest.Reference = desc.Digest.String()
	return r.checkedUpstreamManifest(ctx, byDigest)
}

// fetchUpstreamManifest GETs a manifest, checks it and keeps it in the
// store.
func (r *Resolver) fetchUpstreamManifest(ctx context.Context, req ManifestRequest) (Manifest, error) {
	m, err := r.checkedUpstreamManifest(ctx, req)
	if err != nil {
		return Manifest{}, err
	}
	r.remember(ctx, m)
	return m, nil
}

// checkedUpstreamManifest GETs a manifest and checks its size and, asked
// by digest, its digest.
func (r *Resolver) checkedUpstreamManifest(ctx context.Context, req ManifestRequest) (Manifest, error) {
	m, err := r.upstreamManifest(ctx, req)
	if err != nil {
		return Manifest{}, err
	}
	if len(m.Body) > MaxManifestBytes {
		return Manifest{}, fmt.Errorf("manifest %s: %d bytes: %w", m.Digest, len(m.Body), ErrManifestTooLarge)
	}
	if d, isDigest := asDigest(req.Reference); isDigest && m.Digest != d {
		return Manifest{}, fmt.Errorf("manifest %s: upstream answered %s: %w", d, m.Digest, errdefs.ErrNotFound)
	}
	m.Source = SourceUpstream
	return m, nil
}

// TagFor resolves a tag for a peer that asked this node, the tag's
// designated node: from its answer younger than TagTTL, else from the
// registry, once however many ask at the same time. The answer says how
// long ago the registry was asked. A registry this node does not mirror
// is refused with an error wrapping ErrNotMirrored, before any request.
func (r *Resolver) TagFor(ctx context.Context, req ManifestRequest) (TagAnswer, error) {
	if _, isDigest := asDigest(req.Reference); isDigest || req.Reference == "" {
		return TagAnswer{}, fmt.Errorf("tag %q: %w", req.Reference, errdefs.ErrInvalidArgument)
	}
	if !r.mirrors(req.Registry) {
		r.m.tagServed.WithLabelValues("refused").Inc()
		return TagAnswer{}, fmt.Errorf("tag %s: %w", tagName(req), ErrNotMirrored)
	}
	if r.cfg.TagTTL <= 0 {
		r.m.tagServed.WithLabelValues("refused").Inc()
		return TagAnswer{}, fmt.Errorf("tag %s: tag sharing is off on this node: %w", tagName(req), errdefs.ErrNotFound)
	}
	if e, ok := r.tags.get(tagName(req)); ok && time.Since(e.at) < r.cfg.TagTTL {
		if m, err := r.cachedManifest(ctx, e); err == nil {
			r.m.tagServed.WithLabelValues("cache").Inc()
			return TagAnswer{Manifest: m, Age: time.Since(e.at)}, nil
		}
	}
	m, at, err := r.registryTag(ctx, req)
	if err != nil {
		r.m.tagServed.WithLabelValues("error").Inc()
		return TagAnswer{}, err
	}
	r.m.tagServed.WithLabelValues("registry").Inc()
	return TagAnswer{Manifest: m, Age: time.Since(at)}, nil
}

// LastTag answers an image name (registry/repo:tag) with the last answer
// this node got for it, from the registry or from the tag's designated
// node, however old, annotated with when the registry was asked; NotFound
// when it has none. The mesh asks it while the registry is down: the tag's
// designated node knows the tag's last answer even when its containerd
// never pulled the image.
func (r *Resolver) LastTag(_ context.Context, name string) (ocispec.Descriptor, error) {
	e, ok := r.tags.get(name)
	if !ok {
		return ocispec.Descriptor{}, fmt.Errorf("tag %s: %w", name, errdefs.ErrNotFound)
	}
	d := e.desc
	d.Annotations = map[string]string{UpdatedAnnotation: e.at.UTC().Format(time.RFC3339Nano)}
	return d, nil
}

// UpdatedAnnotation on a descriptor an ImageLookup returns says when the
// image record was last updated (RFC 3339); the mesh's newest answer wins.
const UpdatedAnnotation = "io.shoal.image.updated"
