package resolver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/p2p/swarm"
	"github.com/shoal-dev/shoal/store"
)

// source is one place a download can read from.
type source struct {
	kind Source
	peer string // for SourcePeer
	// designated marks a designated peer, asked to fetch for the cluster;
	// fetcher, the peer that fetches it (see fetcherSource).
	designated, fetcher bool
	// stall, when set, replaces StallTimeout for this source: how long it
	// may take to answer, and each next byte (for one it held when it
	// answered, its stream's judge may end the wait sooner).
	stall time.Duration
	// lost: the download lost a peer mid-blob before this source, and
	// lostBest is the best rate its peers' streams reached (see
	// swarm.HeldPace); paced, when set, is told the best rate the stream
	// reached.
	lost     bool
	lostBest float64
	paced    func(best float64)
	// lag, when set, says whether the stream lags (see pace.lagging).
	lag *atomic.Bool
	// open returns the body from off, the blob's size, and how many bytes
	// from its start the source held when it answered (the size when it
	// holds them all or does not say).
	open func(ctx context.Context, off int64, size int64) (io.ReadCloser, int64, int64, error)
}

// rule is src as the swarm's rules see it.
func (s source) rule() swarm.Source {
	return swarm.Source{Peer: s.peer, Upstream: s.kind == SourceUpstream, Designated: s.designated}
}

func (s source) String() string {
	if s.peer != "" {
		return string(s.kind) + " " + s.peer
	}
	return string(s.kind)
}

// sources lists where req's blob can come from, in the order to try them
// (see swarm.Sources): the designated peers, the peers that hold it (found
// by a look-up, see dl.holders), then
// the registry, several times; first of all the peer this node left the
// blob to as its designated fetcher, if it did lately (see
// swarm.Coordinate).
//
// Whether a peer still receiving the blob is asked to wait for bytes it
// has not received yet is swarm.WaitOn's: waits point up the ranking (see
// Designator). A peer that sends only the bytes it held when asked is cut
// there (see heldOnly).
func (r *Resolver) sources(req BlobRequest, sw *swarm.Download, found []string, w *waits) []source {
	var above []string
	var ranked map[string]bool // nil: no ranking, every peer may be waited on
	if d, ok := r.router.(Designator); ok {
		above, _ = d.Designated(req.Digest, r.group(req.Digest))
		ranked = make(map[string]bool, len(above))
		for _, p := range above {
			ranked[p] = true
		}
	}
	var holders []string
	if r.router != nil {
		holders = sw.Holders(found)
	}
	var out []source
	left, _ := r.leftFetcher(req.Digest)
	for _, p := range sw.Fetchers(left, req.ForPeer) {
		out = append(out, r.fetcherSource(req, p))
	}
	for _, s := range swarm.Sources(above, r.cfg.DesignatedPeers, sw.FailedPeers, req.ForPeer, holders, r.upstream != nil, r.cfg.FetchAttempts) {
		switch {
		case s.Upstream:
			out = append(out, r.upstreamSource(req))
		case s.Designated:
			out = append(out, r.designatedSource(req, s.Peer, w))
		default:
			out = append(out, r.holderSource(req, s.Peer, ranked, w))
		}
	}
	return out
}

// lookHolders looks up the peers that announced req's blob, best first.
func (r *Resolver) lookHolders(req BlobRequest) []string {
	if r.router == nil {
		return nil
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.PeerLookupTimeout)
	peers, err := r.router.Providers(ctx, req.Digest)
	cancel()
	if err != nil && !errdefs.IsNotFound(err) {
		r.cfg.Logger.Debug("provider look-up failed", "digest", req.Digest, "err", err)
	}
	r.cfg.Logger.Debug("holders looked up", "digest", req.Digest, "peers", len(peers), "took", time.Since(start).Round(time.Millisecond))
	return peers
}

// holders is the look-up a list of sources starts from: a new one; or,
// when reuse allows, the last one while it is younger than
// swarm.StaleList (see swarm.Replan). lookedUp is when its answer came.
func (d *dl) holders(reuse bool) []string {
	if !reuse || d.lookedUp.IsZero() || time.Since(d.lookedUp) >= swarm.StaleList {
		d.found = d.r.lookHolders(d.req)
		d.lookedUp = time.Now()
	}
	return d.found
}

// designatedSource is peer p, designated to fetch req's blob for the
// cluster: it streams what it holds, or fetches the blob from the
// registry and streams it as it arrives.
func (r *Resolver) designatedSource(req BlobRequest, p string, w *waits) source {
	d := r.router.(Designator)
	rr, ranges := r.router.(Ranger)
	return source{kind: SourcePeer, peer: p, designated: true, stall: r.fetcherStall(req.Registry), open: func(ctx context.Context, off, _ int64) (io.ReadCloser, int64, int64, error) {
		if ranges {
			rd := w.reader(true, true)
			rd.Designated = true
			leads, done := r.designatedAsk(ctx, req.Digest)
			defer done()
			rg := PeerRange{Off: off, Registry: req.Registry, Repo: req.Repo, Leads: leads}
			body, size, have, err := rangeFrom(ctx, rr, p, req.Digest, rg, rd)
			return body, size, have, heldWhole(err, have, size)
		}
		body, size, err := d.FetchThrough(ctx, p, req.Digest, off, req.Registry, req.Repo)
		return body, size, size, err
	}}
}

// waits is what a download's sources read as they open, for the
// who-waits-on-whom rule (see swarm.WaitOn); the helpers open sources too.
type waits struct {
	// noWait: the stream jumped ahead over bytes the helpers wrote;
	// leading: the download leads; lostSlow: it gave up a peer as slow.
	noWait, leading, lostSlow atomic.Bool
}

// reader is how the download stands to a peer, for swarm.WaitOn: ranked
// says the download knows the blob's ranking, above that the peer ranks
// above this node.
func (w *waits) reader(ranked, above bool) swarm.Reader {
	return swarm.Reader{Ranked: ranked, Above: above, Leading: w.leading.Load(), Jumped: w.noWait.Load(), LostSlow: w.lostSlow.Load()}
}

