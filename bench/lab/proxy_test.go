package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// blobServer serves one blob at /v2/lab/blobs/<digest>.
func blobServer(t *testing.T, size int) (url string, d digest.Digest, body []byte) {
	t.Helper()
	body = make([]byte, size)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(body)
	d = digest.FromBytes(body)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v2/lab/blobs/"+d.String() {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	}))
	t.Cleanup(srv.Close)
	return srv.URL, d, body
}

// readBody reads a response body. When the proxy is to stall it after
// want bytes, it reads those, then gives the rest stallWindow to arrive and
// gives up with cancel: a stall is nothing more arriving, however slow the
// machine is to send what came before it. Any other body is read whole.
func readBody(body io.Reader, stall bool, want int, cancel context.CancelFunc) ([]byte, error) {
	if !stall {
		return io.ReadAll(body)
	}
	got := make([]byte, want)
	if n, err := io.ReadFull(body, got); err != nil {
		return got[:n], fmt.Errorf("%d of the %d bytes before the stall: %w", n, want, err)
	}
	time.AfterFunc(stallWindow, cancel)
	rest, err := io.ReadAll(body)
	return append(got, rest...), err
}

// stallWindow is how long a stalled body must send nothing more.
const stallWindow = 300 * time.Millisecond

func TestProxy(t *testing.T) {
	t.Parallel()
	const size = 256 << 10
	target, d, body := blobServer(t, size)
	tests := []struct {
		name        string
		cfg         ProxyConfig
		wantErr     bool
		wantBytes   int
		wantDigest  bool
		minDuration time.Duration
	}{
		{name: "passthrough", wantBytes: size, wantDigest: true},
		{
			name: "rate", cfg: ProxyConfig{RateBytesPerSec: 1 << 20}, wantBytes: size, wantDigest: true,
			// A token bucket cannot beat its rate beyond its first burst.
			minDuration: time.Duration(float64(size-burst(1<<20)) / (1 << 20) * float64(time.Second)),
		},
		{name: "corrupt", cfg: ProxyConfig{CorruptBlob: d}, wantBytes: size},
		{name: "corrupt other blob", cfg: ProxyConfig{CorruptBlob: digest.FromString("x")}, wantBytes: size, wantDigest: true},
		{name: "stall", cfg: ProxyConfig{StallAfterBytes: 100 << 10}, wantErr: true, wantBytes: 100 << 10},
		{name: "stall other blob", cfg: ProxyConfig{StallAfterBytes: 1, StallBlob: digest.FromString("x")}, wantBytes: size, wantDigest: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.cfg.Logger = testLogger(t)
			p, err := StartProxy(t.Context(), target, tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { closeOrError(t, p.Close) })
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL()+"/v2/lab/blobs/"+d.String()+"?ns=example", nil)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			resp, err := testClient(t, "").Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := readBody(resp.Body, tt.wantErr, tt.wantBytes, cancel)
			resp.Body.Close()
			elapsed := time.Since(start)
			if (err != nil) != tt.wantErr {
				t.Fatalf("read: %v, want error %v", err, tt.wantErr)
			}
			if tt.wantErr && !errors.Is(err, context.Canceled) {
				t.Errorf("stalled read ended with %v, want the client giving up", err)
			}
			if len(got) != tt.wantBytes {
				t.Errorf("got %d bytes, want %d", len(got), tt.wantBytes)
			}
			if ok := digest.FromBytes(got) == d; ok != tt.wantDigest {
				t.Errorf("digest matches: %v, want %v", ok, tt.wantDigest)
			}
			if tt.wantDigest && !bytes.Equal(got, body) {
				t.Error("body differs")
			}
			if elapsed < tt.minDuration {
				t.Errorf("took %v, a %d B/s cap allows no less than %v", elapsed, tt.cfg.RateBytesPerSec, tt.minDuration)
			}
			closeOrError(t, p.Close) // waits for the handler, so the request is recorded
			reqs := p.Requests()
			if len(reqs) != 1 || reqs[0].Digest != d || reqs[0].Query.Get("ns") != "example" || reqs[0].Stalled != tt.wantErr {
				t.Errorf("proxy recorded %+v", reqs)
			}
		})
	}
}

