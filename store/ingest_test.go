package store

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
)

// stubSpool keeps bytes in memory and lets a test hold discard.
type stubSpool struct {
	buf       []byte
	forgotten atomic.Bool
	discardOK chan struct{} // discard waits for it
}

func (s *stubSpool) ReadAt(p []byte, off int64) (int, error)  { return copy(p, s.buf[off:]), nil }
func (s *stubSpool) WriteAt(p []byte, off int64) (int, error) { return copy(s.buf[off:], p), nil }
func (s *stubSpool) publish() error                           { return nil }
func (s *stubSpool) forget()                                  { s.forgotten.Store(true) }
func (s *stubSpool) discard()                                 { <-s.discardOK }
func (s *stubSpool) close()                                   {}
func (s *stubSpool) open(context.Context) (Blob, error)       { return nil, errors.New("not committed") }

// The store forgets a failed ingest before Done closes, so that whoever sees
// Done can Begin again; removing the bytes may come later.
func TestIngestForgottenBeforeDone(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		fail func(ctx context.Context, in *ingest)
	}{
		{"abort", func(_ context.Context, in *ingest) { in.Abort(nil) }},
		{"digest mismatch", func(ctx context.Context, in *ingest) {
			in.WriteAt([]byte("bad"), 0)
			in.Commit(ctx)
		}},
		{"incomplete", func(ctx context.Context, in *ingest) { in.Commit(ctx) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sp := &stubSpool{buf: make([]byte, 3), discardOK: make(chan struct{})}
			in := newIngest(digest.FromString("abc"), 3, sp)
			ended := make(chan struct{})
			go func() {
				defer close(ended)
				tt.fail(t.Context(), in)
			}()
			<-in.Done()
			if !sp.forgotten.Load() {
				t.Error("Done closed while the store still lists the ingest")
			}
			close(sp.discardOK)
			<-ended
		})
	}
}
