package storetest

import (
	"errors"
	"io"
	"slices"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"github.com/shoal-dev/shoal/store"
)

// Run tests the store that newStore returns; each subtest gets a new, empty
// one. Subtests run in parallel.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Lifecycle", testLifecycle},
		{"EmptyBlob", testEmptyBlob},
		{"OutOfOrderWrites", testOutOfOrderWrites},
		{"RewriteKeepsFirstBytes", testRewriteKeepsFirstBytes},
		{"DigestMismatch", testDigestMismatch},
		{"SizeMismatch", testSizeMismatch},
		{"ReaderFollowsIngest", testReaderFollowsIngest},
		{"ReaderFromOffset", testReaderFromOffset},
		{"ReaderCancel", testReaderCancel},
		{"Abort", testAbort},
		{"DoubleBegin", testDoubleBegin},
		{"BeginAfterFailure", testBeginAfterFailure},
		{"InFlight", testInFlight},
		{"ConcurrentReaders", testConcurrentReaders},
		{"InvalidDigest", testInvalidDigest},
		{"WalkError", testWalkError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, newStore(t))
		})
	}
}

func testLifecycle(t *testing.T, s store.Store) {
	ctx := t.Context()
	data, dgst := blob(1, 10_000)
	wantAbsent(t, s, dgst)

	in := begin(t, s, dgst, int64(len(data)))
	if in.Digest() != dgst || in.Size() != int64(len(data)) {
		t.Errorf("ingest is %s/%d, want %s/%d", in.Digest(), in.Size(), dgst, len(data))
	}
	wantAbsent(t, s, dgst) // in flight is not committed
	writeAt(t, in, data, 0)
	if got := in.Contiguous(); got != int64(len(data)) {
		t.Errorf("Contiguous = %d, want %d", got, len(data))
	}
	if err := in.Commit(ctx); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	select {
	case <-in.Done():
	default:
		t.Error("Done not closed after Commit")
	}
	if err := in.Err(); err != nil {
		t.Errorf("Err after Commit = %v", err)
	}
	if err := in.Commit(ctx); err != nil {
		t.Errorf("second Commit = %v", err)
	}
	_, err := in.WriteAt(data[:1], 0)
	wantErr(t, "WriteAt after Commit", err, errdefs.ErrFailedPrecondition)

	info, err := s.Stat(ctx, dgst)
	if err != nil || info != (store.Info{Digest: dgst, Size: int64(len(data))}) {
		t.Errorf("Stat = %+v, %v", info, err)
	}
	wantBytes(t, "Open", readBlob(t, s, dgst), data)

	other, otherDgst := blob(2, 3000)
	put(t, s, other, otherDgst)
	var walked []store.Info
	if err := s.Walk(ctx, func(i store.Info) error { walked = append(walked, i); return nil }); err != nil {
		t.Fatalf("Walk: %v", err)
	}
	slices.SortFunc(walked, func(a, b store.Info) int { return int(a.Size - b.Size) })
	want := []store.Info{{Digest: otherDgst, Size: 3000}, {Digest: dgst, Size: 10_000}}
	if !slices.Equal(walked, want) {
		t.Errorf("Walk = %v, want %v", walked, want)
	}

	if err := s.Delete(ctx, dgst); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	wantAbsent(t, s, dgst)
	wantErr(t, "second Delete", s.Delete(ctx, dgst), errdefs.ErrNotFound)
	put(t, s, data, dgst) // a deleted blob can be stored again
	wantBytes(t, "Open after second put", readBlob(t, s, dgst), data)
}

func testEmptyBlob(t *testing.T, s store.Store) {
	_, dgst := blob(0, 0)
	in := begin(t, s, dgst, 0)
	r := reader(t, in, 0)
	if err := in.Commit(t.Context()); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if got, err := io.ReadAll(r); err != nil || len(got) != 0 {
		t.Errorf("reader got %d bytes, %v", len(got), err)
	}
	if got := readBlob(t, s, dgst); len(got) != 0 {
		t.Errorf("Open: got %d bytes", len(got))
	}
}

