package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/shoal-dev/shoal/bench/lab"
	"github.com/shoal-dev/shoal/p2p"
)

// Ports of the built-in shoal candidate inside each node's namespace.
const (
	shoalP2PPort     = 7501
	shoalGossipPort  = 7502
	shoalMetricsPort = 7503
)

// node is one node host for one run: a fresh containerd and, unless the
// candidate is direct, the candidate's mirror.
type node struct {
	i     int
	host  *lab.Host
	ctrd  *lab.Containerd
	shoal *lab.Shoal   // the shoal candidate
	cmd   *lab.Command // a custom candidate
	dir   string       // the node's dir in the run's dir
}

// startNodes starts containerd and the candidate on nodes[from:to],
// making them, points each containerd at its candidate, and waits until
// every started shoal sees the others. Node 0 is the seed the others join:
// it starts first, alone, which spares them the join retries' backoff (up
// to half a minute). The caller closes the nodes, on error too.
func (s *session) startNodes(ctx context.Context, runDir, cand, scenario string, nodes []*node, from, to int) error {
	start := func(ctx context.Context, i int) error {
		n := &node{i: i, host: s.hosts[i], dir: filepath.Join(runDir, "n"+strconv.Itoa(i))}
		if err := os.MkdirAll(n.dir, 0o755); err != nil {
			return err
		}
		// At debug level containerd logs each layer it unpacks, for the
		// tail of the run (see tails).
		c, err := lab.StartContainerd(ctx, lab.ContainerdConfig{Flavor: s.cfg.Containerd, Netns: n.host.Netns, Dir: n.dir, Logger: s.log, LogLevel: "debug"})
		if err != nil {
			return fmt.Errorf("node %d: %w", i, err)
		}
		n.ctrd = c
		nodes[i] = n
		if err := s.startCandidate(ctx, n, cand, scenario); err != nil {
			return fmt.Errorf("node %d: %w", i, err)
		}
		return nil
	}
	if from == 0 && to > 0 {
		if err := start(ctx, 0); err != nil {
			return err
		}
		from = 1
	}
	g, gctx := errgroup.WithContext(ctx)
	// Containerd start-up is CPU-bound for a second or two; all at once
	// would only slow each other on a small machine.
	g.SetLimit(4)
	for i := from; i < to; i++ {
		g.Go(func() error { return start(gctx, i) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if cand == CandidateShoal && to > 1 {
		return s.waitMesh(ctx, nodes[:to])
	}
	return nil
}

// startCandidate starts the node's mirror and writes its hosts.toml.
func (s *session) startCandidate(ctx context.Context, n *node, cand, scenario string) error {
	reg := s.reg.Addr()
	switch cand {
	case CandidateDirect:
		return n.ctrd.WriteHosts(reg, lab.Hosts{Server: "http://" + reg})
	case CandidateShoal:
		ip := n.host.IP.String()
		args := []string{
			"--node-name", "node" + strconv.Itoa(n.i),
			"--containerd-sock", n.ctrd.Socket(),
			"--containerd-content-dir", n.ctrd.ContentDir(),
			"--insecure-registry", reg,
			"--gossip-addr", n.host.Addr(shoalGossipPort),
			"--p2p-addr", n.host.Addr(shoalP2PPort),
			"--advertise-ip", ip,
			"--join", s.hosts[0].Addr(shoalGossipPort),
			"--cluster-key-file", s.keyFile,
			"--hosts-dir", n.ctrd.HostsDir(),
		}
		if scenario == ScenarioOutage {
			args = append(args, "--resolve-tags-locally")
		}
		sh, err := lab.StartShoal(ctx, lab.ShoalConfig{
			Binary: s.cfg.ShoalBinary, Netns: n.host.Netns,
			MirrorAddr:  "127.0.0.1:" + strconv.Itoa(MirrorPort),
			MetricsAddr: "127.0.0.1:" + strconv.Itoa(shoalMetricsPort),
			Args:        args, Dir: n.dir, Logger: s.log,
		})
		if err != nil {
			return err
		}
		n.shoal = sh
		return s.runSetup(ctx, n, DefaultSetup)
	default:
		c := s.custom[cand]
		vars, err := s.vars(n)
		if err != nil {
			return err
		}
		cmd, err := lab.StartCommand(lab.CommandConfig{
			Name: cand, Argv: []string{"sh", "-c", expand(c.Command, vars)},
			Netns: n.host.Netns, Dir: n.dir, Logger: s.log,
		})
		if err != nil {
			return err
		}
		n.cmd = cmd
		if err := waitListening(ctx, cmd, n.host, "127.0.0.1:"+strconv.Itoa(MirrorPort)); err != nil {
			return fmt.Errorf("candidate %s: %w", cand, err)
		}
		return s.runSetup(ctx, n, c.setup())
	}
}

// vars are the values of the template placeholders for node n; the
// data_dir is made empty for the run.
func (s *session) vars(n *node) (map[string]string, error) {
	data := filepath.Join(n.dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, err
	}
	return map[string]string{
		"ip":                n.host.IP.String(),
		"node":              strconv.Itoa(n.i),
		"containerd_sock":   n.ctrd.Socket(),
		"containerd_config": n.ctrd.ConfigPath(),
		"content_dir":       n.ctrd.ContentDir(),
		"hosts_dir":         n.ctrd.HostsDir(),
		"data_dir":          data,
		"registry":          s.reg.Addr(),
		"seed_ip":           s.hosts[0].IP.String(),
		"mirror_port":       strconv.Itoa(MirrorPort),
		"shoal":             s.cfg.ShoalBinary,
	}, nil
}

// runSetup runs a setup template in the node's namespace.
func (s *session) runSetup(ctx context.Context, n *node, tmpl string) error {
	vars, err := s.vars(n)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := n.host.Command(ctx, "sh", "-c", expand(tmpl, vars))
	cmd.WaitDelay = 5 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("setup %q: %w: %s", expand(tmpl, vars), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// waitListening waits until addr accepts connections inside the host's
// namespace, or the command exits.
func waitListening(ctx context.Context, cmd *lab.Command, h *lab.Host, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		dctx, dcancel := context.WithTimeout(ctx, time.Second)
		c, err := h.DialContext(dctx, "tcp", addr)
		dcancel()
		if err == nil {
			return c.Close()
		}
		select {
		case <-cmd.Exited():
			return fmt.Errorf("%w before it listened on %s (log: %s)", cmd.ExitErr(), addr, tailFile(cmd.LogPath(), 5))
		case <-ctx.Done():
			return fmt.Errorf("nothing listens on %s: %w (log: %s)", addr, ctx.Err(), tailFile(cmd.LogPath(), 5))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// meshStatus is the part of shoal's /status the benchmark reads.
type meshStatus struct {
	Mesh *p2p.Status `json:"mesh"`
}

func (n *node) meshStatus(ctx context.Context) (p2p.Status, error) {
	b, err := n.shoal.Status(ctx)
	if err != nil {
		return p2p.Status{}, err
	}
	var st meshStatus
	if err := json.Unmarshal(b, &st); err != nil {
		return p2p.Status{}, fmt.Errorf("node %d /status: %w", n.i, err)
	}
	if st.Mesh == nil {
		return p2p.Status{}, fmt.Errorf("node %d /status: no mesh", n.i)
	}
	return *st.Mesh, nil
}

// waitMesh waits until every shoal sees every node alive.
func (s *session) waitMesh(ctx context.Context, nodes []*node) error {
	return poll(ctx, time.Minute, "the mesh converges", func() error {
		for _, n := range nodes {
			st, err := n.meshStatus(ctx)
			if err != nil {
				return err
			}
			if st.LiveMembers != len(nodes) {
				return fmt.Errorf("node %d sees %d of %d members", n.i, st.LiveMembers, len(nodes))
			}
		}
		return nil
	})
}

// settle gives the node that pulled first the time to offer the image:
// shoal says when it advertises every blob and the manifest; a custom
// candidate gets cfg.Settle.
func (s *session) settle(ctx context.Context, n *node) error {
	switch {
	case n.shoal != nil:
		want := len(s.im.Blobs()) + 1
		return poll(ctx, time.Minute, "node 0 advertises the image", func() error {
			st, err := n.meshStatus(ctx)
			if err != nil {
				return err
			}
			if st.BlobsProvided < want {
				return fmt.Errorf("%d of %d blobs provided", st.BlobsProvided, want)
			}
			return nil
		})
	case n.cmd != nil:
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(s.cfg.Settle):
			return nil
		}
	}
	return nil
}

// kill ends the node's mirror and containerd with SIGKILL, as a crash would.
func (n *node) kill() {
	var wg sync.WaitGroup
	if n.shoal != nil {
		wg.Go(n.shoal.Kill)
	}
	if n.cmd != nil {
		wg.Go(n.cmd.Kill)
	}
	if n.ctrd != nil {
		wg.Go(n.ctrd.Kill)
	}
	wg.Wait()
}

// daemonPid is the pid of the node's mirror, the leader of its process
// group, or 0 when it runs none (direct).
func (n *node) daemonPid() int {
	switch {
	case n.shoal != nil:
		return n.shoal.Pid()
	case n.cmd != nil:
		return n.cmd.Pid()
	}
	return 0
}

// signal sends sig to the node's mirror, or to its containerd when it
// runs none (direct).
func (n *node) signal(sig syscall.Signal) {
	pid := n.daemonPid()
	if pid == 0 && n.ctrd != nil {
		pid = n.ctrd.Pid()
	}
	if pid > 0 {
		_ = syscall.Kill(pid, sig)
	}
}

// close stops the mirror first, so that containerd's last requests do not
// go elsewhere, then containerd, and removes their files.
func (n *node) close() error {
	var errs []error
	if n.shoal != nil {
		errs = append(errs, n.shoal.Close())
	}
	if n.cmd != nil {
		errs = append(errs, n.cmd.Close())
	}
	if n.ctrd != nil {
		errs = append(errs, n.ctrd.Close())
	}
	return errors.Join(errs...)
}

// closeNodes closes every started node, in parallel.
func closeNodes(nodes []*node) error {
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		if n == nil {
			continue
		}
		wg.Go(func() { errs[i] = n.close() })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// keepLogs copies each node's containerd and mirror logs into dir.
func keepLogs(dir string, nodes []*node) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var errs []error
	for _, n := range nodes {
		if n == nil {
			continue
		}
		base := filepath.Join(dir, "node"+strconv.Itoa(n.i))
		errs = append(errs, copyFile(n.ctrd.LogPath(), base+"-containerd.log"))
		switch {
		case n.shoal != nil:
			errs = append(errs, copyFile(n.shoal.LogPath(), base+"-mirror.log"))
		case n.cmd != nil:
			errs = append(errs, copyFile(n.cmd.LogPath(), base+"-mirror.log"))
		}
	}
	return errors.Join(errs...)
}

// logTails are the last lines of each node's mirror log, for an error
// that a mirror may explain.
func logTails(nodes []*node, lines int) string {
	var b strings.Builder
	for _, n := range nodes {
		var p string
		switch {
		case n == nil:
			continue
		case n.shoal != nil:
			p = n.shoal.LogPath()
		case n.cmd != nil:
			p = n.cmd.LogPath()
		default:
			continue
		}
		fmt.Fprintf(&b, "\n--- node %d mirror log (%s):\n%s", n.i, p, tailFile(p, lines))
	}
	return b.String()
}

// poll calls cond until it returns nil, for at most timeout.
func poll(ctx context.Context, timeout time.Duration, what string, cond func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last: %v)", what, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// tailFile returns the last n lines of a file, for error messages.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