// rangeFrom asks peer p for rg of dgst, waiting or not as swarm.WaitOn
// says for rd: a peer that would send only what it holds is asked again,
// waiting, when it answers that it leads now, and its stream otherwise
// ends at the bytes it held (see heldOnly).
func rangeFrom(ctx context.Context, rr Ranger, p string, dgst digest.Digest, rg PeerRange, rd swarm.Reader) (io.ReadCloser, int64, int64, error) {
	var held bool
	rg.Wait, held = swarm.WaitOn(rd)
	body, size, have, err := rr.FetchRange(ctx, p, dgst, rg)
	if held && PeerLeads(body, err) {
		rd.PeerLeads = true
		rg.Wait, held = swarm.WaitOn(rd)
		if err != nil && rg.Wait && errdefs.IsOutOfRange(err) {
			// "Not yet" from a peer that reads the registry now: asked
			// again, waiting. A busy one is asked again after a wait
			// (see swarm.WaitsOnLeader).
			body, size, have, err = rr.FetchRange(ctx, p, dgst, rg)
		}
	}
	if err == nil && held && have > rg.Off && have < size {
		body = &heldOnly{ReadCloser: body, left: have - rg.Off, peer: p, have: have, size: size}
	}
	return body, size, have, err
}

// heldWhole marks err, a peer's refusal, with what the peer said it
// holds: the whole blob (it was only busy), or have bytes of it (see
// swarm.Failure.Have).
func heldWhole(err error, have, size int64) error {
	if err == nil {
		return nil
	}
	if size > 0 && have == size {
		err = fmt.Errorf("%w (%w)", err, errHeldWhole)
	}
	if have > 0 {
		return &peerHolds{err: err, have: have}
	}
	return err
}

// peerHolds is a peer's refusal that said how many bytes from the start
// of the blob it holds.
type peerHolds struct {
	err  error
	have int64
}

func (e *peerHolds) Error() string { return e.err.Error() }
func (e *peerHolds) Unwrap() error { return e.err }

// peerHas is what a peer's refusal said it holds of the blob: 0 when it
// did not say.
func peerHas(err error) int64 {
	var h *peerHolds
	if errors.As(err, &h) {
		return h.have
	}
	return 0
}

// holderSource is peer p, which holds req's blob or is receiving it;
// ranked lists the peers above this node (nil: no ranking).
func (r *Resolver) holderSource(req BlobRequest, p string, ranked map[string]bool, w *waits) source {
	rr, ranges := r.router.(Ranger)
	return source{kind: SourcePeer, peer: p, open: func(ctx context.Context, off, _ int64) (io.ReadCloser, int64, int64, error) {
		if !ranges {
			body, size, err := r.router.Fetch(ctx, p, req.Digest, off)
			return body, size, size, err
		}
		body, size, have, err := rangeFrom(ctx, rr, p, req.Digest, PeerRange{Off: off}, w.reader(ranked != nil, ranked[p]))
		if err != nil && have > 0 && have < size {
			err = fmt.Errorf("%w (%w: %d bytes of %d)", err, errHeldInPart, have, size)
		}
		return body, size, have, heldWhole(err, have, size)
	}}
}

// fetcherSource is peer p, which a designated peer named as the one
// fetching req's blob from the registry (see swarm.Coordinate): it waits
// on no one, so this node may wait on it for bytes it has not received.
// It counts as a designated peer: when it is busy, the next designated
// peers are not asked (see swarm.Download.Skip). Not holding the blob, it
// has not begun to receive it yet: that is "not yet", asked again after a
// wait, not a failure.
func (r *Resolver) fetcherSource(req BlobRequest, p string) source {
	rr, ranges := r.router.(Ranger)
	return source{kind: SourcePeer, peer: p, designated: true, fetcher: true, stall: r.fetcherStall(req.Registry), open: func(ctx context.Context, off, _ int64) (io.ReadCloser, int64, int64, error) {
		var body io.ReadCloser
		var size, have int64
		var err error
		if ranges {
			body, size, have, err = rr.FetchRange(ctx, p, req.Digest, PeerRange{Off: off, Wait: true})
		} else {
			body, size, err = r.router.Fetch(ctx, p, req.Digest, off)
			have = size
		}
		if errdefs.IsNotFound(err) {
			err = fmt.Errorf("%w (%w)", err, errFetcherNotStarted)
		}
		return body, size, have, heldWhole(err, have, size)
	}}
}

// fetcherStall is how long a peer fetching a blob from registry for the
// cluster may take to answer, and each next byte:
// StallTimeout, and the time the registry's chain may spend on hosts it
// cannot reach before the last one (see Chained). The peer fetches
// through the same chain, and may not have found out yet which of its
// hosts are down; a node that stopped waiting sooner would fetch the
// blob a second time. 0 (StallTimeout) for a registry of one host.
func (r *Resolver) fetcherStall(registry string) time.Duration {
	c, ok := r.upstream.(Chained)
	if !ok || registry == "" {
		return 0
	}
	if extra := c.FailoverTime(registry); extra > 0 {
		return r.cfg.StallTimeout + extra
	}
	return 0
}

// upstreamSource is the registry.
func (r *Resolver) upstreamSource(req BlobRequest) source {
	return source{kind: SourceUpstream, open: func(ctx context.Context, off, size int64) (io.ReadCloser, int64, int64, error) {
		q := req
		q.Size = size
		body, size, err := r.upstreamBlob(ctx, q, off)
		return body, size, size, err
	}}
}

// download fetches req's blob into the store from the first source that
// delivers, resuming at the same offset from the next source when one
// breaks or stalls, and publishes the ingest on f as soon as the size is
// known so readers can follow it.
func (r *Resolver) download(req BlobRequest, f *flight) {
	defer r.wg.Done()
	defer r.finish(req.Digest)
	r.m.inflightBlobs.Inc()
	defer r.m.inflightBlobs.Dec()
	r.rec.Started(req.Digest, req.Size)

	d := r.newDL(req, f)
	defer d.dcancel(nil)
	if req.Size > 0 {
		if err := d.publish(req.Size); err != nil {
			d.fail(err)
			return
		}
	}
	for d.round() {
		d.wait()
	}
	d.dcancel(nil)
	d.end()
}

