package p2p

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
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
	u := &serving{n: n, s: s, remote: s.Conn().RemotePeer(), ranged: s.Protocol() != ProtocolV11, flags: flagWait}
	if s.Protocol() == ProtocolID {
		u.flags |= flagLeads
	}
	if err := u.read(); err != nil {
		u.refuse(statusBadRequest, 0, 0, err)
		return
	}
	defer u.release()
	blob, err := n.openForPeer(u.req, u.remote, u.takeSlot)
	if err != nil {
		u.refuseOpen(err)
		return
	}
	defer blob.Close()
	c, ok := u.admit(blob)
	if !ok {
		return
	}
	u.send(blob, c)
}

// serving is one blob request's state while this node answers it.
type serving struct {
	n      *Node
	s      network.Stream
	remote peer.ID
	// ranged: the request came over ProtocolID or ProtocolV12; every
	// answer's header has the request's format. flags are those the
	// request's protocol knows.
	ranged bool
	flags  byte
	req    request
	// releases give back the slots taken, the last first. They are given
	// back before the answer's last bytes are sent (lastWrite), so that a
	// requester that read the whole answer finds them free when it asks
	// again.
	releases []func()
}

// read reads and parses the request, within RequestTimeout.
func (u *serving) read() error {
	_ = u.s.SetReadDeadline(time.Now().Add(u.n.cfg.Timing.RequestTimeout))
	body, err := readRequest(u.s)
	if err != nil {
		return err
	}
	if u.ranged {
		u.req, err = parseRangeRequest(body, u.flags)
	} else {
		u.req, err = parseRequest(body)
	}
	return err
}

// refuse answers with st and ends the stream. A refusal says, when it
// knows, the blob's size and how much of it this node holds, so that the
// requester knows a partial holder.
func (u *serving) refuse(st status, size, have int64, why error) {
	u.n.refuseWith(u.s, u.remote, header{status: st, ranged: u.ranged, size: size, have: have, msg: why.Error()})
}

// takeSlot takes one of the node's upload slots, or one over them for a
// blob the node streams to nobody or while slow readers hold them
// (swarm.UploadSlot), or says false.
func (u *serving) takeSlot() bool {
	if !u.n.takeSlot(u.req.dgst, u.remote) {
		return false
	}
	u.releases = append(u.releases, u.n.releaseSlot)
	return true
}

// release gives back every slot taken.
func (u *serving) release() {
	for i := len(u.releases) - 1; i >= 0; i-- {
		u.releases[i]()
	}
	u.releases = nil
}

// refuseOpen answers a request whose blob could not be opened for the
// peer (see openForPeer).
func (u *serving) refuseOpen(err error) {
	var busy *busyError
	var rl *resolver.RateLimitedError
	var at *resolver.FetchingAtError
	switch {
	case errors.Is(err, resolver.ErrFetchYourself):
		u.refuse(statusFetchYourself, 0, 0, err)
	case errors.As(err, &at):
		u.n.refuseWith(u.s, u.remote, header{status: statusFetchingAt, ranged: u.ranged, msg: at.Peer})
	case errors.As(err, &busy):
		// Said with what the node holds: a node that fetches the blob
		// for the cluster does not wait on one that holds a part only,
		// unless that one fetches it from the registry too.
		u.refuse(statusBusy, busy.size, busy.have, busyWhy(busy.leads, err))
	case errors.As(err, &rl):
		u.n.refuseWith(u.s, u.remote, header{status: statusRateLimited, size: rl.RetryAfter.Milliseconds(), ranged: u.ranged, msg: err.Error()})
	case errdefs.IsNotFound(err) || errdefs.IsPermissionDenied(err):
		u.refuse(statusNotFound, 0, 0, err)
	default:
		u.refuse(statusError, 0, 0, err)
	}
}

