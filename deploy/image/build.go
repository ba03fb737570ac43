package image

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// GitMeta reads the version, revision and commit time of the checkout at
// dir. The version is `git describe --tags --always --dirty`, as `make
// build` stamps it.
func GitMeta(ctx context.Context, dir string) (Meta, error) {
	git := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = dir
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("git %s: %w", strings.Join(args, " "), err)
		}
		return strings.TrimSpace(string(out)), nil
	}
	var m Meta
	var err error
	if m.Version, err = git("describe", "--tags", "--always", "--dirty"); err != nil {
		return Meta{}, err
	}
	if m.Revision, err = git("rev-parse", "HEAD"); err != nil {
		return Meta{}, err
	}
	ct, err := git("log", "-1", "--format=%ct")
	if err != nil {
		return Meta{}, err
	}
	sec, err := strconv.ParseInt(ct, 10, 64)
	if err != nil {
		return Meta{}, fmt.Errorf("git commit time %q: %w", ct, err)
	}
	m.Created = time.Unix(sec, 0).UTC()
	return m, nil
}

// BuildBinaries compiles ./cmd/shoal of the module at dir once per platform
// into out, static (CGO_ENABLED=0), with -trimpath and the version stamped,
// and returns the paths keyed by "os/arch".
func BuildBinaries(ctx context.Context, dir, out string, m Meta, platforms []v1.Platform) (map[string]string, error) {
	bins := make(map[string]string, len(platforms))
	for _, p := range platforms {
		path, err := filepath.Abs(filepath.Join(out, "shoal-"+p.OS+"-"+p.Architecture))
		if err != nil {
			return nil, err
		}
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath",
			"-ldflags", "-s -w -X main.version="+m.Version, "-o", path, "./cmd/shoal")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Architecture)
		if p.Variant != "" && p.Architecture == "arm" {
			cmd.Env = append(cmd.Env, "GOARM="+strings.TrimPrefix(p.Variant, "v"))
		}
		if msg, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build for %s: %w\n%s", p, err, msg)
		}
		bins[p.String()] = path
	}
	return bins, nil
}

// WriteArchive writes idx as an OCI image layout packed in a tar file at
// path, named ref, which `ctr images import` loads. The layout directory
// is left beside it (path without ".tar").
func WriteArchive(idx v1.ImageIndex, ref, path string) error {
	dir := strings.TrimSuffix(path, ".tar")
	if dir == path {
		return fmt.Errorf("image archive %s: the name must end in .tar", path)
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	tagged, err := name.NewTag(ref)
	if err != nil {
		return fmt.Errorf("image reference %q: %w", ref, err)
	}
	if err := lp.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		"io.containerd.image.name":          tagged.Name(),
		"org.opencontainers.image.ref.name": tagged.TagStr(),
	})); err != nil {
		return err
	}
	return tarDir(dir, path)
}

// tarDir packs the files under dir into a tar at path, in name order.
func tarDir(dir, path string) error {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		return err
	}
	sort.Strings(files)
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	for _, p := range files {
		if err := addFile(tw, dir, p); err != nil {
			f.Close()
			return err
		}
	}
	if err := tw.Close(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func addFile(tw *tar.Writer, dir, p string) error {
	rel, err := filepath.Rel(dir, p)
	if err != nil {
		return err
	}
	src, err := os.Open(p)
	if err != nil {
		return err
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg, Name: filepath.ToSlash(rel), Mode: 0o644, Size: st.Size(),
	}); err != nil {
		return err
	}
	_, err = io.Copy(tw, src)
	return err
}

// Push writes idx to the registry as ref, with the credentials of the
// user's Docker config (as `docker login` or `crane auth login` left
// them). insecure allows plain HTTP, for a lab registry.
func Push(ctx context.Context, idx v1.ImageIndex, ref string, insecure bool) (name.Reference, error) {
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	r, err := name.ParseReference(ref, opts...)
	if err != nil {
		return nil, fmt.Errorf("image reference %q: %w", ref, err)
	}
	if err := remote.WriteIndex(r, idx, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
		return nil, fmt.Errorf("push %s: %w", r, err)
	}
	return r, nil
}

// ReadLayout reads back the OCI layout WriteArchive left at dir: the one
// index it holds and that index's descriptor (with its name annotations).
func ReadLayout(dir string) (v1.ImageIndex, v1.Descriptor, error) {
	lp, err := layout.FromPath(dir)
	if err != nil {
		return nil, v1.Descriptor{}, err
	}
	top, err := lp.ImageIndex()
	if err != nil {
		return nil, v1.Descriptor{}, err
	}
	im, err := top.IndexManifest()
	if err != nil {
		return nil, v1.Descriptor{}, err
	}
	if len(im.Manifests) != 1 {
		return nil, v1.Descriptor{}, fmt.Errorf("layout %s lists %d manifests, want one index", dir, len(im.Manifests))
	}
	idx, err := top.ImageIndex(im.Manifests[0].Digest)
	if err != nil {
		return nil, v1.Descriptor{}, err
	}
	return idx, im.Manifests[0], nil
}
