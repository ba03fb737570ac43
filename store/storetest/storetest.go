package storetest

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

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

func testOutOfOrderWrites(t *testing.T, s store.Store) {
	const size = 300_000
	chunks := func(n int) []span {
		var out []span
		for off := 0; off < size; off += n {
			out = append(out, span{off, min(off+n, size)})
		}
		return out
	}
	reversed := func(spans []span) []span {
		slices.Reverse(spans)
		return spans
	}
	shuffled := func(seed uint64, spans []span) []span {
		r := rand.New(rand.NewPCG(seed, 0))
		r.Shuffle(len(spans), func(i, j int) { spans[i], spans[j] = spans[j], spans[i] })
		return spans
	}
	tests := []struct {
		name  string
		plan  []span
		check func(t *testing.T, in store.Ingest, step int)
	}{
		{name: "in order", plan: chunks(64 << 10)},
		{name: "reverse", plan: reversed(chunks(50_000)),
			check: func(t *testing.T, in store.Ingest, step int) {
				want := int64(0)
				if step == 5 {
					want = size
				}
				if got := in.Contiguous(); got != want {
					t.Errorf("after write %d: Contiguous = %d, want %d", step, got, want)
				}
			}},
		{name: "shuffled", plan: shuffled(1, chunks(7_000))},
		{name: "overlapping", plan: shuffled(2, append(chunks(30_000), span{10_000, 95_000}, span{0, 1}, span{299_000, size}))},
		{name: "byte then rest", plan: []span{{1000, 1001}, {0, 1000}, {1001, size}}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, dgst := blob(uint64(100+i), size)
			in := begin(t, s, dgst, size)
			r := reader(t, in, 0)
			for step, sp := range tt.plan {
				writeAt(t, in, data[sp.start:sp.end], int64(sp.start))
				if tt.check != nil {
					tt.check(t, in, step)
				}
			}
			if err := in.Commit(t.Context()); err != nil {
				t.Fatalf("Commit: %v", err)
			}
			got, err := io.ReadAll(r)
			if err != nil {
				t.Fatalf("reader: %v", err)
			}
			wantBytes(t, "reader", got, data)
			wantBytes(t, "Open", readBlob(t, s, dgst), data)
		})
	}
}

type span struct{ start, end int }

// A byte is stored once: rewriting a range with other bytes changes nothing,
// so bytes already hashed or read can never differ from what is committed.
func testRewriteKeepsFirstBytes(t *testing.T, s store.Store) {
	data, dgst := blob(3, 5000)
	bad := make([]byte, len(data))
	in := begin(t, s, dgst, int64(len(data)))
	writeAt(t, in, data[:3000], 0)
	writeAt(t, in, bad[1000:4000], 1000) // half old range, half new
	writeAt(t, in, data[4000:], 4000)
	// [3000, 4000) now holds bad bytes, which the digest must catch...
	err := in.Commit(t.Context())
	wantErr(t, "Commit after bad rewrite", err, store.ErrDigestMismatch)

	// ...while rewriting committed-to-be bytes with garbage is harmless.
	in = begin(t, s, dgst, int64(len(data)))
	writeAt(t, in, data, 0)
	writeAt(t, in, bad[:2000], 0)
	if err := in.Commit(t.Context()); err != nil {
		t.Fatalf("Commit after rewrite: %v", err)
	}
	wantBytes(t, "Open", readBlob(t, s, dgst), data)
}

func testDigestMismatch(t *testing.T, s store.Store) {
	data, dgst := blob(4, 70_000)
	wrong, _ := blob(5, len(data))
	in := begin(t, s, dgst, int64(len(data)))
	r := reader(t, in, 0)
	writeAt(t, in, wrong, 0)

	err := in.Commit(t.Context())
	wantErr(t, "Commit", err, store.ErrDigestMismatch)
	wantAbsent(t, s, dgst)
	wantErr(t, "Err", in.Err(), store.ErrDigestMismatch)
	got, err := io.ReadAll(r)
	wantErr(t, "reader opened before", err, store.ErrDigestMismatch)
	if len(got) >= len(data) {
		t.Errorf("reader got all %d bytes of a bad blob", len(got))
	}
	_, err = io.ReadAll(reader(t, in, 0))
	wantErr(t, "reader opened after", err, store.ErrDigestMismatch)
	_, err = in.WriteAt(data[:1], 0)
	wantErr(t, "WriteAt after", err, store.ErrDigestMismatch)
	wantErr(t, "Commit again", in.Commit(t.Context()), store.ErrDigestMismatch)
	if j, ok := s.(joiner); ok {
		if _, ok := j.InFlight(dgst); ok {
			t.Error("InFlight after a failed commit")
		}
	}

	put(t, s, data, dgst) // the right bytes may come later
	wantBytes(t, "Open", readBlob(t, s, dgst), data)
}

