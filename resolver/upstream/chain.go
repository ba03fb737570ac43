package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"github.com/shoal-dev/shoal/resolver"
)

// Endpoint is one host a registry's content is fetched from.
type Endpoint struct {
	Scheme string // "https" or "http"
	Host   string // host[:port]
	// Path is the API root requests go under, "/v2" for a standard
	// registry.
	Path string
	// Pull and Resolve say what the host is asked for: blobs and
	// manifests by digest, and tags.
	Pull, Resolve bool
	// Header is sent with every request to the host.
	Header http.Header
	// TLS replaces the default TLS settings (system roots, no client
	// certificate) for this host; nil keeps them.
	TLS *tls.Config
	// Implied marks the registry itself when no configuration names it:
	// it is reached over HTTPS unless Config.Insecure names it.
	Implied bool
}

// URL is the endpoint's API root.
func (e Endpoint) URL() string { return e.Scheme + "://" + e.Host + e.Path }

// Chain is the endpoints of one registry, tried in order.
type Chain struct {
	Endpoints []Endpoint
	// Source names where the chain was read (a hosts.toml); "" when the
	// registry is reached alone.
	Source string
	// Warning is a problem with Source the reader worked around.
	Warning string
	// Gen changes whenever the chain is read anew; the client then
	// rebuilds the endpoints' connections.
	Gen uint64
}

// Hosts says, per registry, which endpoints shoal fetches its content
// from. Implementations must be safe for concurrent use and cheap to call
// on every request.
type Hosts interface {
	// Chain returns the registry's chain. An error means the registry
	// cannot be reached as configured: shoal leaves it to containerd.
	Chain(registry string) (Chain, error)
}

// Timing of a chain: a host that cannot be reached is left for the next
// one at once, and tried again only after hostDownFor; a host with a
// successor is given less time to connect than the last one.
const (
	hostDownFor     = 30 * time.Second
	chainDialBudget = 2 * time.Second
)

// endpoint is an Endpoint with its connections, tokens and health.
type endpoint struct {
	Endpoint
	base  http.RoundTripper // TLS and scheme policy; no credentials
	owned *http.Transport   // this endpoint's own transport, closed on rebuild

	mu        sync.Mutex
	authed    map[string]http.RoundTripper // by repository
	lastErr   string
	lastErrAt time.Time
	lastOKAt  time.Time
	downUntil time.Time
}

// registryChain is a registry's endpoints as last read.
type registryChain struct {
	gen     uint64
	source  string
	warning string
	err     error
	eps     []*endpoint
}

