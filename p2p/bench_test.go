package p2p_test

import (
	"io"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/p2p/p2ptest"
)

// benchBlobSize is what one iteration moves over one stream.
const benchBlobSize = 256 << 20

// BenchmarkStream measures one stream's throughput over loopback between
// two nodes, for each way of keeping a cluster private:
//
//	open   no cluster key: libp2p's own security only
//	gater  cluster key, connections admitted by peer ID from the gossip
//	psk    cluster key, libp2p private network (a second cipher)
//
// "fetch" is a blob through Node.Fetch (protocol, upload slot, ReadAt of
// the content, deadlines, counters); "bare" is a libp2p stream that writes
// the same bytes from memory, the ceiling fetch is measured against. Run:
//
//	go test -run '^$' -bench Stream -benchtime 4x ./p2p/
func BenchmarkStream(b *testing.B) {
	data := randomBlob(8, benchBlobSize)
	d := digest.FromBytes(data)
	key, err := p2p.GenerateClusterKey()
	if err != nil {
		b.Fatal(err)
	}
	for _, mode := range []struct {
		name string
		key  []byte
		prot p2p.Protection
	}{
		{"open", nil, ""},
		{"gater", key, p2p.ProtectGater},
		{"psk", key, p2p.ProtectPSK},
	} {
		b.Run(mode.name, func(b *testing.B) {
			c := p2ptest.Start(b, 2, p2ptest.Options{
				Config: func(i int, cfg *p2p.Config) {
					cfg.ClusterKey = mode.key
					cfg.Protection = mode.prot
				},
				Content: func(i int) *p2ptest.Content {
					if i == 1 {
						return p2ptest.NewContent(data)
					}
					return nil
				},
			})
			c.WaitMembers(b, 2, 20*time.Second)
			client, server := c.Nodes[0], c.Nodes[1]

			const bare = "/shoal/bench/bare"
			p2p.Host(server).SetStreamHandler(bare, func(s network.Stream) {
				defer s.Close()
				for off := 0; off < len(data); off += 1 << 20 {
					if _, err := s.Write(data[off:min(off+1<<20, len(data))]); err != nil {
						_ = s.Reset()
						return
					}
				}
			})
			b.Run("bare", func(b *testing.B) {
				b.SetBytes(benchBlobSize)
				for b.Loop() {
					s, err := p2p.Host(client).NewStream(b.Context(), server.ID(), bare)
					if err != nil {
						b.Fatal(err)
					}
					n, err := drain(s)
					s.Close()
					if err != nil || n != benchBlobSize {
						b.Fatalf("read %d bytes: %v", n, err)
					}
				}
			})
			b.Run("fetch", func(b *testing.B) {
				b.SetBytes(benchBlobSize)
				for b.Loop() {
					rc, _, err := client.Fetch(b.Context(), server.ID(), d, 0)
					if err != nil {
						b.Fatal(err)
					}
					n, err := io.Copy(io.Discard, rc)
					rc.Close()
					if err != nil || n != benchBlobSize {
						b.Fatalf("read %d bytes: %v", n, err)
					}
				}
			})
		})
	}
}

// drain reads r to the end in 256 KiB reads and returns how many bytes it
// read. io.Copy into io.Discard would read 8 KiB at a time, whatever
// buffer it is given: io.Discard's ReadFrom wins over the buffer.
func drain(r io.Reader) (int64, error) {
	buf := make([]byte, 256<<10)
	var total int64
	for {
		k, err := r.Read(buf)
		total += int64(k)
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}
