package p2p

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/p2p/swarm"
	"github.com/shoal-dev/shoal/resolver"
	"github.com/shoal-dev/shoal/store"
)

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, copyBufferSz); return &b }}

// handleStream serves one blob request. Every path ends the stream within
// bounded time: reading the request is bounded by RequestTimeout, and
// every write by IdleTimeout.
func (n *Node) handleStream(s network.Stream) {
	if !n.enterHandler() {
		_ = s.Reset()
		return
	}
	defer n.handlers.Done()
	remote := s.Conn().RemotePeer()
	t := n.cfg.Timing

	_ = s.SetReadDeadline(time.Now().Add(t.RequestTimeout))
	body, err := readRequest(s)
	if err != nil {
		n.refuse(s, remote, statusBadRequest, err)
		return
	}
	var req request
	ranged := s.Protocol() == ProtocolID
	if ranged {
		req, err = parseRangeRequest(body)
	} else {
		req, err = parseRequest(body)
	}
	if err != nil {
		n.refuse(s, remote, statusBadRequest, err)
		return
	}
	// Every answer's header has the request's format.
	// A refusal says, when it knows, the blob's size and how much of it
	// this node holds, so that the requester knows a partial holder.
	refuse := func(st status, size, have int64, why error) {
		n.refuseWith(s, remote, header{status: st, ranged: ranged, size: size, have: have, msg: why.Error()})
	}

	// The slots taken below are given back before the stream's end is
	// sent, so that a requester that read the whole answer finds them
	// free when it asks again.
	var releases []func()
	release := func() {
		for i := len(releases) - 1; i >= 0; i-- {
			releases[i]()
		}
		releases = nil
	}
	defer release()
	takeSlot := func() bool {
		select {
		case n.uploads <- struct{}{}:
			releases = append(releases, func() { <-n.uploads })
			return true
		default:
			return false
		}
	}
	blob, err := n.openForPeer(req, remote, takeSlot)
	if err != nil {
		var busy *busyError
		var rl *resolver.RateLimitedError
		var at *resolver.FetchingAtError
		switch {
		case errors.Is(err, resolver.ErrFetchYourself):
			refuse(statusFetchYourself, 0, 0, err)
		case errors.As(err, &at):
			n.refuseWith(s, remote, header{status: statusFetchingAt, ranged: ranged, msg: at.Peer})
		case errors.As(err, &busy):
			// Said with what the node holds: a node that fetches the blob
			// for the cluster does not wait on one that holds a part only.
			refuse(statusBusy, busy.size, busy.have, err)
		case errors.As(err, &rl):
			n.refuseWith(s, remote, header{status: statusRateLimited, size: rl.RetryAfter.Milliseconds(), ranged: ranged, msg: err.Error()})
		case errdefs.IsNotFound(err) || errdefs.IsPermissionDenied(err):
			refuse(statusNotFound, 0, 0, err)
		default:
			refuse(statusError, 0, 0, err)
		}
		return
	}
	defer blob.Close()
	size := blob.Size()
	end := size
	if req.length > 0 {
		end = req.off + req.length
	}
	if req.off > size || end > size {
		refuse(statusBadRequest, 0, 0, fmt.Errorf("range %d-%d beyond size %d", req.off, end, size))
		return
	}
	have := size
	a, isArriving := blob.(arriving)
	stillArriving := isArriving && a.Arriving()
	if stillArriving {
		have = a.Have()
	}
	ask := swarm.Ask{Off: req.off, Length: req.length, Ranged: req.ranged, Wait: req.wait}
	if swarm.NotYet(ask, swarm.Copy{Size: size, Have: have, Arriving: stillArriving}) {
		// Said before the blob's streams are counted.
		refuse(statusNotYet, size, have, fmt.Errorf("holds %d bytes of %d, not yet byte %d", have, size, req.off))
		return
	}
	// A blob's streams are capped too (see swarm.BlobUploadCap); a piece
	// counts against the node's slots only (see swarm.CountsPerBlob).
	if swarm.CountsPerBlob(ask) {
		if !n.takeBlobSlot(req.dgst, swarm.BlobUploadCap(stillArriving, n.cfg.MaxUploadsPerBlob, n.cfg.MaxUploads)) {
			refuse(statusBusy, size, have, errors.New("too many uploads of this blob"))
			return
		}
		releases = append(releases, func() { n.releaseBlobSlot(req.dgst) })
	}
	n.metrics.uploadsActive.Inc()
	releases = append(releases, n.metrics.uploadsActive.Dec)

	w := &deadlineWriter{s: s, idle: t.IdleTimeout}
	if err := writeHeader(w, header{status: statusOK, size: size, ranged: ranged, have: have}); err != nil {
		n.metrics.uploads.WithLabelValues("error").Inc()
		_ = s.Reset()
		return
	}
	st := n.stats.peer(remote)
	// The cap sits outside the deadline: a stream waiting for its turn
	// under the cap has written nothing, and its deadline moves forward
	// with its next write.
	var from io.Reader = io.NewSectionReader(blob, req.off, end-req.off)
	if isArriving {
		from = &heldReader{blob: blob, a: a, off: req.off, end: end}
	}
	sent, err := n.copyBlob(n.upload.writer(n.life, w), from, st)
	if err != nil {
		n.metrics.uploads.WithLabelValues("error").Inc()
		n.log.Debug("upload cut", "peer", remote, "digest", req.dgst, "offset", req.off, "bytes", sent, "error", err)
		_ = s.Reset()
		return
	}
	n.metrics.uploads.WithLabelValues("ok").Inc()
	n.log.Debug("uploaded", "peer", remote, "digest", req.dgst, "offset", req.off, "bytes", sent)
	release()
	_ = s.Close()
}

