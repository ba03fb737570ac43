package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/time/rate"
)

// ProxyConfig says how a Proxy degrades what passes through it. The zero
// value passes everything unchanged.
type ProxyConfig struct {
	// RateBytesPerSec caps the response bodies of all requests together, as
	// one link would; 0 is unlimited.
	RateBytesPerSec int64
	// CorruptBlob, if set, has the first body byte of every GET of that blob
	// flipped, so the client receives the right length with the wrong digest.
	CorruptBlob digest.Digest
	// StallAfterBytes, if positive, makes blob GETs send that many body
	// bytes and then nothing, holding the connection open until the client
	// goes away or the proxy closes. StallBlob limits this to one blob;
	// "" stalls every blob.
	StallAfterBytes int64
	StallBlob       digest.Digest
	// Netns and Addr put the proxy's listener inside a network namespace,
	// on Addr there (e.g. Host.Addr(5001)); "" and "" listen on a free
	// 127.0.0.1 port of the caller's namespace.
	Netns, Addr string
	// TargetNetns is where connections to the target start ("" is the
	// caller's namespace): a registry on a host of a Network.
	TargetNetns string
	// Logger receives the proxy's events; nil discards them.
	Logger *slog.Logger
}

// FaultKind is how a Fault misbehaves.
type FaultKind int

const (
	// FaultNone passes requests through.
	FaultNone FaultKind = iota
	// FaultStatus answers with Fault.Status and an OCI error body, without
	// asking the registry.
	FaultStatus
	// FaultStall sends Fault.AfterBytes body bytes and then nothing,
	// holding the connection open until the client goes away or the proxy
	// closes; AfterBytes 0 stalls right after the headers.
	FaultStall
	// FaultCut sends Fault.AfterBytes body bytes and then closes the
	// connection: the client sees a body shorter than its Content-Length.
	FaultCut
	// FaultDelay holds the request Fault.Delay before it asks the
	// registry, then passes it through: a slow first byte.
	FaultDelay
)

func (k FaultKind) String() string {
	switch k {
	case FaultStatus:
		return "status"
	case FaultStall:
		return "stall"
	case FaultCut:
		return "cut"
	case FaultDelay:
		return "delay"
	}
	return "none"
}

// Fault is a misbehaviour switched on and off while the proxy runs
// (SetFault), applied to the blob GETs that match it. Manifests pass unless
// Manifests is set, so a pull resolves and then meets the fault on its
// blobs: mid-pull.
type Fault struct {
	Kind FaultKind
	// Status and RetryAfter (seconds, "" for none) for FaultStatus, e.g.
	// 500, or 429 with "1".
	Status     int
	RetryAfter string
	// AfterBytes is where FaultStall and FaultCut strike in the body.
	AfterBytes int64
	// Delay is FaultDelay's wait.
	Delay time.Duration
	// UserAgentPrefix limits the fault to clients whose User-Agent starts
	// with it ("shoal/"): a registry that misbehaves towards the mirror
	// while containerd's own fallback reaches it unharmed. "" is everyone.
	UserAgentPrefix string
	// Blob limits the fault to one blob; "" is every blob.
	Blob digest.Digest
	// Times limits the fault to the first Times matching requests after
	// SetFault; 0 is every matching request.
	Times int
	// Manifests extends a FaultStatus to manifest requests (HEAD and GET):
	// a registry that is down as a whole.
	Manifests bool
}

// ProxyRequest is one request the proxy forwarded.
type ProxyRequest struct {
	Method    string
	Path      string
	Query     url.Values // containerd names the upstream in ns= when it uses a mirror
	Status    int
	BodyBytes int64 // response body bytes passed to the client
	Digest    digest.Digest
	UserAgent string
	From      string    // the client's host:port
	Start     time.Time // when the request arrived
	Corrupted bool
	Stalled   bool
	Fault     FaultKind // the Fault applied, FaultNone for none
}

// Proxy is an HTTP reverse proxy on 127.0.0.1 in front of a registry, for
// tests that need a slow, lying or stalling source.
type Proxy struct {
	cfg     ProxyConfig
	log     *slog.Logger
	ln      net.Listener
	srv     *http.Server
	limiter *rate.Limiter
	closing chan struct{}
	served  chan struct{}
	active  sync.WaitGroup
	tr      *http.Transport

	mu        sync.Mutex
	requests  []ProxyRequest
	fault     Fault
	faultLeft int // matching requests the fault still applies to; -1 unlimited
	closeOnce sync.Once
}

