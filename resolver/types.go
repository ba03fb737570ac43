package resolver

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoal-dev/shoal/store"
)

// MaxManifestBytes is the largest manifest shoal handles; containerd refuses
// larger ones, so there is no point fetching them.
const MaxManifestBytes = 4 << 20

// ErrDigestMismatch reports a download whose bytes did not match their
// digest; the sources that sent them are avoided, so asking again goes
// elsewhere.
var ErrDigestMismatch = store.ErrDigestMismatch

// ErrManifestTooLarge reports a manifest above MaxManifestBytes.
var ErrManifestTooLarge = errors.New("manifest exceeds 4 MiB")

// Source names where bytes came from, for logs and metrics.
type Source string

// The sources, in the order the resolver tries them.
const (
	SourceContainerd Source = "containerd"
	SourceStore      Source = "store"
	SourceInFlight   Source = "inflight"
	SourcePeer       Source = "peer"
	SourceUpstream   Source = "upstream"
)

// ManifestRequest asks for a manifest of Repo on Registry by tag or digest.
type ManifestRequest struct {
	Registry  string // host[:port] of the upstream registry, e.g. docker.io
	Repo      string // repository path, e.g. library/alpine
	Reference string // a tag or a digest
}

// BlobRequest asks for a blob by digest. Registry and Repo say where an
// upstream fetch would go.
type BlobRequest struct {
	Registry string
	Repo     string
	Digest   digest.Digest
	// Size is the blob's size when known (from the manifest that names
	// it), else 0. A download of known size is published at once.
	Size int64
	// ForPeer marks a fetch this node makes for the cluster at a peer's
	// request: it goes to the holders and the registry, never back to a
	// designated peer.
	ForPeer bool
}

// Manifest is a verified manifest body with its exact media type.
type Manifest struct {
	MediaType string
	Digest    digest.Digest
	Body      []byte
	Source    Source
}

// Blob is a blob ready to be streamed from any offset. Readers of a blob that
// is still arriving block until the bytes are there. Close releases it.
type Blob struct {
	Digest digest.Digest
	Size   int64
	Source Source

	reader func(ctx context.Context, off int64) (io.ReadCloser, error)
	ready  func(ctx context.Context) error
	close  func() error
}

// Ready blocks until the blob's first bytes can be passed on: at once for a
// blob the node holds, when the first trusted bytes arrived for a download
// from the registry, and when the whole blob verified for a download from
// peers. An error means the download failed before anything could be sent,
// so the caller can still answer with an error status rather than a body
// it cannot finish.
func (b *Blob) Ready(ctx context.Context) error {
	if b.ready == nil {
		return nil
	}
	return b.ready(ctx)
}

// NewBlob makes a blob from a function that opens a reader at an offset and
// an optional close function.
func NewBlob(dgst digest.Digest, size int64, src Source, reader func(ctx context.Context, off int64) (io.ReadCloser, error), closeFn func() error) *Blob {
	return &Blob{Digest: dgst, Size: size, Source: src, reader: reader, close: closeFn}
}

// WithReady sets the check Ready makes, for Blobs made with NewBlob, and
// returns b.
func (b *Blob) WithReady(ready func(ctx context.Context) error) *Blob {
	b.ready = ready
	return b
}

// Reader streams the blob from off to its end.
func (b *Blob) Reader(ctx context.Context, off int64) (io.ReadCloser, error) {
	return b.reader(ctx, off)
}

// Close releases what the blob holds open.
func (b *Blob) Close() error {
	if b.close == nil {
		return nil
	}
	return b.close()
}

// Local is content the node already holds (containerd's content store).
type Local interface {
	Open(ctx context.Context, dgst digest.Digest) (store.Blob, error)
}

// ImageLookup resolves an image name, as containerd names it
// (registry/repo:tag), to the descriptor the node holds.
type ImageLookup interface {
	ResolveImage(ctx context.Context, name string) (ocispec.Descriptor, error)
}

// Router finds the peers that hold a blob and streams it from them. Peers
// are named by opaque strings the router understands.
type Router interface {
	// Providers lists live peers that hold dgst, best first; none is not an error.
	Providers(ctx context.Context, dgst digest.Digest) ([]string, error)
	// Fetch streams dgst from peer p starting at off, and says the blob's
	// size. A peer out of upload slots fails with errdefs.ErrResourceExhausted.
	Fetch(ctx context.Context, p string, dgst digest.Digest, off int64) (body io.ReadCloser, size int64, err error)
	// Avoid marks a peer that sent bytes which failed verification.
	Avoid(p string, why error)
	// Provide announces that this node now holds dgst.
	Provide(ctx context.Context, dgst digest.Digest) error
}

// Silencer is a Router that can leave out, for every download, a peer
// whose stream went silent mid-blob, until the peer answers again.
type Silencer interface {
	Silent(p string)
	// Silenced says whether p is left out now, having gone silent.
	Silenced(p string) bool
	// Answers says whether p answers a ping before ctx ends.
	Answers(ctx context.Context, p string) bool
}

