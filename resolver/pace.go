package resolver

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/p2p/swarm"
)

// errSlow marks a peer whose stream fell far below the rate it had
// shown, while this node's other streams did not: the peer's side is the
// cause, and the next source is likely faster.
var errSlow = errors.New("source too slow")

// errRelaying marks a peer that sent nothing for a while over bytes it
// relays, and still answers a ping: it waits on its own source, which may
// be the one that was lost. It is asked once more (see download) before
// it counts as lost itself: by then it has found its next source, as
// this node would.
var errRelaying = errors.New("it relays bytes it has not received yet and answers a ping")

// errRelayInDoubt marks a relay starved beside a busy link (see starved):
// it may be as slow as its own source, which it judges itself, or held up
// by its own link, full or cut. The judge tells the two apart with a ping
// (see judge.verdict, swarm.PeerLinkQueued): the relay is left only when
// its answer waits behind what it sends, or does not come, while another
// peer's comes at once.
var errRelayInDoubt = errors.New("it relays, and its own source may be as slow")

// probeTimeout is how long a peer gets to answer the ping that tells a
// frozen or cut-off peer from one waiting on its own source: two fifths
// of PeerStall, and never under minProbeTimeout. A ping answered on a LAN
// takes a millisecond; the margin is for a busy host, whose peers wait
// longer for everything, pings included.
func (c Config) probeTimeout() time.Duration {
	return max(minProbeTimeout, c.PeerStall*2/5)
}

const minProbeTimeout = 200 * time.Millisecond

// pingTries is how many pings a peer gets, one after the other, before it
// counts as not answering: on a busy host one ping can miss its deadline
// while the peer is alive, and a live peer given up sends the download to
// the next source, often the registry. A frozen or cut-off peer costs one
// probeTimeout more.
const pingTries = 2

// answersPing says whether peer p answers one of pingTries pings, each
// given probeTimeout, or is excused for not answering: its streams to
// this node brought bytes meanwhile (see bytesAnswered), or the node's
// other peers do not answer in time either (see ownLinkExcuses).
func (r *Resolver) answersPing(s Silencer, p string) bool {
	start, before := time.Now(), r.pace.receivedFrom(p)
	for range pingTries {
		ctx, cancel := context.WithTimeout(r.ctx, r.cfg.probeTimeout())
		ok := s.Answers(ctx, p)
		cancel()
		if ok || r.ctx.Err() != nil {
			return ok
		}
	}
	return r.bytesAnswered(p, start, before) || r.ownLinkExcuses(p, pingTries*r.cfg.probeTimeout())
}

// bytesAnswered says whether peer p's streams to this node, which had
// brought it before when the pings began at start, answered for p since
// (see swarm.BytesAnswerPing): p is alive, its uplink full, and the pings
// wait behind its bytes.
func (r *Resolver) bytesAnswered(p string, start time.Time, before received) bool {
	now := time.Now()
	after := r.pace.receivedFrom(p)
	_, best := r.pace.over(now, paceBucket)
	if !swarm.BytesAnswerPing(after.n-before.n, now.Sub(start), best, now.Sub(after.last) < r.cfg.probeTimeout()) {
		return false
	}
	r.m.busyPeerKept.Inc()
	r.cfg.Logger.Debug("peer answers no ping while its streams bring bytes: kept, its uplink full", "peer", p)
	return true
}

// ownLinkExcuses says whether peer p, having kept this node waiting for
// wait (silent, or its answer or ping not come), is kept rather than given
// up: wait is under StallTimeout, the node as a whole received under
// idleLinkShare of its best window while it waited (see nodePace.over),
// and its other peers do not answer a ping in time either, or answer late
// (see swarm.OwnLinkBudget, swarm.OwnLinkQueue), so the node's own link is
// what holds p's bytes up. A node that receives near its best carries
// bytes fine: when every other peer it can ask is frozen or throttled
// itself, their silence says nothing of its link.
func (r *Resolver) ownLinkExcuses(p string, wait time.Duration) bool {
	lj, ok := r.router.(LinkJudge)
	if !ok || p == "" || wait >= r.cfg.StallTimeout {
		return false
	}
	if rate, best := r.pace.over(time.Now(), wait); best == 0 || rate >= idleLinkShare*best {
		return false
	}
	if !lj.OwnLinkSlow(p, wait) {
		return false
	}
	r.m.ownLinkExcused.Inc()
	return true
}