func TestProxyFaults(t *testing.T) {
	t.Parallel()
	const size = 256 << 10
	target, d, body := blobServer(t, size)
	tests := []struct {
		name       string
		fault      Fault
		agent      string
		path       string // "" is the blob
		requests   int
		wantStatus []int // per request
		wantBytes  []int // per request
		wantErr    []bool
		wantFault  []FaultKind
	}{
		{
			name: "500 every time", fault: Fault{Kind: FaultStatus, Status: 500}, requests: 2,
			wantStatus: []int{500, 500}, wantBytes: []int{-1, -1}, wantErr: []bool{false, false}, wantFault: []FaultKind{FaultStatus, FaultStatus},
		},
		{
			name: "429 once", fault: Fault{Kind: FaultStatus, Status: 429, RetryAfter: "1", Times: 1}, requests: 2,
			wantStatus: []int{429, 200}, wantBytes: []int{-1, size}, wantErr: []bool{false, false}, wantFault: []FaultKind{FaultStatus, FaultNone},
		},
		{
			name: "other user agent passes", fault: Fault{Kind: FaultStatus, Status: 500, UserAgentPrefix: "shoal/"}, agent: "containerd/1.6", requests: 1,
			wantStatus: []int{200}, wantBytes: []int{size}, wantErr: []bool{false}, wantFault: []FaultKind{FaultNone},
		},
		{
			name: "matching user agent", fault: Fault{Kind: FaultStatus, Status: 500, UserAgentPrefix: "shoal/"}, agent: "shoal/dev", requests: 1,
			wantStatus: []int{500}, wantBytes: []int{-1}, wantErr: []bool{false}, wantFault: []FaultKind{FaultStatus},
		},
		{
			name: "other blob passes", fault: Fault{Kind: FaultStatus, Status: 500, Blob: digest.FromString("x")}, requests: 1,
			wantStatus: []int{200}, wantBytes: []int{size}, wantErr: []bool{false}, wantFault: []FaultKind{FaultNone},
		},
		{
			name: "cut once", fault: Fault{Kind: FaultCut, AfterBytes: 100 << 10, Times: 1}, requests: 2,
			wantStatus: []int{200, 200}, wantBytes: []int{100 << 10, size}, wantErr: []bool{true, false}, wantFault: []FaultKind{FaultCut, FaultNone},
		},
		{
			name: "stall at the headers", fault: Fault{Kind: FaultStall}, requests: 1,
			wantStatus: []int{200}, wantBytes: []int{0}, wantErr: []bool{true}, wantFault: []FaultKind{FaultStall},
		},
		{
			name: "manifests pass", fault: Fault{Kind: FaultStatus, Status: 503}, path: "/v2/lab/manifests/v1", requests: 1,
			wantStatus: []int{404}, wantBytes: []int{-1}, wantErr: []bool{false}, wantFault: []FaultKind{FaultNone},
		},
		{
			name: "manifests too", fault: Fault{Kind: FaultStatus, Status: 503, Manifests: true}, path: "/v2/lab/manifests/v1", requests: 1,
			wantStatus: []int{503}, wantBytes: []int{-1}, wantErr: []bool{false}, wantFault: []FaultKind{FaultStatus},
		},
		{
			name: "delay", fault: Fault{Kind: FaultDelay, Delay: 100 * time.Millisecond}, requests: 1,
			wantStatus: []int{200}, wantBytes: []int{size}, wantErr: []bool{false}, wantFault: []FaultKind{FaultDelay},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := StartProxy(t.Context(), target, ProxyConfig{Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { closeOrError(t, p.Close) })
			p.SetFault(tt.fault)
			c := testClient(t, "")
			for i := range tt.requests {
				ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
				path := tt.path
				if path == "" {
					path = "/v2/lab/blobs/" + d.String()
				}
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL()+path, nil)
				if err != nil {
					cancel()
					t.Fatal(err)
				}
				if tt.agent != "" {
					req.Header.Set("User-Agent", tt.agent)
				}
				start := time.Now()
				resp, err := c.Do(req)
				if err != nil {
					cancel()
					t.Fatalf("request %d: %v", i, err)
				}
				stalled := tt.wantFault[i] == FaultStall
				got, err := readBody(resp.Body, stalled, tt.wantBytes[i], cancel)
				resp.Body.Close()
				cancel()
				if stalled && !errors.Is(err, context.Canceled) {
					t.Errorf("request %d: stalled read ended with %v, want the client giving up", i, err)
				}
				if resp.StatusCode != tt.wantStatus[i] {
					t.Errorf("request %d: status %d, want %d", i, resp.StatusCode, tt.wantStatus[i])
				}
				if tt.fault.Status == 429 && i == 0 && resp.Header.Get("Retry-After") != "1" {
					t.Errorf("429 without Retry-After: %v", resp.Header)
				}
				if (err != nil) != tt.wantErr[i] {
					t.Errorf("request %d: read error %v, want error %v", i, err, tt.wantErr[i])
				}
				if tt.wantBytes[i] >= 0 && len(got) != tt.wantBytes[i] {
					t.Errorf("request %d: %d bytes, want %d", i, len(got), tt.wantBytes[i])
				}
				if tt.wantBytes[i] == size && !bytes.Equal(got, body) {
					t.Errorf("request %d: body differs", i)
				}
				if tt.fault.Kind == FaultDelay && time.Since(start) < tt.fault.Delay {
					t.Errorf("answered after %v, before the %v delay", time.Since(start), tt.fault.Delay)
				}
			}
			closeOrError(t, p.Close)
			reqs := p.Requests()
			if len(reqs) != tt.requests {
				t.Fatalf("proxy recorded %d requests, want %d: %+v", len(reqs), tt.requests, reqs)
			}
			for i, r := range reqs {
				if r.Fault != tt.wantFault[i] || (tt.path == "" && r.Digest != d) || r.Start.IsZero() {
					t.Errorf("request %d recorded as %+v, want fault %v", i, r, tt.wantFault[i])
				}
			}
		})
	}
}
