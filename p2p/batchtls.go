package p2p

import (
	"bufio"
	"context"
	"net"
	"sync"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/sec"
	libp2pyamux "github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	tptu "github.com/libp2p/go-libp2p/p2p/net/upgrader"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	"github.com/libp2p/go-yamux/v5"
)

// Where a system call and a thread's wake-up cost what they do in a
// virtual machine, they, more than the bytes, set a transfer's CPU. Out of
// the box, libp2p makes many: a yamux frame carries at most 64 KiB, and
// TLS, whose records hold at most 16 KiB, reads and writes the connection
// one record at a time. The node's connections move larger pieces, with
// the same protocols on the wire.
const (
	// frameSize is the most a yamux frame carries: a blob's bytes reach the
	// reading goroutine, and leave the sending one, in pieces this large.
	frameSize = 256 << 10
	// batchReadSize is what one read of the connection under TLS may take
	// at once: about what a veth, or a NIC with receive offload, hands
	// over together.
	batchReadSize = 64 << 10
	// batchWriteMax bounds what a write of the connection under TLS waits
	// to gather: one frame of frameSize, with its records' overhead,
	// leaves in one write.
	batchWriteMax = frameSize + 8<<10
)

// wireOptions are the libp2p options for the node's security transport
// and stream muxer; wire paces what its connections write (nil: no cap).
func wireOptions(cfg Config, wire *bandwidth) []libp2p.Option {
	security := paced(libp2ptls.ID, newBatchedTLS, wire)
	if cfg.noise {
		security = paced(noise.ID, noise.New, wire)
	}
	return []libp2p.Option{security, libp2p.Muxer(libp2pyamux.ID, yamuxTransport())}
}

// yamuxTransport is libp2p's yamux with frames of up to frameSize.
func yamuxTransport() *libp2pyamux.Transport {
	c := *(*yamux.Config)(libp2pyamux.DefaultTransport)
	c.MaxMessageSize = frameSize
	return (*libp2pyamux.Transport)(&c)
}

// batchedTLS is libp2p's TLS 1.3 security transport over a batchedConn.
// It is the same protocol, under the same ID, so it speaks with plain
// libp2p TLS.
type batchedTLS struct {
	tls *libp2ptls.Transport
}

var _ sec.SecureTransport = (*batchedTLS)(nil)

// newBatchedTLS has the signature libp2p.Security wants.
func newBatchedTLS(id protocol.ID, key crypto.PrivKey, muxers []tptu.StreamMuxer) (*batchedTLS, error) {
	t, err := libp2ptls.New(id, key, muxers)
	if err != nil {
		return nil, err
	}
	return &batchedTLS{tls: t}, nil
}

func (t *batchedTLS) ID() protocol.ID { return t.tls.ID() }

func (t *batchedTLS) SecureInbound(ctx context.Context, insecure net.Conn, p peer.ID) (sec.SecureConn, error) {
	return secureBatched(insecure, func(c net.Conn) (sec.SecureConn, error) { return t.tls.SecureInbound(ctx, c, p) })
}

func (t *batchedTLS) SecureOutbound(ctx context.Context, insecure net.Conn, p peer.ID) (sec.SecureConn, error) {
	return secureBatched(insecure, func(c net.Conn) (sec.SecureConn, error) { return t.tls.SecureOutbound(ctx, c, p) })
}

// secureBatched runs handshake, one of TLS's, over insecure as a
// batchedConn.
func secureBatched(insecure net.Conn, handshake func(net.Conn) (sec.SecureConn, error)) (sec.SecureConn, error) {
	raw := newBatchedConn(insecure)
	sc, err := handshake(raw)
	if err != nil {
		return nil, err
	}
	return &batchedSecureConn{SecureConn: sc, raw: raw}, nil
}

// batchedSecureConn sends the records of each write in one write of the
// connection underneath.
type batchedSecureConn struct {
	sec.SecureConn
	raw *batchedConn
}

func (c *batchedSecureConn) Write(p []byte) (int, error) {
	c.raw.gather()
	n, err := c.SecureConn.Write(p)
	if ferr := c.raw.release(); err == nil && ferr != nil {
		return n, ferr
	}
	return n, err
}

// batchedConn is the plain connection under TLS. Reads go through a
// buffer, so that one system call takes every record that has arrived.
// Writes pass straight through, except while a write of the secured
// connection is under way (gather … release): its records are kept and
// leave together when it ends, or when they fill batchWriteMax. What TLS
// writes on its own (the handshake, alerts) passes through, or leaves with
// the write under way. A failed write fails every later one, as it does in
// TLS.
type batchedConn struct {
	net.Conn
	r *bufio.Reader

	mu      sync.Mutex
	writers int    // secured writes under way
	out     []byte // the records kept for them
	err     error
}

func newBatchedConn(c net.Conn) *batchedConn {
	return &batchedConn{Conn: c, r: bufio.NewReaderSize(c, batchReadSize)}
}

func (c *batchedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *batchedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.err != nil:
		return 0, c.err
	case c.writers == 0:
		return c.writeLocked(p)
	}
	if len(c.out)+len(p) > batchWriteMax {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	if len(p) > batchWriteMax {
		return c.writeLocked(p)
	}
	if c.out == nil {
		c.out = (*batchBufs.Get().(*[]byte))[:0]
	}
	c.out = append(c.out, p...)
	return len(p), nil
}

// batchBufs holds the buffers of batchedConns with no write under way, so
// that an idle connection keeps none.
var batchBufs = sync.Pool{New: func() any {
	b := make([]byte, 0, batchWriteMax)
	return &b
}}

// gather keeps what is written from now on, until release.
func (c *batchedConn) gather() {
	c.mu.Lock()
	c.writers++
	c.mu.Unlock()
}

// release sends what gather kept, and says whether that failed.
func (c *batchedConn) release() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writers--
	err := c.flushLocked()
	if c.writers == 0 && c.out != nil {
		b := c.out[:0]
		batchBufs.Put(&b)
		c.out = nil
	}
	return err
}

func (c *batchedConn) flushLocked() error {
	if len(c.out) == 0 || c.err != nil {
		c.out = c.out[:0]
		return c.err
	}
	_, err := c.writeLocked(c.out)
	c.out = c.out[:0]
	return err
}

func (c *batchedConn) writeLocked(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err != nil {
		c.err = err
	}
	return n, err
}