// Rules for a stream from a peer that holds the bytes it sends. A peer's
// stream is cheap to give up (the download resumes at the same offset from
// the next source), so it is judged by what it has shown rather than by
// StallTimeout, which still bounds the registry's streams and a peer's
// first byte. Only the time the download spends waiting in the stream's
// Read counts against the peer: a download held up by its own disk or CPU
// is not the peer's fault.
const (
	// silenceGaps: a stream is silent once a Read has waited this many
	// times its usual wait (but never less than PeerStall).
	silenceGaps = 8
	// paceBucket is the resolution of the rate windows.
	paceBucket = 100 * time.Millisecond
	// slowFactor: a stream is slow when its rate over the last window is
	// below its best window's rate divided by this…
	slowFactor = 5
	// lagFactor: a stream lags when its rate over the last window is
	// below the rate it is held to divided by this (see pace.lagging).
	lagFactor = 2
	// …and the download spent at least this share of the window waiting
	// for it…
	slowWaitShare = 0.5
	// …unless the node as a whole receives at least nodeBusyShare of its
	// own best window, and this stream gets at least a quarter of an even
	// share of that: it is then sharing a busy link, not held up by its
	// peer…
	nodeBusyShare = 0.5
	// …or the node reads from two peers or more and this stream gets at
	// least half of an even share of what the node receives
	// (1/nodeSlowShare): the node's own link slowed, and every peer with
	// it. Leaving them would only move its reads to the registry, through
	// the same link.
	nodeSlowShare = 2
	// ownLinkSilences: a silence is excused up to this many times the
	// longest it may last while every other stream of the node trickles
	// (see judge.excused).
	ownLinkSilences = 4
	// relayQuietShare: a relaying peer found slow while its Read has
	// waited this share of PeerStall is asked once more (see verdict):
	// its source stopped, and its last bytes came in slowly. A relay on a
	// slow link sends its bytes steadily, each Read waiting a few ms.
	relayQuietShare = 0.5
	// idleLinkFactor, idleLinkShare: a stream is also slow when its rate
	// is below the node's best window divided by idleLinkFactor, it
	// brings most of what the node receives, and the node as a whole
	// receives under idleLinkShare of that best: the node's link has room
	// for many times what the peer sends, and the peer was slow from its
	// first byte, so its own best is no measure. The factor is above 10
	// so that a node whose own link was cut to a tenth, reading from one
	// peer all that is left of it, keeps it; a node whose cut link is
	// shared by several slow streams keeps them, none bringing most. Nor
	// is the rule applied within idleLinkCalm windows of a stream of the
	// node falling below 1/slowFactor of its own best while the node as a
	// whole received under idleLinkShare of its best: the node's link may
	// just have been cut, and its best no longer be its capacity. A
	// stream that falls while the node's others flow (a peer frozen or
	// throttled) says nothing of the node's link, and calms nothing.
	idleLinkFactor = 12
	idleLinkShare  = 0.5
	idleLinkCalm   = 3
	// starvedShare: on a link at least idleLinkShare busy, a stream slow
	// from its first byte, below the node's best divided by
	// idleLinkFactor, is slow when it gets under an even share of what
	// the node receives divided by this (see starved): the quarter that
	// nodeBusyShare grants a stream slow by its own best.
	starvedShare = 4
	// burstySpan: a stream whose silence may last a whole window or more
	// (its bytes come in bursts, as a peer behind a full link sends them)
	// is not measured over one window, but over the span from the start of
	// the window in which it turned bursty, once that is this many windows
	// and as long as its silence may last (see measured). Left to its
	// silence rules alone, a relay behind a link cut to a tenth, answering
	// every ping, was read for 20 s.
	burstySpan = 2
	// recoverBuckets, recoverFactor: a stream whose last recoverBuckets
	// whole buckets delivered at 1/recoverFactor of the rate it is held to
	// or more has recovered, however slow its window (see pace.recovered).
	recoverBuckets = 3
	recoverFactor  = 2
	// youngShare: a stream from a peer the node left out as silent is
	// held to its share once it has run this share of a window (see
	// pace.shareRate).
	youngShare = 0.5
)

// pace follows one stream's reads and says when it has gone silent or
// slow. It is not safe for concurrent use.
type pace struct {
	stall   time.Duration // the least silence that counts (PeerStall)
	ceiling time.Duration // the most (StallTimeout)
	window  time.Duration // the span a rate is measured over

	// relayed: the stream is past the bytes the peer held when it
	// answered; the peer relays them as they reach it, so a wait is not
	// the peer's silence (ArrivalStall rules it), but a slow rate still is.
	relayed bool
	// slowSince, doubtSince: since when a relaying stream is slow, or in
	// doubt (see graced).
	slowSince, doubtSince time.Time
	// fromFirstByte: the stream's windows begin at its first byte, not
	// when it opened: a relay asked for bytes it has not received yet
	// waits on its own source first, often one that was just lost, and
	// ArrivalStall rules that wait. Measured from when it opened, its
	// first window holds the wait, and the node below finds it slow as
	// its bytes begin to flow, and fetches the rest from the registry
	// beside it.
	fromFirstByte bool
	inRead        bool          // a Read is waiting
	readStart     time.Time     // since when
	gap           time.Duration // moving average of a Read's wait
	total         int64         // bytes since the stream opened
	// burstyAt: the start of the window in which the stream turned too
	// bursty to measure over one, and burstyMark its total then (see
	// measured).
	burstyAt   time.Time
	burstyMark int64

	bytes  []int64         // bytes per paceBucket over the last window, oldest first
	waits  []time.Duration // time spent in Read per bucket
	at     time.Time       // start of the newest bucket
	filled int             // buckets that saw a whole bucket's time
	best   float64         // best window rate seen, bytes per second
	// held is the rate the stream is held to besides best: what the
	// download had from the peer it lost (see swarm.HeldPace); 0: none.
	held float64
}

// newPace starts a pace at now. Every pace's buckets begin on the same
// boundaries (multiples of paceBucket), so that a stream's rate and the
// node's (see nodePace) cover the same span: offset by part of a bucket,
// the node's window could hold a bucket of bytes from before a change
// that the stream's no longer holds, and a link cut for every stream at
// once would look like one slow stream beside a busy link.
func newPace(now time.Time, stall, ceiling, window time.Duration) *pace {
	n := max(1, int(window/paceBucket))
	return &pace{stall: stall, ceiling: ceiling, window: time.Duration(n) * paceBucket,
		bytes: make([]int64, n), waits: make([]time.Duration, n), at: now.Truncate(paceBucket)}
}

