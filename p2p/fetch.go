package p2p

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/resolver"
)

// ErrPeerBusy reports a peer at its upload cap; try another. Errors that
// wrap it also wrap errdefs.ErrUnavailable and errdefs.ErrResourceExhausted.
var ErrPeerBusy = errors.New("peer busy")

// Fetch streams dgst from peer p, from byte off to the end, and returns
// the blob's total size as the peer states it. ctx bounds the whole
// transfer, not only its start. The bytes and the size come from another
// machine: the caller verifies them against the digest, and calls Avoid if
// they do not match. Errors wrap errdefs.ErrNotFound (the peer lacks the
// blob), errdefs.ErrInvalidArgument (a bad digest or offset) or
// errdefs.ErrUnavailable (the peer cannot be reached, or is busy: then also
// ErrPeerBusy). A transfer that stalls for IdleTimeout fails; one whose
// stream is reset or whose connection closes fails with
// errdefs.ErrUnavailable.
func (n *Node) Fetch(ctx context.Context, p peer.ID, dgst digest.Digest, off int64) (io.ReadCloser, int64, error) {
	return n.fetch(ctx, p, request{dgst: dgst, off: off})
}

// FetchThrough is Fetch from a peer asked to fetch the blob for the
// cluster when it does not hold it: registry and repo say where from. A
// peer without a Puller answers not found, as for Fetch.
func (n *Node) FetchThrough(ctx context.Context, p peer.ID, dgst digest.Digest, off int64, registry, repo string) (io.ReadCloser, int64, error) {
	if !validSource(registry, repo) {
		return nil, 0, fmt.Errorf("fetch %s through %s: bad source %s/%s: %w", dgst, p, registry, repo, errdefs.ErrInvalidArgument)
	}
	return n.fetch(ctx, p, request{dgst: dgst, off: off, registry: registry, repo: repo})
}

// ErrNotYet reports a peer that is still receiving the blob and does not
// hold the bytes asked for yet (FetchRange without wait). Errors that wrap
// it also wrap errdefs.ErrOutOfRange.
var ErrNotYet = errors.New("peer does not hold those bytes yet")

// Range asks for part of a blob.
type Range struct {
	Off    int64
	Length int64 // 0: to the end of the blob
	// Wait asks a peer still receiving the blob to wait for the bytes;
	// without it, such a peer that does not hold the byte at Off answers
	// at once with ErrNotYet.
	Wait bool
	// Registry and Repo, when set, ask the peer to fetch the blob for the
	// cluster when it does not hold it, as FetchThrough does.
	Registry, Repo string
	// Leads tells such a peer that this node fetches another blob from
	// the registry for the cluster now, or may be left one (see
	// swarm.WaitsForWant). A peer
	// that speaks only ProtocolV12 or older is not told.
	Leads bool
}

// FetchRange streams part of dgst from peer p, as Fetch does the rest of
// it. It also returns how many bytes the peer held from the start without a
// hole when it answered (the size when it holds the blob whole), on
// success and with ErrNotYet; 0 when it did not say. A peer that only
// speaks ProtocolV11 sends the rest of the blob: the body still ends after
// Length bytes, and closing it early resets the stream.
func (n *Node) FetchRange(ctx context.Context, p peer.ID, dgst digest.Digest, rg Range) (body io.ReadCloser, size, have int64, err error) {
	if rg.Registry != "" && !validSource(rg.Registry, rg.Repo) {
		return nil, 0, 0, fmt.Errorf("fetch %s through %s: bad source %s/%s: %w", dgst, p, rg.Registry, rg.Repo, errdefs.ErrInvalidArgument)
	}
	if rg.Length < 0 {
		return nil, 0, 0, fmt.Errorf("fetch %s at %d: %w: negative length %d", dgst, rg.Off, errdefs.ErrInvalidArgument, rg.Length)
	}
	var h header
	body, h, err = n.fetchHeader(ctx, p, request{dgst: dgst, off: rg.Off, ranged: true, length: rg.Length, wait: rg.Wait, leads: rg.Leads, registry: rg.Registry, repo: rg.Repo})
	return body, h.size, h.have, err
}

