package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/resolver"
)

// Resolver finds manifests and blobs; *resolver.Resolver implements it.
type Resolver interface {
	Manifest(ctx context.Context, req resolver.ManifestRequest) (resolver.Manifest, error)
	Blob(ctx context.Context, req resolver.BlobRequest) (*resolver.Blob, error)
}

var _ Resolver = (*resolver.Resolver)(nil)

// Prefetcher is a Resolver that can start fetching an image manifest's blobs
// before they are asked for; *resolver.Resolver implements it.
type Prefetcher interface {
	Prefetch(ctx context.Context, req resolver.ManifestRequest, m resolver.Manifest) int
}

var _ Prefetcher = (*resolver.Resolver)(nil)

// Config holds the mirror's optional settings.
type Config struct {
	// DefaultRegistry is the upstream for requests without ?ns=, as Docker
	// Engine's registry-mirrors sends them. Default docker.io.
	DefaultRegistry string
	// HeaderWait bounds how long a blob answer holds its headers back
	// while a download from peers verifies (a failure before the headers
	// is a clean 404 that containerd falls back from). containerd 2.x
	// abandons a mirror whose headers take 30 s. Default 20s.
	HeaderWait time.Duration
	// MaxRequests caps the requests served at once, blob bodies still
	// streaming included. Past it a request is answered at once with 503
	// Service Unavailable (code TOOMANYREQUESTS): containerd 1.6 to 2.x
	// takes any status >= 400 from a mirror as a miss and asks the next
	// host (the registry) without retrying the mirror, whereas a 429 would
	// be retried against the mirror, up to five times without a pause.
	// Zero means 256: containerd fetches three blobs at a time per image,
	// so that is dozens of concurrent pulls. Each request in flight holds
	// a goroutine, a buffer and often an open file.
	MaxRequests int
	// ReadHeaderTimeout bounds reading a request's line and headers, so a
	// client that connects and trickles bytes cannot hold a connection.
	// Zero means 10s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a keep-alive connection that carries no request
	// for this long. Zero means 2m.
	IdleTimeout time.Duration
	// Allow lists client networks the mirror answers besides loopback
	// (127.0.0.0/8 and ::1: the node's own containerd). A client from
	// anywhere else gets 403 DENIED, since whoever reaches the mirror can
	// make the node fetch from the registries it names, with the node's
	// credentials.
	Allow []netip.Prefix
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
	// Metrics receives the mirror's metrics; nil skips them.
	Metrics prometheus.Registerer
}

// loopback is always allowed: the node itself.
var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// MaxHeaderBytes bounds a request's line and headers; containerd sends a
// few hundred bytes. Larger requests are answered 431.
const MaxHeaderBytes = 64 << 10

// Handler serves the pull API.
type Handler struct {
	cfg   Config
	res   Resolver
	m     *metrics
	slots chan struct{} // one per request in flight
}

// New returns a handler that answers from res.
func New(res Resolver, cfg Config) (*Handler, error) {
	if res == nil {
		return nil, errors.New("mirror: a resolver is required")
	}
	if cfg.DefaultRegistry == "" {
		cfg.DefaultRegistry = "docker.io"
	}
	if err := validRegistry(cfg.DefaultRegistry); err != nil {
		return nil, fmt.Errorf("mirror: default registry: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.HeaderWait <= 0 {
		cfg.HeaderWait = 20 * time.Second
	}
	if cfg.MaxRequests < 0 || cfg.ReadHeaderTimeout < 0 || cfg.IdleTimeout < 0 {
		return nil, errors.New("mirror: max requests and timeouts must not be negative")
	}
	if cfg.MaxRequests == 0 {
		cfg.MaxRequests = 256
	}
	if cfg.ReadHeaderTimeout == 0 {
		cfg.ReadHeaderTimeout = 10 * time.Second
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 2 * time.Minute
	}
	for _, p := range cfg.Allow {
		if !p.IsValid() {
			return nil, fmt.Errorf("mirror: allowed network %v is not valid", p)
		}
	}
	cfg.Allow = append(slices.Clone(loopback), cfg.Allow...)
	return &Handler{cfg: cfg, res: res, m: newMetrics(cfg.Metrics), slots: make(chan struct{}, cfg.MaxRequests)}, nil
}

// Server returns an HTTP server for h with the limits a mirror needs
// against slow or greedy clients. It sets no ReadTimeout or WriteTimeout:
// those bound a whole exchange, body included, and would cut a large
// layer that streams for minutes on a slow link, which containerd must
// then resume. Stalls are bounded instead where they happen: headers by
// ReadHeaderTimeout, idle connections by IdleTimeout, and a blob whose
// source stops sending by the resolver's stall timeout, which cuts the
// response so that containerd resumes elsewhere.
func (h *Handler) Server() *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: h.cfg.ReadHeaderTimeout,
		IdleTimeout:       h.cfg.IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
	}
}

