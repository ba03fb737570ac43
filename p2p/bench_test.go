package p2p_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/big"
	"net"
	"sync"
	"syscall"
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
//	noise  as gater, but libp2p secures connections with Noise
//	       (ChaCha20-Poly1305) instead of its default, TLS 1.3 (AES-GCM)
//
// "fetch" is a blob through Node.Fetch (protocol, upload slot, ReadAt of
// the content, deadlines, counters); "bare" is a libp2p stream that writes
// the same bytes from memory, the ceiling fetch is measured against.
//
// Two baselines move the same bytes without libp2p: "tcp", a plain
// loopback connection, the floor of what the kernel costs; and "tls", the
// same over crypto/tls 1.3, what encryption alone adds on this CPU.
//
// Besides throughput, each reports core-s/GiB: the process's user and
// system CPU time during the timed loop per GiB moved. Both ends run in
// this one process, so it is the sender's and the receiver's CPU together,
// and it includes the nodes' background work (gossip, DHT), which is small
// beside a transfer. It is steadier than throughput on a busy machine. Run:
//
//	go test -run '^$' -bench Stream -benchtime 4x ./p2p/
func BenchmarkStream(b *testing.B) {
	data := randomBlob(8, benchBlobSize)
	d := digest.FromBytes(data)
	key, err := p2p.GenerateClusterKey()
	if err != nil {
		b.Fatal(err)
	}
	b.Run("tcp", func(b *testing.B) { benchConns(b, tcpBaseline(b, data)) })
	b.Run("tls", func(b *testing.B) { benchConns(b, tlsBaseline(b, data)) })
	for _, mode := range []struct {
		name  string
		key   []byte
		prot  p2p.Protection
		noise bool
	}{
		{"open", nil, "", false},
		{"gater", key, p2p.ProtectGater, false},
		{"psk", key, p2p.ProtectPSK, false},
		{"noise", key, p2p.ProtectGater, true},
	} {
		b.Run(mode.name, func(b *testing.B) {
			c := p2ptest.Start(b, 2, p2ptest.Options{
				Config: func(i int, cfg *p2p.Config) {
					cfg.ClusterKey = mode.key
					cfg.Protection = mode.prot
					if mode.noise {
						p2p.UseNoise(cfg)
					}
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
				if err := writeBlob(s, data); err != nil {
					_ = s.Reset()
				}
			})
			b.Run("bare", func(b *testing.B) {
				benchConns(b, func() (io.ReadCloser, error) {
					return p2p.Host(client).NewStream(b.Context(), server.ID(), bare)
				})
			})
			b.Run("fetch", func(b *testing.B) {
				transfers(b, func() {
					rc, _, err := client.Fetch(b.Context(), server.ID(), d, 0)
					if err != nil {
						b.Fatal(err)
					}
					n, err := io.Copy(io.Discard, rc)
					rc.Close()
					if err != nil || n != benchBlobSize {
						b.Fatalf("read %d bytes: %v", n, err)
					}
				})
			})
		})
	}
}

// transfers runs move, which moves one blob, once per iteration, and
// reports the throughput and the CPU the whole process spent per GiB.
func transfers(b *testing.B, move func()) {
	b.SetBytes(benchBlobSize)
	start := cpuTime(b)
	for b.Loop() {
		move()
	}
	gib := float64(b.N) * benchBlobSize / (1 << 30)
	b.ReportMetric((cpuTime(b)-start).Seconds()/gib, "core-s/GiB")
}

// cpuTime is the user and system CPU time this process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchConns opens a connection per iteration and reads one blob from it.
func benchConns(b *testing.B, open func() (io.ReadCloser, error)) {
	transfers(b, func() {
		rc, err := open()
		if err != nil {
			b.Fatal(err)
		}
		n, err := drain(rc)
		rc.Close()
		if err != nil || n != benchBlobSize {
			b.Fatalf("read %d bytes: %v", n, err)
		}
	})
}

// tcpBaseline serves data to every connection on a loopback listener and
// returns how to open one.
func tcpBaseline(b *testing.B, data []byte) func() (io.ReadCloser, error) {
	ln := listenBlob(b, data, nil)
	return func() (io.ReadCloser, error) { return net.Dial("tcp", ln.Addr().String()) }
}

// tlsBaseline is tcpBaseline over TLS 1.3 with a certificate made here.
func tlsBaseline(b *testing.B, data []byte) func() (io.ReadCloser, error) {
	cert, roots := selfSigned(b)
	ln := listenBlob(b, data, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}
	return func() (io.ReadCloser, error) { return tls.Dial("tcp", ln.Addr().String(), cfg) }
}

// listenBlob listens on loopback, over TLS if cfg is set, and writes data
// to each connection in turn, then closes it, until the benchmark ends.
func listenBlob(b *testing.B, data []byte, cfg *tls.Config) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	if cfg != nil {
		ln = tls.NewListener(ln, cfg)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_ = writeBlob(conn, data)
			conn.Close()
		}
	})
	b.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln
}

// writeBlob writes data in 1 MiB writes, as the node's upload does.
func writeBlob(w io.Writer, data []byte) error {
	for off := 0; off < len(data); off += 1 << 20 {
		if _, err := w.Write(data[off:min(off+1<<20, len(data))]); err != nil {
			return err
		}
	}
	return nil
}

// selfSigned makes a certificate for 127.0.0.1 and a pool that trusts it.
func selfSigned(b *testing.B) (tls.Certificate, *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		b.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		b.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, roots
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
