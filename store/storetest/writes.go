package storetest

import (
	"io"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/shoal-dev/shoal/store"
)

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

// span is a write, [start, end) of the blob.
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