// StartProxy listens on a free 127.0.0.1 port and forwards to target
// ("host:port" or "http://host:port").
func StartProxy(ctx context.Context, target string, cfg ProxyConfig) (*Proxy, error) {
	if !strings.Contains(target, "://") {
		target = "http://" + target
	}
	u, err := url.Parse(target)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("proxy target %q: %v", target, err)
	}
	addr := cfg.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := listenIn(ctx, cfg.Netns, addr)
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		cfg:     cfg,
		log:     logger(cfg.Logger).With("component", "proxy", "target", u.Host),
		ln:      ln,
		closing: make(chan struct{}),
		served:  make(chan struct{}),
		tr:      http.DefaultTransport.(*http.Transport).Clone(),
	}
	p.tr.DialContext = DialerIn(cfg.TargetNetns)
	p.tr.Proxy = nil
	if cfg.RateBytesPerSec > 0 {
		p.limiter = rate.NewLimiter(rate.Limit(cfg.RateBytesPerSec), burst(cfg.RateBytesPerSec))
	}
	rp := &httputil.ReverseProxy{
		Rewrite:        func(r *httputil.ProxyRequest) { r.SetURL(u) },
		Transport:      p.tr,
		FlushInterval:  -1, // every write reaches the client at once, so a stall is a stall
		ModifyResponse: p.modify,
		ErrorLog:       slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
	}
	p.srv = &http.Server{Handler: p.track(rp), ErrorLog: slog.NewLogLogger(p.log.Handler(), slog.LevelWarn)}
	go func() {
		defer close(p.served)
		if err := p.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.log.Error("proxy serve", "err", err)
		}
	}()
	p.log.Info("proxy listening", "addr", p.Addr(), "netns", cfg.Netns)
	return p, nil
}

// burst is 20 ms worth of bytes, at least 4 KiB: reads are cut to it.
func burst(r int64) int { return int(max(r/50, 4096)) }

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// URL is the proxy's base URL, for a hosts.toml mirror entry.
func (p *Proxy) URL() string { return "http://" + p.Addr() }

// Requests lists the requests completed so far, in completion order. A
// response is listed before its client can have read all of it, so a
// client done with a response finds it here; one cut, stalled or abandoned
// is listed once the proxy has given up on it.
func (p *Proxy) Requests() []ProxyRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]ProxyRequest(nil), p.requests...)
}

// SetFault makes the proxy misbehave as f from now on; Fault{} (or
// FaultNone) ends it. Requests already under a fault keep it.
func (p *Proxy) SetFault(f Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fault, p.faultLeft = f, f.Times
	if f.Times == 0 {
		p.faultLeft = -1
	}
	p.log.Info("fault set", "kind", f.Kind.String(), "status", f.Status, "after_bytes", f.AfterBytes, "user_agent", f.UserAgentPrefix, "times", f.Times)
}

// takeFault returns the fault r is to meet, counting it against Times.
func (p *Proxy) takeFault(r *http.Request, d digest.Digest) Fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	f := p.fault
	manifest := f.Manifests && f.Kind == FaultStatus && strings.Contains(r.URL.Path, "/manifests/")
	switch {
	case manifest && strings.HasPrefix(r.UserAgent(), f.UserAgentPrefix) && p.faultLeft != 0:
	case f.Kind == FaultNone, p.faultLeft == 0, d == "", r.Method != http.MethodGet,
		f.Blob != "" && f.Blob != d,
		!strings.HasPrefix(r.UserAgent(), f.UserAgentPrefix):
		return Fault{}
	}
	if p.faultLeft > 0 {
		p.faultLeft--
	}
	return f
}

// Close releases stalled requests, closes every connection and waits for
// the handlers to return. Idempotent.
func (p *Proxy) Close() error {
	var err error
	p.closeOnce.Do(func() {
		close(p.closing)
		err = p.srv.Close()
		<-p.served
		p.active.Wait()
		p.tr.CloseIdleConnections()
	})
	return err
}

// faultKey carries a request's Fault from track to modify.
type faultKey struct{}

func (p *Proxy) track(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.active.Add(1)
		defer p.active.Done()
		start := time.Now()
		d := blobDigest(r.URL.Path)
		f := p.takeFault(r, d)
		switch f.Kind {
		case FaultStatus:
			if f.RetryAfter != "" {
				w.Header().Set("Retry-After", f.RetryAfter)
			}
			// Recorded before the client can see the answer: a test that
			// reads Requests once its client is done finds it there.
			p.record(ProxyRequest{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Status: f.Status, Digest: d,
				UserAgent: r.UserAgent(), From: r.RemoteAddr, Start: start, Fault: f.Kind})
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(f.Status)
			body := `{"errors":[{"code":"UNKNOWN","message":"injected fault: status ` + strconv.Itoa(f.Status) + `"}]}`
			_, _ = io.WriteString(w, body)
			return
		case FaultDelay:
			select {
			case <-time.After(f.Delay):
			case <-r.Context().Done():
			case <-p.closing:
			}
		}
		r = r.WithContext(context.WithValue(r.Context(), faultKey{}, faultAt{f, start, r.RemoteAddr}))
		h.ServeHTTP(w, r)
	})
}