// advance moves the buckets up to now.
func (p *pace) advance(now time.Time) {
	if idle := now.Sub(p.at); idle > p.window+paceBucket {
		// A window and more without a read: every bucket is empty.
		clear(p.bytes)
		clear(p.waits)
		p.at = p.at.Add(idle - idle%paceBucket)
		p.filled = len(p.bytes)
		return
	}
	for now.Sub(p.at) >= paceBucket {
		p.at = p.at.Add(paceBucket)
		copy(p.bytes, p.bytes[1:])
		copy(p.waits, p.waits[1:])
		p.bytes[len(p.bytes)-1], p.waits[len(p.waits)-1] = 0, 0
		p.filled = min(p.filled+1, len(p.bytes))
		if p.filled == len(p.bytes) {
			p.best = max(p.best, p.rate())
		}
	}
}

// restart empties the buckets at now: the stream is measured anew, over
// whole windows from now.
func (p *pace) restart(now time.Time) {
	clear(p.bytes)
	clear(p.waits)
	p.at = now.Truncate(paceBucket)
	p.filled = 0
}

// rate is the bytes per second over the last window.
func (p *pace) rate() float64 {
	var sum int64
	for _, b := range p.bytes {
		sum += b
	}
	return float64(sum) / p.window.Seconds()
}

// waited is the time spent in Read over the last window, the Read still
// waiting included.
func (p *pace) waited(now time.Time) time.Duration {
	var sum time.Duration
	for _, w := range p.waits {
		sum += w
	}
	if p.inRead {
		start := p.readStart
		if cut := now.Add(-p.window); start.Before(cut) {
			start = cut
		}
		sum += now.Sub(start)
	}
	return min(sum, p.window)
}

// lagging says whether the stream, measured over a whole window, delivers
// under 1/lagFactor of the rate it is held to: its best window, or what
// the download had before it lost a peer (held). Helpers then race it for
// the piece after the one it is in and for the second half of the rest of
// its own (see swarm.NextPiece): a peer slowed to a fraction of its rate is
// not yet slow enough to leave (see slowFactor), and carries the pieces the
// helpers would otherwise leave to it. Not while it
// gets at least 1/lagFactor of an even share of what the node receives
// (node; nil: none): it then shares a link with the node's other streams
// (many readers of one holder, or the node's own link full), and a race
// would only add to that link.
func (p *pace) lagging(now time.Time, node *nodePace) bool {
	want := max(p.best, p.held)
	if p.filled < len(p.bytes) || want == 0 {
		return false
	}
	r := p.rate()
	if r*lagFactor >= want {
		return false
	}
	if node != nil {
		if rate, _, streams, _ := node.state(now); streams > 1 && r*lagFactor*float64(streams) >= rate {
			return false
		}
	}
	return true
}

// trickling says whether the stream delivered bytes over the last window,
// at under 1/slowFactor of its best.
func (p *pace) trickling() bool {
	r := p.rate()
	return p.best > 0 && r > 0 && r*slowFactor < p.best
}

// reading records that a Read begins at now.
func (p *pace) reading(now time.Time) {
	p.advance(now)
	p.inRead, p.readStart = true, now
}

// read records that the Read begun last returned k bytes at now.
func (p *pace) read(now time.Time, k int) {
	if p.fromFirstByte && k > 0 {
		p.fromFirstByte = false
		p.restart(now)
	}
	p.advance(now)
	w := now.Sub(p.readStart)
	p.bytes[len(p.bytes)-1] += int64(k)
	p.total += int64(k)
	p.waits[len(p.waits)-1] += w
	if p.gap == 0 {
		p.gap = w
	} else {
		p.gap += (w - p.gap) / 8
	}
	p.inRead = false
}

// quiet is how long the Read in progress has waited, 0 when none is.
func (p *pace) quiet(now time.Time) time.Duration {
	if !p.inRead {
		return 0
	}
	return now.Sub(p.readStart)
}

// silence is how long a Read may wait.
func (p *pace) silence() time.Duration {
	return min(max(p.stall, silenceGaps*p.gap), p.ceiling)
}

// check says why the stream should be given up at now, or nil. node is the
// node's receiving pace over all its streams (nil when unknown).
//
// A stream whose Read waits too long is given up. A slow one (below
// 1/slowFactor of its own best window, with the download waiting on it
// for at least slowWaitShare of the window) is given up unless it is only
// sharing a busy link: the node receives at least nodeBusyShare of its
// best over all its streams and this one gets at least a quarter of an
// even share of that. When the
// node's own link slowed down, a single stream cannot tell that from a
// slow peer; it moves on once, and the next source starts a new best. A
// stream slow from its first byte is judged beside the node's link
// instead (see idleLink). A relaying stream is slow only once it has
// been for PeerStall (see graced).
func (p *pace) check(now time.Time, node *nodePace) error {
	p.advance(now)
	if quiet, limit := p.quiet(now), p.silence(); !p.relayed && quiet >= limit {
		return fmt.Errorf("no byte for %v (a read usually waits %v): %w", quiet.Round(time.Millisecond), p.gap.Round(time.Millisecond), errStalled)
	}
	return p.graced(now, p.slowness(now, node))
}

