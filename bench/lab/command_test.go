package lab

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestCommandStopsItsGroup checks that Close ends what a shell wrapper
// started in the background, not only the shell.
func TestCommandStopsItsGroup(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	c, err := StartCommand(CommandConfig{
		Name: "wrapper", Dir: dir, Logger: testLogger(t),
		Argv: []string{"sh", "-c", "sleep 300 & echo $! > " + pidFile + "; echo started; wait"},
	})
	if err != nil {
		t.Fatal(err)
	}
	var child int
	deadline := time.Now().Add(10 * time.Second)
	for child == 0 {
		b, _ := os.ReadFile(pidFile)
		child, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		if child == 0 && time.Now().After(deadline) {
			t.Fatal("the wrapper never started its child")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !c.Running() {
		t.Fatalf("wrapper exited: %v", c.ExitErr())
	}
	leader := c.Pid()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if !processGone(leader) {
		t.Errorf("leader %d still runs", leader)
	}
	deadline = time.Now().Add(5 * time.Second)
	for !processGone(child) {
		if time.Now().After(deadline) {
			t.Fatalf("background child %d outlived Close", child)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if b, _ := os.ReadFile(c.LogPath()); !strings.Contains(string(b), "started") {
		t.Errorf("log %s holds %q", c.LogPath(), b)
	}
}