// dl is one download's state across its sources and rounds.
type dl struct {
	r   *Resolver
	req BlobRequest
	f   *flight
	log *slog.Logger

	// sw is what the download knows for the swarm's rules: the peers
	// that failed it, a lost peer (see handOver), the store's or the
	// registry's failure, its progress, whether it is published.
	sw        *swarm.Download
	ing       store.Ingest
	off       int64
	lastErr   error
	peersUsed []string
	// fromRegistry is how many of the blob's bytes the registry sent this
	// node, resumed requests included.
	fromRegistry int64
	// relayAsked: peers asked once more, waiting on their own source
	// (see swarm.AskOnceMore), or asked whether they lead now (see
	// swarm.AskIfLeadsNow).
	relayAsked map[string]bool
	// peerBest is the best rate a peer's stream of this download reached
	// over a whole window (see swarm.HeldPace).
	peerBest float64
	start    time.Time
	// found is the last look-up of the blob's holders, at lookedUp (see
	// holders).
	found    []string
	lookedUp time.Time
	// announced: the mesh was told once a source answered, not before: a
	// node that announced an ingest no source feeds yet could be picked as
	// a source by the very peer it waits for.
	announced bool

	// The primary stream: where it reads, and from which peer.
	pos atomic.Int64
	waits
	primary atomic.Value
	// waiting is set while the download waits for a slot at a peer, every
	// source having answered busy: no stream is open, and the helpers
	// fetch from the front.
	waiting atomic.Bool
	// lagging is set while the primary stream, from a peer, lags (see
	// pace.lagging): the helpers race it for the piece after its own and
	// the second half of the rest of its own (see swarm.RaceStart).
	lagging atomic.Bool
	dctx    context.Context
	dcancel context.CancelCauseFunc
	usedMu  sync.Mutex
	used    map[string]bool
	helping bool
}

func (r *Resolver) newDL(req BlobRequest, f *flight) *dl {
	d := &dl{
		r: r, req: req, f: f,
		log:        r.cfg.Logger.With("digest", req.Digest, "registry", req.Registry, "repo", req.Repo),
		relayAsked: map[string]bool{},
		start:      time.Now(),
		used:       map[string]bool{},
	}
	d.sw = swarm.NewDownload(swarm.Limits{BusyWait: r.cfg.BusyWait, BusyRetryFor: r.cfg.BusyRetryFor, Unreachable: registryFailedFor,
		BehindFor: r.behindFor()}, d.start)
	d.primary.Store("")
	d.dctx, d.dcancel = context.WithCancelCause(r.ctx)
	return d
}

func (d *dl) fail(err error) {
	d.r.m.downloads.WithLabelValues("error").Inc()
	if !d.sw.Published {
		d.f.err = err
		close(d.f.ready)
	}
}

// publish makes the ingest readable before any source answered, once the
// size is known (from a manifest that named the blob). Readers then wait
// for bytes, up to the mirror's HeaderWait, rather than for a source to
// answer, which must happen within MissTimeout; so a download may wait
// longer for a busy peer before it turns to the registry.
func (d *dl) publish(size int64) error {
	ing, err := d.r.store.Begin(d.r.ctx, d.req.Digest, size)
	if err != nil {
		return err
	}
	d.ing = ing
	d.f.ingest = ing
	d.sw.Published = true
	close(d.f.ready)
	return nil
}

// opened records that a source of kind answered.
func (d *dl) opened(kind Source) {
	d.f.setSource(kind)
	if !d.announced {
		d.announced = true
		close(d.f.fed)
		d.r.announce(d.req.Digest)
	}
}

// begin starts the ingest once the first source said the blob's size.
func (d *dl) begin(src source, size int64) (store.Ingest, error) {
	ing, err := d.r.store.Begin(d.r.ctx, d.req.Digest, size)
	if err != nil {
		if errdefs.IsAlreadyExists(err) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", errLocalStore, err)
	}
	d.ing = ing
	d.f.ingest = ing
	d.f.setSource(src.kind)
	d.sw.Published = true
	close(d.f.ready)
	d.startHelpers()
	return ing, nil
}

// startHelpers starts the piece helpers once, when the blob is large
// enough and the mesh can send ranges. They end with the download (dctx),
// or make the blob whole and end the primary stream.
func (d *dl) startHelpers() {
	r := d.r
	rr, ok := r.router.(Ranger)
	if d.helping || !ok || d.ing == nil || r.cfg.PieceSize <= 0 || r.cfg.PieceWorkers == 0 || d.ing.Size() < 2*r.cfg.PieceSize {
		return
	}
	d.helping = true
	ing := d.ing
	r.wg.Go(func() {
		r.helpers(d.dctx, d.req, d.f, ing, rr, primaryView{pos: &d.pos, peer: &d.primary, waiting: &d.waiting, lagging: &d.lagging}, func() { d.dcancel(errComplete) }, &d.usedMu, d.used)
	})
}

// round tries the sources in order until one delivers the rest of the
// blob, and says whether the download should wait and try again: every
// source failed, but a peer that holds the blob was only busy.
func (d *dl) round() bool {
	r := d.r
	if !d.sw.Published {
		// A peer's pull-for starts a download without the size; the
		// manifest that names the blob may have come since.
		if size := r.knownSize(d.req.Digest); size > 0 && d.publish(size) == nil {
			d.req.Size = size
		}
	}
	sources := r.sources(d.req, d.sw, d.holders(false), &d.waits)
	if len(sources) == 0 {
		d.lastErr = fmt.Errorf("blob %s: no peer holds it and no upstream: %w", d.req.Digest, errdefs.ErrNotFound)
	}
	listed, relisted := d.lookedUp, false
	var st swarm.Round
	for i := 0; i < len(sources); i++ {
		src := sources[i]
		if r.ctx.Err() != nil {
			d.lastErr = r.ctx.Err()
			break
		}
		if src.kind == SourceUpstream && swarm.Relist(listed, time.Now(), relisted) {
			relisted = true
			if fresh := d.holdersNow(); len(fresh) > 0 {
				d.log.Debug("holders looked up again before the registry", "digest", d.req.Digest, "peers", len(fresh))
				sources = slices.Insert(sources, i, fresh...)
				src = sources[i]
			}
		}
		skip, stop := d.skip(src, st)
		if stop {
			break
		}
		if skip {
			continue
		}
		// Known again at each source: the designated peers come first,
		// and once they failed, or one left the blob to it, this node
		// leads.
		lead := d.sw.LeftToUs || r.leads(sources, d.sw.FailedPeers)
		if lead && !d.sw.LeftToUs && r.replan(d.req, sources, d.sw.FailedPeers) {
			d.log.Debug("designated peers failed; the next peer above leads", "digest", d.req.Digest)
			sources = r.sources(d.req, d.sw, d.holders(true), &d.waits)
			listed, relisted = d.lookedUp, false
			i = -1
			continue
		}
		if d.sw.LostPeer {
			src.stall = r.handOver(src)
		}
		src.lost, src.lostBest = d.sw.LostPeer, d.peerBest
		src.paced = d.paced
		src.lag = &d.lagging
		d.leading.Store(lead)
		d.lostSlow.Store(d.sw.LostSlow)
		// Said from the moment it asks the registry: a peer that asks
		// meanwhile waits on it rather than lead too.
		d.f.leads.Store(swarm.LeadsNow(lead, src.kind == SourceUpstream))
		d.f.tried.Store(true)
		d.primary.Store(src.peer)
		r.rec.Trying(d.req.Digest, src.kind, src.peer)
		d.log.Debug("trying source", "source", src.String(), "offset", d.off, "lead", lead, "designated", src.designated)
		n, sent, err := d.try(src, sources)
		if sent && src.peer != "" {
			d.peersUsed = append(d.peersUsed, src.peer)
		}
		d.off += n
		if d.ing != nil && d.ing.Contiguous() == d.ing.Size() {
			// Whole: this source's bytes, or the helpers' too.
			d.off, d.lastErr = d.ing.Size(), nil
			break
		}
		d.lastErr = err
		r.fellBack(d.req.Digest, src, err)
		if d.failed(src, err, lead, &st) {
			break
		}
		sources = d.follow(sources, i, err)
	}
	return d.lastErr != nil && r.ctx.Err() == nil && d.sw.WaitAgain(st, time.Now())
}

