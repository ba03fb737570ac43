package containerdplugin

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/containerd/errdefs"
	clog "github.com/containerd/log"
	"github.com/pelletier/go-toml/v2/unstable"
	"github.com/sirupsen/logrus"
)

// UpstreamHost is one host containerd pulls a registry's content from,
// as its hosts.toml describes it.
type UpstreamHost struct {
	Scheme string // "https" or "http"
	Host   string // host[:port]
	// Path is the API root requests go under: "/v2" for a standard
	// registry, the host's own path with override_path.
	Path string
	// Pull and Resolve are the host's capabilities: fetching by digest,
	// and resolving tags.
	Pull, Resolve bool
	// Header is sent with every request to the host.
	Header http.Header
	// TLS is the host's TLS settings (ca, client, skip_verify); nil when
	// the file sets none: system roots, no client certificate.
	TLS *tls.Config
	// Implied marks the registry's own server when no `server` key names
	// it: its scheme is the caller's choice, not the file's.
	Implied bool
}

// URL is the host's API root as a URL.
func (h UpstreamHost) URL() string { return h.Scheme + "://" + h.Host + h.Path }

// UpstreamChain is what containerd reads for one registry: the hosts it
// tries after shoal's entry, in order, the server last.
type UpstreamChain struct {
	Registry string
	// File is the hosts.toml read; "" when the registry has none and no
	// _default applies, and the chain is the registry alone.
	File  string
	Hosts []UpstreamHost
	// Warning is a problem with File that containerd works around too:
	// it ignores a file it cannot parse and pulls from the registry.
	Warning string
}

// UpstreamHostsConfig says where to read the chains.
type UpstreamHostsConfig struct {
	// HostsDir is containerd's config_path. Required.
	HostsDir string
	// Self is shoal's own mirror address (host:port), left out of every
	// chain wherever it appears, besides the host between shoal's markers.
	Self string
	// Recheck is how stale a chain may be before the files are looked at
	// again. Default 2s.
	Recheck time.Duration
	// Logger receives a line when a chain changes or a file is refused;
	// nil discards them.
	Logger *slog.Logger
}

// UpstreamHosts reads, per registry, the hosts containerd would pull from
// after shoal, with containerd's own hosts.toml code, and reads them again
// when the registry's directory changes. It is safe for concurrent use.
type UpstreamHosts struct {
	cfg UpstreamHostsConfig

	mu    sync.Mutex
	cache map[string]*chainEntry
}

type chainEntry struct {
	checked time.Time
	stamp   string
	gen     uint64
	chain   UpstreamChain
	err     error
}

// NewUpstreamHosts returns a reader of the chains under cfg.HostsDir.
func NewUpstreamHosts(cfg UpstreamHostsConfig) (*UpstreamHosts, error) {
	if cfg.HostsDir == "" {
		return nil, fmt.Errorf("hosts dir is empty: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.Recheck <= 0 {
		cfg.Recheck = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &UpstreamHosts{cfg: cfg, cache: make(map[string]*chainEntry)}, nil
}

// Chain returns the registry's chain and its generation, which changes
// whenever the chain is read anew. An error means containerd cannot pull
// from the registry either (a CA file it cannot read, say).
func (u *UpstreamHosts) Chain(registry string) (UpstreamChain, uint64, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	e := u.cache[registry]
	now := time.Now()
	if e != nil && now.Sub(e.checked) < u.cfg.Recheck {
		return e.chain, e.gen, e.err
	}
	dir, stamp := registryDir(u.cfg.HostsDir, registry)
	if e != nil && stamp == e.stamp {
		e.checked = now
		return e.chain, e.gen, e.err
	}
	if e == nil {
		if len(u.cache) > 1024 {
			clear(u.cache)
		}
		e = &chainEntry{}
		u.cache[registry] = e
	}
	e.checked, e.stamp = now, stamp
	e.gen++
	e.chain, e.err = readChain(registry, dir, u.cfg.Self)
	switch {
	case e.err != nil:
		u.cfg.Logger.Warn("cannot read the registry's hosts: shoal leaves its pulls to containerd", "registry", registry, "err", e.err)
	case e.chain.Warning != "":
		u.cfg.Logger.Warn("hosts.toml ignored, as containerd ignores it: fetching from the registry itself", "registry", registry, "file", e.chain.File, "err", e.chain.Warning)
	default:
		urls := make([]string, len(e.chain.Hosts))
		for i, h := range e.chain.Hosts {
			urls[i] = h.URL()
		}
		u.cfg.Logger.Info("upstream chain read", "registry", registry, "file", e.chain.File, "hosts", urls)
	}
	return e.chain, e.gen, e.err
}

// registryDir finds the directory containerd reads for registry, and a
// stamp of its files (names, sizes, times) that changes when they do.
func registryDir(root, registry string) (dir, stamp string) {
	dir, err := config.HostDirFromRoot(root)(registry)
	if err != nil {
		return "", "error: " + err.Error()
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return dir, "error: " + err.Error()
	}
	var b strings.Builder
	b.WriteString(dir)
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			continue
		}
		fmt.Fprintf(&b, "\x00%s %d %d", e.Name(), fi.Size(), fi.ModTime().UnixNano())
	}
	return dir, b.String()
}