// graced holds a relaying stream's slow verdict back until the stream has
// been slow for PeerStall: a relay slows down when its own source does,
// and the relay judges that source by the same rules over the same
// window, so it finds it slow at about the same moment and moves to the
// next. Judged as early, the node below would leave a relay that is
// about to speed up again, and lead itself: the registry would send the
// rest of the blob to both.
//
// A relay in doubt (errRelayInDoubt) is graced on a clock of its own: kept
// in doubt for a while, a relay that then falls below a fifth of its own
// best still gets its PeerStall.
func (p *pace) graced(now time.Time, slow error) error {
	if slow == nil || !p.relayed {
		p.slowSince, p.doubtSince = time.Time{}, time.Time{}
		return slow
	}
	since := &p.slowSince
	if errors.Is(slow, errRelayInDoubt) {
		since, p.slowSince = &p.doubtSince, time.Time{}
	} else {
		p.doubtSince = time.Time{}
	}
	if since.IsZero() {
		*since = now
	}
	if now.Sub(*since) < p.stall {
		return nil
	}
	return slow
}

// slowness says why the stream is slow at now (see check), or nil.
func (p *pace) slowness(now time.Time, node *nodePace) error {
	if p.filled < len(p.bytes) || max(p.best, p.held) == 0 {
		// Not measured over a whole window yet: its silence rules alone.
		return nil
	}
	if p.waited(now) < time.Duration(slowWaitShare*float64(p.window)) {
		return nil
	}
	r, span, ok := p.measured(now)
	if !ok {
		return p.starvedRelay(now, node)
	}
	bar := max(p.best, p.held)
	if r*slowFactor >= bar {
		return p.idleLink(now, r, span, node)
	}
	if p.recovered(bar) {
		return nil
	}
	if node != nil {
		rate, best, streams, peers := node.state(now)
		if best > 0 && rate < idleLinkShare*best {
			// The node as a whole receives little too: its own link may
			// have been cut (see idleLinkCalm). A stream that falls while
			// the node's others carry on is the peer's doing.
			node.dropped(now)
		}
		if best > 0 && rate >= nodeBusyShare*best && r*4*float64(streams) >= rate {
			return nil
		}
		if peers >= 2 && rate > 0 && r*nodeSlowShare*float64(streams) >= rate {
			return nil
		}
	}
	if p.held > p.best {
		return fmt.Errorf("%.0f KiB/s over the last %v, below 1/%d of the %.0f KiB/s the download had before it lost a peer: %w", r/1024, span.Round(time.Millisecond), slowFactor, p.held/1024, errSlow)
	}
	return fmt.Errorf("%.0f KiB/s over the last %v, below 1/%d of its best %.0f KiB/s: %w", r/1024, span.Round(time.Millisecond), slowFactor, p.best/1024, errSlow)
}

// recovered says whether the stream's last recoverBuckets whole buckets
// delivered at bar/recoverFactor or more: its window is slow for the time
// before. A relay whose own source went slow finds that source slow about
// when the node below finds the relay slow, and moves to the next source,
// often the registry; judged by its window alone, the relay would be left
// for the half second after it picked up again, and the node below would
// lead too: the registry would send the rest of the blob to both. The bar
// is half the rate, not a fifth: a peer behind a link cut to a tenth
// sends in bursts of a frame, a fifth of its old rate over 300 ms, and
// is still slow.
func (p *pace) recovered(bar float64) bool {
	whole := len(p.bytes) - 1 // the newest bucket is still filling
	if whole < recoverBuckets {
		return false
	}
	var sum int64
	for _, b := range p.bytes[whole-recoverBuckets : whole] {
		sum += b
	}
	return float64(sum)*recoverFactor >= bar*(recoverBuckets*paceBucket).Seconds()
}

// measured is the stream's rate at now, and the span it is measured
// over: the last window; or, for a stream too bursty to measure over one
// (its silence may last a window or more), the span from the start of the
// window in which it turned bursty, once that is burstySpan windows and as
// long as its silence may last. ok is false while a bursty stream is not
// measured yet.
func (p *pace) measured(now time.Time) (r float64, span time.Duration, ok bool) {
	if p.silence() < p.window {
		p.burstyAt = time.Time{}
		return p.rate(), p.window, true
	}
	if p.burstyAt.IsZero() {
		// The span takes in the window just measured: its bytes are as
		// much the stream's as the next ones, and a stream slow from the
		// start is judged one window sooner.
		var inWindow int64
		for _, b := range p.bytes {
			inWindow += b
		}
		p.burstyAt, p.burstyMark = p.at.Add(paceBucket-p.window), p.total-inWindow
	}
	span = now.Sub(p.burstyAt)
	if span < max(burstySpan*p.window, p.silence()) {
		return 0, 0, false
	}
	return float64(p.total-p.burstyMark) / span.Seconds(), span, true
}

// starvedRelay says why a relay too bursty to be measured yet (see
// measured) is in doubt (errRelayInDoubt), or nil: over the span since it
// turned bursty, burstySpan windows or more, it is starved beside a busy
// link (see idleLink). A relay behind a full link sends a frame now and
// then, and its silence may last ten seconds; judged only once measured
// over that, an unharmed node read such a relay for seven seconds while
// its other blobs came in. Its verdict waits on a ping, so it need not
// wait for the span its silence may last.
func (p *pace) starvedRelay(now time.Time, node *nodePace) error {
	if !p.relayed || node == nil || p.burstyAt.IsZero() {
		return nil
	}
	span := now.Sub(p.burstyAt)
	if span < burstySpan*p.window {
		return nil
	}
	r := float64(p.total-p.burstyMark) / span.Seconds()
	rate, best, streams, _ := node.state(now)
	if best == 0 || r*idleLinkFactor >= best || rate < idleLinkShare*best {
		return nil
	}
	if err := starved(r, span, rate, streams); err != nil {
		return fmt.Errorf("%w: %w", err, errRelayInDoubt)
	}
	return nil
}