func (n *Node) copyBlob(w io.Writer, r io.Reader, st *peerStat) (int64, error) {
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	buf := *bp
	var total int64
	for {
		k, rerr := r.Read(buf)
		if k > 0 {
			m, werr := w.Write(buf[:k])
			total += int64(m)
			st.served.Add(int64(m))
			n.stats.served.Add(int64(m))
			n.metrics.served.Add(float64(m))
			if werr != nil {
				return total, werr
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

// refuse answers a request with an error status and ends the stream.
func (n *Node) refuse(s network.Stream, remote peer.ID, st status, why error) {
	n.refuseWith(s, remote, header{status: st, ranged: s.Protocol() == ProtocolID, msg: why.Error()})
}

// refuseWith answers a request with h, an error status, and ends the stream.
func (n *Node) refuseWith(s network.Stream, remote peer.ID, h header) {
	st := h.status
	n.metrics.uploads.WithLabelValues(resultLabel(st)).Inc()
	if st != statusNotFound && st != statusBusy && st != statusNotYet && st != statusFetchYourself && st != statusFetchingAt {
		n.log.Debug("refused request", "peer", remote, "status", st.String(), "error", h.msg)
	}
	_ = s.SetWriteDeadline(time.Now().Add(n.cfg.Timing.RequestTimeout))
	if err := writeHeader(s, h); err != nil {
		_ = s.Reset()
		return
	}
	_ = s.Close()
}

func resultLabel(st status) string {
	switch st {
	case statusOK:
		return "ok"
	case statusNotFound:
		return "not_found"
	case statusBadRequest:
		return "bad_request"
	case statusBusy:
		return "busy"
	case statusNotYet:
		return "not_yet"
	case statusRateLimited:
		return "rate_limited"
	case statusFetchYourself:
		return "fetch_yourself"
	case statusFetchingAt:
		return "fetching_at"
	}
	return "error"
}

// deadlineWriter pushes the write deadline forward as bytes go out, so a
// peer that stops reading is cut after idle, however long the transfer.
type deadlineWriter struct {
	s     network.Stream
	idle  time.Duration
	setAt time.Time
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	if now := time.Now(); now.Sub(w.setAt) > w.idle/8 {
		if err := w.s.SetWriteDeadline(now.Add(w.idle)); err != nil {
			return 0, err
		}
		w.setAt = now
	}
	return w.s.Write(p)
}

// arriving is a blob still being downloaded by this node (see Content).
type arriving interface {
	Arriving() bool
	// Have is how many bytes from the start it holds without a hole.
	Have() int64
}

func (n *Node) takeBlobSlot(d digest.Digest, limit int) bool {
	n.blobUploadsMu.Lock()
	defer n.blobUploadsMu.Unlock()
	return n.blobUploads.Take(d, limit)
}

func (n *Node) releaseBlobSlot(d digest.Digest) {
	n.blobUploadsMu.Lock()
	defer n.blobUploadsMu.Unlock()
	n.blobUploads.Release(d)
}

// busyError is the answer to a request when every upload slot is taken;
// size and have are the blob's size and what the node holds of it from
// its start (0: not looked at).
type busyError struct{ size, have int64 }

func (e *busyError) Error() string { return "too many uploads" }

// openForPeer opens the blob a peer asked for, taking an upload slot with
// take: the node's own copy, whole or still arriving; else, when the peer
// named a registry, the download this node starts or joins for the
// cluster. It refuses what a peer may not have: a fetch in an open mesh,
// whose peers are not authenticated, and one from a registry the node does
// not mirror (the Puller's errdefs.ErrPermissionDenied), both counted.
func (n *Node) openForPeer(req request, remote peer.ID, take func() bool) (store.Blob, error) {
	blob, err := n.content.Open(n.life, req.dgst)
	if err == nil {
		if !take() {
			size := blob.Size()
			have := size
			if a, ok := blob.(arriving); ok && a.Arriving() {
				have = a.Have()
			}
			blob.Close()
			return nil, &busyError{size: size, have: have}
		}
		return blob, nil
	}
	if !errdefs.IsNotFound(err) || req.registry == "" || n.cfg.Puller == nil {
		return nil, err
	}
	if n.protection == "" {
		n.metrics.pullRefused.WithLabelValues("open_mesh").Inc()
		return nil, fmt.Errorf("blob %s: not held, and this node fetches for the cluster only in a mesh with a cluster key: %w", req.dgst, errdefs.ErrNotFound)
	}
	// Only a node with a free slot starts a download for a peer.
	if !take() {
		return nil, &busyError{}
	}
	// Answer before the requester's deadline for a header runs out.
	pctx, cancel := context.WithTimeout(n.life, n.cfg.Timing.RequestTimeout*3/4)
	defer cancel()
	blob, err = n.cfg.Puller.PullFor(pctx, req.dgst, req.registry, req.repo, remote.String())
	switch {
	case err == nil:
		n.metrics.pullThrough.Inc()
	case errdefs.IsPermissionDenied(err):
		n.metrics.pullRefused.WithLabelValues("registry").Inc()
		n.log.Warn("refused to fetch for a peer from a registry this node does not mirror", "peer", remote, "registry", req.registry, "digest", req.dgst)
	}
	return blob, err
}

// heldReader reads a blob still arriving from off to end, each read no
// larger than the bytes held past its position, so that the bytes this node
// holds go out at once: a read for more than arrived would wait for the
// rest, and a node whose own source stalled would withhold the tail it
// has. Caught up, it waits for the next byte.
type heldReader struct {
	blob     store.Blob
	a        arriving
	off, end int64
}

func (r *heldReader) Read(p []byte) (int, error) {
	if r.off >= r.end {
		return 0, io.EOF
	}
	n := min(int64(len(p)), r.end-r.off)
	if h := r.a.Have(); h > r.off {
		n = min(n, h-r.off)
	} else if r.a.Arriving() {
		n = 1
	}
	k, err := r.blob.ReadAt(p[:n], r.off)
	r.off += int64(k)
	if err == io.EOF && r.off == r.end {
		err = nil
	}
	return k, err
}
