package p2p_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/p2p/p2ptest"
)

func TestClusterKeyFile(t *testing.T) {
	t.Parallel()
	key, err := p2p.GenerateClusterKey()
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != p2p.ClusterKeySize {
		t.Fatalf("generated %d bytes", len(key))
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "key")
	if err := os.WriteFile(path, p2p.EncodeClusterKey(key), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := p2p.LoadClusterKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, key) {
		t.Errorf("loaded key differs from the generated one")
	}

	for _, tc := range []struct {
		name, text string
	}{
		{"short", "c2hvcnQ=\n"},
		{"not base64", strings.Repeat("!", 44)},
		{"empty", ""},
		{"huge", strings.Repeat("A", 8192)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			if err := os.WriteFile(p, []byte(tc.text), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := p2p.LoadClusterKey(p); !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("got %v, want ErrInvalidArgument", err)
			}
		})
	}
	if _, err := p2p.LoadClusterKey(filepath.Join(dir, "absent")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("absent file: %v", err)
	}
}

func TestNewRejects(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		edit func(*p2p.Config)
	}{
		{"short key", func(c *p2p.Config) { c.ClusterKey = []byte("short") }},
		{"empty key", func(c *p2p.Config) { c.ClusterKey = []byte{} }},
		{"bad protection", func(c *p2p.Config) { c.Protection = "magic" }},
		{"bad gossip addr", func(c *p2p.Config) { c.GossipAddr = "nowhere" }},
		{"named p2p host", func(c *p2p.Config) { c.P2PAddr = "localhost:0" }},
		{"bad advertise IP", func(c *p2p.Config) { c.AdvertiseIP = "example.com" }},
		{"negative uploads", func(c *p2p.Config) { c.MaxUploads = -1 }},
		{"negative upload rate", func(c *p2p.Config) { c.MaxUploadRate = -1 }},
		{"negative download rate", func(c *p2p.Config) { c.MaxDownloadRate = -1 }},
		{"negative timing", func(c *p2p.Config) { c.Timing.IdleTimeout = -1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := p2ptest.Config(t, "n")
			tc.edit(&cfg)
			if n, err := p2p.New(cfg, p2ptest.NewContent()); err == nil {
				_ = runStopped(n)
				t.Errorf("New accepted it")
			}
		})
	}
}

// runStopped runs n with a context already done: it must release all.
func runStopped(n *p2p.Node) error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return n.Run(ctx)
}

func TestIdentityPersists(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var ids []string
	for i := range 2 {
		cfg := p2ptest.Config(t, "n")
		cfg.DataDir = dir
		n, err := p2p.New(cfg, p2ptest.NewContent())
		if err != nil {
			t.Fatalf("start %d: %v", i, err)
		}
		ids = append(ids, n.ID().String())
		if err := runStopped(n); err != nil {
			t.Fatal(err)
		}
	}
	if ids[0] != ids[1] {
		t.Errorf("peer ID changed across restarts: %s then %s", ids[0], ids[1])
	}
	fi, err := os.Stat(filepath.Join(dir, "identity.key"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("identity key mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestCheckKeyFile(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode  os.FileMode
		loose bool
	}{
		{0o600, false}, {0o400, false}, {0o700, false},
		{0o640, true}, {0o644, true}, {0o604, true}, {0o660, true}, {0o666, true},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "key")
			if err := os.WriteFile(path, []byte("secret\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			err := p2p.CheckKeyFile(path)
			if got := errors.Is(err, p2p.ErrLooseKey); got != tc.loose {
				t.Fatalf("mode %s: %v, want loose %v", tc.mode, err, tc.loose)
			}
			if tc.loose && !strings.Contains(err.Error(), "chmod 600 "+path) {
				t.Fatalf("the error does not say how to fix it: %v", err)
			}
		})
	}
	if err := p2p.CheckKeyFile(filepath.Join(t.TempDir(), "none")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a missing key: %v", err)
	}
}

// TestLooseIdentityRefused: a node does not start on an identity key its
// group or others can read, unless told to.
func TestLooseIdentityRefused(t *testing.T) {
	t.Parallel()
	cfg := p2ptest.Config(t, "loose")
	n, err := p2p.New(cfg, p2ptest.NewContent())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_ = n.Run(ctx) // releases what New opened
	idPath := filepath.Join(cfg.DataDir, "identity.key")
	if err := os.Chmod(idPath, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := p2p.New(cfg, p2ptest.NewContent()); !errors.Is(err, p2p.ErrLooseKey) {
		t.Fatalf("New with a 0644 identity key: %v, want ErrLooseKey", err)
	}
	cfg.AllowLooseKeyPermissions = true
	n, err = p2p.New(cfg, p2ptest.NewContent())
	if err != nil {
		t.Fatalf("New with AllowLooseKeyPermissions: %v", err)
	}
	_ = n.Run(ctx)
}
