package store_test

import (
	"io"
	"testing"

	"github.com/shoal-dev/shoal/store"
)

// BenchmarkIngestSequential writes a 64 MiB blob in 1 MiB pieces, in order,
// while a reader follows the ingest, then commits: the path of a blob that
// streams to containerd as it downloads.
func BenchmarkIngestSequential(b *testing.B) {
	const size, piece = 64 << 20, 1 << 20
	data, dgst := testBlob(1, size)
	stores := []struct {
		name string
		new  func(b *testing.B) store.Store
	}{
		{"FS", func(b *testing.B) store.Store {
			s, err := store.NewFS(b.TempDir(), store.DefaultConfig())
			if err != nil {
				b.Fatal(err)
			}
			return s
		}},
		{"Memory", func(*testing.B) store.Store { return store.NewMemory() }},
	}
	for _, st := range stores {
		b.Run(st.name, func(b *testing.B) {
			s := st.new(b)
			ctx := b.Context()
			b.SetBytes(size)
			for b.Loop() {
				in, err := s.Begin(ctx, dgst, size)
				if err != nil {
					b.Fatal(err)
				}
				r := in.Reader(ctx, 0)
				read := make(chan error, 1)
				go func() {
					n, err := io.Copy(io.Discard, r)
					if err == nil && n != size {
						err = io.ErrUnexpectedEOF
					}
					read <- err
				}()
				for off := 0; off < size; off += piece {
					if _, err := in.WriteAt(data[off:off+piece], int64(off)); err != nil {
						b.Fatal(err)
					}
				}
				if err := in.Commit(ctx); err != nil {
					b.Fatal(err)
				}
				if err := <-read; err != nil {
					b.Fatal(err)
				}
				r.Close()
				if err := s.Delete(ctx, dgst); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
