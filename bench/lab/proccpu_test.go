package lab

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestProcessCPU(t *testing.T) {
	t.Parallel()
	a, err := ProcessCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if a.Pid != os.Getpid() || a.Start == 0 || a.Seconds < 0 {
		t.Fatalf("ProcessCPU(self) = %+v: want this pid, a start and no negative time", a)
	}
	// Spin until the kernel, which counts in ticks of 10 ms, has charged
	// this process 0.2 s more; on a busy host that takes longer, not fails.
	deadline := time.Now().Add(30 * time.Second)
	var b ProcTimes
	for b.Seconds < a.Seconds+0.2 {
		if time.Now().After(deadline) {
			t.Fatalf("CPU time went from %.2f s to %.2f s in 30 s of spinning", a.Seconds, b.Seconds)
		}
		spin(20 * time.Millisecond)
		if b, err = ProcessCPU(os.Getpid()); err != nil {
			t.Fatal(err)
		}
	}
	if !a.Same(b) {
		t.Errorf("two reads of this process are not the Same: %+v, %+v", a, b)
	}
}

func TestProcessCPUMissingPid(t *testing.T) {
	t.Parallel()
	// Above /proc/sys/kernel/pid_max no process can be.
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		t.Fatal(err)
	}
	pidMax, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	pid := pidMax + 1
	for name, read := range map[string]func(int) (ProcTimes, error){"ProcessCPU": ProcessCPU, "GroupCPU": GroupCPU} {
		_, err := read(pid)
		if !errors.Is(err, ErrNoProcess) {
			t.Errorf("%s(%d) error = %v, want ErrNoProcess", name, pid, err)
		}
		if err != nil && !strings.Contains(err.Error(), strconv.Itoa(pid)) {
			t.Errorf("%s(%d) error %q does not name the pid", name, pid, err)
		}
	}
}

// TestGroupCPUCountsForkedChildren runs what a --candidate looks like: a
// shell whose child does the work. The group's time grows with the child's;
// the leader's own stays the shell's.
func TestGroupCPUCountsForkedChildren(t *testing.T) {
	t.Parallel()
	p, err := StartProcess(ProcessConfig{
		Name: "spinner",
		Argv: []string{"sh", "-c", "while :; do :; done & wait"},
		Log:  filepath.Join(t.TempDir(), "spinner.log"),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop(0)
	first, err := GroupCPU(p.Pid())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	g := first
	for g.Seconds < first.Seconds+0.3 {
		if time.Now().After(deadline) {
			t.Fatalf("the group's CPU time went from %.2f s to %.2f s in 30 s while its child spun", first.Seconds, g.Seconds)
		}
		time.Sleep(50 * time.Millisecond)
		if g, err = GroupCPU(p.Pid()); err != nil {
			t.Fatal(err)
		}
	}
	if !first.Same(g) || g.Pid != p.Pid() {
		t.Errorf("two reads of the group are not the Same: %+v, %+v", first, g)
	}
	leader, err := ProcessCPU(p.Pid())
	if err != nil {
		t.Fatal(err)
	}
	if leader.Seconds > 0.1 {
		t.Errorf("the leader, a shell that only waits, used %.2f s; the group %.2f s", leader.Seconds, g.Seconds)
	}

	p.Stop(0)
	if _, err := GroupCPU(p.Pid()); !errors.Is(err, ErrNoProcess) {
		t.Errorf("GroupCPU of a stopped group: error = %v, want ErrNoProcess", err)
	}
}

func TestGroupCPUNotALeader(t *testing.T) {
	t.Parallel()
	// A child started without Setpgid joins this process's group.
	cmd := exec.CommandContext(t.Context(), "sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	_, err := GroupCPU(cmd.Process.Pid)
	if err == nil || errors.Is(err, ErrNoProcess) || !strings.Contains(err.Error(), "leads no process group") {
		t.Errorf("GroupCPU of a process that leads no group: error = %v, want one that says so", err)
	}
}

// spin keeps one CPU busy for d.
func spin(d time.Duration) {
	for stop := time.Now().Add(d); time.Now().Before(stop); {
	}
}
