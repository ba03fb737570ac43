package mirror

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/resolver"
	"github.com/shoal-dev/shoal/resolver/upstream"
	"github.com/shoal-dev/shoal/store"
)

// sendCounter passes the resolver's blobs on, counting the bytes their
// readers sent from the store's file.
type sendCounter struct {
	*resolver.Resolver
	hide bool // pass the readers on as plain readers
	sent atomic.Int64
}

func (c *sendCounter) Blob(ctx context.Context, req resolver.BlobRequest) (*resolver.Blob, error) {
	b, err := c.Resolver.Blob(ctx, req)
	if err != nil {
		return nil, err
	}
	return resolver.NewBlob(b.Digest, b.Size, b.Source, func(ctx context.Context, off int64) (io.ReadCloser, error) {
		rd, err := b.Reader(ctx, off)
		if err != nil {
			return nil, err
		}
		if c.hide {
			return struct{ io.ReadCloser }{rd}, nil
		}
		return &countedSender{ReadCloser: rd, c: c}, nil
	}, b.Close), nil
}

type countedSender struct {
	io.ReadCloser
	c *sendCounter
}

func (s *countedSender) SendFile(w io.Writer, n int64) (int64, bool, error) {
	fs, ok := s.ReadCloser.(store.FileSender)
	if !ok {
		return 0, false, nil
	}
	sent, ok, err := fs.SendFile(w, n)
	s.c.sent.Add(sent)
	return sent, ok, err
}

// storeServer serves blob from an FS store through the resolver and the
// mirror; hide makes the blob's readers plain readers, as a blob not in a
// file of the store is.
func storeServer(tb testing.TB, blob []byte, hide bool) (*httptest.Server, *sendCounter) {
	tb.Helper()
	st, err := store.NewFS(tb.TempDir(), store.DefaultConfig())
	if err != nil {
		tb.Fatal(err)
	}
	in, err := st.Begin(tb.Context(), digest.FromBytes(blob), int64(len(blob)))
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := in.WriteAt(blob, 0); err != nil {
		tb.Fatal(err)
	}
	if err := in.Commit(tb.Context()); err != nil {
		tb.Fatal(err)
	}
	client, err := upstream.New(upstream.Config{})
	if err != nil {
		tb.Fatal(err)
	}
	res, err := resolver.New(st, client, resolver.Sources{}, resolver.Config{}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	c := &sendCounter{Resolver: res, hide: hide}
	h, err := New(c, Config{})
	if err != nil {
		tb.Fatal(err)
	}
	srv := httptest.NewServer(h)
	tb.Cleanup(srv.Close)
	return srv, c
}

func randomBlob(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 0))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// A blob the store holds goes to the client from its file, whole or in the
// range asked for, byte for byte.
func TestBlobFromTheStoresFile(t *testing.T) {
	t.Parallel()
	blob := randomBlob(3, 9<<20+123) // over two sendfile chunks
	srv, c := storeServer(t, blob, false)
	dgst := digest.FromBytes(blob)
	url := srv.URL + "/v2/a/b/blobs/" + dgst.String() + "?ns=docker.io"
	n := len(blob)
	for _, tc := range []struct {
		name   string
		rng    string
		status int
		want   []byte
	}{
		{"whole", "", 200, blob},
		{"resume", "bytes=5000000-", 206, blob[5000000:]},
		{"middle", "bytes=10-5000009", 206, blob[10:5000010]},
		{"suffix", "bytes=-5", 206, blob[n-5:]},
		{"two ranges", "bytes=0-9,20-29", 206, nil},
	} {
		before := c.sent.Load()
		hdr := map[string]string{}
		if tc.rng != "" {
			hdr["Range"] = tc.rng
		}
		resp, body := do(t, "GET", url, hdr)
		if tc.want == nil {
			// A multipart answer: each part's bytes are in it.
			if resp.StatusCode != tc.status || !bytes.Contains(body, blob[0:10]) || !bytes.Contains(body, blob[20:30]) {
				t.Errorf("%s: status %d, %d bytes, want %d with both parts", tc.name, resp.StatusCode, len(body), tc.status)
			}
			continue
		}
		if resp.StatusCode != tc.status || !bytes.Equal(body, tc.want) {
			t.Errorf("%s: status %d with %d bytes (equal %v), want %d with %d", tc.name, resp.StatusCode, len(body), bytes.Equal(body, tc.want), tc.status, len(tc.want))
		}
		// net/http writes the first 512 bytes itself, then hands the
		// rest to the connection.
		if got := c.sent.Load() - before; len(tc.want) > 512 && got < int64(len(tc.want)-512) {
			t.Errorf("%s: %d of %d bytes went from the file", tc.name, got, len(tc.want))
		}
	}
	if c.sent.Load() == 0 {
		t.Fatal("no byte went from the file")
	}
}

// BenchmarkServeBlob serves a 64 MiB blob held in the store to a client over
// loopback, from the file (sendfile) against through a buffer, and reports
// the CPU both ends spent per GiB.
func BenchmarkServeBlob(b *testing.B) {
	blob := randomBlob(4, 64<<20)
	for _, bc := range []struct {
		name string
		hide bool
	}{{"copy", true}, {"sendfile", false}} {
		b.Run(bc.name, func(b *testing.B) {
			srv, _ := storeServer(b, blob, bc.hide)
			url := srv.URL + "/v2/a/b/blobs/" + digest.FromBytes(blob).String() + "?ns=docker.io"
			b.SetBytes(int64(len(blob)))
			buf := make([]byte, 1<<20)
			start := cpuTime(b)
			for b.Loop() {
				resp, err := http.Get(url)
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, resp.Body, buf)
				resp.Body.Close()
				if err != nil || n != int64(len(blob)) {
					b.Fatalf("read %d bytes: %v", n, err)
				}
			}
			gib := float64(b.N) * float64(len(blob)) / (1 << 30)
			b.ReportMetric((cpuTime(b)-start).Seconds()/gib, "core-s/GiB")
		})
	}
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