// admit decides whether the node streams the range asked for of blob: it
// refuses a range past the blob's end, answers "not yet" (swarm.NotYet)
// or busy at the per-blob cap (swarm.CountsPerBlob, swarm.BlobUploadCap),
// and otherwise takes the blob's slot and says what the node holds.
func (u *serving) admit(blob store.Blob) (swarm.Copy, bool) {
	req := u.req
	c := held(blob)
	if end := req.end(c.Size); req.off > c.Size || end > c.Size {
		u.refuse(statusBadRequest, 0, 0, fmt.Errorf("range %d-%d beyond size %d", req.off, end, c.Size))
		return c, false
	}
	ask := swarm.Ask{Off: req.off, Length: req.length, Ranged: req.ranged, Wait: req.wait}
	if swarm.NotYet(ask, c) {
		// Said before the blob's streams are counted.
		why := fmt.Sprintf("holds %d bytes of %d, not yet byte %d", c.Have, c.Size, req.off)
		if c.Leads {
			why = leadsMessage
		}
		u.n.refuseWith(u.s, u.remote, header{status: statusNotYet, ranged: u.ranged, size: c.Size, have: c.Have, msg: why})
		return c, false
	}
	// A piece counts against the node's slots only.
	if swarm.CountsPerBlob(ask) {
		if !u.n.takeBlobSlot(req.dgst, u.remote, swarm.BlobUploadCap(c.Arriving, u.n.cfg.MaxUploadsPerBlob, u.n.cfg.MaxUploads), c.Arriving) {
			u.refuse(statusBusy, c.Size, c.Have, busyWhy(c.Leads, errors.New("too many uploads of this blob")))
			return c, false
		}
		u.releases = append(u.releases, func() { u.n.releaseBlobSlot(req.dgst) })
	}
	if c.Arriving {
		u.n.readers.arriving(req.dgst, time.Now())
	}
	return c, true
}

// send streams the range asked for of blob, of which the node holds c,
// and ends the stream: closed once every byte went out, reset otherwise.
func (u *serving) send(blob store.Blob, c swarm.Copy) {
	n, req := u.n, u.req
	n.metrics.uploadsActive.Inc()
	u.releases = append(u.releases, n.metrics.uploadsActive.Dec)
	// Each chunk that goes out tells the silent-peer watch that bytes
	// cross the connection: a reader behind a full link, whose pings
	// queue behind them, keeps it (see watch).
	w := &deadlineWriter{s: u.s, idle: n.cfg.Timing.IdleTimeout, moved: &n.stats.peer(u.remote).lastByte}
	defer n.watchUpload(u.s, u.remote, w)()
	up := &upload{reader: u.remote, blob: req.dgst, perBlob: swarm.CountsPerBlob(swarm.Ask{Length: req.length}), holds: true, cut: func() { _ = u.s.Reset() }}
	u.releases = append(u.releases, func() { n.gaveBack(up) })
	defer n.writing(w, up)()
	length := req.end(c.Size) - req.off
	if length == 0 {
		u.release() // the header is the whole answer
	}
	h := header{status: statusOK, size: c.Size, ranged: u.ranged, have: c.Have}
	if c.Leads {
		h.msg = leadsMessage
	}
	if err := writeHeader(w, h); err != nil {
		n.metrics.uploads.WithLabelValues("error").Inc()
		_ = u.s.Reset()
		return
	}
	// The cap sits outside the deadline: a stream waiting for its turn
	// under the cap has written nothing, and its deadline moves forward
	// with its next write. The sockets under the streams are paced too
	// (see wireMargin).
	last := &lastWrite{w: w, left: length, before: u.release}
	sent, err := n.copyBlob(n.upload.writer(n.life, last), heldFrom(blob, req.off, req.end(c.Size)), n.stats.peer(u.remote))
	if err != nil {
		n.metrics.uploads.WithLabelValues("error").Inc()
		n.log.Debug("upload cut", "peer", u.remote, "digest", req.dgst, "offset", req.off, "bytes", sent, "error", err)
		_ = u.s.Reset()
		return
	}
	n.metrics.uploads.WithLabelValues("ok").Inc()
	n.log.Debug("uploaded", "peer", u.remote, "digest", req.dgst, "offset", req.off, "bytes", sent)
	u.release()
	_ = u.s.Close()
}

// held is what the node holds of blob: all of it, or, while it is still
// arriving, the bytes from the start without a hole.
func held(blob store.Blob) swarm.Copy {
	size := blob.Size()
	c := swarm.Copy{Size: size, Have: size}
	if a, ok := blob.(arriving); ok && a.Arriving() {
		c.Have, c.Arriving = a.Have(), true
		if l, ok := blob.(leading); ok {
			c.Leads = l.Leads()
		}
	}
	return c
}

