package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoal-dev/shoal/resolver"
)

var _ resolver.Chained = (*Client)(nil)

// Config holds the client's optional settings.
type Config struct {
	// Insecure lists registries (host[:port]) reached over plain HTTP.
	// Every other registry is reached over HTTPS only.
	Insecure []string
	// AuthFile is a docker config.json with credentials; empty means anonymous.
	AuthFile string
	// UserAgent is sent with every request.
	UserAgent string
	// DialTimeout bounds connecting and the TLS handshake. Default 5s.
	DialTimeout time.Duration
	// Dial, when set, opens the connections to registries; nil dials
	// directly, with DialTimeout. The simulated benchmark passes one that
	// shapes them by the links of both ends.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// ResponseTimeout bounds the wait for an answer's header once a
	// request is sent. Default 30s.
	ResponseTimeout time.Duration
	// Hosts, when set, says per registry which hosts to fetch from, in
	// order, each with its TLS settings (containerd's hosts.toml chain).
	// nil fetches from the registry alone, with the system's roots.
	Hosts Hosts
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
}

// Client talks to registries. Each registry is a chain of hosts tried in
// order (the registry alone, without Config.Hosts). It caches one
// authenticated transport per host and repository, so a token is fetched
// once and refreshed when the host says it expired.
type Client struct {
	cfg      Config
	keychain *fileKeychain
	shared   *http.Transport

	mu     sync.Mutex
	chains map[string]*registryChain
}

// New returns a client. It fails when the auth file cannot be read.
func New(cfg Config) (*Client, error) {
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "shoal"
	}
	if cfg.ResponseTimeout == 0 {
		cfg.ResponseTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	kc, err := loadKeychain(cfg.AuthFile)
	if err != nil {
		return nil, err
	}
	dialer := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
	t := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		TLSHandshakeTimeout:   cfg.DialTimeout,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: cfg.ResponseTimeout,
		ForceAttemptHTTP2:     true,
	}
	if cfg.Dial != nil {
		t.DialContext = cfg.Dial
	}
	return &Client{cfg: cfg, keychain: kc, shared: t, chains: make(map[string]*registryChain)}, nil
}

// httpsOnly refuses plain HTTP to registries not named insecure, which also
// stops go-containerregistry's fallback to HTTP for local addresses.
type httpsOnly struct {
	inner    http.RoundTripper
	insecure []string
	// why says why HTTP is refused; "" is that the host is not an
	// --insecure-registry.
	why string
	// plain refuses HTTPS instead: the operator's hosts.toml names the
	// host http://, which containerd asks over plain HTTP alone. The
	// registry client would try HTTPS first, and a host that cannot be
	// reached would cost two connection timeouts instead of one.
	plain bool
}

func (h httpsOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	if h.plain && req.URL.Scheme == "https" {
		return nil, fmt.Errorf("HTTPS to %s not tried: its hosts.toml entry is http", req.URL.Host)
	}
	if req.URL.Scheme == "http" && !slices.Contains(h.insecure, req.URL.Host) {
		why := h.why
		if why == "" {
			why = "not an --insecure-registry"
		}
		return nil, fmt.Errorf("plain HTTP to %s refused: %s", req.URL.Host, why)
	}
	return h.inner.RoundTrip(req)
}

// Host maps a registry name to the host that serves its API.
func Host(registry string) string {
	if registry == "docker.io" || registry == "index.docker.io" {
		return "registry-1.docker.io"
	}
	return registry
}

func (c *Client) scheme(host string) string {
	if slices.Contains(c.cfg.Insecure, host) {
		return "http"
	}
	return "https"
}

