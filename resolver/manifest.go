package resolver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoal-dev/shoal/store"
)

// Manifest finds a manifest by tag or digest. A tag is resolved upstream
// (tags move), within TagTTL from one registry answer for the cluster (see
// tags.go); unless RegistryOnlyTags, a tag the node's containerd holds, or
// the mesh's newest answer, answers when the registry cannot. A digest is served from the node when it
// has it and fetched upstream otherwise; either way the body is verified.
func (r *Resolver) Manifest(ctx context.Context, req ManifestRequest) (Manifest, error) {
	if req.Registry != "" {
		r.noteMirrored(req.Registry)
		r.noteWanted(req.Registry, req.Repo)
	}
	m, err := r.manifest(ctx, req)
	if err != nil {
		r.m.lookups.WithLabelValues("manifest", "miss").Inc()
		return Manifest{}, err
	}
	r.m.lookups.WithLabelValues("manifest", string(m.Source)).Inc()
	if _, isDigest := asDigest(req.Reference); !isDigest {
		r.rec.Tagged(req, m)
	}
	return m, nil
}

func (r *Resolver) manifest(ctx context.Context, req ManifestRequest) (Manifest, error) {
	if dgst, isDigest := asDigest(req.Reference); isDigest {
		return r.digestManifest(ctx, req, dgst)
	}
	m, err := r.tag(ctx, req)
	if err == nil || r.cfg.RegistryOnlyTags || errdefs.IsNotFound(err) {
		return m, err
	}
	if m, lerr := r.offlineTag(ctx, req); lerr == nil {
		r.m.tagLookups.WithLabelValues("mesh").Inc()
		r.cfg.Logger.Info("registry unreachable, tag resolved in the cluster", "registry", req.Registry, "repo", req.Repo, "tag", req.Reference, "digest", m.Digest, "source", m.Source, "err", err)
		return m, nil
	}
	return Manifest{}, err
}

// digestManifest finds a manifest by digest: on the node, else at the
// registry, else at any peer (it is immutable).
func (r *Resolver) digestManifest(ctx context.Context, req ManifestRequest, dgst digest.Digest) (Manifest, error) {
	if err := validDigest(dgst); err != nil {
		return Manifest{}, err
	}
	if m, err := r.localManifest(ctx, dgst, ""); err == nil || !errdefs.IsNotFound(err) {
		return m, err
	}
	var err error
	if r.upstream == nil {
		err = fmt.Errorf("manifest %s: no upstream: %w", req.Reference, errdefs.ErrUnavailable)
	} else {
		uctx, cancel := context.WithTimeout(ctx, r.cfg.MissTimeout)
		var m Manifest
		m, err = r.fetchUpstreamManifest(uctx, req)
		cancel()
		if err == nil || errors.Is(err, ErrManifestTooLarge) {
			return m, err
		}
	}
	if m, perr := r.peerManifest(ctx, req, dgst, ""); perr == nil {
		return m, nil
	}
	return Manifest{}, err
}

// offlineTag resolves a tag without the registry: from the node's own
// containerd, else from the last answer the node had for it, else from
// the newest answer of the members the mesh asks.
func (r *Resolver) offlineTag(ctx context.Context, req ManifestRequest) (Manifest, error) {
	name := tagName(req)
	lookups := []ImageLookup{r.images, lastTag{r}}
	if il, ok := r.router.(ImageLookup); ok {
		lookups = append(lookups, il)
	}
	err := fmt.Errorf("tag %s: %w", name, errdefs.ErrNotFound)
	for _, il := range lookups {
		if il == nil {
			continue
		}
		desc, lerr := il.ResolveImage(ctx, name)
		if lerr != nil {
			continue
		}
		if m, merr := r.localManifest(ctx, desc.Digest, desc.MediaType); merr == nil {
			return m, nil
		}
		if m, merr := r.peerManifest(ctx, req, desc.Digest, desc.MediaType); merr == nil {
			return m, nil
		} else {
			err = merr
		}
	}
	return Manifest{}, err
}

// lastTag is the node's last answer for a tag as an ImageLookup.
type lastTag struct{ r *Resolver }

func (l lastTag) ResolveImage(ctx context.Context, name string) (ocispec.Descriptor, error) {
	return l.r.LastTag(ctx, name)
}

// peerManifest fetches a manifest by digest the way blobs come: from peers
// (or whatever source the blob path finds), verified and stored.
func (r *Resolver) peerManifest(ctx context.Context, req ManifestRequest, dgst digest.Digest, mediaType string) (Manifest, error) {
	if r.router == nil {
		return Manifest{}, fmt.Errorf("manifest %s: no mesh: %w", dgst, errdefs.ErrNotFound)
	}
	m, err := r.fetchManifestBlob(ctx, req, dgst, mediaType)
	if errors.Is(err, store.ErrDigestMismatch) {
		// The peer that lied is avoided now; the next attempt asks others.
		m, err = r.fetchManifestBlob(ctx, req, dgst, mediaType)
	}
	return m, err
}

func (r *Resolver) fetchManifestBlob(ctx context.Context, req ManifestRequest, dgst digest.Digest, mediaType string) (Manifest, error) {
	b, err := r.blob(ctx, BlobRequest{Registry: req.Registry, Repo: req.Repo, Digest: dgst})
	if err != nil {
		return Manifest{}, err
	}
	return r.readManifest(ctx, b, mediaType)
}