// heldFrom reads blob from off to end; a blob still arriving through a
// heldReader.
func heldFrom(blob store.Blob, off, end int64) io.Reader {
	if a, ok := blob.(arriving); ok {
		return &heldReader{blob: blob, a: a, off: off, end: end}
	}
	return io.NewSectionReader(blob, off, end-off)
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
			now := time.Now()
			if m > 0 {
				// A write that failed moved nothing: it is no sign the
				// reader reads (see readerFlows).
				st.lastByte.Store(now.UnixNano())
			}
			n.uplink.sent(now, m)
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
// It writes at most writeChunk at once, and notes when a write waits
// (see stalled) and, in moved, when a chunk went out (Unix nanoseconds;
// see stats.flowedSince).
type deadlineWriter struct {
	s     network.Stream
	idle  time.Duration
	setAt time.Time
	moved *atomic.Int64
	// waitingSince: since when, in Unix nanoseconds, the chunk being
	// written waits for the peer to take it; 0 between writes.
	waitingSince atomic.Int64
}

// writeChunk is the most a deadlineWriter writes at once: a peer that
// reads, however slowly, takes one well within uploadStall.
const writeChunk = 64 << 10

func (w *deadlineWriter) Write(p []byte) (int, error) {
	defer w.waitingSince.Store(0)
	var total int
	for len(p) > 0 {
		now := time.Now()
		if now.Sub(w.setAt) > w.idle/8 {
			if err := w.s.SetWriteDeadline(now.Add(w.idle)); err != nil {
				return total, err
			}
			w.setAt = now
		}
		w.waitingSince.Store(now.UnixNano())
		k, err := w.s.Write(p[:min(len(p), writeChunk)])
		total += k
		if k > 0 && w.moved != nil {
			w.moved.Store(time.Now().UnixNano())
		}
		if err != nil {
			return total, err
		}
		p = p[k:]
	}
	return total, nil
}

// stalled is how long the chunk being written has waited for the peer to
// take it at now; 0 between writes.
func (w *deadlineWriter) stalled(now time.Time) time.Duration {
	at := w.waitingSince.Load()
	if at == 0 {
		return 0
	}
	return now.Sub(time.Unix(0, at))
}

// lastWrite calls before just ahead of the write that completes an answer
// of left bytes. The requester stops reading at the answer's last byte,
// before the stream's end, and may ask again at once: the slots the answer
// took are free by then.
type lastWrite struct {
	w      io.Writer
	left   int64
	before func()
}

func (l *lastWrite) Write(p []byte) (int, error) {
	l.left -= int64(len(p))
	if l.left <= 0 && l.before != nil {
		l.before()
		l.before = nil
	}
	return l.w.Write(p)
}

// arriving is a blob still being downloaded by this node (see Content).
type arriving interface {
	Arriving() bool
	// Have is how many bytes from the start it holds without a hole.
	Have() int64
}

// leading is a blob still arriving that says whether this node fetches it
// from the registry for the cluster now (see swarm.LeadsNow).
type leading interface {
	Leads() bool
}

// takeSlot takes an upload slot for a stream of d to asker, as
// swarm.UploadSlot says of the streams that count (swarm.Counted), under
// swarm.UnderCeiling of all of them. Two requests for a blob streamed to
// nobody may both take one over the slots before either is counted for
// the blob (admit counts it): the ceiling still holds.
func (n *Node) takeSlot(d digest.Digest, asker peer.ID) bool {
	n.uploadsMu.Lock()
	defer n.uploadsMu.Unlock()
	if !swarm.UnderCeiling(n.uploads, n.cfg.MaxUploads) {
		return false
	}
	now := time.Now()
	w := n.writersLocked(now, d, asker)
	askerSilent := n.stats.isSilent(asker)
	open := swarm.Counted(n.uploads, w.gone, n.cfg.MaxUploads, askerSilent)
	blobOpen := swarm.Counted(n.blobUploads.Open(d), w.goneOfBlob, n.cfg.MaxUploads, askerSilent)
	// The gone streams wait on their readers, and are left out of those
	// that wait as they are of the streams open.
	rate, best := n.uplink.rates(now)
	slow := swarm.SlowReaders(open, w.waiting-(n.uploads-open), rate, best, w.askerWaits)
	if !swarm.UploadSlot(open, blobOpen, n.cfg.MaxUploads, slow) {
		return false
	}
	if open < n.uploads && !swarm.UploadSlot(n.uploads, n.blobUploads.Open(d), n.cfg.MaxUploads, swarm.SlowReaders(n.uploads, w.waiting, rate, best, w.askerWaits)) {
		n.log.Debug("upload slot taken past streams to readers left out as silent", "peer", asker, "digest", d, "open", n.uploads, "gone", w.gone)
	}
	n.uploads++
	return true
}

// readerWait: an upload whose chunk has waited this long for its reader
// to take it waits on its reader (see swarm.SlowReaders). A reader that
// keeps up takes a chunk in well under a millisecond, unless the uplink
// itself is full. goneWait: a chunk that has waited this long on a reader
// left out as silent goes to a gone reader (swarm.GoneReader): as long
// as the ping that leaves a peer out may take. A reader behind a link
// cut to a tenth takes a 64 KiB chunk within a fraction of that.
const (
	readerWait = 100 * time.Millisecond
	goneWait   = watchPingTimeout
)

// openWriters is what a node's open uploads are, for a new stream of a
// blob to an asker (see writersLocked).
type openWriters struct {
	// waiting: the streams whose chunk waits on its reader (readerWait);
	// askerWaits: the asker's among them.
	waiting    int
	askerWaits bool
	// gone: the streams that hold their slots and go to gone readers
	// (swarm.GoneReader); goneOfBlob: those among them that count
	// against the blob's cap.
	gone, goneOfBlob int
	// own: the asker's own streams of the blob that count against its
	// cap and hold their slots (see swarm.ReplacesOwn).
	own []*upload
}

// writersLocked sums up the open uploads for a new stream of d to asker.
// uploadsMu is held.
func (n *Node) writersLocked(now time.Time, d digest.Digest, asker peer.ID) openWriters {
	var o openWriters
	for w, up := range n.writers {
		if up.reader == asker && up.blob == d && up.perBlob && up.holds {
			o.own = append(o.own, up)
		}
		stalled := w.stalled(now)
		if stalled < readerWait {
			continue
		}
		o.waiting++
		o.askerWaits = o.askerWaits || up.reader == asker
		chunkWaits := stalled >= goneWait
		if !up.holds || !chunkWaits || !swarm.GoneReader(n.stats.isSilent(up.reader), chunkWaits) {
			continue
		}
		o.gone++
		if up.perBlob && up.blob == d {
			o.goneOfBlob++
		}
	}
	return o
}

// writing counts w, writing up, among the uploads' writers until the
// returned func is called.
func (n *Node) writing(w *deadlineWriter, up *upload) (done func()) {
	n.uploadsMu.Lock()
	defer n.uploadsMu.Unlock()
	if n.writers == nil {
		n.writers = map[*deadlineWriter]*upload{}
	}
	n.writers[w] = up
	return func() {
		n.uploadsMu.Lock()
		defer n.uploadsMu.Unlock()
		delete(n.writers, w)
	}
}

func (n *Node) releaseSlot() {
	n.uploadsMu.Lock()
	defer n.uploadsMu.Unlock()
	n.uploads--
}

// activeUploads is how many upload slots are taken.
func (n *Node) activeUploads() int {
	n.uploadsMu.Lock()
	defer n.uploadsMu.Unlock()
	return n.uploads
}

// takeBlobSlot counts one more stream of d, arriving or not, to asker
// against the per-blob cap, limit, or says false; streams to gone readers
// count as swarm.Counted says. The asker's own earlier streams of d are
// cut, and do not count, when swarm.ReplacesOwn says so.
func (n *Node) takeBlobSlot(d digest.Digest, asker peer.ID, limit int, arriving bool) bool {
	n.uploadsMu.Lock()
	o := n.writersLocked(time.Now(), d, asker)
	silent := n.stats.isSilent(asker)
	open := n.blobUploads.Open(d)
	counted := swarm.Counted(open, o.goneOfBlob, limit, silent)
	replaces := swarm.ReplacesOwn(len(o.own), arriving, silent)
	if replaces {
		counted -= len(o.own)
	}
	// Take compares all the streams open with its limit: the streams
	// not counted make room over limit.
	took := n.blobUploads.Take(d, limit+open-counted)
	n.uploadsMu.Unlock()
	if !took {
		return false
	}
	if replaces {
		n.log.Debug("reader's earlier stream of the blob cut for its new one", "peer", asker, "digest", d, "streams", len(o.own))
		for _, up := range o.own {
			up.cut()
		}
	} else if open >= limit {
		n.log.Debug("blob's upload cap passed for streams to readers left out as silent", "peer", asker, "digest", d, "open", open, "gone", o.goneOfBlob)
	}
	return true
}

// upload is an open upload stream: its reader and blob, and whether it
// counts against the blob's cap (swarm.CountsPerBlob) and holds its slots
// still (they are given back just ahead of the last write, see lastWrite).
type upload struct {
	reader  peer.ID
	blob    digest.Digest
	perBlob bool
	holds   bool
	// cut resets the stream (see swarm.ReplacesOwn).
	cut func()
}

// gaveBack notes that up gave its slots back.
func (n *Node) gaveBack(up *upload) {
	n.uploadsMu.Lock()
	defer n.uploadsMu.Unlock()
	up.holds = false
}

func (n *Node) releaseBlobSlot(d digest.Digest) {
	n.uploadsMu.Lock()
	defer n.uploadsMu.Unlock()
	n.blobUploads.Release(d)
}

// busyError is the answer to a request when every upload slot is taken;
// size and have are the blob's size and what the node holds of it from
// its start (0: not looked at).
type busyError struct {
	size, have int64
	leads      bool
}

func (e *busyError) Error() string { return "too many uploads" }

// busyWhy is the message of a busy answer: leadsMessage from a node that
// fetches the blob from the registry for the cluster now (see
// swarm.WaitsOnLeader), why otherwise.
func busyWhy(leads bool, why error) error {
	if leads {
		return errors.New(leadsMessage)
	}
	return why
}

// openForPeer opens the blob a peer asked for, taking an upload slot with
// take: the node's own copy, whole or still arriving; else, when the peer
// named a registry, the download this node starts or joins for the
// cluster. It refuses what a peer may not have: a fetch in an open mesh,
// whose peers are not authenticated, and one from a registry the node does
// not mirror (the Puller's errdefs.ErrPermissionDenied), both counted.
// Asked as the node to fetch it for the cluster for a blob it holds whole,
// it points every asker but the first at the first (swarm.PointAtReader).
func (n *Node) openForPeer(req request, remote peer.ID, take func() bool) (store.Blob, error) {
	blob, err := n.content.Open(n.life, req.dgst)
	if err == nil {
		c := held(blob)
		// Asked from its first byte as the node to fetch it for the
		// cluster, holding it whole; only in a mesh with a cluster key,
		// as a fetch for the cluster is.
		fresh := req.registry != "" && req.off == 0 && !c.Arriving && n.protection != ""
		if fresh {
			if at, ok := n.readers.pointAt(req.dgst, remote, time.Now()); ok {
				blob.Close()
				n.metrics.pointedAtReader.Inc()
				return nil, &resolver.FetchingAtError{Peer: at.String()}
			}
		}
		if !take() {
			blob.Close()
			return nil, &busyError{size: c.Size, have: c.Have, leads: c.Leads}
		}
		if fresh {
			n.readers.streaming(req.dgst, remote, time.Now())
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
	return n.pullFor(req, remote, take)
}

// pullFor asks the Puller for the blob a peer asked this node to fetch for
// the cluster. The Puller takes the slot once it knows it will stream the
// blob, after it coordinated (see swarm.TakesSlot): a node out of slots
// still answers "fetch it yourself" or names the fetcher. A Puller that
// took none has one taken for the blob it returns.
func (n *Node) pullFor(req request, remote peer.ID, take func() bool) (store.Blob, error) {
	took := false
	once := func() bool {
		if !took {
			took = take()
		}
		return took
	}
	// Answer before the requester's deadline for a header runs out.
	pctx, cancel := context.WithTimeout(n.life, n.cfg.Timing.RequestTimeout*3/4)
	defer cancel()
	blob, err := n.cfg.Puller.PullFor(pctx, req.dgst, req.registry, req.repo, swarm.Asker{Peer: remote.String(), Leads: req.leads}, once)
	switch {
	case err == nil:
		if !once() {
			blob.Close()
			return nil, &busyError{}
		}
		n.metrics.pullThrough.Inc()
	case errors.Is(err, resolver.ErrNoSlot):
		return nil, &busyError{}
	case errdefs.IsPermissionDenied(err):
		n.metrics.pullRefused.WithLabelValues("registry").Inc()
		n.log.Warn("refused to fetch for a peer from a registry this node does not mirror", "peer", remote, "registry", req.registry, "digest", req.dgst)
	}
	return blob, err
}

// heldReader reads a blob still arriving from off to end, each read as
// large as swarm.HeldRead says: the bytes held past its position, at once;
// caught up, the next byte, and then what arrived with it.
type heldReader struct {
	blob     store.Blob
	a        arriving
	off, end int64
}

func (r *heldReader) Read(p []byte) (int, error) {
	k, err := r.read(p)
	if k != 1 || err != nil || len(p) == 1 {
		return k, err
	}
	// A read that waited for the next byte: the write that brought it
	// brought more, and a read of one byte would go out as a frame of its
	// own, at every step down a relay chain.
	if c := r.held(); c.Have > r.off {
		m, err := r.read(p[1:])
		return 1 + m, err
	}
	return 1, nil
}

func (r *heldReader) read(p []byte) (int, error) {
	if r.off >= r.end {
		return 0, io.EOF
	}
	n := swarm.HeldRead(r.off, r.end, int64(len(p)), r.held())
	k, err := r.blob.ReadAt(p[:n], r.off)
	r.off += int64(k)
	if err == io.EOF && r.off == r.end {
		err = nil
	}
	return k, err
}

func (r *heldReader) held() swarm.Copy {
	return swarm.Copy{Have: r.a.Have(), Arriving: r.a.Arriving()}
}

// uploadStall is how long an upload's write may wait for its reader to
// take a chunk before the reader is pinged, and how long the ping may take
// (see watchUpload).
const uploadStall = 2 * time.Second

// watchUpload watches an upload to remote written through w until the
// returned stop is called. Once the reader took no byte for uploadStall
// it is pinged, and if it does not answer within uploadStall either, and
// no blob byte crossed its connection either way meanwhile, the upload is
// cut: a frozen reader, or one whose link is down, would hold the
// upload's slots until IdleTimeout, and the peers that read would be
// answered busy meanwhile. A reader that answers is alive, only not
// reading for now. So is one whose connection carries bytes, for this
// node's other streams to it or its own to this node, however late its
// answer: behind a link cut to a tenth, the streams of that connection
// share what the link carries, a writeChunk can wait seconds for its turn
// behind the megabytes the connection's socket holds, and the ping waits
// behind the same bytes. Cut, such a reader would fetch the rest from the
// registry, through the same link (see readerFlows). The cut reader is
// left out as silent (see Node.Silent) until it answers a ping, unless
// this node's other peers do not answer either (see ownLinkSlow): this
// node's own downloads would otherwise pick it as a source and wait on it
// as well, and the members check it for themselves. A reader alive after
// all answers within watchInterval and asks again from where it stopped.
func (n *Node) watchUpload(s network.Stream, remote peer.ID, w *deadlineWriter) (stop func()) {
	done := make(chan struct{})
	if !n.enterHandler() {
		return func() {}
	}
	go func() {
		defer n.handlers.Done()
		t := time.NewTicker(watchInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-n.life.Done():
				return
			case now := <-t.C:
				stalled := w.stalled(now)
				if stalled < uploadStall || n.readerFlows(remote, now) || n.answersWithin(remote, uploadStall) || n.readerFlows(remote, now) || w.stalled(time.Now()) == 0 {
					continue
				}
				n.log.Debug("reader took no byte and does not answer a ping: upload cut", "peer", remote, "for", stalled.Round(time.Millisecond))
				_ = s.Reset()
				if !n.ownLinkSlow(remote, stalled) {
					n.Silent(remote)
				}
				return
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done) }) }
}

// readerFlows says whether a blob's byte crossed the connection with
// remote, either way, within uploadStall of now: the reader is alive and
// its link carries bytes, whatever one stream of it waits for (see
// watchUpload). A stream's own chunk counts only once written, so the
// stalled stream is not its own proof. A frozen reader's kernel takes what
// its buffers hold, a fraction of a second at a full link's rate, and then
// nothing.
func (n *Node) readerFlows(remote peer.ID, now time.Time) bool {
	return n.stats.flowedSince(remote, now.Add(-uploadStall))
}