// chain returns the registry's endpoints, rebuilding them when the chain
// was read anew.
func (c *Client) chain(registry string) (*registryChain, error) {
	ch := Chain{Endpoints: []Endpoint{{Scheme: c.scheme(Host(registry)), Host: Host(registry), Path: "/v2", Pull: true, Resolve: true, Implied: true}}}
	var err error
	if c.cfg.Hosts != nil {
		ch, err = c.cfg.Hosts.Chain(registry)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	rc := c.chains[registry]
	if rc != nil && rc.gen == ch.Gen && (c.cfg.Hosts != nil || rc.eps != nil) {
		return rc, rc.err
	}
	if rc != nil {
		for _, e := range rc.eps {
			if e.owned != nil {
				e.owned.CloseIdleConnections()
			}
		}
	}
	if len(c.chains) > 1024 {
		clear(c.chains)
	}
	rc = &registryChain{gen: ch.Gen, source: ch.Source, warning: ch.Warning, err: err}
	if err == nil {
		for i, ep := range ch.Endpoints {
			rc.eps = append(rc.eps, c.newEndpoint(registry, ep, i < len(ch.Endpoints)-1))
		}
	}
	c.chains[registry] = rc
	return rc, err
}

// newEndpoint makes an endpoint's transport: the shared one unless the
// endpoint has TLS settings of its own or a successor to hurry on to.
func (c *Client) newEndpoint(registry string, ep Endpoint, hasNext bool) *endpoint {
	if ep.Implied {
		ep.Scheme = c.scheme(ep.Host)
	}
	e := &endpoint{Endpoint: ep, authed: make(map[string]http.RoundTripper)}
	guard := httpsOnly{insecure: c.cfg.Insecure}
	if !ep.Implied {
		guard.why = "its hosts.toml entry is https"
		if ep.Scheme == "http" {
			// The operator's hosts.toml names this host http://.
			guard.insecure = append(slices.Clip(guard.insecure), ep.Host)
			guard.plain = true
		}
	}
	if ep.TLS == nil && !hasNext {
		guard.inner = c.shared
		e.base = guard
		return e
	}
	t := c.shared.Clone()
	if ep.TLS != nil {
		t.TLSClientConfig = ep.TLS.Clone()
		if ep.TLS.InsecureSkipVerify {
			c.cfg.Logger.Warn("hosts.toml turns off certificate verification for this host (skip_verify): anyone on the path can impersonate it", "registry", registry, "host", ep.Host)
		}
	}
	if hasNext && c.cfg.Dial == nil {
		budget := min(c.cfg.DialTimeout, chainDialBudget)
		t.DialContext = (&net.Dialer{Timeout: budget, KeepAlive: 30 * time.Second}).DialContext
		t.TLSHandshakeTimeout = budget
	}
	e.owned = t
	guard.inner = t
	e.base = guard
	return e
}

// FailoverTime implements resolver.Chained: each pull host before the
// registry's last gets chainDialBudget (at most DialTimeout) to connect.
// A host that takes a connection and then stalls its TLS handshake may
// take as long again; that is rarer than a host that is not there, and
// left out.
func (c *Client) FailoverTime(registry string) time.Duration {
	rc, err := c.chain(registry)
	if err != nil {
		return 0
	}
	var hosts int
	for _, e := range rc.eps {
		if e.Pull {
			hosts++
		}
	}
	if hosts < 2 {
		return 0
	}
	return time.Duration(hosts-1) * min(c.cfg.DialTimeout, chainDialBudget)
}

// order is the order a request tries the endpoints in: the chain's, with
// the hosts that recently could not be reached moved to the end.
func order(eps []*endpoint, now time.Time) []*endpoint {
	out := make([]*endpoint, 0, len(eps))
	var down []*endpoint
	for _, e := range eps {
		e.mu.Lock()
		d := now.Before(e.downUntil)
		e.mu.Unlock()
		if d {
			down = append(down, e)
		} else {
			out = append(out, e)
		}
	}
	return append(out, down...)
}

// note records the outcome of a request to the endpoint.
func (e *endpoint) note(err error, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err == nil {
		e.lastOKAt, e.downUntil = now, time.Time{}
		return
	}
	e.lastErr, e.lastErrAt = err.Error(), now
	var rl *resolver.RateLimitedError
	switch {
	case errors.As(err, &rl):
		e.downUntil = now.Add(max(rl.RetryAfter, time.Second))
	case unreachable(err):
		e.downUntil = now.Add(hostDownFor)
	}
}

// unreachable says whether err means the host could not be talked to at
// all (no connection, no TLS session, no answer), rather than that it
// answered.
func unreachable(err error) bool {
	var (
		op    *net.OpError
		ne    net.Error
		cert  *tls.CertificateVerificationError
		rec   tls.RecordHeaderError
		alert tls.AlertError
		ua    x509.UnknownAuthorityError
		hn    x509.HostnameError
		ci    x509.CertificateInvalidError
	)
	return errors.As(err, &op) || (errors.As(err, &ne) && ne.Timeout()) ||
		errors.As(err, &cert) || errors.As(err, &rec) || errors.As(err, &alert) ||
		errors.As(err, &ua) || errors.As(err, &hn) || errors.As(err, &ci)
}

// chainError picks the error a request that every endpoint failed
// returns: the last endpoint's, unless an earlier endpoint answered and
// the later ones could not be reached. Then the answer stands, so that a
// mirror's "not found" is not taken for the registry being down.
func chainError(errs []error) error {
	if len(errs) == 0 {
		return errdefs.ErrNotFound
	}
	last := errs[len(errs)-1]
	if !unreachable(last) {
		return last
	}
	for i := len(errs) - 2; i >= 0; i-- {
		if !unreachable(errs[i]) && !errors.Is(errs[i], context.Canceled) {
			return errs[i]
		}
	}
	return last
}

// RegistryStatus is a registry's chain as the client uses it, for
// `shoal status`.
type RegistryStatus struct {
	Registry string       `json:"registry"`
	Source   string       `json:"source,omitempty"`
	Warning  string       `json:"warning,omitempty"`
	Error    string       `json:"error,omitempty"`
	Hosts    []HostStatus `json:"hosts"`
}

// HostStatus is one host of a chain and how its last requests went.
type HostStatus struct {
	URL          string    `json:"url"`
	Capabilities []string  `json:"capabilities"`
	TLS          string    `json:"tls"`
	LastError    string    `json:"last_error,omitempty"`
	LastErrorAt  time.Time `json:"last_error_at,omitzero"`
	LastOKAt     time.Time `json:"last_ok_at,omitzero"`
	DownUntil    time.Time `json:"down_until,omitzero"`
}

// Status describes the chains of the given registries and of every
// registry the client has fetched from, sorted by name.
func (c *Client) Status(registries []string) []RegistryStatus {
	c.mu.Lock()
	for r := range c.chains {
		registries = append(registries, r)
	}
	c.mu.Unlock()
	slices.Sort(registries)
	registries = slices.Compact(registries)
	out := make([]RegistryStatus, 0, len(registries))
	for _, r := range registries {
		rc, err := c.chain(r)
		st := RegistryStatus{Registry: r, Source: rc.source, Warning: rc.warning}
		if err != nil {
			st.Error = err.Error()
		}
		for _, e := range rc.eps {
			st.Hosts = append(st.Hosts, e.status())
		}
		out = append(out, st)
	}
	return out
}

func (e *endpoint) status() HostStatus {
	hs := HostStatus{URL: e.URL(), TLS: tlsSummary(e.TLS)}
	if e.Pull {
		hs.Capabilities = append(hs.Capabilities, "pull")
	}
	if e.Resolve {
		hs.Capabilities = append(hs.Capabilities, "resolve")
	}
	if e.Scheme == "http" {
		hs.TLS = "none (plain HTTP)"
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	hs.LastError, hs.LastErrorAt, hs.LastOKAt = e.lastErr, e.lastErrAt, e.lastOKAt
	if time.Now().Before(e.downUntil) {
		hs.DownUntil = e.downUntil
	}
	return hs
}

// tlsSummary says in a few words how a host's certificate is checked.
func tlsSummary(t *tls.Config) string {
	if t == nil {
		return "system roots"
	}
	var parts []string
	switch {
	case t.InsecureSkipVerify:
		parts = append(parts, "NOT VERIFIED (skip_verify)")
	case t.RootCAs != nil:
		parts = append(parts, "hosts.toml CA")
	default:
		parts = append(parts, "system roots")
	}
	if len(t.Certificates) > 0 {
		parts = append(parts, "client certificate")
	}
	return strings.Join(parts, ", ")
}
