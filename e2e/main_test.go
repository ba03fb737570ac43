package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/bench/lab"
)

// shoalBin is the daemon under test, built once by TestMain.
var shoalBin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "shoal-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// Readable by every user: one test runs the daemon as nobody.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	shoalBin = filepath.Join(dir, "shoal")
	// A test build: with the fault hooks (--fault-corrupt-uploads).
	build := exec.Command("go", "build", "-race", "-tags", "shoalfaults", "-o", shoalBin, "../cmd/shoal")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building shoal:", err)
		return 1
	}
	return m.Run()
}

// requireRoot fails a test that needs root and the real binaries when they
// are missing: a skip would hide a gap. -short runs unit tests alone.
func requireRoot(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts real processes; -short runs unit tests only")
	}
	if os.Geteuid() != 0 {
		t.Fatal("e2e tests need root (containerd, network namespaces)")
	}
	for _, b := range []string{lab.DefaultRegistryBinary, "/usr/bin/containerd", "/usr/bin/ctr", filepath.Join(lab.GoBin(), "containerd"), filepath.Join(lab.GoBin(), "ctr")} {
		if _, err := os.Stat(b); err != nil {
			t.Fatalf("e2e tests need %s (make deps installs it): %v", b, err)
		}
	}
}

var flavors = []lab.Flavor{lab.Flavor16, lab.Flavor2}

// e2eNetPrefix starts the names of the networks these tests make; the
// process id after it tells a killed run's leftovers from a live run's
// (see lab.DeadRun).
const e2eNetPrefix = "e2e"

var sweepDeadRuns sync.Once

// netName names a test's network, kind telling it from the process's
// others, and first removes the networks of e2e runs that were killed
// before their clean-up ran (a go test -timeout, say).
func netName(t *testing.T, kind string) string {
	sweepDeadRuns.Do(func() {
		if _, err := lab.SweepDead(t.Context(), e2eNetPrefix, testLogger(t)); err != nil {
			t.Logf("sweeping a killed run's namespaces: %v", err)
		}
	})
	return fmt.Sprintf("%s%d-%s", e2eNetPrefix, os.Getpid(), kind)
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func cleanup(t *testing.T, close func() error) {
	t.Cleanup(func() {
		if err := close(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
}

// node is one containerd with its shoal, configured the way an operator
// would: `shoal configure containerd` writes the hosts.toml.
// patientPeerStall is --peer-stall for every daemon of these tests but the
// fault suite's, which measures the default. The others count what the
// registry sent; on a CI host that runs other packages' tests beside them,
// a peer can miss a 200 ms ping for want of CPU (nodes of a real cluster
// each have their own cores), and a peer given up for the registry would
// make them measure the host rather than the mesh.
const patientPeerStall = "2s"

type node struct {
	ctrd  *lab.Containerd
	shoal *lab.Shoal
}

func startNode(t *testing.T, flavor lab.Flavor, upstream string, extra ...string) *node {
	t.Helper()
	ctx := t.Context()
	log := testLogger(t)
	c, err := lab.StartContainerd(ctx, lab.ContainerdConfig{Flavor: flavor, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	cleanup(t, c.Close)
	args := append([]string{
		"--containerd-sock", c.Socket(),
		"--containerd-content-dir", c.ContentDir(),
		"--hosts-dir", c.HostsDir(),
		"--insecure-registry", upstream,
		"--stall-timeout", "3s",
		"--peer-stall", patientPeerStall,
		"--gossip-addr", "127.0.0.1:0",
		"--p2p-addr", "127.0.0.1:0",
		"--cluster-key-file", writeKey(t),
	}, extra...)
	s, err := lab.StartShoal(ctx, lab.ShoalConfig{Binary: shoalBin, Args: args, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	cleanup(t, func() error {
		if t.Failed() {
			t.Logf("shoal log:\n%s", tailFile(s.LogPath(), 40))
		}
		return s.Close()
	})
	out, err := exec.CommandContext(ctx, shoalBin, "configure", "containerd",
		"--hosts-dir", c.HostsDir(), "--mirror", s.MirrorURL(),
		"--registry", "http://"+upstream, "--containerd-config", c.ConfigPath()).CombinedOutput()
	if err != nil {
		t.Fatalf("shoal configure containerd: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("wrote")) {
		t.Fatalf("shoal configure containerd wrote nothing:\n%s", out)
	}
	return &node{ctrd: c, shoal: s}
}

// verifyContent checks every blob committed under dir (a containerd
// content dir or a shoal data dir) against its name, and returns the
// digests it verified. A dir without blobs/sha256 fails the test: a check
// that found nothing to verify has not passed.
func verifyContent(t *testing.T, dir string) map[digest.Digest]bool {
	t.Helper()
	root := filepath.Join(dir, "blobs", "sha256")
	if _, err := os.Stat(root); err != nil {
		t.Fatalf("no blobs to verify: %v", err)
	}
	got := map[digest.Digest]bool{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			// Collected since the listing: containerd's garbage
			// collection removes what a failed pull left.
			return nil
		}
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		if hex.EncodeToString(sum[:]) != d.Name() {
			t.Errorf("committed blob %s in %s holds other bytes (sha256 %x)", d.Name(), dir, sum)
			return nil
		}
		got[digest.NewDigestFromEncoded(digest.SHA256, d.Name())] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// verifyHolds is verifyContent, and fails the test unless every blob of
// want is among the blobs verified.
func verifyHolds(t *testing.T, dir string, want ...digest.Digest) {
	t.Helper()
	got := verifyContent(t, dir)
	for _, d := range want {
		if !got[d] {
			t.Errorf("%s does not hold %s (%d blobs verified)", dir, d, len(got))
		}
	}
}

// stored says whether shoal's store in dataDir holds blob d. An error other
// than the blob's absence fails the test: it would make "not stored" pass
// without looking.
func stored(t *testing.T, dataDir string, d digest.Digest) bool {
	t.Helper()
	_, err := os.Stat(filepath.Join(dataDir, "blobs", "sha256", d.Encoded()))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return err == nil
}

func tailFile(p string, n int) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func metric(t *testing.T, ctx context.Context, s *lab.Shoal, name string, match map[string]string) float64 {
	t.Helper()
	m, err := s.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return m.Sum(name, match)
}

// waitMetric waits until s's metric, summed over the series that match,
// is at least want, and returns it. shoal bumps some counters just after
// the event a client sees (a blob committed, or rejected), so a client
// done with a pull may read them a moment early.
func waitMetric(t *testing.T, s *lab.Shoal, name string, match map[string]string, want float64) float64 {
	t.Helper()
	var got float64
	err := lab.WaitFor(t.Context(), fmt.Sprintf("%s%v to reach %v", name, match, want), 10*time.Second, func() error {
		m, err := s.Metrics(t.Context())
		if err != nil {
			return err
		}
		if got = m.Sum(name, match); got < want {
			return fmt.Errorf("it is %v", got)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	return got
}

func runShoal(ctx context.Context, args ...string) ([]byte, error) {
	return exec.CommandContext(ctx, shoalBin, args...).CombinedOutput()
}

func netListen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