// holdersNow looks the blob's holders up again (see swarm.Relist): the
// holder sources of a fresh list, but for the peers that failed this
// download. One that answered busy or "not yet" earlier in the round is
// asked again: it may hold the blob whole by now. A relay the download
// left that did not lead then is asked whether it leads now, and taken
// back if it does (see swarm.Download.Reask).
func (d *dl) holdersNow() []source {
	var out []source
	for _, s := range d.r.sources(d.req, d.sw, d.holders(false), &d.waits) {
		if s.kind != SourcePeer || s.designated || s.fetcher {
			continue
		}
		if d.sw.FailedPeers[s.peer] {
			if !d.sw.Reask(s.peer) || !d.peerLeads(s.peer, d.off) {
				continue
			}
			d.sw.LeadsAgain(s.peer)
			d.log.Info("a relay left earlier leads now: reading it again", "digest", d.req.Digest, "source", s.String(), "offset", d.off)
		}
		out = append(out, s)
	}
	return out
}

// paced notes the best rate a peer's stream reached (see judge.stop).
func (d *dl) paced(best float64) {
	d.peerBest = max(d.peerBest, best)
}

// skip says whether src is passed over in this round, or ends it (stop):
// see swarm.Download.Skip.
func (d *dl) skip(src source, st swarm.Round) (skip, stop bool) {
	now := time.Now()
	var held int64
	if d.ing != nil {
		held = d.ing.Contiguous()
	}
	d.sw.Progressed(held, d.r.lastByteAt(), now)
	backedOff := d.r.backedOff(d.req.Registry)
	rule := src.rule()
	if s, ok := d.r.router.(Silencer); ok && src.peer != "" {
		rule.Silenced = s.Silenced(src.peer)
	}
	switch d.sw.Skip(rule, st, backedOff != nil, now) {
	case swarm.Pass:
		return true, false
	case swarm.PassBackedOff:
		// Peers that hold the blob may still send it.
		d.lastErr = backedOff
		return true, false
	case swarm.Stop:
		return false, true
	}
	return false, false
}

// try reads from src until it ends: the bytes it added past off, whether
// it sent any, and why it ended.
func (d *dl) try(src source, sources []source) (n int64, sent bool, err error) {
	r := d.r
	for {
		if d.ing != nil {
			// The helpers may have written the next bytes while no stream
			// was open.
			d.off = max(d.off, d.ing.Contiguous())
		}
		d.pos.Store(d.off)
		d.startHelpers()
		var k int64
		k, err = r.fetchOnce(d.dctx, d.req, src, d.f.trust, d.ing, d.off, &d.pos, func(size int64) (store.Ingest, error) {
			return d.begin(src, size)
		}, func(kind Source) {
			d.waiting.Store(false)
			d.opened(kind)
		})
		n += k
		sent = sent || k > 0
		if src.kind == SourceUpstream {
			d.fromRegistry += k
		}
		if swarm.AskOnceMore(src.rule(), sortFailure(src, err, d.ing), d.relayAsked[src.peer]) {
			// Its own source went quiet: a peer was lost.
			d.relayAsked[src.peer], d.sw.LostPeer = true, true
			r.probeAbove(sources, src.peer, d.sw.FailedPeers)
			src.stall = r.handOver(src)
			d.off += n
			n = 0
			d.log.Info("peer waits on its own source: asking it once more", "source", src.String(), "offset", d.off, "err", err)
			r.fellBack(d.req.Digest, src, err)
			continue
		}
		if d.leadsNow(src, err, d.off+n) {
			d.off += n
			n = 0
			d.log.Info("the relay left leads now: reading it again", "source", src.String(), "offset", d.off, "err", err)
			r.fellBack(d.req.Digest, src, err)
			continue
		}
		if !errors.Is(err, errCaughtUp) {
			return n, sent, err
		}
		// The stream reached bytes the helpers wrote: ask the same source
		// again from the next hole rather than read them twice, and from
		// now on without waiting (see sources).
		d.off = d.ing.Contiguous()
		d.noWait.Store(true)
		n = 0
	}
}

// failed takes in why src ended, noting it in st, and says whether the
// round ends here (see swarm.Download.Failed).
func (d *dl) failed(src source, err error, lead bool, st *swarm.Round) (stop bool) {
	f := sortFailure(src, err, d.ing)
	if f.Cut || f.NoAnswer {
		// Pinged only when it matters: see swarm.CutByOwnLink.
		f.OwnLinkSlow = d.r.ownLinkExcuses(src.peer, pingTries*d.r.cfg.probeTimeout())
	}
	if rl, ok := rateLimited(err); ok && !f.LocalStore {
		// Said by a designated peer, or by the registry itself.
		d.r.noteBackoff(rl)
	}
	stop, silence := d.sw.Failed(src.rule(), f, lead, st, time.Now())
	if s, ok := d.r.router.(Silencer); ok && silence {
		// Other downloads would wait for it too.
		s.Silent(src.peer)
	}
	switch {
	case f.LeftToUs || f.PointedOn:
		d.log.Debug("designated peer coordinates", "source", src.String(), "answer", err)
	case swarm.CutByOwnLink(f):
		d.log.Info("peer cut the stream, or did not answer, while this node's own link is slow: asking it again", "source", src.String(), "offset", d.off, "err", err)
	case !stop && !f.RateLimited:
		d.log.Info("source failed, trying the next", "source", src.String(), "offset", d.off, "err", err)
	}
	return stop
}

