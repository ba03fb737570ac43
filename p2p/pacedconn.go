package p2p

import (
	"context"
	"io"
	"net"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/sec"
	tptu "github.com/libp2p/go-libp2p/p2p/net/upgrader"
)

// The upload cap is applied twice. A stream's blob bytes wait for it
// before they enter yamux (see serving.send), which keeps yamux's queue
// short: the requests, answers and DHT messages on the same connection do
// not wait behind seconds of blob bytes. But yamux takes a write into its
// queue (up to 64 frames a connection) and returns at once; while the
// socket underneath is full (the peer's own link is congested, or it is
// slow to read), the bytes already let through wait there, and when the
// socket drains they leave at the link's speed: on a loaded machine a
// node passed its cap by a tenth over two seconds. So what the node's
// connections write into their sockets waits for a second bucket of the
// same size, shared by all of them, at the cap and wireMargin: held-up
// bytes then leave no faster than that, and the margin, above the few
// bytes framing and encryption add, keeps the second bucket from holding
// back what the first let through.

// wireMargin is how much faster than the cap the connections' sockets
// are paced. TLS adds 22 bytes to a record of up to 16 KiB, yamux 12 to a
// frame: 0.2 %; the rest lets a queue that built up drain.
const wireMargin = 0.01

// wireCap is the bucket that paces the sockets under an upload cap of
// bytesPerSec (0: no cap).
func wireCap(bytesPerSec int64, c clock) *bandwidth {
	return newBandwidth(int64(float64(bytesPerSec)*(1+wireMargin)), c)
}

// pacedSecurity is a security transport whose connections' writes are
// paced by a bandwidth cap: the plain connection under the secured one is
// a pacedConn.
type pacedSecurity struct {
	sec.SecureTransport
	up *bandwidth
}

// paced is the libp2p option for the security transport that construct
// makes, its connections' writes paced by up; with no cap, the transport
// itself.
func paced[T sec.SecureTransport](id protocol.ID, construct func(protocol.ID, crypto.PrivKey, []tptu.StreamMuxer) (T, error), up *bandwidth) libp2p.Option {
	if up == nil {
		return libp2p.Security(string(id), construct)
	}
	return libp2p.Security(string(id), func(id protocol.ID, key crypto.PrivKey, muxers []tptu.StreamMuxer) (*pacedSecurity, error) {
		t, err := construct(id, key, muxers)
		if err != nil {
			return nil, err
		}
		return &pacedSecurity{SecureTransport: t, up: up}, nil
	})
}

func (t *pacedSecurity) SecureInbound(ctx context.Context, insecure net.Conn, p peer.ID) (sec.SecureConn, error) {
	return t.SecureTransport.SecureInbound(ctx, newPacedConn(insecure, t.up), p)
}

func (t *pacedSecurity) SecureOutbound(ctx context.Context, insecure net.Conn, p peer.ID) (sec.SecureConn, error) {
	return t.SecureTransport.SecureOutbound(ctx, newPacedConn(insecure, t.up), p)
}

// pacedConn is a connection whose writes wait for the cap's tokens, a
// burst at a time. Closing it ends a wait under way.
type pacedConn struct {
	net.Conn
	w      io.Writer
	cancel context.CancelFunc
}

func newPacedConn(c net.Conn, up *bandwidth) *pacedConn {
	ctx, cancel := context.WithCancel(context.Background())
	return &pacedConn{Conn: c, w: up.writer(ctx, c), cancel: cancel}
}

func (c *pacedConn) Write(p []byte) (int, error) { return c.w.Write(p) }

func (c *pacedConn) Close() error {
	c.cancel()
	return c.Conn.Close()
}
