package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/bench/lab"
)

// TestBadFlags: every bad flag, environment value or file gets a one-line
// error naming what is wrong, and a non-zero exit.
func TestBadFlags(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs the shoal binary")
	}
	empty := t.TempDir()
	badAuth := filepath.Join(empty, "config.json")
	if err := os.WriteFile(badAuth, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	badHosts := filepath.Join(empty, "hosts")
	if err := os.MkdirAll(filepath.Join(badHosts, "_default"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(badHosts, "_default", "hosts.toml"), []byte("server = [unterminated"), 0o644); err != nil {
		t.Fatal(err)
	}
	daemon := []string{"daemon", "--data-dir", t.TempDir(), "--containerd-sock", "", "--metrics-addr", "", "--status-addr", "", "--p2p=false", "--mirror-addr", "127.0.0.1:0"}
	mesh := []string{"daemon", "--data-dir", t.TempDir(), "--containerd-sock", "", "--metrics-addr", "", "--status-addr", "", "--mirror-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0", "--p2p-addr", "127.0.0.1:0"}
	open := slices.Clip(append(slices.Clone(mesh), "--insecure-open-mesh"))
	looseKey := filepath.Join(t.TempDir(), "cluster.key")
	if out, err := runShoal(t.Context(), "keygen", "--out", looseKey); err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	if err := os.Chmod(looseKey, 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		env  []string
		want string // a fragment of the one-line message
	}{
		{"unknown flag", append(daemon, "--no-such-flag"), nil, "unknown flag: --no-such-flag"},
		{"size without unit sense", append(daemon, "--store-max-bytes", "lots"), nil, "--store-max-bytes \"lots\""},
		{"negative size", append(daemon, "--store-max-bytes", "-5GiB"), nil, "--store-max-bytes"},
		{"log level", append(daemon, "--log-level", "loud"), nil, "--log-level \"loud\""},
		{"log format", append(daemon, "--log-format", "xml"), nil, "--log-format \"xml\""},
		{"mirror addr", append(daemon, "--mirror-addr", "not-an-address"), nil, "--mirror-addr"},
		{"mirror addr from env", daemon[:len(daemon)-2], []string{"SHOAL_MIRROR_ADDR=nowhere:99999"}, "--mirror-addr"},
		{"bad duration in env", daemon, []string{"SHOAL_MISS_TIMEOUT=soon"}, "SHOAL_MISS_TIMEOUT=\"soon\""},
		{"default registry", append(daemon, "--default-registry", "bad host"), nil, "invalid registry host \"bad host\""},
		{"auth file missing", append(daemon, "--registry-auth-file", filepath.Join(empty, "nope.json")), nil, "registry auth file"},
		{"auth file garbage", append(daemon, "--registry-auth-file", badAuth), nil, "registry auth file"},
		{"mirror max requests", append(daemon, "--mirror-max-requests", "0"), nil, "--mirror-max-requests 0"},
		{"negative timeout", append(daemon, "--miss-timeout", "-1s"), nil, "must not be negative"},
		{"negative prefetch", append(daemon, "--prefetch", "-3"), nil, "--prefetch -3"},
		{"no cluster key", mesh, nil, "shoal keygen"},
		{"no cluster key, from env", mesh, []string{"SHOAL_P2P=true"}, "--insecure-open-mesh"},
		{"cluster key missing", append(mesh, "--cluster-key-file", filepath.Join(empty, "nope.key")), nil, "--cluster-key-file"},
		{"cluster key garbage", append(mesh, "--cluster-key-file", badAuth), nil, "--cluster-key-file"},
		{"cluster key open to others", append(mesh, "--cluster-key-file", looseKey), nil, "chmod 600 " + looseKey},
		{"open mesh and a key", append(open, "--cluster-key-file", looseKey), nil, "choose one"},
		{"mirror allow", append(daemon, "--mirror-allow", "everyone"), nil, "--mirror-allow \"everyone\""},
		{"status addr", append(daemon, "--status-addr", "nowhere"), nil, "--status-addr"},
		{"p2p protection", append(open, "--p2p-protection", "magic"), nil, "--p2p-protection \"magic\""},
		{"negative upload cap", append(open, "--max-upload-mbit", "-5"), nil, "--max-upload-mbit -5"},
		{"download cap from env", open, []string{"SHOAL_MAX_DOWNLOAD_MBIT=-1"}, "--max-download-mbit -1"},
		{"gossip addr", append(open, "--gossip-addr", "nowhere"), nil, "gossip"},
		{"data dir is a file", []string{"daemon", "--data-dir", badAuth, "--containerd-sock", "", "--metrics-addr", "", "--status-addr", "", "--p2p=false", "--mirror-addr", "127.0.0.1:0"}, nil, "store"},
		{"configure: bad mirror", []string{"configure", "containerd", "--hosts-dir", t.TempDir(), "--mirror", "ftp://x", "--containerd-config", ""}, nil, "mirror"},
		{"configure: bad registry", []string{"configure", "containerd", "--hosts-dir", t.TempDir(), "--registry", "a b", "--containerd-config", ""}, nil, "a b"},
		{"configure: unparseable hosts.toml", []string{"configure", "containerd", "--hosts-dir", badHosts, "--containerd-config", ""}, nil, "hosts.toml"},
		{"version takes no args", []string{"version", "extra"}, nil, "unknown command \"extra\""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.CommandContext(t.Context(), shoalBin, tc.args...)
			cmd.Env = append(os.Environ(), tc.env...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			if _, ok := err.(*exec.ExitError); !ok {
				t.Fatalf("exit: %v, want a non-zero exit; stderr:\n%s", err, stderr.String())
			}
			msg := strings.TrimRight(stderr.String(), "\n")
			// Daemon start-up logs may come first; the error is the last line.
			lines := strings.Split(msg, "\n")
			last := lines[len(lines)-1]
			if !strings.HasPrefix(last, "shoal: ") || !strings.Contains(last, tc.want) {
				t.Fatalf("last stderr line %q, want \"shoal: ...%s...\"", last, tc.want)
			}
		})
	}
}

// TestBadRequestsToDaemon: a real daemon without containerd answers bad
// requests with precise OCI errors and keeps serving good ones.
func TestBadRequestsToDaemon(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	ctx := t.Context()
	reg, err := lab.StartRegistry(ctx, lab.RegistryConfig{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	cleanup(t, reg.Close)
	im, err := lab.PushImage(ctx, reg.Addr(), "e2e/bad", "v1", 1, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "containerd.sock")
	s, err := lab.StartShoal(ctx, lab.ShoalConfig{Binary: shoalBin, Logger: testLogger(t), Args: []string{
		"--containerd-sock", missing, "--insecure-registry", reg.Addr(), "--miss-timeout", "2s",
		"--p2p=false",
	}})
	if err != nil {
		t.Fatal(err)
	}
	cleanup(t, s.Close)
	logText, _ := os.ReadFile(s.LogPath())
	if !bytes.Contains(logText, []byte("containerd unreachable")) || !bytes.Contains(logText, []byte(missing)) {
		t.Errorf("log does not say containerd is unreachable at %s:\n%s", missing, logText)
	}

	base := s.MirrorURL() + "/v2/"
	ns := "?ns=" + reg.Addr()
	layer := im.Layers[0].String()
	// A registry that accepts connections and never answers.
	hang := newHangingListener(t)
	cases := []struct {
		name, method, path string
		hdr                map[string]string
		status             int
		code               string
	}{
		{"bad name", "GET", "e2e/BAD/blobs/" + layer + ns, nil, 400, "NAME_INVALID"},
		{"bad digest", "GET", "e2e/bad/blobs/sha256:xyz" + ns, nil, 400, "DIGEST_INVALID"},
		{"bad algorithm", "GET", "e2e/bad/blobs/sha1:" + strings.Repeat("a", 40) + ns, nil, 400, "DIGEST_INVALID"},
		{"bad tag", "HEAD", "e2e/bad/manifests/.v1" + ns, nil, 404, ""},
		{"bad ns", "GET", "e2e/bad/manifests/v1?ns=a%20b", nil, 400, "NAME_INVALID"},
		{"bad range", "GET", "e2e/bad/blobs/" + layer + ns, map[string]string{"Range": "bytes=99999999-"}, 416, "RANGE_INVALID"},
		{"write", "PUT", "e2e/bad/manifests/v1" + ns, nil, 405, "UNSUPPORTED"},
		{"unknown blob", "GET", "e2e/bad/blobs/" + digest.FromString("absent").String() + ns, nil, 404, "BLOB_UNKNOWN"},
		{"unknown tag", "GET", "e2e/bad/manifests/v9" + ns, nil, 404, "MANIFEST_UNKNOWN"},
		{"unreachable registry", "GET", "e2e/bad/blobs/" + digest.FromString("elsewhere").String() + "?ns=127.0.0.1:1", nil, 404, "BLOB_UNKNOWN"},
		{"hanging registry", "GET", "e2e/bad/manifests/v1?ns=" + hang, nil, 404, "MANIFEST_UNKNOWN"},
	}
	client := &http.Client{Timeout: 20 * time.Second}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(ctx, tc.method, base+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.hdr {
				req.Header.Set(k, v)
			}
			start := time.Now()
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if tc.method != "HEAD" {
				var e struct {
					Errors []struct{ Code, Message string }
				}
				if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) != 1 || e.Errors[0].Code != tc.code || e.Errors[0].Message == "" {
					t.Fatalf("body %s, want one %s error with a message", body, tc.code)
				}
			}
			t.Logf("%s answered %d in %v", tc.name, resp.StatusCode, time.Since(start).Round(time.Millisecond))
		})
	}
	// Still serving: a pull-through of the real blob works and verifies.
	resp, err := client.Get(base + "e2e/bad/blobs/" + layer + ns)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := digest.FromReader(resp.Body)
	if err != nil || got != im.Layers[0] || resp.StatusCode != 200 {
		t.Fatalf("after bad input: %d, digest %s, %v", resp.StatusCode, got, err)
	}
	if !s.Running() {
		t.Fatal("daemon exited")
	}
}