// follow puts the peer a designated peer pointed at, as the one fetching
// the blob (see swarm.Coordinate), after sources[i], unless it failed this
// download already or the round asks it already, and remembers it for the
// next rounds (see swarm.Download.Fetchers).
func (d *dl) follow(sources []source, i int, err error) []source {
	var at *FetchingAtError
	if !errors.As(err, &at) || d.sw.FailedPeers[at.Peer] {
		return sources
	}
	d.sw.Pointed = at.Peer
	if slices.ContainsFunc(sources, func(s source) bool { return s.fetcher && s.peer == at.Peer }) {
		// Listed already in this round (see swarm.Download.Fetchers).
		return sources
	}
	return slices.Insert(sources, i+1, d.r.fetcherSource(d.req, at.Peer))
}

// sortFailure sorts why src ended for the swarm's rules; ing is this
// node's ingest of the blob, nil before the first source answered.
func sortFailure(src source, err error, ing store.Ingest) swarm.Failure {
	_, limited := rateLimited(err)
	upstreamNo := src.kind == SourceUpstream && (errdefs.IsNotFound(err) || errdefs.IsInvalidArgument(err) || errdefs.IsResourceExhausted(err))
	notNow := errdefs.IsResourceExhausted(err) || errdefs.IsOutOfRange(err)
	var held int64
	if ing != nil {
		held = ing.Contiguous()
	}
	return swarm.Failure{
		LocalStore:  errors.Is(err, errLocalStore) || (ing != nil && ing.Err() != nil),
		Unavailable: errdefs.IsUnavailable(err),
		Unreachable: registryUnreachable(err),
		RateLimited: limited,
		NotNow:      notNow,
		Partial:     errdefs.IsOutOfRange(err) || errors.Is(err, errHeldInPart),
		Whole:       errors.Is(err, errHeldWhole),
		Have:        peerHas(err),
		Behind:      notNow && src.kind == SourcePeer && peerHas(err) <= held,
		NotArriving: errors.Is(err, errNotArriving),
		Relaying:    src.kind == SourcePeer && (errors.Is(err, errRelaying) || errors.Is(err, errPaused)),
		UnledRelay:  errors.Is(err, errUnledRelay),
		Stalled:     errors.Is(err, errStalled),
		Slow:        errors.Is(err, errSlow),
		Leads:       src.kind == SourcePeer && PeerLeads(nil, err),
		LeftToUs:    errors.Is(err, ErrFetchYourself),
		PointedOn:   errors.As(err, new(*FetchingAtError)),
		Cut:         src.kind == SourcePeer && errors.Is(err, ErrPeerCut),
		NoAnswer:    src.kind == SourcePeer && errors.Is(err, ErrNoAnswer),
		// The registry does not have it, refuses shoal, or rate limits it
		// (429): asking again will not help, and after a 429 it costs more
		// of the quota.
		Final: !retryable(err) || upstreamNo,
	}
}

// wait waits before the next round, every source having failed while a
// peer that holds the blob was only busy: a slot frees up soon, and by
// then more peers may hold it.
func (d *dl) wait() {
	var held int64
	if d.ing != nil {
		held = d.ing.Contiguous()
	}
	b := d.sw.Backoff(held, time.Now())
	d.waiting.Store(true)
	select {
	case <-time.After(b):
	case <-d.r.ctx.Done():
	}
}

// end commits the blob, or fails the download and, when asking again at
// once would fail the same way, makes it a miss for a while.
func (d *dl) end() {
	r := d.r
	d.usedMu.Lock()
	for p := range d.used {
		if !slices.Contains(d.peersUsed, p) {
			d.peersUsed = append(d.peersUsed, p)
		}
	}
	d.usedMu.Unlock()
	if d.lastErr == nil && d.ing == nil {
		d.lastErr = fmt.Errorf("blob %s: no source sent it: %w", d.req.Digest, errdefs.ErrNotFound)
	}
	if d.lastErr != nil {
		d.noteFailure()
		return
	}
	if err := d.ing.Commit(r.ctx); err != nil {
		if errors.Is(err, store.ErrDigestMismatch) || errors.Is(err, store.ErrSizeMismatch) {
			r.m.verifyFailures.Inc()
			r.m.downloads.WithLabelValues("mismatch").Inc()
			// Which of them lied is unknown: avoid every peer that sent a part.
			for _, p := range d.peersUsed {
				r.router.Avoid(p, err)
			}
		} else {
			r.m.downloads.WithLabelValues("error").Inc()
		}
		d.log.Error("downloaded blob rejected", "err", err, "peers", d.peersUsed)
		return
	}
	r.m.downloads.WithLabelValues("ok").Inc()
	d.log.Info("blob stored", "bytes", d.off, "from_registry", d.fromRegistry, "seconds", time.Since(d.start).Seconds(), "peers", d.peersUsed)
	r.announce(d.req.Digest)
}

// noteFailure ends a failed download (see swarm.Download.MissFor).
func (d *dl) noteFailure() {
	if t, why := d.sw.MissFor(); t > 0 {
		m := miss{until: time.Now().Add(t), why: why}
		if !d.sw.LocalFailed {
			m.registry = d.req.Registry
		}
		d.r.noteMiss(d.req.Digest, m)
		if d.sw.LocalFailed {
			d.log.Error("shoal's store cannot hold the blob: requests for it are misses for a while, so containerd fetches it from the registry",
				"offset", d.off, "for", t, "err", d.lastErr)
		} else {
			d.log.Warn("the registry failed the blob: requests for it are misses for a while, so containerd fetches it from the registry",
				"offset", d.off, "for", t, "err", d.lastErr)
		}
	}
	d.log.Warn("download failed", "offset", d.off, "err", d.lastErr)
	if d.ing != nil {
		d.ing.Abort(d.lastErr)
	}
	d.fail(d.lastErr)
}

