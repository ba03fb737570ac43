package lab

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// DefaultRegistryBinary is Debian's docker-registry (distribution 2.8).
const DefaultRegistryBinary = "/usr/bin/docker-registry"

// readyAgent is the User-Agent of the readiness probe; Requests leaves its
// requests out so that the log shows only what the test's clients did.
const readyAgent = "shoal-lab-ready"

// RegistryConfig says how to run a docker-registry. The zero value runs the
// Debian binary on a free loopback port with storage in a new temp dir.
type RegistryConfig struct {
	// Addr is the host:port to listen on. Empty picks a free 127.0.0.1 port,
	// which only works outside a namespace: with Netns set, give the host's
	// address (Host.Addr(5000)).
	Addr string
	// Netns runs the registry inside this network namespace; "" runs it in
	// the caller's.
	Netns string
	// Dir is where the registry's temp dir is created; "" is os.TempDir().
	Dir string
	// Binary is the registry executable; "" is DefaultRegistryBinary.
	Binary string
	// TLS, when set, serves HTTPS instead of plain HTTP.
	TLS *RegistryTLS
	// ProxyRemote, when set, makes the registry a pull-through cache of
	// the registry at this URL (read-only: nothing can be pushed to it).
	ProxyRemote string
	// Logger receives lifecycle events; nil discards them.
	Logger *slog.Logger
}

// RegistryTLS serves a registry over HTTPS.
type RegistryTLS struct {
	// CertFile and KeyFile are the server's certificate and key (PEM).
	CertFile, KeyFile string
	// ClientCAFile, when set, makes the registry require a client
	// certificate signed by this CA.
	ClientCAFile string
	// Client is how lab's own requests (readiness, log sync, pushes)
	// reach the registry: its CA, and a client certificate when one is
	// required. Required.
	Client *tls.Config
}

// Registry is a running docker-registry with filesystem storage, JSON logs
// and the access log on. Its request log is what tests and the benchmark
// read to learn how much the registry served.
type Registry struct {
	cfg  RegistryConfig
	log  *slog.Logger
	dir  string
	addr string
	proc *process

	mu     sync.Mutex
	closed bool
}