// transport returns the endpoint's authenticated transport for a
// repository.
func (c *Client) transport(ctx context.Context, e *endpoint, repo string) (http.RoundTripper, error) {
	e.mu.Lock()
	rt, ok := e.authed[repo]
	e.mu.Unlock()
	if ok {
		return rt, nil
	}
	opts := []name.Option{name.WeakValidation}
	if e.Scheme == "http" {
		opts = append(opts, name.Insecure)
	}
	r, err := name.NewRepository(e.Host+"/"+scopeRepo(e.Path, repo), opts...)
	if err != nil {
		return nil, fmt.Errorf("repository %s/%s: %w: %w", e.Host, repo, err, errdefs.ErrInvalidArgument)
	}
	// A mirror is asked with the credentials filed under its own name.
	auth, err := c.keychain.Resolve(r.Registry)
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", e.Host, err)
	}
	base := transport.NewUserAgent(e.base, c.cfg.UserAgent)
	rt, err = transport.NewWithContext(ctx, r.Registry, auth, base, []string{r.Scope(transport.PullScope)})
	var te *transport.Error
	if err != nil && e.Path != "/v2" && auth == authn.Anonymous && errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
		// A host with its own API root (override_path) may have nothing at
		// /v2/ to learn its authentication from: without credentials
		// there is none to learn, so ask it plainly.
		rt, err = base, nil
	}
	if err != nil {
		return nil, classify(e.Host, err)
	}
	e.mu.Lock()
	if len(e.authed) > 1024 {
		clear(e.authed)
	}
	e.authed[repo] = rt
	e.mu.Unlock()
	return rt, nil
}

// scopeRepo is the repository a host knows repo by: under an API root
// that goes below /v2 (a registry's project that mirrors another, with
// override_path), the path below /v2 comes first.
func scopeRepo(apiRoot, repo string) string {
	if p, ok := strings.CutPrefix(apiRoot, "/v2/"); ok && strings.Trim(p, "/") != "" {
		return strings.Trim(p, "/") + "/" + repo
	}
	return repo
}

// classify wraps a transport error in the errdefs sentinel the resolver
// branches on: refused credentials and absent content become NotFound (so
// containerd pulls on its own), everything else Unavailable.
func classify(host string, err error) error {
	var te *transport.Error
	if errors.As(err, &te) {
		return statusError(host, te.StatusCode, nil, err)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("registry %s: %w: %w", host, err, errdefs.ErrUnavailable)
}

// statusError maps a registry's error status to the sentinel the resolver
// branches on. hdr is the answer's header, nil when unknown.
func statusError(host string, code int, hdr http.Header, err error) error {
	if wait, limited := rateLimit(code, hdr, time.Now()); limited {
		return fmt.Errorf("registry %s answered %d: %w", host, code, &resolver.RateLimitedError{Registry: host, RetryAfter: wait})
	}
	switch code {
	case http.StatusUnauthorized, http.StatusForbidden:
		return fmt.Errorf("registry %s refused shoal's credentials (%d): %w", host, code, errdefs.ErrNotFound)
	case http.StatusNotFound:
		return fmt.Errorf("registry %s: %w", host, errdefs.ErrNotFound)
	case http.StatusRequestedRangeNotSatisfiable:
		return fmt.Errorf("registry %s: range not satisfiable: %w", host, errdefs.ErrInvalidArgument)
	}
	if err == nil {
		err = fmt.Errorf("status %d", code)
	}
	return fmt.Errorf("registry %s: %w: %w", host, err, errdefs.ErrUnavailable)
}

// get asks the registry's hosts in turn, and returns the first answer
// that is not an error. resolve says the request resolves a tag, which
// only hosts with the resolve capability are asked.
func (c *Client) get(ctx context.Context, registry, repo, path string, hdr http.Header, resolve bool) (*http.Response, error) {
	return c.do(ctx, http.MethodGet, registry, repo, path, hdr, resolve)
}

// do is get with any method.
func (c *Client) do(ctx context.Context, method, registry, repo, path string, hdr http.Header, resolve bool) (*http.Response, error) {
	rc, err := c.chain(registry)
	if err != nil {
		return nil, fmt.Errorf("registry %s: %w: %w", registry, err, errdefs.ErrNotFound)
	}
	var errs []error
	for _, e := range order(rc.eps, time.Now()) {
		if (resolve && !e.Resolve) || (!resolve && !e.Pull) {
			continue
		}
		resp, err := c.send(ctx, method, e, repo, path, hdr)
		if ctx.Err() != nil {
			if err == nil {
				resp.Body.Close()
			}
			return nil, ctx.Err()
		}
		e.note(err, time.Now())
		if err == nil {
			return resp, nil
		}
		c.cfg.Logger.Debug("host failed, trying the next", "registry", registry, "host", e.Host, "err", err)
		errs = append(errs, err)
		resolver.NextHost(ctx)
	}
	if len(errs) == 0 {
		what := "pull"
		if resolve {
			what = "resolve"
		}
		return nil, fmt.Errorf("registry %s: no host has the %s capability: %w", registry, what, errdefs.ErrNotFound)
	}
	return nil, chainError(errs)
}

// send sends one request to one host.
func (c *Client) send(ctx context.Context, method string, e *endpoint, repo, path string, hdr http.Header) (*http.Response, error) {
	rt, err := c.transport(ctx, e, repo)
	if err != nil {
		return nil, err
	}
	u := e.Scheme + "://" + e.Host + e.Path + "/" + repo + path
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, fmt.Errorf("registry %s: %w: %w", e.Host, err, errdefs.ErrInvalidArgument)
	}
	for k, v := range e.Header {
		req.Header[k] = v
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		return nil, classify(e.Host, err)
	}
	if method == http.MethodHead && (resp.StatusCode == http.StatusMethodNotAllowed || resp.StatusCode == http.StatusNotImplemented) {
		resp.Body.Close()
		return nil, fmt.Errorf("registry %s: HEAD answered %d: %w", e.Host, resp.StatusCode, errdefs.ErrNotImplemented)
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		return nil, statusError(e.Host, resp.StatusCode, resp.Header, nil)
	}
	return resp, nil
}