// SilentHearer is a Router that hears its members' word that a peer went
// silent mid-blob.
type SilentHearer interface {
	// HeardSilent says when a member last said p went silent, if one did
	// while this node runs.
	HeardSilent(p string) (time.Time, bool)
}

// LinkJudge is a Router that can tell this node's own slow link from a
// slow peer (see swarm.OwnLinkBudget, swarm.OwnLinkQueue).
type LinkJudge interface {
	// OwnLinkSlow says whether, p having kept this node waiting for
	// wait, none of the node's other peers answers a ping within
	// swarm.OwnLinkBudget either, or the first to answer waited in a
	// queue (swarm.OwnLinkQueued); false when there is no other peer to
	// ask.
	OwnLinkSlow(p string, wait time.Duration) bool
}

// PeerLinkJudge is a Router that can tell a peer whose own link holds its
// bytes up from one slowed by its own source (see swarm.PeerLinkQueued).
type PeerLinkJudge interface {
	// PeerLinkQueued says whether p's answer to a ping does not come
	// within swarm.OwnLinkBudget, or waits in a queue, while another
	// peer's comes at once.
	PeerLinkQueued(p string) bool
}

// Designator is a Router that also names, for each digest, the peers that
// should fetch it from the registry for the whole cluster (rendezvous
// hashing over the live members), so that a new image is pulled from the
// registry once however many nodes ask at the same time.
type Designator interface {
	// Designated lists the peers ranked above this node for dgst, best
	// first; self says whether this node ranks first. group lists the
	// blobs of the image dgst belongs to, the largest first (see
	// swarm.GroupOrder), when known (nil otherwise): the first copies of
	// an image's blobs go to different nodes. A download asks only these
	// peers to wait for bytes they have not received yet, so every node
	// must rank any two peers alike.
	Designated(dgst digest.Digest, group []digest.Digest) (peers []string, self bool)
	// FetchThrough streams dgst from peer p, which fetches it from the
	// registry and repository named when it does not hold it.
	FetchThrough(ctx context.Context, p string, dgst digest.Digest, off int64, registry, repo string) (io.ReadCloser, int64, error)
}

// Ranger is a Router that also streams parts of blobs, for downloads in
// pieces from several peers at once.
type Ranger interface {
	// FetchRange streams rg of dgst from peer p and says the blob's size
	// and how many bytes the peer held from its start without a hole when
	// it answered (the size when it holds it whole; 0 when it did not
	// say). Without rg.Wait, a peer still receiving the blob that does not
	// hold the byte at rg.Off fails at once with an error wrapping
	// errdefs.ErrOutOfRange, have still set. A peer that fetches the blob
	// from the registry for the cluster now says so (see PeerLeads).
	FetchRange(ctx context.Context, p string, dgst digest.Digest, rg PeerRange) (body io.ReadCloser, size, have int64, err error)
}

// PeerRange is part of a blob asked of a peer.
type PeerRange struct {
	Off    int64
	Length int64 // 0: to the end
	// Wait for bytes the peer has not received yet.
	Wait bool
	// Registry and Repo, when set, ask the peer to fetch the blob from
	// there for the cluster if it does not hold it (see Designator).
	Registry, Repo string
	// Leads tells such a peer that this node fetches another blob from
	// the registry for the cluster now, or waits for a designated peer's
	// answer that may leave it one (see swarm.WaitsForWant).
	Leads bool
}

// Upstream fetches from OCI registries.
type Upstream interface {
	// Manifest fetches a manifest by tag or digest; a digest reference is verified.
	Manifest(ctx context.Context, req ManifestRequest) (Manifest, error)
	// Blob opens a blob's body at offset off and says the blob's total size.
	Blob(ctx context.Context, req BlobRequest, off int64) (body io.ReadCloser, size int64, err error)
}

// Chained is an Upstream that asks each registry's hosts in turn (a
// hosts.toml chain), leaving a host it cannot reach for the next.
//
// Such an Upstream calls NextHost(ctx) each time it moves on, so that a
// caller bounding the registry's answer (StallTimeout) gives the next
// host the whole bound again: the time an unreachable host took is not
// the registry's silence.
type Chained interface {
	Upstream
	// FailoverTime is the most the hosts before the registry's last one
	// may take to fail, none of them reachable, before the last is asked.
	FailoverTime(registry string) time.Duration
}

type nextHostKey struct{}

// WithNextHost returns ctx carrying f, which NextHost(ctx) calls.
func WithNextHost(ctx context.Context, f func()) context.Context {
	return context.WithValue(ctx, nextHostKey{}, f)
}

// NextHost tells the caller that set f with WithNextHost, if any, that
// the request moves on to the next host of its registry's chain.
func NextHost(ctx context.Context) {
	if f, ok := ctx.Value(nextHostKey{}).(func()); ok {
		f()
	}
}