// registryUnreachable says whether err is a failure to connect to the
// registry at all (refused, no route, a dial timeout), not an answer: the
// node's containerd, on the same network, cannot reach it either, so a miss
// that sends containerd there fails the pull.
func registryUnreachable(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// noteMiss makes dgst a miss until m.until: see swarm.Download.MissFor.
func (r *Resolver) noteMiss(dgst digest.Digest, m miss) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, old := range r.misses {
		if now.After(old.until) {
			delete(r.misses, k)
		}
	}
	r.misses[dgst] = m
}

// leads says whether this node fetches req's blob for the cluster now
// (see swarm.Leads): it ranks first for it, a peer asked it to (ForPeer),
// or every designated peer among sources failed this download.
func (r *Resolver) leads(sources []source, failed map[string]bool) bool {
	_, ranked := r.router.(Designator)
	return swarm.Leads(ranked, designatedIn(sources), failed)
}

// replan says whether a round whose designated peers failed starts over
// with the next peer above this node as designated (see swarm.Replan).
func (r *Resolver) replan(req BlobRequest, sources []source, failed map[string]bool) bool {
	d, ok := r.router.(Designator)
	if !ok || req.ForPeer {
		return false
	}
	above, _ := d.Designated(req.Digest, r.group(req.Digest))
	return swarm.Replan(above, designatedIn(sources), r.cfg.DesignatedPeers, failed)
}

// designatedIn lists the designated peers among sources.
func designatedIn(sources []source) []string {
	var out []string
	for _, s := range sources {
		if s.designated {
			out = append(out, s.peer)
		}
	}
	return out
}

// handOver is how long src may take to answer, and each next byte, once
// a peer was lost mid-blob (see swarm.HandOver).
func (r *Resolver) handOver(src source) time.Duration {
	return swarm.HandOver(src.rule(), src.stall, r.cfg.PeerStall, r.cfg.StallTimeout)
}

// behindFor is how long, once a download lost a peer, a busy designated
// peer behind this node is waited on (see swarm.Limits.BehindFor): the
// time any peer gets after a lost one.
func (r *Resolver) behindFor() time.Duration {
	return swarm.HandOver(swarm.Source{Peer: "any peer"}, r.cfg.StallTimeout, r.cfg.PeerStall, r.cfg.StallTimeout)
}

// watchAnswer pings src, a peer, when it has not answered after
// --peer-stall, and ends the request as silent through cancel if the ping
// goes unanswered too: a frozen or cut-off peer holds a request until
// StallTimeout, where a busy one answers its ping at once and is left to
// answer. The returned func says the answer came.
func (r *Resolver) watchAnswer(cancel context.CancelCauseFunc, src source) func() {
	s, ok := r.router.(Silencer)
	if !ok || src.kind != SourcePeer || r.cfg.PeerStall <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-done:
			return
		case <-time.After(r.cfg.PeerStall):
		}
		if r.answersPing(s, src.peer) {
			return
		}
		select {
		case <-done:
		default:
			cancel(fmt.Errorf("no answer for %v, nor to %d pings of %v: %w", r.cfg.PeerStall, pingTries, r.cfg.probeTimeout(), errStalled))
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done) }) }
}

// leadsNow says whether src, a peer whose stream ended with err at off,
// is to be read again: the rule asks it (see swarm.AskIfLeadsNow), once
// per download, and it leads now (see peerLeads). One that does not is
// noted, to be asked again before the registry (see swarm.Download.Reask).
func (d *dl) leadsNow(src source, err error, off int64) bool {
	if _, ok := d.r.router.(Ranger); !ok || !swarm.AskIfLeadsNow(sortFailure(src, err, d.ing), d.relayAsked[src.peer]) {
		return false
	}
	d.relayAsked[src.peer] = true
	if d.peerLeads(src.peer, off) {
		return true
	}
	d.sw.Unled[src.peer] = true
	return false
}

// peerLeads asks peer p, without waiting and within the time a ping gets,
// whether it fetches the blob from the registry for the cluster now: the
// answer to a range of one byte at off says it, whether the peer holds
// that byte yet or not.
func (d *dl) peerLeads(p string, off int64) bool {
	rr, ok := d.r.router.(Ranger)
	if !ok {
		return false
	}
	ctx, cancel := context.WithTimeout(d.dctx, pingTries*d.r.cfg.probeTimeout())
	defer cancel()
	body, _, _, err := rr.FetchRange(ctx, p, d.req.Digest, PeerRange{Off: off, Length: 1})
	if body != nil {
		defer body.Close()
	}
	return PeerLeads(body, err)
}

// probeAbove pings, at once, the designated peers listed before relay:
// the peers relay may be waiting on. Those that do not answer are left
// out of this download and, through the Silencer, of every download,
// rather than each being waited on in turn.
func (r *Resolver) probeAbove(sources []source, relay string, failed map[string]bool) {
	s, ok := r.router.(Silencer)
	if !ok {
		return
	}
	var above []string
	for _, src := range sources {
		if src.peer == relay {
			break
		}
		if src.designated && !failed[src.peer] && !slices.Contains(above, src.peer) {
			above = append(above, src.peer)
		}
	}
	answered := make([]bool, len(above))
	var wg sync.WaitGroup
	for i, p := range above {
		wg.Go(func() { answered[i] = r.answersPing(s, p) })
	}
	wg.Wait()
	for i, p := range above {
		if !answered[i] {
			failed[p] = true
			s.Silent(p)
		}
	}
}

// heldOnly ends a stream from a peer still receiving the blob at the bytes
// it held when asked, with an error wrapping errdefs.ErrOutOfRange, as the
// peer itself answers for a byte it does not hold yet: the next bytes come
// later, or from another source.
type heldOnly struct {
	io.ReadCloser
	left       int64
	peer       string
	have, size int64
}

func (h *heldOnly) Read(b []byte) (int, error) {
	if h.left <= 0 {
		return 0, fmt.Errorf("peer %s held %d bytes of %d when asked: %w", h.peer, h.have, h.size, errdefs.ErrOutOfRange)
	}
	n, err := h.ReadCloser.Read(b[:min(int64(len(b)), h.left)])
	h.left -= int64(n)
	return n, err
}

// announce tells the mesh, in the background, that this node holds dgst.
func (r *Resolver) announce(dgst digest.Digest) {
	if r.router == nil {
		return
	}
	r.wg.Go(func() {
		ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
		defer cancel()
		if err := r.router.Provide(ctx, dgst); err != nil && r.ctx.Err() == nil {
			r.cfg.Logger.Warn("could not announce blob", "digest", dgst, "err", err)
		}
	})
}