// manifestAccept is every manifest type containerd pulls.
var manifestAccept = strings.Join([]string{
	ocispec.MediaTypeImageIndex,
	ocispec.MediaTypeImageManifest,
	"application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.docker.distribution.manifest.v2+json",
}, ", ")

// Manifest implements resolver.Upstream.
func (c *Client) Manifest(ctx context.Context, req resolver.ManifestRequest) (resolver.Manifest, error) {
	_, isTag := digest.Parse(req.Reference)
	resp, err := c.get(ctx, req.Registry, req.Repo, "/manifests/"+req.Reference, http.Header{"Accept": {manifestAccept}}, isTag != nil)
	if err != nil {
		return resolver.Manifest{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, resolver.MaxManifestBytes+1))
	if err != nil {
		return resolver.Manifest{}, classify(req.Registry, err)
	}
	if len(body) > resolver.MaxManifestBytes {
		return resolver.Manifest{}, fmt.Errorf("manifest %s/%s:%s: %w", req.Registry, req.Repo, req.Reference, resolver.ErrManifestTooLarge)
	}
	got := digest.SHA256.FromBytes(body)
	if want, err := digest.Parse(req.Reference); err == nil && want != got {
		return resolver.Manifest{}, fmt.Errorf("manifest %s from %s is %s: %w", want, req.Registry, got, errdefs.ErrUnavailable)
	}
	if h := resp.Header.Get("Docker-Content-Digest"); h != "" && h != got.String() {
		return resolver.Manifest{}, fmt.Errorf("manifest %s/%s:%s: registry said %s, body is %s: %w", req.Registry, req.Repo, req.Reference, h, got, errdefs.ErrUnavailable)
	}
	mt := resp.Header.Get("Content-Type")
	if mt == "" || mt == "application/json" || mt == "text/plain" {
		if mt, err = resolver.DetectMediaType(body); err != nil {
			return resolver.Manifest{}, fmt.Errorf("manifest %s: %w", got, err)
		}
	}
	return resolver.Manifest{MediaType: mt, Digest: got, Body: body}, nil
}

// ResolveTag implements resolver.TagHeader: a HEAD of the manifest by tag,
// which Docker Hub does not count against its pull limit. A host that does
// not answer HEAD with the manifest's digest and type makes it fail with an
// error wrapping errdefs.ErrNotImplemented, and the resolver then GETs the
// manifest by tag.
func (c *Client) ResolveTag(ctx context.Context, req resolver.ManifestRequest) (ocispec.Descriptor, error) {
	resp, err := c.do(ctx, http.MethodHead, req.Registry, req.Repo, "/manifests/"+req.Reference, http.Header{"Accept": {manifestAccept}}, true)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	resp.Body.Close()
	return headDescriptor(resp.Header, resp.ContentLength)
}

