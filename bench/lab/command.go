package lab

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
)

// CommandConfig says how to run an arbitrary long-lived command, such as a
// third-party registry mirror that `shoal bench --real` compares with shoal.
type CommandConfig struct {
	// Name labels the process in logs and errors.
	Name string
	// Argv is the command and its arguments. Required.
	Argv []string
	// Netns runs the command inside this network namespace; "" runs it in
	// the caller's.
	Netns string
	// Dir is the working directory; it must exist. "" is os.TempDir().
	Dir string
	// LogPath receives stdout and stderr, appended; "" is Dir/<Name>.log.
	LogPath string
	// Logger receives lifecycle events; nil discards them.
	Logger *slog.Logger
}

// Command is a running command in a process group of its own. It gets the
// parent-death signal like every other lab process, and Stop, Kill and
// Close reach every process of its group, so a shell wrapper takes what it
// started along.
type Command struct {
	cfg  CommandConfig
	proc *process

	mu     sync.Mutex
	closed bool
}

// StartCommand starts the command. It does not wait for readiness: what
// "ready" means is the caller's to say.
func StartCommand(cfg CommandConfig) (*Command, error) {
	if len(cfg.Argv) == 0 {
		return nil, errors.New("command: Argv is required")
	}
	if cfg.Name == "" {
		cfg.Name = filepath.Base(cfg.Argv[0])
	}
	if cfg.Dir == "" {
		cfg.Dir = os.TempDir()
	}
	if cfg.LogPath == "" {
		cfg.LogPath = filepath.Join(cfg.Dir, cfg.Name+".log")
	}
	c := &Command{cfg: cfg}
	c.proc = &process{
		name: cfg.Name, log: logger(cfg.Logger), argv: cfg.Argv, netns: cfg.Netns,
		dir: cfg.Dir, stdout: cfg.LogPath, stderr: cfg.LogPath,
	}
	if err := c.proc.start(); err != nil {
		return nil, err
	}
	return c, nil
}

// LogPath is the file the command's output goes to.
func (c *Command) LogPath() string { return c.cfg.LogPath }

// Pid is the process id of the group's leader.
func (c *Command) Pid() int { return c.proc.pid() }

// Running says whether the leader is alive.
func (c *Command) Running() bool { return c.proc.running() }

// Exited is closed when the leader has exited.
func (c *Command) Exited() <-chan struct{} { return c.proc.exited() }

// ExitErr wraps ErrExited with how the leader ended.
func (c *Command) ExitErr() error { return c.proc.exitErr() }

// Stop sends SIGTERM to the group, then SIGKILL after a grace period.
func (c *Command) Stop() { c.proc.stop(stopGrace) }

// Kill ends the group with SIGKILL, as a crash would.
func (c *Command) Kill() { c.proc.stop(0) }

// Close stops the command. It leaves the log and the directory, which the
// caller owns. Idempotent.
func (c *Command) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	c.proc.stop(stopGrace)
	return nil
}
