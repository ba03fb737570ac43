package containerdplugin

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
)

// criImageLabel marks an image CRI manages, as CRI's own pulls mark theirs.
const criImageLabel = "io.cri-containerd.image"

// PullConfig says how PullThroughMirror reaches containerd and shoal.
type PullConfig struct {
	// Socket, Namespace and DialTimeout as in Config; zero means their
	// defaults (the namespace CRI uses, k8s.io).
	Socket      string
	Namespace   string
	DialTimeout time.Duration
	// Snapshotter the image is unpacked for; zero means containerd's
	// default (overlayfs, or the namespace's default snapshotter label).
	Snapshotter string
	// Mirror is the shoal mirror's host:port, reached over plain HTTP
	// (loopback). Required.
	Mirror string
	// Logger receives the pull's outcome; nil discards it.
	Logger *slog.Logger
}

// PullThroughMirror creates the image name (registry/repo:tag) in
// containerd as a pull by containerd's own client would, with every
// request going to the node's shoal mirror alone: containerd's content
// store receives the manifests, config and layers, the image record is
// created (labelled as CRI's pulls are, so the kubelet finds it present)
// and unpacked for the snapshotter. Meant for a node that holds the
// image in shoal already: then nothing leaves the node but the tag's
// resolution. The image must resolve to want, or the pull fails.
func PullThroughMirror(ctx context.Context, cfg PullConfig, name string, want digest.Digest) error {
	if cfg.Mirror == "" {
		return fmt.Errorf("pull %s: no mirror: %w", name, errdefs.ErrInvalidArgument)
	}
	base, err := Config{Socket: cfg.Socket, Namespace: cfg.Namespace, DialTimeout: cfg.DialTimeout}.withDefaults()
	if err != nil {
		return err
	}
	c, err := client.New(base.Socket, client.WithDefaultNamespace(base.Namespace), client.WithTimeout(base.DialTimeout))
	if err != nil {
		return fmt.Errorf("containerd at %s: %w", base.Socket, err)
	}
	defer c.Close()
	mirror := docker.RegistryHost{
		Client:       &http.Client{},
		Host:         cfg.Mirror,
		Scheme:       "http",
		Path:         "/v2",
		Capabilities: docker.HostCapabilityPull | docker.HostCapabilityResolve,
	}
	resolver := docker.NewResolver(docker.ResolverOptions{Hosts: func(string) ([]docker.RegistryHost, error) {
		return []docker.RegistryHost{mirror}, nil
	}})
	start := time.Now()
	img, err := c.Pull(ctx, name, client.WithResolver(resolver), client.WithPullUnpack,
		client.WithPullSnapshotter(cfg.Snapshotter), client.WithPullLabel(criImageLabel, "managed"))
	if err != nil {
		return fmt.Errorf("containerd pull of %s through shoal: %w", name, err)
	}
	if got := img.Target().Digest; got != want {
		return fmt.Errorf("containerd pull of %s: the tag moved to %s, preheated %s: %w", name, got, want, errdefs.ErrFailedPrecondition)
	}
	if cfg.Logger != nil {
		cfg.Logger.Info("image created in containerd", "image", name, "digest", want, "namespace", base.Namespace, "snapshotter", cfg.Snapshotter, "took", time.Since(start).Round(time.Millisecond))
	}
	return nil
}
