//go:build linux

package containerdplugin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"go/build"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	containerdplugin "github.com/shoal-dev/shoal/containerd-plugin"
	"github.com/shoal-dev/shoal/containerd-plugin/sourcetest"
)

// daemon is one containerd release under test, with the ctr of the same
// release (ctr 2.x imports through the daemon's transfer service, 1.x
// writes content from the ctr process itself).
type daemon struct {
	name       string
	containerd string
	ctr        string
	// configVersion is the config.toml schema the release reads natively.
	configVersion int
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// TestContainerd runs the Source conformance suite against real containerd
// 1.6 and 2.x daemons, each with its own root, state and socket.
// Override the binaries with SHOAL_CONTAINERD1/SHOAL_CTR1 and
// SHOAL_CONTAINERD2/SHOAL_CTR2; `go install
// github.com/containerd/containerd/v2/cmd/{containerd,ctr}@v2.4.2` builds 2.x.
func TestContainerd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real containerd daemons")
	}
	if os.Geteuid() != 0 {
		t.Fatal("containerd needs root: run the tests as root, or with -short for unit tests only")
	}
	t.Parallel()
	for _, d := range []daemon{
		{"1.6", envOr("SHOAL_CONTAINERD1", "/usr/bin/containerd"), envOr("SHOAL_CTR1", "/usr/bin/ctr"), 2},
		{"2.x", envOr("SHOAL_CONTAINERD2", filepath.Join(build.Default.GOPATH, "bin", "containerd")), envOr("SHOAL_CTR2", filepath.Join(build.Default.GOPATH, "bin", "ctr")), 3},
	} {
		t.Run(d.name, func(t *testing.T) {
			for _, bin := range []string{d.containerd, d.ctr} {
				if _, err := os.Stat(bin); err != nil {
					t.Fatalf("containerd %s not installed (make deps installs it): %v", d.name, err)
				}
			}
			t.Parallel()
			testDaemon(t, d)
		})
	}
}

