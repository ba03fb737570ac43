package mirror

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/resolver"
)

// slowBlobResolver serves one blob whose download becomes ready when ready
// is closed, or fails with failErr.
type slowBlobResolver struct {
	fakeResolver
	body    []byte
	ready   chan struct{}
	failErr error
}

func (s *slowBlobResolver) Blob(_ context.Context, req resolver.BlobRequest) (*resolver.Blob, error) {
	b := s.body
	return resolver.NewBlob(req.Digest, int64(len(b)), resolver.SourcePeer, func(ctx context.Context, off int64) (io.ReadCloser, error) {
		select {
		case <-s.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return io.NopCloser(bytes.NewReader(b[off:])), nil
	}, nil).WithReady(func(ctx context.Context) error {
		if s.failErr != nil {
			return s.failErr
		}
		select {
		case <-s.ready:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}), nil
}

// TestHeaderWait: a blob whose bytes are not ready gets its headers after
// HeaderWait (containerd 2.x abandons a mirror whose headers take 30 s) and
// its body once ready; one that fails before then is a clean 404.
func TestHeaderWait(t *testing.T) {
	t.Parallel()
	body := bytes.Repeat([]byte("shoal"), 4000)
	d := digest.FromBytes(body)
	const wait = 300 * time.Millisecond
	start := func(t *testing.T, s *slowBlobResolver) string {
		h, err := New(s, Config{HeaderWait: wait})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		return srv.URL + "/v2/team/app/blobs/" + d.String() + "?ns=registry.example"
	}

	t.Run("headers after HeaderWait, body when ready", func(t *testing.T) {
		t.Parallel()
		s := &slowBlobResolver{body: body, ready: make(chan struct{})}
		url := start(t, s)
		// Bounded, so a mirror that never sends its headers fails the test
		// rather than hanging it.
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		began := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d, want 200", resp.StatusCode)
		}
		if el := time.Since(began); el < wait {
			t.Fatalf("headers after %s, before HeaderWait %s: the 200 went out before the blob could be sent", el, wait)
		}
		// The body is not there yet: headers came from HeaderWait, not readiness.
		select {
		case <-s.ready:
			t.Fatal("ready closed early")
		default:
		}
		close(s.ready)
		got, err := io.ReadAll(resp.Body)
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("body: %d bytes, %v", len(got), err)
		}
	})

	t.Run("download fails before HeaderWait: 404", func(t *testing.T) {
		t.Parallel()
		s := &slowBlobResolver{body: body, ready: make(chan struct{}), failErr: fmt.Errorf("blob: %w", errors.New("every source failed"))}
		resp, b := do(t, http.MethodGet, start(t, s), nil)
		if resp.StatusCode != http.StatusNotFound || !bytes.Contains(b, []byte("BLOB_UNKNOWN")) {
			t.Fatalf("status %d body %s, want 404 BLOB_UNKNOWN", resp.StatusCode, b)
		}
	})
}
