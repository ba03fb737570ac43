package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/shoal-dev/shoal/bench/lab"
)

// leftovers is what Close undoes outside the cluster's dir, written to
// <Dir>/leftovers.json as soon as it is known, so that Sweep can undo it
// after a process that died before its Close.
type leftovers struct {
	Pid     int               `json:"pid"`
	Network string            `json:"network"`
	Sysctls map[string]string `json:"sysctls,omitempty"`
	Made    []string          `json:"made,omitempty"`
}

const leftoversFile = "leftovers.json"

func (c *Cluster) writeLeftovers() error {
	b, err := json.Marshal(leftovers{Pid: os.Getpid(), Network: c.cfg.Name, Sysctls: c.sysctls, Made: c.made})
	if err != nil {
		return err
	}
	tmp := filepath.Join(c.dir, leftoversFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(c.dir, leftoversFile))
}

// Sweep removes what clusters left in dir (os.TempDir() when "") when the
// process that started them died before Close: it kills what still runs
// in their namespaces (containerd's shims and the containers outlive the
// test's children) and deletes the namespaces, restores the kernel
// settings, unbinds the node mount namespaces, and removes the mount
// points made on the host and the cluster's dir. Clusters whose process
// still runs are left alone. It returns the dirs it removed.
func Sweep(ctx context.Context, dir string, log *slog.Logger) ([]string, error) {
	if dir == "" {
		dir = os.TempDir()
	}
	log = logger(log).With("component", "kube")
	dirs, err := filepath.Glob(filepath.Join(dir, "lab-kube-*"))
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, leftoversFile))
		if err != nil {
			continue // starting, or not a cluster's: not ours to judge
		}
		var l leftovers
		if err := json.Unmarshal(b, &l); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", d, err))
			continue
		}
		if alive(l.Pid) {
			continue
		}
		log.Warn("sweeping a cluster whose process died", "dir", d, "pid", l.Pid, "network", l.Network)
		if l.Network != "" {
			if _, err := lab.Sweep(ctx, l.Network+"-", log); err != nil {
				errs = append(errs, err)
			}
		}
		errs = append(errs, restoreSysctls(l.Sysctls), lab.UnmountUnder(d), os.RemoveAll(d))
		c := &Cluster{made: l.Made}
		errs = append(errs, c.removeMountPoints())
		removed = append(removed, d)
	}
	return removed, errors.Join(errs...)
}

// alive says whether a process with this pid exists.
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}