// localManifest reads a manifest from containerd or the store and verifies it.
func (r *Resolver) localManifest(ctx context.Context, dgst digest.Digest, mediaType string) (Manifest, error) {
	b, err := r.openLocal(ctx, dgst)
	if err != nil {
		return Manifest{}, err
	}
	return r.readManifest(ctx, b, mediaType)
}

// readManifest reads a manifest blob whole, verifies it against its digest
// and finds its media type (given, remembered, or read from the body). It
// closes b.
func (r *Resolver) readManifest(ctx context.Context, b *Blob, mediaType string) (Manifest, error) {
	defer b.Close()
	dgst := b.Digest
	if b.Size > MaxManifestBytes {
		return Manifest{}, fmt.Errorf("manifest %s: %d bytes: %w", dgst, b.Size, ErrManifestTooLarge)
	}
	rd, err := b.Reader(ctx, 0)
	if err != nil {
		return Manifest{}, err
	}
	defer rd.Close()
	body, err := io.ReadAll(rd)
	if err != nil {
		return Manifest{}, fmt.Errorf("manifest %s: %w", dgst, err)
	}
	if digest.SHA256.FromBytes(body) != dgst {
		return Manifest{}, fmt.Errorf("manifest %s from %s does not match: %w", dgst, b.Source, errdefs.ErrNotFound)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if mediaType == "" {
		mediaType = r.types[dgst]
	}
	if mediaType == "" {
		if mediaType, err = DetectMediaType(body); err != nil {
			return Manifest{}, fmt.Errorf("manifest %s: %w", dgst, err)
		}
	}
	if len(r.types) > 4096 {
		clear(r.types)
	}
	r.types[dgst] = mediaType
	return Manifest{MediaType: mediaType, Digest: dgst, Body: body, Source: b.Source}, nil
}

// remember keeps a fetched manifest in the store so a GET by digest after a
// HEAD by tag does not go upstream again.
func (r *Resolver) remember(ctx context.Context, m Manifest) {
	r.mu.Lock()
	if len(r.types) > 4096 {
		clear(r.types)
	}
	r.types[m.Digest] = m.MediaType
	r.mu.Unlock()
	ing, err := r.store.Begin(ctx, m.Digest, int64(len(m.Body)))
	if err != nil {
		return // already held, or being written by another request
	}
	if _, err := ing.WriteAt(m.Body, 0); err != nil {
		ing.Abort(err)
		return
	}
	if err := ing.Commit(ctx); err != nil {
		r.cfg.Logger.Warn("manifest not stored", "digest", m.Digest, "err", err)
		return
	}
	r.announce(m.Digest)
}

// DetectMediaType infers a manifest's media type from its body, for bodies
// read from a store that keeps no media type.
func DetectMediaType(body []byte) (string, error) {
	var probe struct {
		SchemaVersion int             `json:"schemaVersion"`
		MediaType     string          `json:"mediaType"`
		Config        json.RawMessage `json:"config"`
		Layers        json.RawMessage `json:"layers"`
		Manifests     json.RawMessage `json:"manifests"`
	}
	// Unmarshal, not a Decoder: a body with anything after its JSON value
	// is no manifest, and containerd would refuse it.
	if err := json.Unmarshal(body, &probe); err != nil {
		return "", fmt.Errorf("not a manifest: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	switch {
	case probe.MediaType != "":
		// The mirror sends it to containerd as the Content-Type.
		if !validMediaType(probe.MediaType) {
			return "", fmt.Errorf("media type %q is not type/subtype: %w", probe.MediaType, errdefs.ErrInvalidArgument)
		}
		return probe.MediaType, nil
	case probe.SchemaVersion != 2:
		return "", fmt.Errorf("manifest schema version %d: %w", probe.SchemaVersion, errdefs.ErrNotImplemented)
	case probe.Manifests != nil:
		return ocispec.MediaTypeImageIndex, nil
	case probe.Config != nil && probe.Layers != nil:
		return ocispec.MediaTypeImageManifest, nil
	}
	return "", fmt.Errorf("no media type and no manifest fields: %w", errdefs.ErrInvalidArgument)
}

// validMediaType accepts a bare type/subtype, as manifests carry them: the
// mirror sends it to containerd as the Content-Type.
func validMediaType(mt string) bool {
	base, params, err := mime.ParseMediaType(mt)
	return err == nil && len(params) == 0 && base == strings.ToLower(mt) && strings.Count(base, "/") == 1
}

func asDigest(ref string) (digest.Digest, bool) {
	d, err := digest.Parse(ref)
	if err != nil {
		// A reference with a colon is a digest attempt, not a tag.
		for _, c := range ref {
			if c == ':' {
				return digest.Digest(ref), true
			}
		}
		return "", false
	}
	return d, true
}

// validDigest accepts only well-formed sha256 digests: the algorithm every
// registry and containerd use, and the one CIDs are made from.
func validDigest(d digest.Digest) error {
	if err := d.Validate(); err != nil {
		return fmt.Errorf("digest %q: %w: %w", d, err, errdefs.ErrInvalidArgument)
	}
	if d.Algorithm() != digest.SHA256 {
		return fmt.Errorf("digest %q: algorithm %s not supported: %w", d, d.Algorithm(), errdefs.ErrNotImplemented)
	}
	return nil
}