// idleLink says why a stream at rate r over span, not slow by its own
// best, is slow beside the node's link (see idleLinkFactor), or nil. On
// a link at least idleLinkShare busy, a stream is slow only when starved,
// and a relay so found is in doubt (errRelayInDoubt).
func (p *pace) idleLink(now time.Time, r float64, span time.Duration, node *nodePace) error {
	if node == nil {
		return nil
	}
	rate, best, streams, _ := node.state(now)
	if best == 0 || r*idleLinkFactor >= best {
		return nil
	}
	if rate >= idleLinkShare*best {
		err := starved(r, span, rate, streams)
		if err != nil && p.relayed {
			// Maybe as slow as the relay's own source: see graced.
			return fmt.Errorf("%w: %w", err, errRelayInDoubt)
		}
		return err
	}
	if rate-p.rate() >= r || node.droppedWithin(now, idleLinkCalm*p.window) {
		return nil
	}
	return fmt.Errorf("%.0f KiB/s over the last %v, below 1/%d of the %.0f KiB/s this node received at its best, with its link more than half idle: %w", r/1024, span.Round(time.Millisecond), idleLinkFactor, best/1024, errSlow)
}

// starved says why a stream at rate r over span, slow from its first
// byte, beside a busy link (the node receiving rate over streams), is
// slow: it gets under 1/starvedShare of an even share of that rate. Streams that share a link get about even shares of
// it; one that gets a small part of its share is held up at the peer's
// end, its uplink throttled or full, and the next source carries the rest
// at a share of the same link. Kept for the link's being busy, a node
// read a peer behind a link cut to a tenth at 0.5 MB/s for 7 s while its
// other blobs came in, and its pull waited on that one. A relay so
// starved is in doubt (see errRelayInDoubt): it may be as slow as its own
// source, which it judges itself, and left for that it would have this
// node lead beside it; but behind its own link, cut or full, it may crawl
// for as long as it answers pings, its source and this node both fine.
func starved(r float64, span time.Duration, rate float64, streams int) error {
	if streams < 2 || r*starvedShare*float64(streams) >= rate {
		return nil
	}
	return fmt.Errorf("%.0f KiB/s over the last %v, under 1/%d of an even share of the %.0f KiB/s this node receives over %d streams: %w", r/1024, span.Round(time.Millisecond), starvedShare, rate/1024, streams, errSlow)
}

// nodePace is the node's receiving pace over the peer streams it judges
// and the registry's streams, how many are open, and from how many
// sources (each peer, and the registry as one).
type nodePace struct {
	mu      sync.Mutex
	p       *pace
	streams int
	peers   map[string]int // open streams by peer
	judges  map[*judge]bool
	// dropAt is when a stream of the node was last seen below
	// 1/slowFactor of its own best (see idleLinkCalm).
	dropAt time.Time
	// left is when the node last gave up a stream of each peer as
	// silent or slow (see swarm.LeavesWithPeer; not a stream left only
	// with its peer, see errLeftWithPeer).
	left map[string]time.Time
	// from is what the node received from each peer with a stream open,
	// and when the last byte came (see Resolver.bytesAnswered).
	from map[string]received
}

// received counts a peer's bytes to the node.
type received struct {
	n    int64
	last time.Time
}

// gaveUp notes that the node gave up a stream of peer at now, as silent
// or slow.
func (n *nodePace) gaveUp(peer string, now time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for p, at := range n.left {
		if now.Sub(at) >= swarm.LeftPeerFor {
			delete(n.left, p)
		}
	}
	n.left[peer] = now
}

// gaveUpAgo says how long before now the node last gave up a stream of
// peer, and whether it did.
func (n *nodePace) gaveUpAgo(peer string, now time.Time) (time.Duration, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	at, ok := n.left[peer]
	return now.Sub(at), ok
}

// dropped notes that a stream of the node is below 1/slowFactor of its
// best at now.
func (n *nodePace) dropped(now time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if now.After(n.dropAt) {
		n.dropAt = now
	}
}

// droppedWithin says whether a stream of the node was below 1/slowFactor
// of its best within d before now.
func (n *nodePace) droppedWithin(now time.Time, d time.Duration) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return !n.dropAt.IsZero() && now.Sub(n.dropAt) < d
}

func newNodePace(window time.Duration) *nodePace {
	return &nodePace{p: newPace(time.Now(), 0, 0, window), peers: map[string]int{}, judges: map[*judge]bool{}, left: map[string]time.Time{}, from: map[string]received{}}
}

// join counts j's stream in (see open), leave out.
func (n *nodePace) join(j *judge) {
	n.open(j.peer, 1)
	n.mu.Lock()
	n.judges[j] = true
	n.mu.Unlock()
}

func (n *nodePace) leave(j *judge) {
	n.open(j.peer, -1)
	n.mu.Lock()
	delete(n.judges, j)
	n.mu.Unlock()
}

// othersTrickle says whether the node has a stream besides j, and every
// one of them still delivers, at under 1/slowFactor of its best: the
// node's own link slowed, not one peer.
func (n *nodePace) othersTrickle(j *judge) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	others := 0
	for o := range n.judges {
		if o == j {
			continue
		}
		if !o.trickles.Load() {
			return false
		}
		others++
	}
	return others > 0
}

func (n *nodePace) read(now time.Time, k int) {
	n.readFrom("", now, k)
}

// readFrom counts k bytes from peer ("": none named) at now.
func (n *nodePace) readFrom(peer string, now time.Time, k int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.p.advance(now)
	n.p.bytes[len(n.p.bytes)-1] += int64(k)
	if peer != "" {
		r := n.from[peer]
		n.from[peer] = received{n: r.n + int64(k), last: now}
	}
}