// retryable says whether a failed source is worth following with the next.
func retryable(err error) bool {
	switch {
	case err == nil:
		return true
	case errdefs.IsAlreadyExists(err), errors.Is(err, store.ErrSizeMismatch), errors.Is(err, context.Canceled):
		return false
	}
	return true
}

// errLocalStore marks a failure of shoal's own store, not of a source.
var errLocalStore = errors.New("shoal's store failed")

// errCaughtUp ends a stream that reached bytes helpers wrote.
var errCaughtUp = errors.New("the stream reached bytes other peers sent")

// errHeldInPart marks a peer's refusal (busy, not yet) that said it holds
// part of the blob only.
var errHeldInPart = errors.New("the peer holds part of the blob")

// errFetcherNotStarted marks a "not found" from the peer a designated peer
// named as the blob's fetcher: it has not begun to receive it. It wraps
// errdefs.ErrOutOfRange, as a "not yet" does.
var errFetcherNotStarted = fmt.Errorf("the fetcher has not begun to receive the blob: %w", errdefs.ErrOutOfRange)

// errHeldWhole marks a peer's refusal (busy) that said it holds the whole
// blob.
var errHeldWhole = errors.New("the peer holds the whole blob")

// errNotArriving marks a stream from a peer still receiving the blob that
// sent nothing for ArrivalStall past the bytes it held when it answered.
// Its error wraps errdefs.ErrOutOfRange, as a peer's own "not yet" answer
// does: the download asks again rather than giving the peer up.
var errNotArriving = errors.New("the peer's copy stopped growing")

// errPaused marks errNotArriving from a peer that had relayed bytes it
// received after it answered: its own source was alive, and stopped.
// Like errRelaying, it is asked once more: by now it has found its next
// source, or waits on the registry as the leader.
var errPaused = errors.New("the peer relayed bytes that reached it after it answered")

// errUnledRelay marks the end of a peer's stream that had passed the
// bytes the peer held when it answered, from a peer that did not lead then
// (see swarm.AskIfLeadsNow).
var errUnledRelay = errors.New("it relayed, and did not lead when it answered")

// errStalled marks a source that stopped sending.
var errStalled = errors.New("source stalled")

// fetchOnce opens src at off and copies it into the ingest (created through
// begin on the first success, once the size is known). It returns how many
// bytes it wrote.
// opened is called once the source answered, before any byte is copied.
// pos follows where it writes.
func (r *Resolver) fetchOnce(ctx context.Context, req BlobRequest, src source, tr *trust, ing store.Ingest, off int64, pos *atomic.Int64, begin func(int64) (store.Ingest, error), opened func(Source)) (int64, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	f := r.newFetch(ctx, cancel, req, src, off)
	defer f.watchdog.Stop()
	body, err := f.open(ing)
	if err != nil {
		return 0, err
	}
	defer body.Close()
	if err := f.sized(ing, begin); err != nil {
		return 0, err
	}
	// Announced now: peers may read what arrives.
	opened(src.kind)
	f.rearm(off)
	f.judged = r.judgeStream(cancel, src, f.have, off, f.leads)
	defer f.judged.stop()
	f.tr, f.pos = tr, pos
	f.counted = r.counter(req.Digest, src.kind, src.peer)
	n, err := f.copy(body)
	if err != nil && f.src.kind == SourcePeer && f.past.Load() && !f.leads {
		err = fmt.Errorf("%w (%w)", err, errUnledRelay)
	}
	return n, err
}

// fetch is one request to a source, from its offset to the blob's end.
type fetch struct {
	r      *Resolver
	ctx    context.Context
	cancel context.CancelCauseFunc
	req    BlobRequest
	src    source
	off    int64

	// The watchdog cancels the request when no byte came for stall,
	// headers included; or for arrival once past the bytes a peer still
	// receiving the blob held when it answered (past, see errNotArriving).
	// A peer whose wait the node's own link explains gets another round
	// (see expired). lastByte: when the request was sent or the last byte
	// came, in Unix nanoseconds.
	watchdog       *time.Timer
	stall, arrival time.Duration
	past           atomic.Bool
	lastByte       atomic.Int64

	// What the source said: the blob's size, and how many bytes from the
	// start it held (arriving: a part only); leads: it fetches the blob
	// from the registry for the cluster now (see PeerLeads).
	size, have int64
	arriving   bool
	leads      bool

	ing     store.Ingest
	n       int64 // bytes written from off
	judged  *judge
	tr      *trust
	pos     *atomic.Int64
	counted byteCounter
}

// newFetch arms the watchdog of a request to src, which ends it through
// cancel.
func (r *Resolver) newFetch(ctx context.Context, cancel context.CancelCauseFunc, req BlobRequest, src source, off int64) *fetch {
	f := &fetch{r: r, ctx: ctx, cancel: cancel, req: req, src: src, off: off, stall: r.cfg.StallTimeout}
	if src.stall > 0 {
		f.stall = src.stall
	}
	f.lastByte.Store(time.Now().UnixNano())
	f.watchdog = time.AfterFunc(f.stall, f.expired)
	return f
}

// expired ends the request, its watchdog having fired: no byte came in
// time. A peer is kept, the watchdog armed again, while the node's own
// link explains the wait (see Resolver.ownLinkExcuses); a byte that came
// while that was asked rearmed it already. Past the bytes a peer held
// when it answered, its copy stopped growing: a peer that answers a ping
// waits on its own source and is asked again later (errNotArriving); one
// that does not is frozen or cut off (errStalled), as the judge would
// have found had its ping come first, and is left out. A peer that said
// it leads (it reads the registry, and waits on no one) and answers a ping
// waits on the registry: it is kept until StallTimeout, as it keeps the
// registry itself, for this node would only ask the same registry.
func (f *fetch) expired() {
	last := f.lastByte.Load()
	wait := time.Since(time.Unix(0, last))
	if f.src.kind == SourcePeer && f.r.ownLinkExcuses(f.src.peer, wait) {
		if f.lastByte.Load() == last {
			f.watchdog.Reset(f.armed())
		}
		return
	}
	if f.lastByte.Load() != last {
		return
	}
	switch {
	case !f.past.Load():
		f.cancel(errStalled)
	case f.answers():
		if f.leads && time.Since(time.Unix(0, last)) < f.r.cfg.StallTimeout && f.lastByte.Load() == last {
			f.watchdog.Reset(f.arrival)
			return
		}
		f.cancel(errNotArriving)
	default:
		f.cancel(fmt.Errorf("no byte past the %d bytes it held for %v, and no answer to %d pings of %v: %w",
			f.have, wait.Round(time.Millisecond), pingTries, f.r.cfg.probeTimeout(), errStalled))
	}
}

