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
	"strings"
	"sync"

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
	// Logger receives the proxy's events; nil discards them.
	Logger *slog.Logger
}

// ProxyRequest is one request the proxy forwarded.
type ProxyRequest struct {
	Method    string
	Path      string
	Query     url.Values // containerd names the upstream in ns= when it uses a mirror
	Status    int
	BodyBytes int64 // response body bytes passed to the client
	Digest    digest.Digest
	Corrupted bool
	Stalled   bool
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
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
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
	p.log.Info("proxy listening", "addr", p.Addr())
	return p, nil
}

// burst is 20 ms worth of bytes, at least 4 KiB: reads are cut to it.
func burst(r int64) int { return int(max(r/50, 4096)) }

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// URL is the proxy's base URL, for a hosts.toml mirror entry.
func (p *Proxy) URL() string { return "http://" + p.Addr() }

// Requests lists the requests completed so far, in completion order.
func (p *Proxy) Requests() []ProxyRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]ProxyRequest(nil), p.requests...)
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

func (p *Proxy) track(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.active.Add(1)
		defer p.active.Done()
		h.ServeHTTP(w, r)
	})
}

// modify wraps every response body to count, throttle and damage it.
func (p *Proxy) modify(resp *http.Response) error {
	req := resp.Request
	rec := ProxyRequest{Method: req.Method, Path: req.URL.Path, Query: req.URL.Query(), Status: resp.StatusCode}
	if i := strings.LastIndex(req.URL.Path, "/blobs/"); i >= 0 {
		if d, err := digest.Parse(req.URL.Path[i+len("/blobs/"):]); err == nil {
			rec.Digest = d
		}
	}
	b := &faultBody{p: p, ctx: req.Context(), rc: resp.Body, rec: rec, stallAt: -1}
	if req.Method == http.MethodGet && rec.Digest != "" && resp.StatusCode/100 == 2 {
		b.corrupt = rec.Digest == p.cfg.CorruptBlob
		if p.cfg.StallAfterBytes > 0 && (p.cfg.StallBlob == "" || p.cfg.StallBlob == rec.Digest) {
			b.stallAt = p.cfg.StallAfterBytes
		}
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

// errStalled ends a stalled body once the client or the proxy gives up.
var errStalled = errors.New("proxy: stalled on purpose")

type faultBody struct {
	p       *Proxy
	ctx     context.Context
	rc      io.ReadCloser
	rec     ProxyRequest
	corrupt bool
	stallAt int64 // -1: never
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
	if b.stallAt >= 0 {
		buf = buf[:min(int64(len(buf)), b.stallAt-b.rec.BodyBytes)]
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
	return n, err
}

func (b *faultBody) Close() error {
	b.once.Do(func() { b.p.record(b.rec) })
	return b.rc.Close()
}