func (n *Node) fetch(ctx context.Context, p peer.ID, req request) (io.ReadCloser, int64, error) {
	req.ranged, req.wait = true, true
	body, h, err := n.fetchHeader(ctx, p, req)
	return body, h.size, err
}

// fetchHeader sends req to p over ProtocolID, or ProtocolV11 when p only
// speaks that, and returns the body and the answer's header.
func (n *Node) fetchHeader(ctx context.Context, p peer.ID, req request) (_ io.ReadCloser, h header, _ error) {
	if err := n.checkFetch(p, req); err != nil {
		return nil, h, err
	}
	st := n.stats.addInflight(p, 1)
	ok := false
	defer func() {
		if !ok {
			n.stats.addInflight(p, -1)
		}
	}()
	fail := func(result string, err error) (io.ReadCloser, header, error) {
		n.metrics.fetches.WithLabelValues(result).Inc()
		return nil, h, err
	}
	s, err := n.openFetch(ctx, p)
	if err != nil {
		return fail("error", fetchFailed(ctx, p, req, err))
	}
	// The caller's context ends the stream at any point, the exchange
	// included: a frozen peer holds its answer until RequestTimeout, and
	// the caller may have judged it lost long before.
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer func() {
		if !ok {
			stop()
		}
	}()
	asked := time.Now()
	h, err = n.ask(s, p, req)
	if err != nil {
		_ = s.Reset()
		timedOut := isTimeout(err)
		err = fetchFailed(ctx, p, req, err)
		switch {
		case !errors.Is(err, errdefs.ErrUnavailable):
		case n.stats.receivedSince(p, asked):
			// No answer, but p's bytes for this node's other streams
			// kept coming: p is alive, its answer queued behind them.
			err = fmt.Errorf("%w (%w)", err, resolver.ErrPeerCut)
		case timedOut:
			err = fmt.Errorf("%w (%w)", err, resolver.ErrNoAnswer)
		}
		return fail("error", err)
	}
	if h.status != statusOK {
		_ = s.Close()
		return fail(n.refused(p, req, h))
	}
	end := req.end(h.size)
	if h.size < end {
		_ = s.Reset()
		return fail("error", fmt.Errorf("fetch %s from %s: %w: peer states size %d below the range's end %d", req.dgst, p, errdefs.ErrUnavailable, h.size, end))
	}
	_ = s.SetDeadline(time.Time{})
	n.metrics.fetches.WithLabelValues("ok").Inc()
	r := &fetchReader{n: n, s: s, peer: p, st: st, remain: end - req.off, idle: n.cfg.Timing.IdleTimeout, ctx: ctx, leads: h.msg == leadsMessage}
	r.stop = stop
	ok = true
	return r, h, nil
}

// checkFetch refuses a request no peer should be sent: a bad digest, a
// negative offset, or one to this node itself.
func (n *Node) checkFetch(p peer.ID, req request) error {
	if err := checkDigest(req.dgst); err != nil {
		return err
	}
	if req.off < 0 {
		return fmt.Errorf("fetch %s at %d: %w: negative offset", req.dgst, req.off, errdefs.ErrInvalidArgument)
	}
	if p == n.id {
		return fmt.Errorf("fetch %s from %s: %w: that is this node", req.dgst, p, errdefs.ErrInvalidArgument)
	}
	return nil
}

// openFetch opens a transfer stream to p, dialled directly, within
// DialTimeout and RequestTimeout.
func (n *Node) openFetch(ctx context.Context, p peer.ID) (network.Stream, error) {
	// The connector may not have passed a new member's addresses to
	// libp2p yet.
	if ps := n.host.Peerstore(); len(ps.Addrs(p)) == 0 {
		ps.AddAddrs(p, n.members.addrsOf(p), peerstore.TempAddrTTL)
	}
	// Members are dialled directly, whatever failed before: a peer is only
	// asked for a blob once the caller has chosen it, usually from Providers.
	t := n.cfg.Timing
	dctx, cancel := context.WithTimeout(network.WithForceDirectDial(ctx, "fetch"), t.DialTimeout+t.RequestTimeout)
	defer cancel()
	return n.host.NewStream(dctx, p, ProtocolID, ProtocolV12, ProtocolV11)
}

