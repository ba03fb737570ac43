package mirror

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/resolver"
)

// gatedResolver holds every blob request until open is closed, and serves
// blob bodies in drips of drip bytes with a pause between them.
type gatedResolver struct {
	fakeResolver
	entered chan struct{}
	open    chan struct{}
	drip    int
	pause   time.Duration
}

func (g *gatedResolver) Blob(ctx context.Context, req resolver.BlobRequest) (*resolver.Blob, error) {
	g.entered <- struct{}{}
	select {
	case <-g.open:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	b := g.blob
	return resolver.NewBlob(req.Digest, int64(len(b)), resolver.SourceStore, func(_ context.Context, off int64) (io.ReadCloser, error) {
		return io.NopCloser(&dripReader{b: b[off:], drip: g.drip, pause: g.pause}), nil
	}, nil), nil
}

type dripReader struct {
	b     []byte
	drip  int
	pause time.Duration
	reads int
}

func (r *dripReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	if r.reads > 0 {
		time.Sleep(r.pause)
	}
	r.reads++
	n := copy(p[:min(len(p), r.drip)], r.b)
	r.b = r.b[n:]
	return n, nil
}

func serve(t *testing.T, h *Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := h.Server()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return ln.Addr().String()
}

// TestMaxRequests: past MaxRequests in flight, a request is answered 503
// with an OCI error at once, not queued; once a slot frees, requests are
// served again.
func TestMaxRequests(t *testing.T) {
	t.Parallel()
	blob := []byte("layer bytes")
	g := &gatedResolver{fakeResolver: fakeResolver{blob: blob}, entered: make(chan struct{}, 8), open: make(chan struct{}), drip: 1 << 20}
	h, err := New(g, Config{MaxRequests: 2})
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + serve(t, h)
	url := base + "/v2/app/blobs/" + digest.FromBytes(blob).String()

	// Two requests take both slots and wait inside the resolver.
	results := make(chan error, 2)
	for range 2 {
		go func() {
			resp, err := http.Get(url)
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || !bytes.Equal(b, blob) {
					err = fmt.Errorf("held request: %d %q", resp.StatusCode, b)
				}
			}
			results <- err
		}()
	}
	for range 2 {
		<-g.entered
	}

	// The third is refused without waiting for them.
	for _, method := range []string{"GET", "HEAD"} {
		resp, body := do(t, method, url, nil)
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("%s over the cap: %d, want 503", method, resp.StatusCode)
		}
		if resp.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
			t.Errorf("%s over the cap: no API version header", method)
		}
		if method == "GET" {
			var e ociErrors
			if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) != 1 || e.Errors[0].Code != codeTooManyRequests {
				t.Errorf("body %q: want one %s error", body, codeTooManyRequests)
			}
		}
	}
	if len(g.entered) != 0 {
		t.Fatal("a refused request reached the resolver")
	}

	close(g.open)
	for range 2 {
		if err := <-results; err != nil {
			t.Fatal(err)
		}
	}
	resp, body := do(t, "GET", url, nil)
	if resp.StatusCode != 200 || !bytes.Equal(body, blob) {
		t.Fatalf("after the slots freed: %d %q", resp.StatusCode, body)
	}
	<-g.entered
}

// TestServerLimits: the mirror's server drops a client that never finishes
// its headers, refuses oversized headers, and does not cut a blob body
// that streams for longer than any of its timeouts.
func TestServerLimits(t *testing.T) {
	t.Parallel()
	const timeout = 200 * time.Millisecond
	blob := bytes.Repeat([]byte("slow"), 1<<10)
	g := &gatedResolver{fakeResolver: fakeResolver{blob: blob}, entered: make(chan struct{}, 8), open: make(chan struct{}),
		drip: 512, pause: timeout / 2}
	close(g.open)
	h, err := New(g, Config{ReadHeaderTimeout: timeout, IdleTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, h)
	url := "http://" + addr + "/v2/app/blobs/" + digest.FromBytes(blob).String()

	t.Run("slow headers", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "GET /v2/ HTTP/1.1\r\nHost: x\r\n"); err != nil {
			t.Fatal(err)
		}
		// The server hangs up; the deadline only keeps a broken server
		// from hanging the test.
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		n, err := io.Copy(io.Discard, c)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the server kept a client with unfinished headers for 30 s")
		}
		if n != 0 {
			t.Errorf("the server answered %d bytes to unfinished headers", n)
		}
	})

	t.Run("oversized headers", func(t *testing.T) {
		req, err := http.NewRequestWithContext(t.Context(), "GET", "http://"+addr+"/v2/", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Junk", strings.Repeat("j", 2*MaxHeaderBytes))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("oversized headers: %d, want 431", resp.StatusCode)
		}
	})

	t.Run("long body is not cut", func(t *testing.T) {
		// Eight drips with a pause between each: the body takes longer than
		// ReadHeaderTimeout and IdleTimeout together, so a server-wide
		// write timeout of that order would cut it.
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", strings.TrimPrefix(url, "http://"+addr)); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !bytes.Equal(b, blob) {
			t.Fatalf("body: %d of %d bytes, %v", len(b), len(blob), err)
		}
		if took := time.Since(start); took < 2*timeout {
			t.Fatalf("the body took %v; the test needs it slower than %v", took, 2*timeout)
		}
	})
}

func TestConfigRejectsNegative(t *testing.T) {
	t.Parallel()
	for _, cfg := range []Config{{MaxRequests: -1}, {ReadHeaderTimeout: -1}, {IdleTimeout: -1}} {
		if _, err := New(&fakeResolver{}, cfg); err == nil {
			t.Errorf("New accepted %+v", cfg)
		}
	}
}