// receivedFrom says what the node received from peer since it opened the
// streams open now, and when the last byte came.
func (n *nodePace) receivedFrom(peer string) received {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.from[peer]
}

// open counts a stream from peer in (+1) or out (-1).
func (n *nodePace) open(peer string, d int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.streams += d
	if n.peers[peer] += d; n.peers[peer] <= 0 {
		delete(n.peers, peer)
		delete(n.from, peer)
	}
}

// over says what the node received per second over the last d before
// now, in whole buckets after now-d (at least the one in progress, at most
// a window), and its best window's rate. A wait judged by the window as a
// whole would count the bytes that came before it: a stream silent for
// two buckets of a three-bucket window, after a burst above its best, had
// the node's rate over half its best while the node received nothing.
func (n *nodePace) over(now time.Time, d time.Duration) (rate, best float64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.p.advance(now)
	k := min(max(1, int(d/paceBucket)), len(n.p.bytes))
	var sum int64
	for _, b := range n.p.bytes[len(n.p.bytes)-k:] {
		sum += b
	}
	span := time.Duration(k-1)*paceBucket + now.Sub(n.p.at)
	return float64(sum) / max(span, paceBucket).Seconds(), n.p.best
}

func (n *nodePace) state(now time.Time) (rate, best float64, streams, peers int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.p.advance(now)
	return n.p.rate(), n.p.best, max(n.streams, 1), len(n.peers)
}

// judge gives up a peer's stream that goes silent while it reads bytes the
// peer held when it answered, or slow at any point (see pace). Past those
// bytes the peer relays what reaches it, and silence alone proves nothing:
// the judge then pings the peer (see verdict), and gives it up at once if
// it does not answer. A nil judge judges nothing.
type judge struct {
	mu    sync.Mutex
	p     *pace
	node  *nodePace
	until int64 // silence is judged while reading below this offset
	// probe says whether the peer answers a ping (nil: no way to ask);
	// probed is set once it answered during the Read in progress.
	probe  func() bool
	probed bool
	// silenced says whether the peer is left out as silent now, for any
	// download of the node (see swarm.LeavesWithPeer); nil: never.
	silenced func() bool
	// heardSilent says how long before now a member last said the peer
	// went silent (see SilentHearer); nil, or false: never.
	heardSilent func(now time.Time) (time.Duration, bool)
	// ownLink says whether a silence of the given length is laid to the
	// node's own link (see Resolver.ownLinkExcuses); nil: never.
	ownLink func(quiet time.Duration) bool
	// peerLinkFull says whether a ping shows the peer's link, not the
	// node's, holds the peer's bytes up (see swarm.PeerLinkQueued); nil:
	// no way to tell. peerLinkAt, peerLinkWas: when it was last asked,
	// and its answer, which holds for a window (see peerLinkShownFull);
	// only the verdict's goroutine touches them.
	peerLinkFull func() bool
	peerLinkAt   time.Time
	peerLinkWas  bool
	probeTimeout time.Duration
	peer         string
	// seen, when set, is told the best rate the stream reached when it
	// ends.
	seen func(best float64)
	// trickles: the stream delivers, at under 1/slowFactor of its best
	// (see pace.trickling), as of its last read or verdict.
	trickles atomic.Bool
	// lag, when set, is told at each verdict whether the stream lags
	// (see pace.lagging), and false when the judging stops.
	lag *atomic.Bool
	// abandoned counts the verdicts.
	abandoned *prometheus.CounterVec
	done      chan struct{}
	once      sync.Once
}

// judgeStream starts judging src's stream from off, which ends through
// cancel with the judgement as its cause. Only peers are judged: the
// registry's streams are left to StallTimeout (and counted, see
// countStream), and so is a peer's first byte of what it does not hold
// yet (a designated peer waiting for the registry).
func (r *Resolver) judgeStream(cancel context.CancelCauseFunc, src source, have, off int64, leads bool) *judge {
	if r.cfg.PeerStall < 0 {
		return nil
	}
	if src.kind != SourcePeer {
		return r.countStream()
	}
	j := &judge{
		p:            newPace(time.Now(), r.cfg.PeerStall, r.cfg.StallTimeout, r.cfg.PeerSlowWindow),
		node:         r.pace,
		until:        have,
		done:         make(chan struct{}),
		abandoned:    r.m.judged,
		probeTimeout: r.cfg.probeTimeout(),
	}
	j.p.relayed = have <= off
	j.p.fromFirstByte = j.p.relayed
	rule := src.rule()
	rule.Leads = leads
	j.p.held = swarm.HeldPace(rule, src.lost, src.lostBest)
	j.seen = src.paced
	j.lag = src.lag
	if s, ok := r.router.(Silencer); ok {
		j.probe = func() bool { return r.answersPing(s, src.peer) }
		j.silenced = func() bool { return s.Silenced(src.peer) }
	}
	if h, ok := r.router.(SilentHearer); ok {
		j.heardSilent = func(now time.Time) (time.Duration, bool) {
			at, ok := h.HeardSilent(src.peer)
			return now.Sub(at), ok
		}
	}
	j.ownLink = func(quiet time.Duration) bool { return r.ownLinkExcuses(src.peer, quiet) }
	if pj, ok := r.router.(PeerLinkJudge); ok {
		j.peerLinkFull = func() bool { return pj.PeerLinkQueued(src.peer) }
	}
	j.peer = src.peer
	j.node.join(j)
	go func() {
		t := time.NewTicker(paceBucket)
		defer t.Stop()
		for {
			select {
			case <-j.done:
				return
			case now := <-t.C:
				if err := j.verdict(now); err != nil {
					reason := "silent"
					switch {
					case errors.Is(err, errRelaying):
						reason = "relaying"
					case errors.Is(err, errSlow):
						reason = "slow"
					}
					j.gaveUp(err, now)
					j.abandoned.WithLabelValues(reason).Inc()
					cancel(err)
					return
				}
			}
		}
	}()
	return j
}

