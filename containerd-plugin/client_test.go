package containerdplugin_test

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	containerdplugin "github.com/shoal-dev/shoal/containerd-plugin"
)

const missingSocketHint = "no such file; is containerd running? set --containerd-sock"

func TestNewMissingSocket(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(t.TempDir(), "containerd.sock")
	_, err := containerdplugin.New(t.Context(), containerdplugin.Config{Socket: sock})
	if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), sock+": "+missingSocketHint) {
		t.Errorf("New = %v, want Unavailable saying %q", err, missingSocketHint)
	}
}

// A lazy client runs without containerd, failing fast on every call.
func TestNewLazyWithoutContainerd(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(t.TempDir(), "containerd.sock")
	c, err := containerdplugin.NewLazy(containerdplugin.Config{Socket: sock})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dgst := digest.FromString("x")
	errs := map[string]error{
		"Ping": c.Ping(t.Context()),
		"Walk": c.Walk(t.Context(), func(digest.Digest, int64) error { return nil }),
	}
	_, errs["Open"] = c.Open(t.Context(), dgst)
	_, errs["Stat"] = c.Stat(t.Context(), dgst)
	_, errs["ResolveImage"] = c.ResolveImage(t.Context(), "docker.io/library/nginx:latest")
	_, _, errs["Version"] = c.Version(t.Context())
	for name, err := range errs {
		if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), missingSocketHint) {
			t.Errorf("%s = %v, want Unavailable saying %q", name, err, missingSocketHint)
		}
	}
}

// A socket nobody serves must not hold New past its dial timeout.
func TestNewDeadSocket(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		listen func(t *testing.T, sock string)
	}{
		{"stale socket file", func(t *testing.T, sock string) {
			l, err := net.Listen("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			l.(*net.UnixListener).SetUnlinkOnClose(false)
			_ = l.Close()
		}},
		{"listener that never accepts", func(t *testing.T, sock string) {
			l, err := net.Listen("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = l.Close() })
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sock := filepath.Join(t.TempDir(), "c.sock")
			tc.listen(t, sock)
			// The test's own deadline guards against a hang; the client's
			// timeout must end it first.
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			_, err := containerdplugin.New(ctx, containerdplugin.Config{Socket: sock, DialTimeout: 300 * time.Millisecond})
			if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "did not answer") {
				t.Errorf("New = %v, want Unavailable saying it did not answer", err)
			}
		})
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	if _, err := containerdplugin.NewLazy(containerdplugin.Config{DialTimeout: -1}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("negative timeout: %v", err)
	}
	_, err := containerdplugin.New(t.Context(), containerdplugin.Config{
		Socket:     filepath.Join(t.TempDir(), "c.sock"),
		ContentDir: filepath.Join(t.TempDir(), "absent"),
	})
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "content dir") {
		t.Errorf("missing content dir: %v", err)
	}
	c, err := containerdplugin.NewLazy(containerdplugin.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Socket() != containerdplugin.DefaultSocket || c.Namespace() != containerdplugin.DefaultNamespace {
		t.Errorf("defaults: %s %s", c.Socket(), c.Namespace())
	}
}
