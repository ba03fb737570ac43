package lab

import (
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// requireRoot skips a test that needs root and real binaries on a developer's
// machine without them, and fails it in CI, where a skip would hide a gap.
func requireRoot(t *testing.T, binaries ...string) {
	t.Helper()
	missing := ""
	if os.Geteuid() != 0 {
		missing = "root"
	}
	for _, b := range binaries {
		if _, err := exec.LookPath(b); err != nil {
			missing = b
		}
	}
	if missing == "" {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("e2e test needs %s (run .ci/install-deps.sh)", missing)
	}
	t.Skipf("e2e test needs %s", missing)
}

// testLogger writes the package's logs to the test log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

// testClient is an HTTP client whose connections start in netns ("" for
// this one) and are closed when the test ends.
func testClient(t *testing.T, netns string) *http.Client {
	tr := TransportIn(netns)
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}
