// Command mkimage builds shoal's OCI image index (linux/amd64 and
// linux/arm64) from the checkout it runs in, with no Docker daemon. `make
// image` runs it. Without -push it writes bin/shoal-image.tar, an OCI
// layout that `ctr images import` loads; with -push host/repo:tag it
// pushes the index there.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/shoal-dev/shoal/deploy/image"
)

func main() {
	out := flag.String("out", "bin", "directory for the binaries, the OCI layout and its tar")
	push := flag.String("push", "", "push the index to this reference (host/repo:tag) instead of writing a tar only")
	insecure := flag.Bool("insecure", false, "reach the -push registry over plain HTTP (a lab registry)")
	platforms := flag.String("platforms", "linux/amd64,linux/arm64", "comma-separated os/arch list")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *out, *push, *insecure, *platforms); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out, push string, insecure bool, platformList string) error {
	var platforms []v1.Platform
	for _, s := range strings.Split(platformList, ",") {
		p, err := v1.ParsePlatform(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("-platforms: %w", err)
		}
		platforms = append(platforms, *p)
	}
	m, err := image.GitMeta(ctx, ".")
	if err != nil {
		return err
	}
	binDir := filepath.Join(out, "image")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return err
	}
	bins, err := image.BuildBinaries(ctx, ".", binDir, m, platforms)
	if err != nil {
		return err
	}
	idx, err := image.Index(m, platforms, bins)
	if err != nil {
		return err
	}
	digest, err := idx.Digest()
	if err != nil {
		return err
	}
	ref := push
	if ref == "" {
		ref = image.Repository + ":" + m.Tag()
	}
	archive := filepath.Join(out, "shoal-image.tar")
	if err := image.WriteArchive(idx, ref, archive); err != nil {
		return err
	}
	fmt.Printf("shoal %s (%s): index %s for %s\n", m.Version, m.Revision, digest, platformList)
	fmt.Printf("wrote %s as %s; load it with: ctr images import %s\n", archive, ref, archive)
	if push == "" {
		return nil
	}
	r, err := image.Push(ctx, idx, push, insecure)
	if err != nil {
		return err
	}
	fmt.Printf("pushed %s@%s\n", r.Context(), digest)
	return nil
}
