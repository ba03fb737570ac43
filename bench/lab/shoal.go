package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/shoal-dev/shoal/pulls"
)

// ShoalConfig says how to run a shoal daemon.
type ShoalConfig struct {
	// Binary is the shoal executable. Required.
	Binary string
	// Netns runs the daemon inside this network namespace; "" runs it in
	// the caller's.
	Netns string
	// MirrorAddr, MetricsAddr and StatusAddr are where the daemon listens.
	// Empty picks a free 127.0.0.1 port outside a namespace; inside one,
	// MirrorAddr and MetricsAddr are required and StatusAddr defaults to
	// 127.0.0.1:7504, the daemon's own default.
	MirrorAddr  string
	MetricsAddr string
	StatusAddr  string
	// Args are more daemon flags (--containerd-sock, --insecure-registry...).
	// --mirror-addr, --metrics-addr, --status-addr and --data-dir are set
	// by StartShoal.
	Args []string
	// Dir is where the daemon's temp dir (data dir and log) is created; ""
	// is os.TempDir().
	Dir string
	// DataDir is the daemon's --data-dir; "" is "data" in the temp dir.
	// A directory given here is the caller's: Close leaves it.
	DataDir string
	// Logger receives lifecycle events; nil discards them.
	Logger *slog.Logger
}

// Shoal is a running shoal daemon.
type Shoal struct {
	cfg  ShoalConfig
	log  *slog.Logger
	dir  string
	proc *process

	mu     sync.Mutex
	closed bool
}

// StartShoal starts a daemon and waits until /readyz answers.
func StartShoal(ctx context.Context, cfg ShoalConfig) (*Shoal, error) {
	if cfg.Binary == "" {
		return nil, errors.New("shoal: Binary is required")
	}
	if cfg.StatusAddr == "" && cfg.Netns != "" {
		cfg.StatusAddr = "127.0.0.1:7504"
	}
	for _, a := range []*string{&cfg.MirrorAddr, &cfg.MetricsAddr, &cfg.StatusAddr} {
		if *a != "" {
			continue
		}
		if cfg.Netns != "" {
			return nil, errors.New("shoal: MirrorAddr and MetricsAddr are required with Netns")
		}
		var err error
		if *a, err = freeLoopbackAddr(); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp(cfg.Dir, "lab-shoal-")
	if err != nil {
		return nil, err
	}
	s := &Shoal{cfg: cfg, log: logger(cfg.Logger), dir: dir}
	argv := append([]string{cfg.Binary, "daemon",
		"--mirror-addr", cfg.MirrorAddr,
		"--metrics-addr", cfg.MetricsAddr,
		"--status-addr", cfg.StatusAddr,
		"--data-dir", s.DataDir(),
		"--log-format", "json",
	}, cfg.Args...)
	s.proc = &process{name: "shoal", log: s.log, argv: argv, netns: cfg.Netns, dir: dir, stdout: s.LogPath(), stderr: s.LogPath()}
	if err := s.Start(ctx); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

// MirrorURL is the mirror as containerd's hosts.toml names it.
func (s *Shoal) MirrorURL() string { return "http://" + dialable(s.cfg.MirrorAddr) }

// MetricsURL is the base URL of /metrics, /healthz and /readyz.
func (s *Shoal) MetricsURL() string { return "http://" + dialable(s.cfg.MetricsAddr) }

// dialable turns a listen address into one to connect to: a listener on
// every interface (":7503", "0.0.0.0:7503") is reached on loopback.
func dialable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || (host != "" && host != "0.0.0.0" && host != "::") {
		return addr
	}
	return net.JoinHostPort("127.0.0.1", port)
}

// DataDir is the daemon's --data-dir.
func (s *Shoal) DataDir() string {
	if s.cfg.DataDir != "" {
		return s.cfg.DataDir
	}
	return filepath.Join(s.dir, "data")
}

// LogPath is the file the daemon's stdout and stderr go to.
func (s *Shoal) LogPath() string { return filepath.Join(s.dir, "shoal.log") }

// Pid is the daemon's pid, or 0.
func (s *Shoal) Pid() int { return s.proc.pid() }

// Running says whether the daemon is alive.
func (s *Shoal) Running() bool { return s.proc.running() }

// Start (re)starts the daemon on the same data dir and addresses.
func (s *Shoal) Start(ctx context.Context) error {
	if err := s.proc.start(); err != nil {
		return err
	}
	if err := s.waitReady(ctx); err != nil {
		s.proc.stop(0)
		return fmt.Errorf("shoal %s: %w (log: %s)", s.cfg.MirrorAddr, err, tail(s.LogPath(), 5))
	}
	return nil
}

func (s *Shoal) client() *http.Client {
	return &http.Client{Transport: TransportIn(s.cfg.Netns), Timeout: 5 * time.Second}
}

func (s *Shoal) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c := s.client()
	defer c.CloseIdleConnections()
	exited := s.proc.exited()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.MetricsURL()+"/readyz", nil)
		if err != nil {
			return err
		}
		if resp, err := c.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			return s.proc.exitErr()
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Metrics scrapes the daemon's /metrics.
func (s *Shoal) Metrics(ctx context.Context) (Metrics, error) {
	c := s.client()
	defer c.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.MetricsURL()+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return nil, fmt.Errorf("metrics: %s: %s", resp.Status, b)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return Metrics(fams), nil
}