type faultAt struct {
	f     Fault
	start time.Time
	from  string // the client's host:port
}

// blobDigest is the digest of a /v2/<name>/blobs/<digest> path, or "".
func blobDigest(path string) digest.Digest {
	if i := strings.LastIndex(path, "/blobs/"); i >= 0 {
		if d, err := digest.Parse(path[i+len("/blobs/"):]); err == nil {
			return d
		}
	}
	return ""
}

// modify wraps every response body to count, throttle and damage it.
func (p *Proxy) modify(resp *http.Response) error {
	req := resp.Request
	fa, _ := req.Context().Value(faultKey{}).(faultAt)
	rec := ProxyRequest{Method: req.Method, Path: req.URL.Path, Query: req.URL.Query(), Status: resp.StatusCode,
		Digest: blobDigest(req.URL.Path), UserAgent: req.UserAgent(), From: fa.from, Start: fa.start}
	b := &faultBody{p: p, ctx: req.Context(), rc: resp.Body, rec: rec, size: resp.ContentLength, stallAt: -1, cutAt: -1}
	if req.Method == http.MethodHead {
		b.size = -1 // the length of a body not sent
	}
	if req.Method == http.MethodGet && rec.Digest != "" && resp.StatusCode/100 == 2 {
		b.corrupt = rec.Digest == p.cfg.CorruptBlob
		if p.cfg.StallAfterBytes > 0 && (p.cfg.StallBlob == "" || p.cfg.StallBlob == rec.Digest) {
			b.stallAt = p.cfg.StallAfterBytes
		}
		switch fa.f.Kind {
		case FaultStall:
			b.stallAt = fa.f.AfterBytes
		case FaultCut:
			b.cutAt = fa.f.AfterBytes
		}
		b.rec.Fault = fa.f.Kind
	}
	resp.Body = b
	return nil
}

func (p *Proxy) record(r ProxyRequest) {
	p.mu.Lock()
	p.requests = append(p.requests, r)
	p.mu.Unlock()
	p.log.Debug("proxied", "method", r.Method, "path", r.Path, "status", r.Status, "bytes", r.BodyBytes, "stalled", r.Stalled)
}

// errStalled ends a stalled body once the client or the proxy gives up;
// errCut ends a body cut short. ReverseProxy aborts the connection on
// either, so the client sees a short body.
var (
	errStalled = errors.New("proxy: stalled on purpose")
	errCut     = errors.New("proxy: body cut on purpose")
)

type faultBody struct {
	p       *Proxy
	ctx     context.Context
	rc      io.ReadCloser
	rec     ProxyRequest
	corrupt bool
	size    int64 // the body's length, -1 if unknown
	stallAt int64 // -1: never
	cutAt   int64 // -1: never
	once    sync.Once
}

func (b *faultBody) Read(buf []byte) (int, error) {
	if b.stallAt >= 0 && b.rec.BodyBytes >= b.stallAt {
		b.rec.Stalled = true
		select {
		case <-b.ctx.Done():
		case <-b.p.closing:
		}
		return 0, errStalled
	}
	if b.cutAt >= 0 && b.rec.BodyBytes >= b.cutAt {
		return 0, errCut
	}
	if b.stallAt >= 0 {
		buf = buf[:min(int64(len(buf)), b.stallAt-b.rec.BodyBytes)]
	}
	if b.cutAt >= 0 {
		buf = buf[:min(int64(len(buf)), b.cutAt-b.rec.BodyBytes)]
	}
	if b.p.limiter != nil {
		buf = buf[:min(len(buf), b.p.limiter.Burst())]
	}
	n, err := b.rc.Read(buf)
	if n > 0 && b.p.limiter != nil {
		if werr := b.p.limiter.WaitN(b.ctx, n); werr != nil {
			return 0, werr
		}
	}
	if n > 0 && b.corrupt && b.rec.BodyBytes == 0 {
		buf[0] ^= 0xff
		b.rec.Corrupted = true
		b.p.log.Info("corrupted blob body", "digest", b.rec.Digest)
	}
	b.rec.BodyBytes += int64(n)
	if b.size >= 0 && b.rec.BodyBytes >= b.size {
		// The whole body is read: recorded before its last bytes go to
		// the client, so that a client done with the response finds the
		// request in Requests. Close records the others.
		b.record()
	}
	return n, err
}

func (b *faultBody) record() { b.once.Do(func() { b.p.record(b.rec) }) }

func (b *faultBody) Close() error {
	b.record()
	return b.rc.Close()
}