// newHangingListener accepts connections and never answers; it returns its
// host:port.
func newHangingListener(t *testing.T) string {
	t.Helper()
	ln, err := netListen()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	return ln.Addr().String()
}

// TestDaemonWithNoFlags: `shoal daemon` with no flags, as an ordinary user
// on a machine without containerd, starts on its defaults and serves
// pull-through. It runs in a network namespace of its own so the default
// ports are free, as nobody with a fresh home. The test registry speaks
// plain HTTP, so it is named insecure through the environment, the one
// setting given.
func TestDaemonWithNoFlags(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	ctx := t.Context()
	net, err := lab.NewNetwork(ctx, netName(t, "noflags"), 1, lab.NetworkConfig{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	cleanup(t, net.Close)
	h := net.Hosts[0]
	reg, err := lab.StartRegistry(ctx, lab.RegistryConfig{Netns: h.Netns, Addr: "127.0.0.1:5000", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	cleanup(t, reg.Close)
	im, err := lab.PushImage(ctx, reg.Addr(), "e2e/laptop", "v1", 1, 1<<20, lab.WithTransport(lab.TransportIn(h.Netns)))
	if err != nil {
		t.Fatal(err)
	}
	// t.TempDir's parent is private to root; nobody needs a home it can reach.
	home, err := os.MkdirTemp("", "shoal-e2e-home-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	if err := os.Chown(home, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	cmd := h.Command(ctx, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", shoalBin, "daemon")
	cmd.Env = []string{"HOME=" + home, "PATH=/usr/bin:/bin", "SHOAL_INSECURE_REGISTRY=127.0.0.1:5000", "SHOAL_P2P=false"}
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		<-exited
		if t.Failed() {
			t.Logf("daemon log:\n%s", logs.String())
		}
	})
	client := &http.Client{Transport: lab.TransportIn(h.Netns), Timeout: 10 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.Get("http://127.0.0.1:7503/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		select {
		case <-exited:
			t.Fatalf("daemon exited: %s", logs.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon not ready on its default metrics port: %v", err)
		}
	}
	resp, err := client.Get("http://127.0.0.1:7500/v2/e2e/laptop/blobs/" + im.Layers[0].String() + "?ns=127.0.0.1:5000")
	if err != nil {
		t.Fatal(err)
	}
	got, err := digest.FromReader(resp.Body)
	resp.Body.Close()
	if err != nil || got != im.Layers[0] || resp.StatusCode != 200 {
		t.Fatalf("pull-through on defaults: %d, digest %s, %v", resp.StatusCode, got, err)
	}
	// The defaults: the store lives in the user's cache dir.
	if _, err := os.Stat(filepath.Join(home, ".cache", "shoal", "blobs", "sha256", im.Layers[0].Encoded())); err != nil {
		t.Errorf("blob not in the default data dir: %v", err)
	}
}

// TestDaemonHelpDocumentsDefaults: every daemon flag states its default.
func TestDaemonHelpDocumentsDefaults(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs the shoal binary")
	}
	out, err := exec.CommandContext(t.Context(), shoalBin, "daemon", "--help").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	_, flags, ok := strings.Cut(string(out), "\nFlags:\n")
	if !ok {
		t.Fatalf("no Flags section in:\n%s", out)
	}
	for _, line := range strings.Split(flags, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "--") || strings.HasPrefix(line, "--help") {
			continue
		}
		if !strings.Contains(line, "(default ") && !strings.Contains(line, "empty") && !strings.Contains(line, "(/var/lib/shoal as root)") {
			t.Errorf("flag without a stated default: %s", line)
		}
	}
}