// registryKey is the registry's key among the node's sources (see
// nodePace): peer IDs never look like it.
const registryKey = "(registry)"

// countStream is a judge that judges nothing: a registry's stream is only
// counted in the node's pace. Its bytes cross the node's link as the
// peers' do, so a node whose link was cut sees every source slow at once,
// the registry among them, and does not give up a peer for the registry,
// which would come through the same link and send again what the peer was
// sending.
func (r *Resolver) countStream() *judge {
	j := &judge{
		p:    newPace(time.Now(), r.cfg.PeerStall, r.cfg.StallTimeout, r.cfg.PeerSlowWindow),
		node: r.pace, peer: registryKey, done: make(chan struct{}),
	}
	j.node.join(j)
	return j
}

// verdict says why the stream should be given up at now, or nil.
//
// A silent or slow stream is kept while the node's own link explains it
// (see Resolver.ownLinkExcuses): its other peers do not answer a ping in
// time either.
//
// A relaying peer silent past PeerStall is pinged, once per silence: a
// peer that does not answer is frozen or cut off, and its stream is given
// up as silent; one that answers is left to wait on its own source. A
// relaying peer found slow while its Read has waited relayQuietShare of
// PeerStall is pinged as well, and if it answers its verdict says
// errRelaying: its own source stopped, and it is finding the next. One
// that trickles is slow itself (see graced). A relay starved beside a
// busy link is left only when a ping shows its own link holds it up (see
// errRelayInDoubt).
func (j *judge) verdict(now time.Time) error {
	j.mu.Lock()
	err := j.p.check(now, j.node)
	quiet, limit := j.p.quiet(now), j.p.silence()
	silent := j.p.relayed && quiet >= limit
	relayQuiet := j.p.relayed && quiet >= time.Duration(relayQuietShare*float64(j.p.stall))
	probed := j.probed
	j.trickles.Store(j.p.trickling())
	if j.lag != nil {
		j.lag.Store(j.p.lagging(now, j.node))
	}
	window := j.p.window
	j.mu.Unlock()
	if (silent || errors.Is(err, errStalled)) && (j.excused(quiet, limit) || j.laidToOwnLink(quiet)) {
		return nil
	}
	if err == nil || errors.Is(err, errRelayInDoubt) {
		if left := j.leftWithPeer(now); left != nil {
			// Judged from here as any slow stream: kept when the node's
			// own link is as slow, a quiet relay pinged first.
			err = left
		}
	}
	ask := j.probe != nil && ((silent && !probed) || (err != nil && relayQuiet))
	if errors.Is(err, errRelayInDoubt) {
		if j.peerLinkShownFull(now, window) {
			// Its own link holds it up, not its source: left as slow
			// at once, not pinged and asked once more (see AskOnceMore).
			return fmt.Errorf("%w; a ping shows its own link holds it up", err)
		}
		// Kept as a relay waiting on its source; its silence is still
		// asked about.
		err, ask = nil, j.probe != nil && silent && !probed
	}
	if errors.Is(err, errSlow) && j.laidToOwnLink(window) {
		// Measured over a window or more, with the download waiting
		// on it for half of that: the node's own link is as slow.
		return nil
	}
	if !ask {
		return err
	}
	if !j.probe() {
		return fmt.Errorf("no byte for %v, and no answer to %d pings of %v: %w", quiet.Round(time.Millisecond), pingTries, j.probeTimeout, errStalled)
	}
	j.mu.Lock()
	j.probed = true
	j.mu.Unlock()
	if err != nil {
		return fmt.Errorf("%w; %w", err, errRelaying)
	}
	return nil
}

// gaveUp notes in the node's pace that it gave up the peer at now for
// verdict err (see swarm.LeavesWithPeer): as silent or slow, not as a
// relay asked once more, nor as a stream left only with its peer.
func (j *judge) gaveUp(err error, now time.Time) {
	if errors.Is(err, errRelaying) || errors.Is(err, errLeftWithPeer) {
		return
	}
	j.node.gaveUp(j.peer, now)
}

// errLeftWithPeer marks a stream left with its peer (see leftWithPeer).
// Such a verdict does not count as giving the peer up anew: the node's
// memory of it runs out LeftPeerFor after the verdict that began it, and
// a stream left only because another was does not keep it going.
var errLeftWithPeer = errors.New("left with its peer")

