package lab

import (
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if role, ok := os.LookupEnv(floorRoleEnv); ok {
		if err := runFloorRole(role); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// requireRoot fails a test that needs root and real binaries when they are
// missing: a skip would hide a gap. -short runs the unit tests alone.
func requireRoot(t testing.TB, binaries ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts real processes; -short runs unit tests only")
	}
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
	t.Fatalf("e2e test needs %s (make deps installs it)", missing)
}

// testLogger writes the package's logs to the test log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t testing.TB }

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