// readChain reads dir as containerd does and keeps the hosts after shoal's.
func readChain(registry, dir, self string) (UpstreamChain, error) {
	ch := UpstreamChain{Registry: registry}
	var file []byte
	if dir != "" {
		b, err := os.ReadFile(filepath.Join(dir, HostsFile))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return ch, fmt.Errorf("hosts for %s: %w", registry, err)
		}
		if err == nil {
			ch.File, file = filepath.Join(dir, HostsFile), b
		}
	}
	logs := &capturedLog{}
	ctx := clog.WithLogger(context.Background(), logs.entry())
	tr := map[*http.Client]*http.Transport{}
	hosts, err := config.ConfigureHosts(ctx, config.HostOptions{
		HostDir:       func(string) (string, error) { return dir, nil },
		DefaultScheme: "https",
		UpdateClient: func(c *http.Client) error {
			if t, ok := c.Transport.(*http.Transport); ok {
				tr[c] = t
			}
			return nil
		},
	})(registry)
	if err != nil {
		return ch, fmt.Errorf("hosts for %s in %s: %w", registry, dir, err)
	}
	if w := logs.first(); w != "" {
		// containerd could not parse the file and uses the registry alone.
		ch.Warning, file = w, nil
	}
	skip := shoalsIndex(file, hosts, self)
	implied := file == nil || !hasServerKey(file)
	for i, h := range hosts[skip+1:] {
		if sameHost(h.Host, self) {
			continue
		}
		uh := UpstreamHost{
			Scheme:  h.Scheme,
			Host:    h.Host,
			Path:    h.Path,
			Pull:    h.Capabilities.Has(docker.HostCapabilityPull),
			Resolve: h.Capabilities.Has(docker.HostCapabilityResolve),
			Header:  h.Header.Clone(),
			TLS:     explicitTLS(tr[h.Client]),
			Implied: implied && skip+1+i == len(hosts)-1,
		}
		ch.Hosts = append(ch.Hosts, uh)
	}
	return ch, nil
}

// explicitTLS returns the transport's TLS settings when the file set any.
func explicitTLS(t *http.Transport) *tls.Config {
	if t == nil || t.TLSClientConfig == nil {
		return nil
	}
	c := t.TLSClientConfig
	if c.RootCAs == nil && len(c.Certificates) == 0 && !c.InsecureSkipVerify {
		return nil
	}
	return c.Clone()
}

// shoalsIndex is the index in hosts of shoal's own entry: the host table
// between shoal's markers in file, else the first host at shoal's address,
// else -1. A host table's index in hosts is its place among the file's
// host tables, the order containerd reads them in.
func shoalsIndex(file []byte, hosts []docker.RegistryHost, self string) int {
	if i := markedIndex(file, hosts); i >= 0 {
		return i
	}
	// No table between the markers: shoal's entry is found by its
	// address alone.
	for j, h := range hosts {
		if sameHost(h.Host, self) {
			return j
		}
	}
	return -1
}

// markedIndex is the index in hosts of the host table between shoal's
// markers, or -1.
func markedIndex(file []byte, hosts []docker.RegistryHost) int {
	begin := bytes.Index(file, []byte(beginMarker))
	end := bytes.Index(file, []byte(endMarker))
	if begin < 0 || end < begin {
		return -1
	}
	i, last, found := -1, "", -1
	_ = eachTable(file, func(kind unstable.Kind, parts []string, off int) {
		// The same rule as containerd's: a host's sub-tables (its header)
		// right after it are not another host.
		if found >= 0 || kind != unstable.Table || len(parts) < 2 || parts[0] != "host" || parts[1] == last {
			return
		}
		last = parts[1]
		i++
		if off > begin && off < end && i < len(hosts) && hostOfURL(parts[1]) == hosts[i].Host {
			found = i
		}
	})
	return found
}

// hostOfURL is the host[:port] of a host key as containerd parses it.
func hostOfURL(s string) string {
	if !strings.HasPrefix(s, "http") {
		s = "https://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return ""
	}
	return u.Host
}

// sameHost says whether host is shoal's own address self, loopback names
// included.
func sameHost(host, self string) bool {
	if self == "" {
		return false
	}
	if host == self {
		return true
	}
	h1, p1, err1 := net.SplitHostPort(host)
	h2, p2, err2 := net.SplitHostPort(self)
	if err1 != nil || err2 != nil || p1 != p2 {
		return false
	}
	return docker.IsLocalhost(h1) && docker.IsLocalhost(h2) ||
		(h2 == "" || h2 == "0.0.0.0" || h2 == "::") && docker.IsLocalhost(h1)
}

// hasServerKey says whether a hosts.toml names its server.
func hasServerKey(file []byte) bool {
	p := unstable.Parser{}
	p.Reset(file)
	for p.NextExpression() {
		e := p.Expression()
		if e.Kind == unstable.Table || e.Kind == unstable.ArrayTable {
			return false
		}
		if e.Kind != unstable.KeyValue {
			continue
		}
		it := e.Key()
		if it.Next() && string(it.Node().Data) == "server" && !it.Next() {
			return true
		}
	}
	return false
}

// capturedLog keeps what containerd's hosts code logs at error level: the
// reason it ignored a file.
type capturedLog struct {
	mu    sync.Mutex
	lines []string
}

func (c *capturedLog) entry() *clog.Entry {
	l := logrus.New()
	l.SetOutput(discard{})
	l.SetLevel(logrus.ErrorLevel)
	l.AddHook(c)
	return logrus.NewEntry(l)
}

func (c *capturedLog) Levels() []logrus.Level {
	return []logrus.Level{logrus.PanicLevel, logrus.FatalLevel, logrus.ErrorLevel}
}

func (c *capturedLog) Fire(e *logrus.Entry) error {
	msg := e.Message
	if err, ok := e.Data[logrus.ErrorKey].(error); ok {
		msg += ": " + err.Error()
	}
	c.mu.Lock()
	c.lines = append(c.lines, strings.ReplaceAll(msg, "\n", " "))
	c.mu.Unlock()
	return nil
}

func (c *capturedLog) first() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.lines) == 0 {
		return ""
	}
	return c.lines[0]
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