// StartRegistry writes a config into a new temp dir, starts the registry and
// waits until it answers GET /v2/.
func StartRegistry(ctx context.Context, cfg RegistryConfig) (*Registry, error) {
	if cfg.Binary == "" {
		cfg.Binary = DefaultRegistryBinary
	}
	if _, err := os.Stat(cfg.Binary); err != nil {
		return nil, fmt.Errorf("registry binary: %w", err)
	}
	addr := cfg.Addr
	if addr == "" {
		if cfg.Netns != "" {
			return nil, errors.New("registry: Addr is required with Netns")
		}
		var err error
		if addr, err = freeLoopbackAddr(); err != nil {
			return nil, err
		}
	}
	if cfg.TLS != nil && (cfg.TLS.CertFile == "" || cfg.TLS.KeyFile == "" || cfg.TLS.Client == nil) {
		return nil, errors.New("registry: TLS needs CertFile, KeyFile and Client")
	}
	dir, err := os.MkdirTemp(cfg.Dir, "lab-registry-")
	if err != nil {
		return nil, err
	}
	r := &Registry{cfg: cfg, log: logger(cfg.Logger).With("component", "registry"), dir: dir, addr: addr}
	if err := os.WriteFile(r.configPath(), []byte(registryConfigYAML(filepath.Join(dir, "data"), addr, cfg)), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	r.proc = &process{
		name:   "docker-registry",
		log:    r.log,
		argv:   []string{cfg.Binary, "serve", r.configPath()},
		netns:  cfg.Netns,
		dir:    dir,
		stdout: filepath.Join(dir, "access.log"),
		stderr: r.LogPath(),
	}
	if err := r.Start(ctx); err != nil {
		return nil, errors.Join(err, r.Close())
	}
	return r, nil
}

// registryConfigYAML is a distribution 2.8 config. Deletes are on so that
// tests can drop blobs; upload purging is off so that restarts keep state.
func registryConfigYAML(root, addr string, cfg RegistryConfig) string {
	var extra strings.Builder
	if t := cfg.TLS; t != nil {
		fmt.Fprintf(&extra, "  tls:\n    certificate: %s\n    key: %s\n", t.CertFile, t.KeyFile)
		if t.ClientCAFile != "" {
			fmt.Fprintf(&extra, "    clientcas:\n      - %s\n", t.ClientCAFile)
		}
	}
	if cfg.ProxyRemote != "" {
		fmt.Fprintf(&extra, "proxy:\n  remoteurl: %s\n", cfg.ProxyRemote)
	}
	return fmt.Sprintf(`version: 0.1
log:
  level: info
  formatter: json
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: shoal-lab
%s`, root, addr, extra.String())
}

// URL is the registry's base URL, https:// when it serves TLS.
func (r *Registry) URL() string {
	if r.cfg.TLS != nil {
		return "https://" + r.addr
	}
	return "http://" + r.addr
}

// Transport is an HTTP transport that reaches the registry from its
// namespace, with the registry's TLS client settings.
func (r *Registry) Transport() *http.Transport {
	t := TransportIn(r.cfg.Netns)
	if r.cfg.TLS != nil {
		t.TLSClientConfig = r.cfg.TLS.Client.Clone()
	}
	return t
}

// Addr is the host:port the registry listens on.
func (r *Registry) Addr() string { return r.addr }

// Dir is the registry's temp dir: config.yml, data/, registry.log, access.log.
func (r *Registry) Dir() string { return r.dir }

// LogPath is the file with the registry's JSON log, one request per
// "response completed" line.
func (r *Registry) LogPath() string { return filepath.Join(r.dir, "registry.log") }

func (r *Registry) configPath() string { return filepath.Join(r.dir, "config.yml") }

// Pid is the registry's process id, or 0 before the first start.
func (r *Registry) Pid() int { return r.proc.pid() }

// Start (re)starts a stopped registry on the same storage and address and
// waits until it answers.
func (r *Registry) Start(ctx context.Context) error {
	if err := r.proc.start(); err != nil {
		return err
	}
	if err := r.waitReady(ctx); err != nil {
		r.proc.stop(0)
		return fmt.Errorf("registry %s: %w (log: %s)", r.addr, err, tail(r.LogPath(), 5))
	}
	r.log.Info("registry ready", "addr", r.addr, "dir", r.dir)
	return nil
}

// sync sends a probe with a unique query and waits until its log line is
// written. By then the requests whose responses were complete before the
// probe was sent have been logged too, save for a scheduling accident.
func (r *Registry) sync(ctx context.Context) error {
	var b [8]byte
	_, _ = rand.Read(b[:])
	token := "lab-sync=" + hex.EncodeToString(b[:])
	tr := r.Transport()
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL()+"/v2/?"+token, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", readyAgent)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	for {
		b, err := os.ReadFile(r.LogPath())
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte(token)) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (r *Registry) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tr := r.Transport()
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	exited := r.proc.exited()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL()+"/v2/", nil)
		if err != nil {
			return err
		}
		req.Header.Set("User-Agent", readyAgent)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.Header.Get("Docker-Distribution-Api-Version") != "" {
				return nil
			}
		}
		select {
		case <-exited:
			return r.proc.exitErr()
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop ends the registry and keeps its storage, so Start can bring it back.
func (r *Registry) Stop() { r.proc.stop(stopGrace) }

// Kill ends the registry's process group with SIGKILL, as a crash would.
func (r *Registry) Kill() { r.proc.stop(0) }

// Close stops the registry and removes its temp dir. It is idempotent.
func (r *Registry) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	r.proc.stop(stopGrace)
	return os.RemoveAll(r.dir)
}

// Request is one request the registry answered, from its JSON log.
type Request struct {
	Time         time.Time // when the response completed
	ID           string
	Method       string
	URI          string // as sent, with the query
	Path         string // URI without the query
	Query        string
	Host         string
	RemoteAddr   string
	UserAgent    string
	Status       int
	BytesWritten int64         // body bytes written; a HEAD reports the length it would have sent
	Duration     time.Duration // until the response completed
	// Repo, and Digest or Reference, are parsed from Path: the registry logs
	// its route variables only for requests that failed.
	Repo      string
	Digest    digest.Digest // blob requests, and manifest requests by digest
	Reference string        // manifest requests: tag or digest
	Blob      bool          // a blob request, not an upload
}