// ask sends req over s and reads the answer's header, within
// RequestTimeout, and records the round trip as p's latency.
func (n *Node) ask(s network.Stream, p peer.ID, req request) (header, error) {
	start := time.Now()
	_ = s.SetDeadline(start.Add(n.cfg.Timing.RequestTimeout))
	switch s.Protocol() {
	case ProtocolV11:
		// A peer from before ranges: it sends the rest of the blob, the
		// reader stops after the range.
		req.ranged = false
	case ProtocolV12:
		// A peer from before flagLeads: it would refuse the request.
		req.leads = false
	}
	h, err := exchange(s, req)
	if err != nil {
		return h, err
	}
	rtt := time.Since(start)
	n.host.Peerstore().RecordLatency(p, rtt)
	n.stats.peer(p).roundTrip(rtt)
	return h, nil
}

// isTimeout says whether err is a deadline's: the muxer's streams report
// it as a net.Error whose Timeout is true, other transports as
// os.ErrDeadlineExceeded.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// fetchFailed is the error of a request to p that got no answer: the
// caller's context ended, or p could not be reached or did not answer.
func fetchFailed(ctx context.Context, p peer.ID, req request, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("fetch %s from %s: %w", req.dgst, p, ctx.Err())
	}
	return fmt.Errorf("fetch %s from %s: %w: %v", req.dgst, p, errdefs.ErrUnavailable, err)
}

// refused is the metrics label and the error of p's answer h, a refusal
// of req. A busy answer marks p busy.
func (n *Node) refused(p peer.ID, req request, h header) (string, error) {
	dgst := req.dgst
	var kind error
	switch h.status {
	case statusNotYet:
		err := fmt.Errorf("fetch %s from %s at %d: %w (it holds %d bytes): %w", dgst, p, req.off, ErrNotYet, h.have, errdefs.ErrOutOfRange)
		if h.msg == leadsMessage {
			err = fmt.Errorf("%w (%w)", err, resolver.ErrPeerLeads)
		}
		return "not_yet", err
	case statusBusy:
		n.stats.markBusy(p, time.Now())
		err := fmt.Errorf("fetch %s from %s: %w: %w: %w", dgst, p, ErrPeerBusy, errdefs.ErrUnavailable, errdefs.ErrResourceExhausted)
		if h.msg == leadsMessage {
			err = fmt.Errorf("%w (%w)", err, resolver.ErrPeerLeads)
		}
		return "busy", err
	case statusRateLimited:
		rl := &resolver.RateLimitedError{Registry: req.registry, RetryAfter: time.Duration(h.size) * time.Millisecond, Via: p.String()}
		return resultLabel(h.status), fmt.Errorf("fetch %s from %s: %w", dgst, p, rl)
	case statusFetchYourself:
		return resultLabel(h.status), fmt.Errorf("fetch %s from %s: %w", dgst, p, resolver.ErrFetchYourself)
	case statusFetchingAt:
		at, err := peer.Decode(h.msg)
		if err != nil || at == p {
			return "error", fmt.Errorf("fetch %s from %s: %w: it points at %q, not another peer", dgst, p, errdefs.ErrUnavailable, h.msg)
		}
		return resultLabel(h.status), fmt.Errorf("fetch %s from %s: %w", dgst, p, &resolver.FetchingAtError{Peer: at.String()})
	case statusNotFound:
		kind = errdefs.ErrNotFound
	case statusBadRequest:
		kind = errdefs.ErrInvalidArgument
	default:
		kind = errdefs.ErrUnavailable
	}
	return resultLabel(h.status), fmt.Errorf("fetch %s from %s: %w: peer says %q", dgst, p, kind, h.msg)
}