func testSizeMismatch(t *testing.T, s store.Store) {
	data, dgst := blob(6, 1000)
	n := int64(len(data))
	tests := []struct {
		name   string
		size   int64
		off    int64
		write  []byte
		target error
		commit bool // then commit, which must fail with target
	}{
		{name: "write past end", size: n, off: n - 5, write: data[:10], target: store.ErrSizeMismatch},
		{name: "write at end", size: n, off: n, write: data[:1], target: store.ErrSizeMismatch},
		{name: "write far past end", size: n, off: 1 << 62, write: data[:1], target: store.ErrSizeMismatch},
		{name: "negative offset", size: n, off: -1, write: data[:1], target: errdefs.ErrInvalidArgument},
		{name: "announced too small", size: n - 1, write: data, target: store.ErrSizeMismatch},
		{name: "announced too large", size: n + 1, write: data, commit: true, target: store.ErrSizeMismatch},
		{name: "commit half written", size: n, write: data[:n/2], commit: true, target: store.ErrSizeMismatch},
		{name: "commit with a hole", size: n, off: 1, write: data[1:], commit: true, target: store.ErrSizeMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// One blob for all cases, so they run in turn.
			in := begin(t, s, dgst, tt.size)
			_, err := in.WriteAt(tt.write, tt.off)
			if !tt.commit {
				wantErr(t, "WriteAt", err, tt.target)
				if got := in.Contiguous(); got != 0 {
					t.Errorf("refused write counted: Contiguous = %d", got)
				}
				in.Abort(nil)
				<-in.Done()
				return
			}
			if err != nil {
				t.Fatalf("WriteAt: %v", err)
			}
			wantErr(t, "Commit", in.Commit(t.Context()), tt.target)
			wantErr(t, "Err", in.Err(), tt.target)
			wantAbsent(t, s, dgst)
		})
	}
}

// A reader gets bytes while they arrive, except the last one, which it gets
// only after Commit verified the blob: so a reader never sees a whole body
// that is wrong.
func testReaderFollowsIngest(t *testing.T, s store.Store) {
	data, dgst := blob(7, 100_000)
	in := begin(t, s, dgst, int64(len(data)))
	r := reader(t, in, 0)

	writeAt(t, in, data[:40_000], 0)
	got := make([]byte, len(data))
	if _, err := io.ReadFull(r, got[:40_000]); err != nil {
		t.Fatalf("read first piece: %v", err)
	}
	writeAt(t, in, data[40_000:], 40_000)
	if _, err := io.ReadFull(r, got[40_000:len(data)-1]); err != nil {
		t.Fatalf("read up to the last byte: %v", err)
	}

	type result struct {
		n         int
		err       error
		committed bool
	}
	last := make(chan result, 1)
	go func() {
		n, err := r.Read(got[len(data)-1:])
		select {
		case <-in.Done():
			last <- result{n, err, true}
		default:
			last <- result{n, err, false}
		}
	}()
	// Give a wrong implementation the chance to hand out the last byte early.
	// A right one cannot return before Commit, so this pause cannot flake.
	time.Sleep(20 * time.Millisecond)
	select {
	case res := <-last:
		t.Fatalf("reader got the last byte before Commit: %+v", res)
	default:
	}
	if err := in.Commit(t.Context()); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	res := <-last
	if res.n != 1 || res.err != nil || !res.committed {
		t.Fatalf("last byte read = %+v, want 1 byte after commit", res)
	}
	wantBytes(t, "reader", got, data)
	if n, err := r.Read(got); n != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("Read at end = %d, %v; want io.EOF", n, err)
	}
}

func testReaderFromOffset(t *testing.T, s store.Store) {
	data, dgst := blob(8, 20_000)
	n := int64(len(data))
	in := begin(t, s, dgst, n)
	before := reader(t, in, 12_345)
	writeAt(t, in, data, 0)
	if err := in.Commit(t.Context()); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	tests := []struct {
		name string
		r    io.Reader
		want []byte
		err  error
	}{
		{name: "opened before commit", r: before, want: data[12_345:]},
		{name: "opened after commit", r: reader(t, in, 5), want: data[5:]},
		{name: "at the end", r: reader(t, in, n)},
		{name: "past the end", r: reader(t, in, n+1), err: errdefs.ErrInvalidArgument},
		{name: "negative", r: reader(t, in, -1), err: errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := io.ReadAll(tt.r)
			if tt.err != nil {
				wantErr(t, "read", err, tt.err)
				return
			}
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			wantBytes(t, "read", got, tt.want)
		})
	}
}