// leftWithPeer says why the stream is left with its peer, whose stream the
// node gave up lately, which it left out as silent, or which a member said
// lately went silent, or nil (see swarm.LeavesWithPeer): measured over
// its last whole window, or from its start when the node left the peer
// out as silent (see pace.shareRate), a span in which the download waited
// on it for slowWaitShare of the time, it brings under half an even share
// of what the node receives, the node reading from another source
// besides.
func (j *judge) leftWithPeer(now time.Time) error {
	if j.node == nil {
		return nil
	}
	ago, left := j.node.gaveUpAgo(j.peer, now)
	heard, told := j.heardAgo(now)
	if told = told && (!left || heard < ago); told {
		ago, left = heard, true
	}
	silenced := j.silenced != nil && j.silenced()
	if silenced {
		ago, left = 0, true
	}
	if !left {
		return nil
	}
	// A peer that does not answer the node's own ping holds a young
	// stream to its share too.
	j.mu.Lock()
	r, span, measured := j.p.shareRate(now, silenced)
	j.mu.Unlock()
	if !measured {
		return nil
	}
	rate, _, streams, peers := j.node.state(now)
	if !swarm.LeavesWithPeer(left, ago, r, rate, streams, peers) {
		return nil
	}
	why := fmt.Sprintf("the node gave up a stream of this peer %v ago", ago.Round(time.Millisecond))
	switch {
	case silenced:
		why = "the peer is left out as silent"
	case told:
		why = fmt.Sprintf("a member said %v ago that this peer went silent", ago.Round(time.Millisecond))
	}
	return fmt.Errorf("%.0f KiB/s over the last %v, under half an even share of the %.0f KiB/s this node receives over %d streams, and %s: %w: %w", r/1024, span.Round(time.Millisecond), rate/1024, streams, why, errLeftWithPeer, errSlow)
}

// shareRate is the stream's rate at now for swarm.LeavesWithPeer, and the
// span it is measured over: its last whole window, once it has one. A
// young stream (young: the node left its peer out as silent, the peer not
// answering the node's own ping) is measured from its start, or from its
// first byte for a relay, once that is youngShare of a window: opened
// just before the verdict, it would otherwise be read for a whole window
// more, while its bursts say nothing new about a peer already found
// silent. Not after a verdict of slow alone: a relay found slow while its
// own source failed, and read again once it leads, is young when it is
// still finding its pace at the registry. ok is false while it is not
// measured, or the download waited on it under slowWaitShare of the
// span.
func (p *pace) shareRate(now time.Time, young bool) (r float64, span time.Duration, ok bool) {
	if p.filled == len(p.bytes) {
		r, span = p.rate(), p.window
		ok = p.best > 0
	} else {
		// Nothing has left the buckets yet: they hold every byte since
		// the stream's start.
		span = time.Duration(p.filled)*paceBucket + now.Sub(p.at)
		if !young || p.fromFirstByte || span < time.Duration(youngShare*float64(p.window)) {
			return 0, 0, false
		}
		var sum int64
		for _, b := range p.bytes {
			sum += b
		}
		r, ok = float64(sum)/span.Seconds(), true
	}
	return r, span, ok && p.waited(now) >= time.Duration(slowWaitShare*float64(span))
}

// heardAgo says how long before now a member last said the peer went
// silent, if one did at or before now.
func (j *judge) heardAgo(now time.Time) (time.Duration, bool) {
	if j.heardSilent == nil {
		return 0, false
	}
	ago, ok := j.heardSilent(now)
	return ago, ok && ago >= 0
}

// excused says whether a silence of quiet, past limit, is laid to this
// node's own link rather than the peer: every other stream of the node
// still delivers, each far below its best (see nodePace.othersTrickle),
// and the silence is under ownLinkSilences × limit and StallTimeout. A
// node whose link was cut waits longer for every byte, and its pings to
// peers queue behind what it receives; giving the peer up would move the
// download to the registry, through the same link. A peer frozen or cut
// off beside streams that flow, or beside relays waiting on it (they
// deliver nothing), is not excused.
func (j *judge) excused(quiet, limit time.Duration) bool {
	return quiet < min(ownLinkSilences*limit, j.p.ceiling) && j.node.othersTrickle(j)
}

// peerLinkShownFull says whether pings show the peer's link holds its
// bytes up (see peerLinkFull): two probes in a row, the second asked only
// when the first says so, at most once a window. One ping's answer can
// miss its time on a busy host, and a healthy relay left sends this node
// to the registry beside it. Only the verdict's goroutine uses it.
func (j *judge) peerLinkShownFull(now time.Time, window time.Duration) bool {
	if j.peerLinkFull == nil {
		return false
	}
	if j.peerLinkAt.IsZero() || now.Sub(j.peerLinkAt) >= window {
		j.peerLinkAt, j.peerLinkWas = now, j.peerLinkFull() && j.peerLinkFull()
	}
	return j.peerLinkWas
}

// laidToOwnLink says whether a wait of d on the peer is laid to the node's
// own link (see ownLink).
func (j *judge) laidToOwnLink(d time.Duration) bool {
	return j.ownLink != nil && j.ownLink(d)
}

// reading records that a Read of the stream begins.
func (j *judge) reading() {
	if j == nil {
		return
	}
	j.mu.Lock()
	j.p.reading(time.Now())
	j.mu.Unlock()
}

// read records k bytes that brought the stream to offset at.
func (j *judge) read(at int64, k int) {
	if j == nil {
		return
	}
	now := time.Now()
	j.node.readFrom(j.peer, now, k)
	j.mu.Lock()
	j.p.read(now, k)
	j.p.relayed = j.p.relayed || at >= j.until
	j.probed = false
	j.trickles.Store(j.p.trickling())
	j.mu.Unlock()
}

// stop ends the judging; it may be called more than once.
func (j *judge) stop() {
	if j == nil {
		return
	}
	j.once.Do(func() {
		close(j.done)
		if j.lag != nil {
			j.lag.Store(false)
		}
		j.node.leave(j)
		if j.seen != nil {
			j.mu.Lock()
			best := j.p.best
			j.mu.Unlock()
			j.seen(best)
		}
	})
}