func testDoubleBegin(t *testing.T, s store.Store) {
	data, dgst := blob(11, 1000)
	in := begin(t, s, dgst, int64(len(data)))
	_, err := s.Begin(t.Context(), dgst, int64(len(data)))
	wantErr(t, "Begin while in flight", err, errdefs.ErrAlreadyExists)
	writeAt(t, in, data, 0)
	if err := in.Commit(t.Context()); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	_, err = s.Begin(t.Context(), dgst, int64(len(data)))
	wantErr(t, "Begin when committed", err, errdefs.ErrAlreadyExists)
}

// Whoever sees an ingest fail can start it again at once.
func testBeginAfterFailure(t *testing.T, s store.Store) {
	data, dgst := blob(15, 100)
	ctx := t.Context()
	tests := []struct {
		name string
		fail func(in store.Ingest)
	}{
		{"abort", func(in store.Ingest) { in.Abort(nil) }},
		{"digest mismatch", func(in store.Ingest) {
			in.WriteAt(make([]byte, len(data)), 0)
			in.Commit(ctx)
		}},
		{"incomplete commit", func(in store.Ingest) { in.Commit(ctx) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := begin(t, s, dgst, int64(len(data)))
			errc := make(chan error, 1)
			go func() {
				<-in.Done()
				again, err := s.Begin(ctx, dgst, int64(len(data)))
				if err == nil {
					again.Abort(nil)
				}
				errc <- err
			}()
			tt.fail(in)
			if err := <-errc; err != nil {
				t.Errorf("Begin once Done closed: %v", err)
			}
		})
	}
}

func testInFlight(t *testing.T, s store.Store) {
	j, ok := s.(joiner)
	if !ok {
		t.Skip("store has no InFlight")
	}
	data, dgst := blob(12, 1000)
	if _, ok := j.InFlight(dgst); ok {
		t.Fatal("InFlight before Begin")
	}
	in := begin(t, s, dgst, int64(len(data)))
	joined, ok := j.InFlight(dgst)
	if !ok || joined.Digest() != dgst {
		t.Fatalf("InFlight = %v, %v", joined, ok)
	}
	r := reader(t, joined, 0)
	writeAt(t, in, data, 0)
	if err := in.Commit(t.Context()); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("joined reader: %v", err)
	}
	wantBytes(t, "joined reader", got, data)
	if _, ok := j.InFlight(dgst); ok {
		t.Error("InFlight after Commit")
	}
}

func testInvalidDigest(t *testing.T, s store.Store) {
	hex := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	tests := []struct {
		name string
		dgst digest.Digest
	}{
		{"empty", ""},
		{"no algorithm", digest.Digest(hex)},
		{"no hex", "sha256:"},
		{"short", "sha256:0123"},
		{"upper case", digest.Digest("sha256:" + "0123456789ABCDEF" + hex[16:])},
		{"path", "sha256:../../../../../../../../../../../../../../../../etc/passwd"},
		{"unknown algorithm", digest.Digest("md5:" + hex[:32])},
		{"sha512", digest.Digest("sha512:" + hex + hex)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			in, err := s.Begin(ctx, tt.dgst, 1)
			if err == nil {
				in.Abort(nil)
			}
			wantErr(t, "Begin", err, errdefs.ErrInvalidArgument)
			_, err = s.Stat(ctx, tt.dgst)
			wantErr(t, "Stat", err, errdefs.ErrInvalidArgument)
			b, err := s.Open(ctx, tt.dgst)
			if err == nil {
				b.Close()
			}
			wantErr(t, "Open", err, errdefs.ErrInvalidArgument)
			wantErr(t, "Delete", s.Delete(ctx, tt.dgst), errdefs.ErrInvalidArgument)
		})
	}
	_, dgst := blob(14, 10)
	_, err := s.Begin(t.Context(), dgst, -1)
	wantErr(t, "Begin with negative size", err, errdefs.ErrInvalidArgument)
}

func testWalkError(t *testing.T, s store.Store) {
	for i := range 3 {
		data, dgst := blob(uint64(20+i), 100)
		put(t, s, data, dgst)
	}
	stop := errors.New("stop")
	calls := 0
	err := s.Walk(t.Context(), func(store.Info) error { calls++; return stop })
	wantErr(t, "Walk", err, stop)
	if calls != 1 {
		t.Errorf("Walk called fn %d times after it failed", calls)
	}
}