// Metrics are parsed Prometheus metric families by name.
type Metrics map[string]*dto.MetricFamily

// Sum adds the values of a counter or gauge over the series whose labels
// include every pair in match.
func (m Metrics) Sum(name string, match map[string]string) float64 {
	f, ok := m[name]
	if !ok {
		return 0
	}
	var sum float64
	for _, mt := range f.GetMetric() {
		ok := true
		for k, v := range match {
			found := false
			for _, lp := range mt.GetLabel() {
				if lp.GetName() == k && lp.GetValue() == v {
					found = true
				}
			}
			ok = ok && found
		}
		if !ok {
			continue
		}
		switch {
		case mt.Counter != nil:
			sum += mt.GetCounter().GetValue()
		case mt.Gauge != nil:
			sum += mt.GetGauge().GetValue()
		case mt.Untyped != nil:
			sum += mt.GetUntyped().GetValue()
		}
	}
	return sum
}

// Pull reads the daemon's record of its latest pull of image from its
// status address (/pulls?image=).
func (s *Shoal) Pull(ctx context.Context, image string) (pulls.Pull, error) {
	var p pulls.Pull
	c := s.client()
	defer c.CloseIdleConnections()
	u := "http://" + dialable(s.cfg.StatusAddr) + "/pulls?image=" + url.QueryEscape(image)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return p, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return p, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return p, fmt.Errorf("pulls: %s: %s", resp.Status, b)
	}
	err = json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&p)
	return p, err
}

// Stop ends the daemon with SIGTERM (a graceful shutdown).
func (s *Shoal) Stop() { s.proc.stop(stopGrace) }

// Kill ends the daemon with SIGKILL, as a crash would.
func (s *Shoal) Kill() { s.proc.stop(0) }

// Close stops the daemon and removes its temp dir. It is idempotent.
func (s *Shoal) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.proc.stop(stopGrace)
	return os.RemoveAll(s.dir)
}

// StatusAddr is where the daemon serves /status.
func (s *Shoal) StatusAddr() string { return s.cfg.StatusAddr }

// Status fetches the daemon's /status, from its --status-addr.
func (s *Shoal) Status(ctx context.Context) ([]byte, error) {
	return s.get(ctx, "http://"+dialable(s.cfg.StatusAddr)+"/status")
}

// Get fetches a path of the daemon's metrics server, such as /metrics.
func (s *Shoal) Get(ctx context.Context, path string) ([]byte, error) {
	return s.get(ctx, s.MetricsURL()+path)
}

func (s *Shoal) get(ctx context.Context, url string) ([]byte, error) {
	c := s.client()
	defer c.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s: %s", url, resp.Status, b)
	}
	return b, nil
}
