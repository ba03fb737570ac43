package storetest

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/shoal-dev/shoal/store"
)

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