// headDescriptor reads a manifest HEAD's answer: its digest, exact media
// type and size, all three required.
func headDescriptor(hdr http.Header, size int64) (ocispec.Descriptor, error) {
	d, err := digest.Parse(hdr.Get("Docker-Content-Digest"))
	mt := hdr.Get("Content-Type")
	switch {
	case err != nil || d.Algorithm() != digest.SHA256:
		return ocispec.Descriptor{}, fmt.Errorf("HEAD answered no sha256 Docker-Content-Digest: %w", errdefs.ErrNotImplemented)
	case mt == "" || mt == "application/json" || mt == "text/plain":
		return ocispec.Descriptor{}, fmt.Errorf("HEAD answered no manifest media type (%q): %w", mt, errdefs.ErrNotImplemented)
	case size <= 0 || size > resolver.MaxManifestBytes:
		return ocispec.Descriptor{}, fmt.Errorf("HEAD answered size %d: %w", size, errdefs.ErrNotImplemented)
	}
	return ocispec.Descriptor{MediaType: mt, Digest: d, Size: size}, nil
}

// Blob implements resolver.Upstream.
func (c *Client) Blob(ctx context.Context, req resolver.BlobRequest, off int64) (io.ReadCloser, int64, error) {
	hdr := http.Header{}
	if off > 0 {
		// Some registries only understand a closed range.
		end := ""
		if req.Size > off {
			end = strconv.FormatInt(req.Size-1, 10)
		}
		hdr.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-"+end)
	}
	resp, err := c.get(ctx, req.Registry, req.Repo, "/blobs/"+req.Digest.String(), hdr, false)
	if err != nil {
		return nil, 0, err
	}
	size, err := bodySize(resp, off)
	if err != nil {
		resp.Body.Close()
		return nil, 0, fmt.Errorf("blob %s from %s: %w", req.Digest, req.Registry, err)
	}
	if resp.StatusCode == http.StatusOK && off > 0 {
		// The registry ignored the range: skip what we already have.
		if _, err := io.CopyN(io.Discard, resp.Body, off); err != nil {
			resp.Body.Close()
			return nil, 0, classify(req.Registry, err)
		}
	}
	return resp.Body, size, nil
}

// rateLimit says whether an answer asks shoal to slow down, and for how
// long (0: it did not say): a 429, or a 503 that names a Retry-After (a 503
// without one is an outage, not a limit). Retry-After is either seconds or
// an HTTP date.
func rateLimit(code int, hdr http.Header, now time.Time) (time.Duration, bool) {
	if code != http.StatusTooManyRequests && code != http.StatusServiceUnavailable {
		return 0, false
	}
	ra := strings.TrimSpace(hdr.Get("Retry-After"))
	var wait time.Duration
	if secs, err := strconv.ParseUint(ra, 10, 32); err == nil {
		wait = time.Duration(secs) * time.Second
	} else if at, err := http.ParseTime(ra); err == nil {
		wait = max(at.Sub(now), time.Second)
	} else if code == http.StatusServiceUnavailable {
		return 0, false
	}
	return wait, true
}

// bodySize reads the blob's total size from Content-Length or Content-Range.
func bodySize(resp *http.Response, off int64) (int64, error) {
	if resp.StatusCode == http.StatusPartialContent {
		cr := resp.Header.Get("Content-Range")
		total, ok := parseContentRange(cr, off)
		if !ok {
			return 0, fmt.Errorf("bad Content-Range %q for offset %d: %w", cr, off, errdefs.ErrUnavailable)
		}
		return total, nil
	}
	if resp.ContentLength < 0 {
		return 0, fmt.Errorf("no Content-Length: %w", errdefs.ErrUnavailable)
	}
	return resp.ContentLength, nil
}

// parseContentRange reads "bytes OFF-END/TOTAL", the answer to a request
// for everything from off on: the range must start at off and run to the
// blob's last byte, since the caller reads the body as the blob's rest.
func parseContentRange(cr string, off int64) (total int64, ok bool) {
	rest, ok := strings.CutPrefix(cr, "bytes ")
	se, tot, ok2 := strings.Cut(rest, "/")
	s, e, ok3 := strings.Cut(se, "-")
	if !ok || !ok2 || !ok3 || !digits(s) || !digits(e) || !digits(tot) {
		return 0, false
	}
	start, err1 := strconv.ParseInt(s, 10, 64)
	end, err2 := strconv.ParseInt(e, 10, 64)
	total, err3 := strconv.ParseInt(tot, 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || start != off || end != total-1 || start > end {
		return 0, false
	}
	return total, true
}

// digits reports whether s is a non-empty run of ASCII digits (no sign).
func digits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

var _ resolver.TagHeader = (*Client)(nil)