func testDaemon(t *testing.T, d daemon) {
	f := sourcetest.NewFixture()
	cd := startContainerd(t, d)

	// A lazy client made before containerd answers connects once it does.
	lazy, err := containerdplugin.NewLazy(containerdplugin.Config{Socket: cd.sock})
	if err != nil {
		t.Fatal(err)
	}
	defer lazy.Close()
	cd.start(t)
	waitPing(t, lazy)

	api := newClient(t, containerdplugin.Config{Socket: cd.sock})
	dir := newClient(t, containerdplugin.Config{Socket: cd.sock, ContentDir: filepath.Join(cd.root, "io.containerd.content.v1.content")})
	version, revision, err := api.Version(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("containerd %s (%s), ctr %s", version, revision, d.ctr)

	// The loose blob through `ctr content ingest`, pinned so GC keeps it;
	// the image through `ctr images import` of an OCI archive.
	loose := f.Blobs[f.Loose.Digest]
	cd.ctr(t, loose, "content", "ingest", "--expected-size", strconv.Itoa(len(loose)), "--expected-digest", f.Loose.Digest.String(), "shoal-test-loose")
	cd.ctr(t, nil, "content", "label", f.Loose.Digest.String(), "containerd.io/gc.root=shoal-test")
	var archive bytes.Buffer
	if err := f.WriteOCIArchive(&archive); err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(cd.dir, "image.tar")
	if err := os.WriteFile(tarPath, archive.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	cd.ctr(t, nil, "images", "import", "--all-platforms", "--no-unpack", tarPath)
	t.Logf("ctr images ls:\n%s", cd.ctr(t, nil, "images", "ls"))

	t.Run("API", func(t *testing.T) { sourcetest.Run(t, api, f) })
	t.Run("ContentDir", func(t *testing.T) { sourcetest.Run(t, dir, f) })
	t.Run("Lazy", func(t *testing.T) { sourcetest.Run(t, lazy, f) })
	t.Run("Events", func(t *testing.T) { sourcetest.RunEvents(t, api, f, cd.actions()) })

	t.Run("OtherNamespace", func(t *testing.T) {
		other := newClient(t, containerdplugin.Config{Socket: cd.sock, Namespace: "default"})
		if _, err := other.Stat(t.Context(), f.Loose.Digest); !errdefs.IsNotFound(err) {
			t.Errorf("Stat in namespace default = %v, want NotFound", err)
		}
		if _, err := other.ResolveImage(t.Context(), f.ImageName); !errdefs.IsNotFound(err) {
			t.Errorf("ResolveImage in namespace default = %v, want NotFound", err)
		}
		err := other.Walk(t.Context(), func(dg digest.Digest, _ int64) error {
			if _, ok := f.Blobs[dg]; ok {
				return fmt.Errorf("namespace default lists %s", dg)
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	})

	t.Run("HostsToml", func(t *testing.T) { testHostsToml(t, cd, d) })

	// Deleting content and collecting garbage is what happens behind
	// shoal's back. `ctr content rm` drops the namespace's record at once,
	// but the file stays in the content dir until GC, which deleting a lease
	// with --sync runs. Then every Open misses; a blob file already open
	// stays readable; a blob open through the API fails its next read.
	t.Run("ContentRemoved", func(t *testing.T) {
		fileBlob, err := dir.Open(t.Context(), f.Loose.Digest)
		if err != nil {
			t.Fatal(err)
		}
		defer fileBlob.Close()
		apiBlob, err := api.Open(t.Context(), f.Loose.Digest)
		if err != nil {
			t.Fatal(err)
		}
		defer apiBlob.Close()
		cd.ctr(t, nil, "content", "rm", f.Loose.Digest.String())
		if _, err := api.Open(t.Context(), f.Loose.Digest); !errdefs.IsNotFound(err) {
			t.Errorf("API: Open after rm = %v, want NotFound", err)
		}
		_, err = dir.Stat(t.Context(), f.Loose.Digest)
		t.Logf("content dir after rm, before GC: Stat = %v", err)

		cd.ctr(t, nil, "leases", "create", "--id", "shoal-gc")
		cd.ctr(t, nil, "leases", "delete", "--sync", "shoal-gc")
		for name, c := range map[string]*containerdplugin.Client{"API": api, "ContentDir": dir} {
			if _, err := c.Open(t.Context(), f.Loose.Digest); !errdefs.IsNotFound(err) {
				t.Errorf("%s: Open after GC = %v, want NotFound", name, err)
			}
		}
		p := make([]byte, len(loose))
		if n, err := fileBlob.ReadAt(p, 0); err != nil || !bytes.Equal(p[:n], loose) {
			t.Errorf("file blob opened before GC: %d, %v", n, err)
		}
		if _, err := apiBlob.ReadAt(p, 0); !errdefs.IsNotFound(err) {
			t.Errorf("API blob opened before rm: %v, want NotFound", err)
		}
		// The image's blobs are referenced, so GC kept them.
		if _, err := dir.Stat(t.Context(), f.Layer.Digest); err != nil {
			t.Errorf("layer after GC: %v", err)
		}
	})

	t.Run("Stopped", func(t *testing.T) {
		subscribed := make(chan struct{})
		ended := make(chan error, 1)
		go func() {
			ended <- api.Subscribe(t.Context(), func() { close(subscribed) }, func(containerdplugin.Event) {})
		}()
		select {
		case <-subscribed:
		case err := <-ended:
			t.Fatalf("Subscribe: %v", err)
		}
		cd.stop(t)
		select {
		case err := <-ended:
			if !errdefs.IsUnavailable(err) {
				t.Errorf("Subscribe after containerd stopped = %v, want Unavailable", err)
			}
		case <-time.After(time.Minute):
			t.Error("Subscribe still running a minute after containerd stopped")
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		err := api.Ping(ctx)
		if !errdefs.IsUnavailable(err) {
			t.Errorf("Ping after stop = %v, want Unavailable", err)
		}
		t.Logf("Ping after stop: %v", err)
		if _, err := api.Stat(ctx, f.Layer.Digest); !errdefs.IsUnavailable(err) {
			t.Errorf("Stat after stop = %v, want Unavailable", err)
		}
	})
}

// actions drive the daemon with its release's ctr, for the events suite.
func (cd *containerdProc) actions() sourcetest.Actions {
	return sourcetest.Actions{
		TagImage:    func(t *testing.T, src, dst string) { cd.ctr(t, nil, "images", "tag", src, dst) },
		LabelImage:  func(t *testing.T, name string) { cd.ctr(t, nil, "images", "label", name, "io.shoal.test=events") },
		RemoveImage: func(t *testing.T, name string) { cd.ctr(t, nil, "images", "rm", name) },
		AddContent: func(t *testing.T, data []byte) {
			cd.ctr(t, data, "content", "ingest", "--expected-size", strconv.Itoa(len(data)),
				"--expected-digest", digest.FromBytes(data).String(), "shoal-test-events")
		},
		RemoveContent: func(t *testing.T, dgst digest.Digest) { cd.ctr(t, nil, "content", "rm", dgst.String()) },
	}
}

func newClient(t *testing.T, cfg containerdplugin.Config) *containerdplugin.Client {
	t.Helper()
	c, err := containerdplugin.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// waitPing waits until c reaches containerd. Bounded, and no claim on speed.
func waitPing(t *testing.T, c *containerdplugin.Client) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		err := c.Ping(t.Context())
		if err == nil {
			return
		}
		if !errdefs.IsUnavailable(err) || time.Now().After(deadline) {
			t.Fatalf("containerd did not come up: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// containerdProc is one containerd daemon in its own temporary directory.
type containerdProc struct {
	d         daemon
	dir       string // short, since a socket path must fit 108 bytes
	root      string
	sock      string
	cmd       *exec.Cmd
	exited    chan struct{}
	waitErr   error
	logPath   string
	namespace string
}

// startContainerd prepares a daemon; start runs it. Cleanup stops it and
// removes its directory.
func startContainerd(t *testing.T, d daemon) *containerdProc {
	t.Helper()
	dir, err := os.MkdirTemp("", "shoal-ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	cd := &containerdProc{
		d:         d,
		dir:       dir,
		root:      filepath.Join(dir, "root"),
		sock:      filepath.Join(dir, "c.sock"),
		logPath:   filepath.Join(dir, "containerd.log"),
		namespace: containerdplugin.DefaultNamespace,
	}
	t.Cleanup(func() {
		cd.stop(t)
		if t.Failed() {
			if b, err := os.ReadFile(cd.logPath); err == nil {
				t.Logf("containerd %s log:\n%s", d.name, b)
			}
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})
	return cd
}

func (cd *containerdProc) config() string {
	// CRI is off: these tests need no kubelet, and CRI would want CNI and
	// more. (2.x's io.containerd.grpc.v1.streaming must stay: ctr 2.x
	// imports through the transfer service, which streams over it.) Snapshotters that probe for other filesystems, the opt plugin
	// (which writes to /opt/containerd), tracing and NRI (a socket in
	// /var/run/nri shared by every containerd on the host) are off too.
	disabled := []string{
		"io.containerd.grpc.v1.cri",
		"io.containerd.internal.v1.opt",
		"io.containerd.snapshotter.v1.aufs",
		"io.containerd.snapshotter.v1.btrfs",
		"io.containerd.snapshotter.v1.devmapper",
		"io.containerd.snapshotter.v1.zfs",
		"io.containerd.snapshotter.v1.blockfile",
		"io.containerd.snapshotter.v1.erofs",
		"io.containerd.tracing.processor.v1.otlp",
		"io.containerd.internal.v1.tracing",
		"io.containerd.nri.v1.nri",
	}
	if cd.d.configVersion >= 3 {
		disabled = append(disabled,
			"io.containerd.cri.v1.images",
			"io.containerd.cri.v1.runtime",
			"io.containerd.podsandbox.controller.v1.podsandbox",
			"io.containerd.sandbox.controller.v1.shim",
		)
	}
	quoted := make([]string, len(disabled))
	for i, p := range disabled {
		quoted[i] = strconv.Quote(p)
	}
	return fmt.Sprintf(`version = %d
root = %q
state = %q
disabled_plugins = [%s]

[grpc]
  address = %q

[ttrpc]
  address = %q

# No collection at start-up: it could take the loose blob between its
# ingest and its gc.root label. The test collects when it means to.
[plugins."io.containerd.gc.v1.scheduler"]
  startup_delay = "1h"
`, cd.d.configVersion, cd.root, filepath.Join(cd.dir, "state"), strings.Join(quoted, ", "), cd.sock, cd.sock+".ttrpc")
}

func (cd *containerdProc) start(t *testing.T) {
	t.Helper()
	cfgPath := filepath.Join(cd.dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cd.config()), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(cd.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close() // the child has its own copy
	cd.cmd = exec.Command(cd.d.containerd, "--config", cfgPath, "--log-level", "info")
	cd.cmd.Stdout, cd.cmd.Stderr = logf, logf
	// Its own process group, and killed with the test binary.
	cd.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cd.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cd.exited = make(chan struct{})
	go func() {
		cd.waitErr = cd.cmd.Wait()
		close(cd.exited)
	}()
}

// stop ends the daemon: SIGTERM, then SIGKILL if it lingers. Idempotent.
func (cd *containerdProc) stop(t *testing.T) {
	if cd.cmd == nil {
		return
	}
	_ = cd.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-cd.exited:
	case <-time.After(30 * time.Second):
		t.Errorf("containerd %s ignored SIGTERM; killing it", cd.d.name)
		_ = syscall.Kill(-cd.cmd.Process.Pid, syscall.SIGKILL)
		<-cd.exited
	}
	var exit *exec.ExitError
	if cd.waitErr != nil && !errors.As(cd.waitErr, &exit) {
		t.Errorf("containerd %s: %v", cd.d.name, cd.waitErr)
	}
	cd.cmd = nil
}

// ctr runs the release's ctr against the daemon and returns its output.
func (cd *containerdProc) ctr(t *testing.T, stdin []byte, args ...string) string {
	t.Helper()
	return cd.ctrNS(t, cd.namespace, stdin, args...)
}

func (cd *containerdProc) ctrNS(t *testing.T, ns string, stdin []byte, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	args = append([]string{"--address", cd.sock, "--namespace", ns}, args...)
	cmd := exec.CommandContext(ctx, cd.d.ctr, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// testHostsToml checks that the hosts.toml Configure writes makes the
// release's own registry client ask the mirror first, with ?ns=, and fall
// back to the registry when the mirror answers 404.
func testHostsToml(t *testing.T, cd *containerdProc, d daemon) {
	// An image no namespace holds yet, or containerd would skip its blobs.
	blobs := map[digest.Digest][]byte{}
	add := func(mediaType string, b []byte) ocispec.Descriptor {
		dg := digest.FromBytes(b)
		blobs[dg] = b
		return ocispec.Descriptor{MediaType: mediaType, Digest: dg, Size: int64(len(b))}
	}
	layer := add(ocispec.MediaTypeImageLayer, []byte("not really a tar, never unpacked: "+d.name))
	config := add(ocispec.MediaTypeImageConfig, mustJSON(t, ocispec.Image{
		Platform: ocispec.Platform{Architecture: runtime.GOARCH, OS: "linux"},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{layer.Digest}},
	}))
	manifest := add(ocispec.MediaTypeImageManifest, mustJSON(t, ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    config,
		Layers:    []ocispec.Descriptor{layer},
	}))

	var (
		mu                     sync.Mutex
		mirrorHits, registryIn []string
	)
	mirrorSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		mirrorHits = append(mirrorHits, r.Method+" "+r.URL.String())
		mu.Unlock()
		http.NotFound(w, r)
	}))
	defer mirrorSrv.Close()
	registrySrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		registryIn = append(registryIn, r.Method+" "+r.URL.Path)
		mu.Unlock()
		var (
			b     []byte
			ctype = "application/octet-stream"
		)
		switch r.URL.Path {
		case "/v2/test/pulled/manifests/v1", "/v2/test/pulled/manifests/" + manifest.Digest.String():
			b, ctype = blobs[manifest.Digest], manifest.MediaType
		default:
			dg, ok := strings.CutPrefix(r.URL.Path, "/v2/test/pulled/blobs/")
			if b, ok = blobs[digest.Digest(dg)]; !ok {
				http.NotFound(w, r)
				return
			}
		}
		w.Header().Set("Content-Type", ctype)
		w.Header().Set("Docker-Content-Digest", digest.FromBytes(b).String())
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		if r.Method != http.MethodHead {
			_, _ = w.Write(b)
		}
	}))
	defer registrySrv.Close()

	regHost := strings.TrimPrefix(registrySrv.URL, "http://")
	hostsDir := t.TempDir()
	if _, err := containerdplugin.Configure(containerdplugin.ConfigureOptions{
		HostsDir: hostsDir, Mirror: mirrorSrv.URL, Registries: []string{registrySrv.URL},
	}); err != nil {
		t.Fatal(err)
	}
	cd.ctrNS(t, "pulltest", nil, "content", "fetch", "--hosts-dir", hostsDir, regHost+"/test/pulled:v1")

	mu.Lock()
	defer mu.Unlock()
	t.Logf("mirror saw %q", mirrorHits)
	t.Logf("registry saw %q", registryIn)
	asked := map[string]bool{}
	for i, h := range mirrorHits {
		method, raw, _ := strings.Cut(h, " ")
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if ns := u.Query().Get("ns"); ns != regHost {
			t.Errorf("mirror request %s has ns=%q, want %q", h, ns, regHost)
		}
		if i == 0 && (method != http.MethodHead || u.Path != "/v2/test/pulled/manifests/v1") {
			t.Errorf("first mirror request %s, want HEAD of the tag", h)
		}
		asked[method+" "+u.Path] = true
	}
	if len(registryIn) == 0 {
		t.Error("the registry was never asked: no fallback happened")
	}
	for _, r := range registryIn {
		if !asked[r] {
			t.Errorf("registry got %s without the mirror being asked first", r)
		}
	}
	c := newClient(t, containerdplugin.Config{Socket: cd.sock, Namespace: "pulltest"})
	for dg := range blobs {
		if _, err := c.Stat(t.Context(), dg); err != nil {
			t.Errorf("fetched blob %s: %v", dg, err)
		}
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
