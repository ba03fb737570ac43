package lab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"golang.org/x/sys/unix"
)

// Mountns is a persistent mount namespace: a copy of the caller's mounts,
// held open by a file it is bound to, that processes join with nsenter
// (ProcessConfig.Mountns, ContainerdConfig.Mountns). Binds made in it put
// one node's directories at the standard paths (/run/containerd,
// /var/lib/kubelet, …) without touching the caller's view, so that several
// nodes on one machine each find their own files where a DaemonSet's
// hostPath volumes look. Its propagation is private: nothing mounted in
// it leaks out, and it goes away with its last process once Close has
// unbound the file.
type Mountns struct {
	path string
	log  *slog.Logger
}

// NewMountns creates the namespace and binds it to path, a new file. The
// mount path is on must not have shared propagation (true of / on this
// machine, not of a systemd host, where a bind of the directory onto
// itself made private comes first).
func NewMountns(ctx context.Context, path string, log *slog.Logger) (*Mountns, error) {
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		return nil, err
	}
	m := &Mountns{path: path, log: logger(log).With("component", "mountns")}
	if _, err := run(ctx, m.log, findTool("unshare"), "--mount="+path, "--propagation", "private", "true"); err != nil {
		return nil, errors.Join(fmt.Errorf("mount namespace %s: %w", path, err), os.Remove(path))
	}
	return m, nil
}

// Path is the file the namespace is bound to, for nsenter --mount.
func (m *Mountns) Path() string { return m.path }

// Bind bind-mounts src onto dst inside the namespace. dst must exist; it
// is seen as src only by processes in the namespace.
func (m *Mountns) Bind(ctx context.Context, src, dst string) error {
	if _, err := run(ctx, m.log, findTool("nsenter"), "--mount="+m.path, "--", findTool("mount"), "--bind", src, dst); err != nil {
		return fmt.Errorf("mount namespace %s: bind %s on %s: %w", m.path, src, dst, err)
	}
	return nil
}

// Close unbinds the file and removes it. The namespace, with every mount
// in it, ends when its last process does. Idempotent.
func (m *Mountns) Close() error {
	err := unix.Unmount(m.path, unix.MNT_DETACH)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		err = nil // not bound (any more)
	}
	if rerr := os.Remove(m.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		err = errors.Join(err, rerr)
	}
	return err
}