// A reader waiting for bytes returns when its ctx ends, with the ctx's error.
func testReaderCancel(t *testing.T, s store.Store) {
	data, dgst := blob(9, 1000)
	in := begin(t, s, dgst, int64(len(data)))
	writeAt(t, in, data[:100], 0)

	ctx, cancel := context.WithCancel(t.Context())
	r := in.Reader(ctx, 0)
	defer r.Close()
	if _, err := io.ReadFull(r, make([]byte, 100)); err != nil {
		t.Fatalf("read available bytes: %v", err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := r.Read(make([]byte, 10))
		errc <- err
	}()
	cancel()
	wantErr(t, "blocked Read", <-errc, context.Canceled)
	_, err := r.Read(make([]byte, 10))
	wantErr(t, "Read after cancel", err, context.Canceled)

	// The ingest itself goes on.
	writeAt(t, in, data[100:], 100)
	if err := in.Commit(t.Context()); err != nil {
		t.Fatalf("Commit: %v", err)
	}
}

func testAbort(t *testing.T, s store.Store) {
	data, dgst := blob(10, 1000)
	in := begin(t, s, dgst, int64(len(data)))
	writeAt(t, in, data[:500], 0)
	waiting := reader(t, in, 500)
	idle := reader(t, in, 0)
	errc := make(chan error, 1)
	go func() {
		_, err := waiting.Read(make([]byte, 10))
		errc <- err
	}()

	cause := errors.New("source went away")
	in.Abort(cause)
	wantErr(t, "waiting reader", <-errc, cause)
	_, err := io.ReadAll(idle)
	wantErr(t, "idle reader", err, cause)
	_, err = io.ReadAll(reader(t, in, 0))
	wantErr(t, "reader opened after", err, cause)
	<-in.Done()
	wantErr(t, "Err", in.Err(), cause)
	_, err = in.WriteAt(data[500:], 500)
	wantErr(t, "WriteAt", err, cause)
	wantErr(t, "Commit", in.Commit(t.Context()), cause)
	wantAbsent(t, s, dgst)

	in = begin(t, s, dgst, int64(len(data)))
	in.Abort(nil)
	wantErr(t, "Err after Abort(nil)", in.Err(), errdefs.ErrAborted)
	in.Abort(cause)
	wantErr(t, "Err after a second Abort", in.Err(), errdefs.ErrAborted)

	put(t, s, data, dgst) // an aborted blob can be ingested again
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

// Readers at many offsets follow writers that fill the blob out of order,
// then the committed blob is read at random offsets from many goroutines.
func testConcurrentReaders(t *testing.T, s store.Store) {
	const size, piece = 1 << 20, 16 << 10
	data, dgst := blob(13, size)
	in := begin(t, s, dgst, size)

	var wg sync.WaitGroup
	for i := range 8 {
		off := int64(i * size / 8)
		r := reader(t, in, off+int64(i))
		wg.Go(func() {
			got, err := io.ReadAll(r)
			if err != nil {
				t.Errorf("reader at %d: %v", off, err)
				return
			}
			wantBytes(t, "reader", got, data[off+int64(i):])
		})
	}
	offs := make([]int, 0, size/piece)
	for off := 0; off < size; off += piece {
		offs = append(offs, off)
	}
	rand.New(rand.NewPCG(13, 0)).Shuffle(len(offs), func(i, j int) { offs[i], offs[j] = offs[j], offs[i] })
	var writers sync.WaitGroup
	for w := range 3 {
		writers.Go(func() {
			for i := w; i < len(offs); i += 3 {
				if _, err := in.WriteAt(data[offs[i]:offs[i]+piece], int64(offs[i])); err != nil {
					t.Errorf("WriteAt %d: %v", offs[i], err)
				}
			}
		})
	}
	writers.Wait()
	if err := in.Commit(t.Context()); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	wg.Wait()

	b, err := s.Open(t.Context(), dgst)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer b.Close()
	for g := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 1))
			buf := make([]byte, 4096)
			for range 50 {
				off := r.IntN(size - len(buf))
				if _, err := b.ReadAt(buf, int64(off)); err != nil {
					t.Errorf("ReadAt %d: %v", off, err)
					return
				}
				wantBytes(t, "ReadAt", buf, data[off:off+len(buf)])
			}
		})
	}
	wg.Wait()
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