// answers says whether the peer the request went to answers a ping; true
// when it cannot be asked.
func (f *fetch) answers() bool {
	s, ok := f.r.router.(Silencer)
	if !ok || f.src.kind != SourcePeer || f.r.cfg.PeerStall <= 0 {
		return true
	}
	return f.r.answersPing(s, f.src.peer)
}

// armed is the watchdog's time for the next byte (see rearm).
func (f *fetch) armed() time.Duration {
	if f.past.Load() {
		return f.arrival
	}
	return f.stall
}

// open asks the source for the blob from off, telling it the size when
// ing knows it, and notes what it answered.
func (f *fetch) open(ing store.Ingest) (io.ReadCloser, error) {
	var known int64
	if ing != nil {
		known = ing.Size()
	}
	answered := f.r.watchAnswer(f.cancel, f.src)
	// A registry's next host gets the whole time to answer (see Chained).
	ctx := WithNextHost(f.ctx, func() { f.watchdog.Reset(f.stall) })
	body, size, have, err := f.src.open(ctx, f.off, known)
	answered()
	if err != nil {
		if c := context.Cause(f.ctx); errors.Is(c, errStalled) {
			err = fmt.Errorf("blob %s from %s: no answer: %w", f.req.Digest, f.src, errStalled)
		}
		return nil, err
	}
	f.size, f.have = size, have
	f.leads = f.src.kind == SourcePeer && PeerLeads(body, nil)
	// A peer that held none of it (0) may be the designated fetcher waiting
	// for the registry's first byte, or a peer that does not say: the usual
	// timeout then.
	f.arriving = have > 0 && have < size
	f.arrival = f.r.cfg.ArrivalStall
	if f.src.stall > 0 {
		f.arrival = min(f.arrival, f.src.stall)
	}
	return body, nil
}

// sized starts the ingest at the size the source said (through begin),
// or checks the size against the ingest's.
func (f *fetch) sized(ing store.Ingest, begin func(int64) (store.Ingest, error)) error {
	if ing == nil {
		var err error
		f.ing, err = begin(f.size)
		return err
	}
	if f.size != ing.Size() {
		// A source that disagrees on the size is not the same blob.
		return fmt.Errorf("blob %s: %s says %d bytes, not %d: %w", f.req.Digest, f.src, f.size, ing.Size(), errdefs.ErrDataLoss)
	}
	f.ing = ing
	return nil
}

// rearm gives the source, having sent up to at, its time for the next
// byte: arrival past what an arriving peer held, stall otherwise.
func (f *fetch) rearm(at int64) {
	f.lastByte.Store(time.Now().UnixNano())
	if f.arriving && at >= f.have {
		f.past.Store(true)
		f.watchdog.Reset(f.arrival)
		return
	}
	f.watchdog.Reset(f.stall)
}

// copy reads body into the ingest until the blob's end, the ingest is
// whole, or the stream reaches bytes the helpers wrote (errCaughtUp).
func (f *fetch) copy(body io.Reader) (int64, error) {
	buf := make([]byte, 256<<10)
	for f.off+f.n < f.size {
		f.judged.reading()
		k, rerr := body.Read(buf)
		if k > 0 {
			if done, err := f.write(buf[:k]); done {
				return f.n, err
			}
		}
		if rerr == io.EOF {
			if f.off+f.n < f.size {
				return f.n, fmt.Errorf("blob %s: %s ended at %d of %d bytes: %w", f.req.Digest, f.src, f.off+f.n, f.size, io.ErrUnexpectedEOF)
			}
			break
		}
		if rerr != nil {
			return f.n, f.cut(rerr)
		}
	}
	return f.n, nil
}

// write writes b, the next bytes read, into the ingest, and says whether
// the stream is done: it failed, or the ingest is whole (err nil) or holds
// the bytes that follow already (errCaughtUp).
func (f *fetch) write(b []byte) (done bool, err error) {
	at := f.off + f.n
	end := at + int64(len(b))
	f.rearm(end)
	f.judged.read(end, len(b))
	if end > f.size {
		return true, fmt.Errorf("blob %s: %s sent more than %d bytes: %w", f.req.Digest, f.src, f.size, errdefs.ErrDataLoss)
	}
	if _, err := f.ing.WriteAt(b, at); err != nil {
		return true, err
	}
	f.tr.wrote(at, int64(len(b)), f.src.kind == SourceUpstream)
	f.n += int64(len(b))
	f.pos.Store(end)
	// Counted as they arrive, so the metric shows a long transfer's progress.
	f.counted.Add(len(b))
	if c := f.ing.Contiguous(); c == f.size {
		// The helpers sent the rest.
		return true, nil
	} else if c > end {
		return true, errCaughtUp
	}
	return false, nil
}

// cut is the error of a stream that broke with err: the watchdog's or the
// judge's verdict when one ended it.
func (f *fetch) cut(err error) error {
	at := f.off + f.n
	quiet := time.Since(time.Unix(0, f.lastByte.Load())).Round(time.Millisecond)
	switch c := context.Cause(f.ctx); {
	case c == errStalled:
		return fmt.Errorf("blob %s: no byte from %s for %s at offset %d: %w", f.req.Digest, f.src, quiet, at, errStalled)
	case errors.Is(c, errStalled), errors.Is(c, errSlow):
		// The judge's verdict on a peer's stream.
		return fmt.Errorf("blob %s: %s at offset %d: %w", f.req.Digest, f.src, at, c)
	case errors.Is(c, errNotArriving) && at > max(f.have, f.off):
		return fmt.Errorf("blob %s: %s held %d bytes of %d when it answered, relayed up to %d, and sent none past it for %s: %w: %w: %w", f.req.Digest, f.src, f.have, f.size, at, quiet, errPaused, errNotArriving, errdefs.ErrOutOfRange)
	case errors.Is(c, errNotArriving):
		return fmt.Errorf("blob %s: %s held %d bytes of %d when it answered, and sent none past %d for %s: %w: %w", f.req.Digest, f.src, f.have, f.size, at, quiet, errNotArriving, errdefs.ErrOutOfRange)
	}
	return err
}