// exchange sends the request and reads the answer's header.
func exchange(s network.Stream, req request) (header, error) {
	if err := writeRequest(s, req); err != nil {
		return header{}, err
	}
	if err := s.CloseWrite(); err != nil {
		return header{}, err
	}
	if req.ranged {
		return readRangeHeader(s)
	}
	return readHeader(s)
}

// fetchReader is the body of a Fetch: exactly the bytes from the offset to
// the stated size, then io.EOF; io.ErrUnexpectedEOF if the peer stops short.
type fetchReader struct {
	n      *Node
	s      network.Stream
	peer   peer.ID
	st     *peerStat
	remain int64
	idle   time.Duration
	setAt  time.Time
	ctx    context.Context // the Fetch's; only to report why the stream died
	stop   func() bool
	once   sync.Once
	leads  bool // the peer said it fetches the blob from the registry now
}

// PeerLeads says whether the peer answered that it fetches the blob from
// the registry for the cluster now (see resolver.PeerLeads).
func (r *fetchReader) PeerLeads() bool { return r.leads }

func (r *fetchReader) Read(b []byte) (int, error) {
	if r.remain <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > r.remain {
		b = b[:r.remain]
	}
	b = b[:r.n.download.readLimit(len(b))]
	if now := time.Now(); now.Sub(r.setAt) > r.idle/8 {
		_ = r.s.SetReadDeadline(now.Add(r.idle))
		r.setAt = now
	}
	k, err := r.s.Read(b)
	if k > 0 {
		r.remain -= int64(k)
		r.st.fetched.Add(int64(k))
		now := time.Now().UnixNano()
		r.st.lastByte.Store(now)
		r.st.lastRead.Store(now)
		r.n.stats.fetched.Add(int64(k))
		r.n.metrics.fetched.Add(float64(k))
		// Paid after the bytes arrived: the sender is held back by the
		// stream's flow control while this reader waits.
		if werr := r.n.download.paid(r.ctx, k); werr != nil && err == nil {
			err = werr
		}
	}
	switch {
	case err == nil:
		return k, nil
	case errors.Is(err, io.EOF):
		if r.remain > 0 {
			return k, fmt.Errorf("fetch from %s: %w", r.peer, io.ErrUnexpectedEOF)
		}
		return k, nil
	case r.ctx.Err() != nil:
		return k, r.ctx.Err()
	case errors.Is(err, os.ErrDeadlineExceeded):
		return k, fmt.Errorf("fetch from %s: nothing for %v: %w", r.peer, r.idle, err)
	}
	// The stream was reset or its connection closed: the peer may
	// answer again on a new one.
	if se := new(network.StreamError); errors.As(err, &se) && se.Remote {
		// The peer, alive, ended it: most often its upload watch, which
		// found this node not reading (see watchUpload).
		return k, fmt.Errorf("fetch from %s: %w: %w: %w", r.peer, errdefs.ErrUnavailable, resolver.ErrPeerCut, err)
	}
	return k, fmt.Errorf("fetch from %s: %w: %w", r.peer, errdefs.ErrUnavailable, err)
}

// WriteTo copies with a large buffer: io.Copy would otherwise use 32 KiB
// reads, or 8 KiB ones into io.Discard.
func (r *fetchReader) WriteTo(w io.Writer) (int64, error) {
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	buf := *bp
	var total int64
	for {
		k, rerr := r.Read(buf)
		if k > 0 {
			m, werr := w.Write(buf[:k])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
			if m < k {
				return total, io.ErrShortWrite
			}
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

// Close ends the transfer; before the end it resets the stream, which frees
// the peer's upload slot at once.
func (r *fetchReader) Close() error {
	r.once.Do(func() {
		r.stop()
		if r.remain <= 0 {
			_ = r.s.Close()
		} else {
			_ = r.s.Reset()
		}
		r.n.stats.addInflight(r.peer, -1)
	})
	return nil
}