// parsePath fills Repo, Digest, Reference and Blob from the request path.
func (q *Request) parsePath() {
	p, ok := strings.CutPrefix(q.Path, "/v2/")
	if !ok {
		return
	}
	if i := strings.LastIndex(p, "/blobs/"); i >= 0 {
		q.Repo = p[:i]
		if d, err := digest.Parse(p[i+len("/blobs/"):]); err == nil {
			q.Digest, q.Blob = d, true
		}
		return
	}
	if i := strings.LastIndex(p, "/manifests/"); i >= 0 {
		q.Repo, q.Reference = p[:i], p[i+len("/manifests/"):]
		if d, err := digest.Parse(q.Reference); err == nil {
			q.Digest = d
		}
	}
}

// registryLogLine is the subset of distribution's logrus JSON fields that
// describe a completed request.
type registryLogLine struct {
	Msg        string `json:"msg"`
	Time       string `json:"time"`
	ID         string `json:"http.request.id"`
	Method     string `json:"http.request.method"`
	URI        string `json:"http.request.uri"`
	Host       string `json:"http.request.host"`
	RemoteAddr string `json:"http.request.remoteaddr"`
	UserAgent  string `json:"http.request.useragent"`
	Status     int    `json:"http.response.status"`
	Written    int64  `json:"http.response.written"`
	Duration   string `json:"http.response.duration"`
}

// Requests parses the registry's log into the requests it completed, in log
// order, leaving out lab's own probes. It reads the whole log on every call,
// across restarts. The registry logs a request just after it has sent the
// response, so a running registry is first synced: Requests sends a probe
// and waits (up to 5 s) until the probe's line is in the log. If the probe
// fails, so does Requests: the log might lack the last requests.
func (r *Registry) Requests() ([]Request, error) {
	if r.proc.running() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := r.sync(ctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("registry log: waiting for the last requests to be logged: %w", err)
		}
	}
	f, err := os.Open(r.LogPath())
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Request
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var l registryLogLine
		if err := json.Unmarshal(line, &l); err != nil {
			return nil, fmt.Errorf("registry log %q: %w", line, err)
		}
		// Both "response completed" and "response completed with error"
		// close a request; other lines have no method.
		if l.Method == "" || !strings.HasPrefix(l.Msg, "response completed") || l.UserAgent == readyAgent {
			continue
		}
		q := Request{
			ID: l.ID, Method: l.Method, URI: l.URI, Path: l.URI, Host: l.Host,
			RemoteAddr: l.RemoteAddr, UserAgent: l.UserAgent, Status: l.Status,
			BytesWritten: l.Written,
		}
		if i := strings.IndexByte(l.URI, '?'); i >= 0 {
			q.Path, q.Query = l.URI[:i], l.URI[i+1:]
		}
		q.parsePath()
		q.Time, _ = time.Parse(time.RFC3339Nano, l.Time)
		q.Duration, _ = time.ParseDuration(l.Duration)
		out = append(out, q)
	}
	return out, sc.Err()
}

// BlobGets counts the successful (2xx) blob GETs per digest.
func (r *Registry) BlobGets() (map[digest.Digest]int, error) {
	reqs, err := r.Requests()
	if err != nil {
		return nil, err
	}
	n := make(map[digest.Digest]int)
	for _, q := range reqs {
		if q.Method == http.MethodGet && q.Blob && q.Status/100 == 2 {
			n[q.Digest]++
		}
	}
	return n, nil
}

// BlobBytes sums the body bytes the registry wrote for blob GETs per digest:
// its egress for layers, counting cut-short transfers as far as they got.
func (r *Registry) BlobBytes() (map[digest.Digest]int64, error) {
	reqs, err := r.Requests()
	if err != nil {
		return nil, err
	}
	n := make(map[digest.Digest]int64)
	for _, q := range reqs {
		if q.Method == http.MethodGet && q.Blob {
			n[q.Digest] += q.BytesWritten
		}
	}
	return n, nil
}

// freeLoopbackAddr asks the kernel for a free port. Another process may take
// it before the registry binds; the registry then exits and Start says so.
func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
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
