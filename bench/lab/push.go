package lab

import (
	"archive/tar"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"runtime"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
)

// Image describes an image PushImage wrote.
type Image struct {
	Ref          string        // registry/repo:tag, what a client pulls
	Repo, Tag    string        // repo as in the URL path
	Digest       digest.Digest // manifest digest
	MediaType    string        // manifest media type
	ManifestSize int64
	Config       digest.Digest
	ConfigSize   int64
	Layers       []digest.Digest
	LayerSizes   []int64
	// Size is what a full pull downloads: manifest, config and layers.
	Size int64
}

// DigestRef is the image's by-digest reference, registry/repo@sha256:….
func (im Image) DigestRef(registry string) string {
	return registry + "/" + im.Repo + "@" + im.Digest.String()
}

// Blobs are the config and the layers, the blobs a pull GETs.
func (im Image) Blobs() []digest.Digest {
	return append([]digest.Digest{im.Config}, im.Layers...)
}

// PushOption changes how PushImage talks to the registry.
type PushOption func(*pushOptions)

type pushOptions struct {
	transport http.RoundTripper
	log       *slog.Logger
}

// WithTransport sends the push through t, e.g. TransportIn(netns) for a
// registry that listens inside a network namespace.
func WithTransport(t http.RoundTripper) PushOption {
	return func(o *pushOptions) { o.transport = t }
}

// WithLogger reports the push to l.
func WithLogger(l *slog.Logger) PushOption {
	return func(o *pushOptions) { o.log = l }
}

// PushImage pushes a new linux image of `layers` layers to the registry at
// registryAddr over plain HTTP. Each layer is an uncompressed tar holding one
// file of random bytes, so its size on the wire is its size on disk and no
// compressor flatters a bandwidth measurement; a layer is exactly layerSize
// bytes when layerSize is a multiple of 512 and at least 2048. Layers are
// generated as they are read, twice (once to digest, once to upload), so
// memory stays flat whatever their size. Every call makes new digests.
func PushImage(ctx context.Context, registryAddr, repo, tag string, layers int, layerSize int64, opts ...PushOption) (Image, error) {
	var o pushOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.transport == nil {
		// A transport of its own, so no idle connection outlives the push.
		t := http.DefaultTransport.(*http.Transport).Clone()
		defer t.CloseIdleConnections()
		o.transport = t
	}
	log := logger(o.log).With("component", "push")
	if layers < 1 || layerSize < 2048 {
		return Image{}, fmt.Errorf("push: need at least one layer of at least 2048 bytes, got %d of %d", layers, layerSize)
	}
	ref, err := name.NewTag(registryAddr+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		return Image{}, err
	}
	adds := make([]mutate.Addendum, 0, layers)
	for i := range layers {
		l, err := newRandomLayer(layerSize)
		if err != nil {
			return Image{}, err
		}
		adds = append(adds, mutate.Addendum{Layer: l, History: v1.History{CreatedBy: fmt.Sprintf("shoal lab layer %d", i)}})
	}
	img, err := mutate.Append(empty.Image, adds...)
	if err != nil {
		return Image{}, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return Image{}, err
	}
	cf = cf.DeepCopy()
	// containerd matches a single-manifest image's config against its own
	// platform; without these fields a pull finds no matching manifest.
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return Image{}, err
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)

	if err := remote.Write(ref, img, remote.WithContext(ctx), remote.WithTransport(o.transport)); err != nil {
		return Image{}, fmt.Errorf("push %s: %w", ref, err)
	}
	im, err := describe(img)
	if err != nil {
		return Image{}, err
	}
	im.Ref, im.Repo, im.Tag = ref.String(), repo, tag
	log.Info("pushed image", "ref", im.Ref, "digest", im.Digest, "bytes", im.Size, "layers", layers)
	return im, nil
}

func describe(img v1.Image) (Image, error) {
	var im Image
	m, err := img.Manifest()
	if err != nil {
		return im, err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return im, err
	}
	d, err := img.Digest()
	if err != nil {
		return im, err
	}
	im.Digest = digest.Digest(d.String())
	im.MediaType = string(m.MediaType)
	im.ManifestSize = int64(len(raw))
	im.Config = digest.Digest(m.Config.Digest.String())
	im.ConfigSize = m.Config.Size
	im.Size = im.ManifestSize + im.ConfigSize
	for _, l := range m.Layers {
		im.Layers = append(im.Layers, digest.Digest(l.Digest.String()))
		im.LayerSizes = append(im.LayerSizes, l.Size)
		im.Size += l.Size
	}
	return im, nil
}

// randomLayer is an uncompressed tar with one file of seeded pseudo-random
// bytes, regenerated on every read. Its digest and its diff ID are the same.
type randomLayer struct {
	seed [32]byte
	size int64 // file content bytes
	hash v1.Hash
	tlen int64 // tar bytes
}

func newRandomLayer(layerSize int64) (*randomLayer, error) {
	l := &randomLayer{size: layerSize - 1536}
	if _, err := rand.Read(l.seed[:]); err != nil {
		return nil, err
	}
	h := sha256.New()
	n, err := io.Copy(h, l.open())
	if err != nil {
		return nil, err
	}
	l.tlen = n
	l.hash = v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
	return l, nil
}

// open streams the tar through a pipe as it is generated.
func (l *randomLayer) open() io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		err := tw.WriteHeader(&tar.Header{
			Name: fmt.Sprintf("random-%x", l.seed[:8]), Mode: 0o644, Size: l.size, Typeflag: tar.TypeReg,
		})
		if err == nil {
			_, err = io.CopyN(tw, mrand.NewChaCha8(l.seed), l.size)
		}
		pw.CloseWithError(errors.Join(err, tw.Close()))
	}()
	return pr
}

func (l *randomLayer) Digest() (v1.Hash, error)           { return l.hash, nil }
func (l *randomLayer) DiffID() (v1.Hash, error)           { return l.hash, nil }
func (l *randomLayer) Compressed() (io.ReadCloser, error) { return l.open(), nil }
func (l *randomLayer) Uncompressed() (io.ReadCloser, error) {
	return l.open(), nil
}
func (l *randomLayer) Size() (int64, error) { return l.tlen, nil }
func (l *randomLayer) MediaType() (types.MediaType, error) {
	return types.OCIUncompressedLayer, nil
}
