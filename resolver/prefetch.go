package resolver

import (
	"context"
	"encoding/json"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoal-dev/shoal/p2p/swarm"
)

// Docker's schema 2 manifest, which has the same config and layers fields as
// OCI's.
const mediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"

// Prefetch starts downloading, in the background, the config and layers of
// m when it is an image manifest: every blob the node does not hold yet and
// no download is fetching, up to PrefetchBlobs of them. containerd fetches
// three blobs at a time; prefetching lets the cluster start on every layer
// at once (each one's designated fetcher asks the registry for it), so the
// last layers do not wait behind the first. Indexes and unknown media types
// are left alone: containerd picks a platform from an index, and that
// platform's manifest comes next. The recorder hears of every manifest
// fetched: an image manifest starts a pull's record.
func (r *Resolver) Prefetch(ctx context.Context, req ManifestRequest, m Manifest) int {
	r.rec.Fetched(req, m)
	if r.cfg.PrefetchBlobs < 0 || (m.MediaType != ocispec.MediaTypeImageManifest && m.MediaType != mediaTypeDockerManifest) {
		return 0
	}
	var im ocispec.Manifest
	if err := json.Unmarshal(m.Body, &im); err != nil {
		r.cfg.Logger.Debug("manifest not prefetched: unreadable", "digest", m.Digest, "err", err)
		return 0
	}
	blobs := append([]ocispec.Descriptor{im.Config}, im.Layers...)
	r.noteGroup(blobs)
	started := 0
	for _, d := range blobs {
		if started >= r.cfg.PrefetchBlobs {
			break
		}
		if validDigest(d.Digest) != nil || d.Size <= 0 || len(d.URLs) > 0 {
			// Foreign layers live elsewhere; containerd fetches them itself.
			continue
		}
		if r.prefetch(ctx, BlobRequest{Registry: req.Registry, Repo: req.Repo, Digest: d.Digest, Size: d.Size}) {
			started++
		}
	}
	if started > 0 {
		r.m.prefetched.Add(float64(started))
		r.cfg.Logger.Debug("prefetching image blobs", "manifest", m.Digest, "registry", req.Registry, "repo", req.Repo, "blobs", started)
	}
	return started
}

// prefetch starts req's download unless the node holds the blob or it is
// already being fetched, and reports whether it started one.
func (r *Resolver) prefetch(ctx context.Context, req BlobRequest) bool {
	if r.has(ctx, req.Digest) {
		return false
	}
	f, started := r.join(req)
	if !started {
		return false
	}
	r.start(req, f)
	return true
}

// has reports whether containerd or the store holds dgst.
func (r *Resolver) has(ctx context.Context, dgst digest.Digest) bool {
	b, err := r.openLocal(ctx, dgst)
	if err != nil {
		return false
	}
	b.Close()
	return true
}

// noteGroup records the blobs of one image manifest, the largest first
// (see swarm.GroupOrder), and the sizes it gives them (see Designator and
// knownSize). Foreign layers, which live elsewhere, get no size: containerd
// fetches them itself.
func (r *Resolver) noteGroup(blobs []ocispec.Descriptor) {
	group := make([]digest.Digest, 0, len(blobs))
	sizes := make(map[digest.Digest]int64, len(blobs))
	for _, d := range blobs {
		if validDigest(d.Digest) == nil {
			group = append(group, d.Digest)
			if len(d.URLs) == 0 {
				sizes[d.Digest] = max(sizes[d.Digest], d.Size)
			}
		}
	}
	group = swarm.GroupOrder(group, func(d digest.Digest) int64 { return sizes[d] })
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.groups) > 4096 {
		clear(r.groups)
		clear(r.sizes)
	}
	for _, d := range group {
		r.groups[d] = group
	}
	for _, d := range blobs {
		if d.Size > 0 && len(d.URLs) == 0 && validDigest(d.Digest) == nil {
			r.sizes[d.Digest] = d.Size
		}
	}
}
