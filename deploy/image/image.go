// Package image builds shoal's container image: an OCI image index with one
// image per platform, each a single layer holding a static shoal binary at
// /usr/local/bin/shoal, run as the entrypoint. The chart runs `shoal daemon`
// and `shoal configure` from it; the image holds nothing else, so TLS roots
// come from the binary itself (it carries a fallback set for hosts without
// any).
//
// A build is reproducible: every timestamp in the layer and the configs is
// the commit's time, so two builds of one commit with one Go toolchain give
// the same index digest.
package image

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// BinaryPath is where the image holds shoal; its directory is on PATH.
const BinaryPath = "/usr/local/bin/shoal"

// Repository is the image repository a release of shoal pushes to; the Helm
// chart's default image.
const Repository = "ghcr.io/shoal-dev/shoal"

// Source is the repository the image is built from, for its annotations.
const Source = "https://github.com/shoal-dev/shoal"

// Platforms are the platforms an image index holds by default.
var Platforms = []v1.Platform{
	{OS: "linux", Architecture: "amd64"},
	{OS: "linux", Architecture: "arm64"},
}

// OCI annotation keys the index and every image carry.
const (
	AnnotationSource   = "org.opencontainers.image.source"
	AnnotationRevision = "org.opencontainers.image.revision"
	AnnotationVersion  = "org.opencontainers.image.version"
	AnnotationCreated  = "org.opencontainers.image.created"
)

// Meta describes what an image is built from.
type Meta struct {
	// Version is shoal's version (what `shoal version` prints), e.g. the
	// output of `git describe --tags --always --dirty`.
	Version string
	// Revision is the commit the binaries are built from.
	Revision string
	// Created is the commit's time; every timestamp in the image is this.
	Created time.Time
}

// Tag is the image tag for a version: the version without a leading "v",
// as the chart's appVersion is written.
func (m Meta) Tag() string { return strings.TrimPrefix(m.Version, "v") }

// annotations are the OCI annotations of the index and of each image.
func (m Meta) annotations() map[string]string {
	return map[string]string{
		AnnotationSource:   Source,
		AnnotationRevision: m.Revision,
		AnnotationVersion:  m.Version,
		AnnotationCreated:  m.Created.UTC().Format(time.RFC3339),
	}
}

func (m Meta) validate() error {
	switch {
	case m.Version == "":
		return fmt.Errorf("image: no version")
	case m.Revision == "":
		return fmt.Errorf("image: no revision")
	case m.Created.IsZero():
		return fmt.Errorf("image: no creation time")
	}
	return nil
}

// Index assembles the image index from one shoal binary per platform
// (binaries maps "os/arch" to the binary's path). Platforms appear in the
// order given.
func Index(m Meta, platforms []v1.Platform, binaries map[string]string) (v1.ImageIndex, error) {
	if err := m.validate(); err != nil {
		return nil, err
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range platforms {
		bin, ok := binaries[p.String()]
		if !ok {
			return nil, fmt.Errorf("image: no binary for %s", p)
		}
		img, err := platformImage(m, p, bin)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", p, err)
		}
		pl := p
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &pl},
		})
	}
	return mutate.Annotations(idx, m.annotations()).(v1.ImageIndex), nil
}

// platformImage is one platform's image: the binary's layer, a config that
// runs it, and the annotations.
func platformImage(m Meta, p v1.Platform, binary string) (v1.Image, error) {
	data, err := os.ReadFile(binary)
	if err != nil {
		return nil, err
	}
	layerTar, err := binaryLayer(data, m.Created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: m.Created},
			CreatedBy: "make image",
			Comment:   "shoal " + m.Version,
		},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Created = v1.Time{Time: m.Created}
	cf.Config = v1.Config{
		Entrypoint: []string{"shoal"},
		Env:        []string{"PATH=/usr/local/bin:/usr/bin:/bin"},
		Labels:     m.annotations(),
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, err
	}
	return mutate.Annotations(img, m.annotations()).(v1.Image), nil
}

// binaryLayer is the layer's tar: the directories down to the binary and
// the binary itself, owned by root, every time set to mtime.
func binaryLayer(binary []byte, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime = mtime.UTC().Truncate(time.Second)
	for _, dir := range []string{"usr/", "usr/local/", "usr/local/bin/"} {
		if err := tw.WriteHeader(&tar.Header{
			Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: mtime, Format: tar.FormatPAX,
		}); err != nil {
			return nil, err
		}
	}
	if err := tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg, Name: strings.TrimPrefix(BinaryPath, "/"), Mode: 0o755,
		Size: int64(len(binary)), ModTime: mtime, Format: tar.FormatPAX,
	}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(binary); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// PlatformsOf lists the platforms an index holds, sorted.
func PlatformsOf(idx v1.ImageIndex) ([]string, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, d := range im.Manifests {
		if d.Platform != nil {
			out = append(out, d.Platform.String())
		}
	}
	sort.Strings(out)
	return out, nil
}