const (
	kindBase     = "base"
	kindManifest = "manifest"
	kindBlob     = "blob"
	kindOther    = "other"
)

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w, status: http.StatusOK}
	if !h.allowed(r.RemoteAddr) {
		rec.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		writeError(rec, r, http.StatusForbidden, codeDenied,
			"shoal's mirror answers this node's own clients only; the operator may allow others with --mirror-allow")
		h.m.requests.WithLabelValues(kindOther, r.Method, strconv.Itoa(rec.status)).Inc()
		h.m.denied.Inc()
		return
	}
	select {
	case h.slots <- struct{}{}:
		defer func() { <-h.slots }()
	default:
		// Never queue: a request that waited here would be a stall to
		// containerd, while an error sends it to the registry at once.
		rec.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		writeError(rec, r, http.StatusServiceUnavailable, codeTooManyRequests,
			fmt.Sprintf("shoal is serving %d requests, its cap (--mirror-max-requests); ask the next host", h.cfg.MaxRequests))
		h.m.requests.WithLabelValues(kindOther, r.Method, strconv.Itoa(rec.status)).Inc()
		h.m.rejected.Inc()
		return
	}
	h.m.inflight.Inc()
	defer h.m.inflight.Dec()
	kind := h.serve(rec, r)
	h.m.requests.WithLabelValues(kind, r.Method, strconv.Itoa(rec.status)).Inc()
	h.m.duration.WithLabelValues(kind).Observe(time.Since(start).Seconds())
}

func (h *Handler) serve(w *recorder, r *http.Request) string {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, r, http.StatusMethodNotAllowed, codeUnsupported, "shoal is a read-only mirror: "+r.Method+" is not supported")
		return kindOther
	}
	if r.URL.Path == "/v2/" || r.URL.Path == "/v2" {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "2")
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			_, _ = w.Write([]byte("{}"))
		}
		return kindBase
	}
	p, err := parsePath(r.URL.Path)
	if err != nil {
		var pe *pathError
		if errors.As(err, &pe) {
			writeError(w, r, pe.status, pe.code, pe.msg)
		}
		return kindOther
	}
	registry := h.cfg.DefaultRegistry
	if q := r.URL.Query(); q.Has("ns") {
		registry = q.Get("ns")
		if err := validRegistry(registry); err != nil {
			writeError(w, r, http.StatusBadRequest, codeNameInvalid, err.Error())
			return p.kind
		}
	}
	if p.kind == kindManifest {
		h.serveManifest(w, r, resolver.ManifestRequest{Registry: registry, Repo: p.name, Reference: p.ref})
	} else {
		h.serveBlob(w, r, resolver.BlobRequest{Registry: registry, Repo: p.name, Digest: digest.Digest(p.ref)})
	}
	return p.kind
}

type route struct {
	kind string
	name string
	ref  string
}

type pathError struct {
	status int
	code   string
	msg    string
}

func (e *pathError) Error() string { return e.msg }

var (
	anchoredTag    = regexp.MustCompile(`^(?:` + reference.TagRegexp.String() + `)$`)
	anchoredDigest = regexp.MustCompile(`^(?:` + reference.DigestRegexp.String() + `)$`)
)

