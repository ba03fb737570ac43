package lab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrExited reports a process that ended while it was expected to run.
var ErrExited = errors.New("process exited")

// stopGrace is how long a process has to exit after SIGTERM before its whole
// group gets SIGKILL.
const stopGrace = 10 * time.Second

// process is one child run in a process group of its own, optionally inside
// a network namespace, with stdout and stderr appended to files. It can be
// started again after it stopped.
type process struct {
	name   string
	log    *slog.Logger
	argv   []string
	netns  string
	dir    string
	stdout string
	stderr string
	env    []string // added to this process's environment; nil inherits it as is
	// netOnly enters only netns's network namespace (nsenter --net) and
	// stays in the caller's mount namespace, where `ip netns exec` would
	// make a private one: a kubelet and its containerd must see each
	// other's mounts, and the caller must see them to clean them up.
	netOnly bool
	// mountns, when set, runs the process in that persistent mount
	// namespace (a Mountns's file), entering netns with nsenter too.
	mountns string
	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when the current run has been waited for
	waitErr error
}

// start runs the process. It does not wait for readiness.
func (p *process) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		select {
		case <-p.done:
		default:
			return fmt.Errorf("%s: already running as pid %d", p.name, p.cmd.Process.Pid)
		}
	}
	argv := p.argv
	switch {
	case p.mountns != "":
		pre := []string{findTool("nsenter"), "--mount=" + p.mountns}
		if p.netns != "" {
			pre = append(pre, "--net="+netnsDir+"/"+p.netns)
		}
		argv = append(append(pre, "--"), argv...)
	case p.netns != "" && p.netOnly:
		argv = append([]string{findTool("nsenter"), "--net=" + netnsDir + "/" + p.netns, "--"}, argv...)
	case p.netns != "":
		argv = append([]string{ipPath(), "netns", "exec", p.netns}, argv...)
	}
	out, err := os.OpenFile(p.stdout, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	errf := out
	if p.stderr != p.stdout {
		errf, err = os.OpenFile(p.stderr, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		defer errf.Close()
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = p.dir
	if p.env != nil {
		cmd.Env = append(os.Environ(), p.env...)
	}
	cmd.Stdin = nil
	cmd.Stdout = out
	cmd.Stderr = errf
	// A group of its own lets Stop reach every descendant; the death signal
	// ends the child if this process dies without running its cleanups.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", p.name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.waitErr = cmd, done, nil
	p.log.Info("process started", "process", p.name, "pid", cmd.Process.Pid, "netns", p.netns, "argv", strings.Join(argv, " "))
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// pid is the pid of the current run, or 0.
func (p *process) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// exited is closed when the current run ends; nil before the first start.
func (p *process) exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// running says whether the current run is still alive.
func (p *process) running() bool {
	ch := p.exited()
	if ch == nil {
		return false
	}
	select {
	case <-ch:
		return false
	default:
		return true
	}
}

// exitErr wraps ErrExited with how the last run ended.
func (p *process) exitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return fmt.Errorf("%s: %w (%v)", p.name, ErrExited, p.waitErr)
}

// stop sends SIGTERM to the process group, then SIGKILL after grace (or at
// once when grace is 0), and waits for the leader to be reaped. Stopping a
// process that is not running is not an error.
func (p *process) stop(grace time.Duration) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	pgid := cmd.Process.Pid
	select {
	case <-done:
	default:
		if grace > 0 {
			_ = syscall.Kill(-pgid, syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(grace):
				p.log.Warn("process ignored SIGTERM", "process", p.name, "pid", pgid)
			}
		}
	}
	// Members of the group may outlive the leader; the group id stays valid
	// while any of them lives, so this reaches the stragglers too.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	<-done
	p.log.Info("process stopped", "process", p.name, "pid", pgid)
}

// ipPath finds iproute2's ip, which lives in sbin, a directory not every
// PATH has.
func ipPath() string { return findTool("ip") }

func tcPath() string { return findTool("tc") }

func findTool(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := dir + "/" + name
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return name
}

// run executes a short command and returns its stdout; the error carries
// stderr.
func run(ctx context.Context, log *slog.Logger, argv ...string) ([]byte, error) {
	out, _, err := run2(ctx, log, argv...)
	return out, err
}

// run2 is run that also returns stderr.
func run2(ctx context.Context, log *slog.Logger, argv ...string) (stdout []byte, stderr string, err error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var eb strings.Builder
	cmd.Stderr = &eb
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.Output()
	log.Debug("ran", "argv", strings.Join(argv, " "), "err", err)
	if err != nil {
		return out, eb.String(), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(eb.String()))
	}
	return out, eb.String(), nil
}

// logger returns l, or a logger that discards everything.
func logger(l *slog.Logger) *slog.Logger {
	if l != nil {
		return l
	}
	return slog.New(slog.DiscardHandler)
}

// ProcessConfig says how to run a long-lived child process.
type ProcessConfig struct {
	// Name names the process in logs and errors.
	Name string
	// Argv is the command and its arguments; required.
	Argv []string
	// Netns runs the process inside this network namespace; "" runs it in
	// the caller's.
	Netns string
	// SharedMounts keeps the process in the caller's mount namespace when
	// Netns is set (nsenter --net), instead of the private one `ip netns
	// exec` makes (which also remounts /sys for the namespace). Mounts the
	// process makes are then visible to the caller and to other such
	// processes, and outlive it: the caller unmounts them.
	SharedMounts bool
	// Mountns runs the process in this persistent mount namespace instead
	// (Mountns.Path), where binds put node-specific directories at the
	// standard paths.
	Mountns string
	// Dir is the working directory; "" is the caller's.
	Dir string
	// Log receives stdout and stderr, appended; required.
	Log string
	// Env is added to the inherited environment.
	Env []string
	// Logger receives start and stop events; nil discards them.
	Logger *slog.Logger
}

// Process is a child in a process group of its own that gets SIGKILL if
// the caller dies, as every daemon in this package is run.
type Process struct{ p *process }

// StartProcess starts a process; it does not wait for readiness.
func StartProcess(cfg ProcessConfig) (*Process, error) {
	if len(cfg.Argv) == 0 || cfg.Log == "" {
		return nil, errors.New("process: Argv and Log are required")
	}
	p := &Process{p: &process{
		name:    cfg.Name,
		log:     logger(cfg.Logger),
		argv:    cfg.Argv,
		netns:   cfg.Netns,
		netOnly: cfg.SharedMounts,
		mountns: cfg.Mountns,
		dir:     cfg.Dir,
		stdout:  cfg.Log,
		stderr:  cfg.Log,
		env:     cfg.Env,
	}}
	return p, p.p.start()
}

// Pid is the process's id.
func (p *Process) Pid() int { return p.p.pid() }

// Exited is closed when the process ends.
func (p *Process) Exited() <-chan struct{} { return p.p.exited() }

// Err wraps ErrExited with how the process ended; call it after Exited.
func (p *Process) Err() error { return p.p.exitErr() }

// Stop sends SIGTERM to the group, SIGKILL after grace (at once if grace
// is 0), and waits for the process to be reaped. Idempotent.
func (p *Process) Stop(grace time.Duration) { p.p.stop(grace) }

// Tail is the last n lines of a log file, for error messages.
func Tail(path string, n int) string { return tail(path, n) }