// parsePath splits /v2/<name>/(manifests|blobs)/<reference> and checks each part.
func parsePath(path string) (route, error) {
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		return route{}, &pathError{http.StatusNotFound, codeUnsupported, "not an OCI distribution endpoint: " + path}
	}
	var rt route
	for _, k := range []string{kindManifest, kindBlob} {
		sep := "/" + k + "s/"
		if i := strings.LastIndex(rest, sep); i >= 0 {
			rt = route{kind: k, name: rest[:i], ref: rest[i+len(sep):]}
			break
		}
	}
	if rt.kind == "" || strings.Contains(rt.ref, "/") {
		return route{}, &pathError{http.StatusNotFound, codeUnsupported, "endpoint not served by shoal: " + path}
	}
	if err := validName(rt.name); err != nil {
		return route{}, &pathError{http.StatusBadRequest, codeNameInvalid, err.Error()}
	}
	switch {
	case strings.Contains(rt.ref, ":"):
		d, err := digest.Parse(rt.ref)
		if err != nil || !anchoredDigest.MatchString(rt.ref) {
			return route{}, &pathError{http.StatusBadRequest, codeDigestInvalid, fmt.Sprintf("invalid digest %q", rt.ref)}
		}
		if d.Algorithm() != digest.SHA256 {
			// A well-formed digest, which the registry may hold: shoal
			// cannot verify or share it, so it is a miss, and containerd
			// asks the registry.
			return route{}, &pathError{http.StatusNotFound, unknownCode(rt.kind), fmt.Sprintf("%s %s unknown: shoal serves sha256 content only", rt.kind, rt.ref)}
		}
	case rt.kind == kindBlob:
		return route{}, &pathError{http.StatusBadRequest, codeDigestInvalid, fmt.Sprintf("blobs are named by digest, got %q", rt.ref)}
	case !anchoredTag.MatchString(rt.ref):
		// The registry's router has no route for a reference that is
		// neither tag nor digest and answers 404, which clients and the
		// OCI conformance suite expect; nothing malformed goes upstream.
		return route{}, &pathError{http.StatusNotFound, codeManifestUnknown, fmt.Sprintf("manifest unknown: %q is neither a tag nor a digest", rt.ref)}
	}
	return rt, nil
}

// unknownCode is the OCI code of a miss of kind.
func unknownCode(kind string) string {
	if kind == kindManifest {
		return codeManifestUnknown
	}
	return codeBlobUnknown
}

// validName checks a repository path against the distribution grammar.
func validName(name string) error {
	ref, err := reference.Parse("shoal.invalid/" + name)
	if err != nil {
		return fmt.Errorf("invalid repository name %q: %v", name, err)
	}
	named, ok := ref.(reference.Named)
	if !ok {
		return fmt.Errorf("invalid repository name %q", name)
	}
	if _, tagged := named.(reference.Tagged); tagged || reference.Path(named) != name {
		return fmt.Errorf("invalid repository name %q", name)
	}
	return nil
}

// validRegistry checks a host[:port] registry name, as ?ns= carries it.
func validRegistry(host string) error {
	ref, err := reference.Parse(host + "/x")
	named, ok := ref.(reference.Named)
	if err != nil || !ok || reference.Domain(named) != host || strings.ContainsAny(host, "/@") {
		return fmt.Errorf("invalid registry host %q in ns", host)
	}
	return nil
}

// recorder remembers the status written, for metrics.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
	served prometheus.Counter // counts body bytes as written, when set
	// flushHeader sends the headers as soon as they are written.
	flushHeader bool
}

func (r *recorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
	if r.flushHeader {
		// net/http holds headers back until the first body write, which
		// may be long in coming.
		_ = http.NewResponseController(r.ResponseWriter).Flush()
	}
}

func (r *recorder) Write(p []byte) (int, error) {
	n, err := r.ResponseWriter.Write(p)
	r.count(int64(n))
	return n, err
}

// sendChunk is how much of a blob goes out with one sendfile, so that the
// served metric shows a long transfer's progress.
const sendChunk = 4 << 20

// copyBuffers hold a body's bytes on their way when they cannot be sent
// from a file: eight times io.Copy's 32 KiB, for an eighth of the calls.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// ReadFrom writes a body. A blob's bytes held whole in shoal's store go
// from its file with sendfile where the connection allows it (net/http's
// response reaches the TCP connection's ReadFrom); the rest are copied
// through a large buffer. Bytes are counted as they go.
func (r *recorder) ReadFrom(src io.Reader) (int64, error) {
	var total int64
	if lr, ok := src.(*io.LimitedReader); ok {
		if bs, ok := lr.R.(*blobSeeker); ok {
			for lr.N > 0 {
				sent, ok, err := bs.sendFile(r.ResponseWriter, min(lr.N, sendChunk))
				lr.N -= sent
				total += sent
				r.count(sent)
				if err != nil {
					return total, err
				}
				if !ok || sent == 0 {
					break
				}
			}
		}
	}
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	n, err := io.CopyBuffer(writerOnly{r}, src, *bp)
	return total + n, err
}

// writerOnly hides a writer's ReadFrom from io.CopyBuffer.
type writerOnly struct{ io.Writer }

func (r *recorder) count(n int64) {
	r.bytes += n
	if r.served != nil {
		r.served.Add(float64(n))
	}
}

// Unwrap lets http.ResponseController reach the connection.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// allowed is the rule for who may use the mirror: a client whose address
// lies in one of the allowed networks.
func (h *Handler) allowed(remoteAddr string) bool {
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return false
	}
	addr := ap.Addr().Unmap()
	for _, p := range h.cfg.Allow {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}
