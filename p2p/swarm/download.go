package swarm

import (
	"maps"
	"slices"
	"time"
)

// Source is a place a download may read a blob from, as the rules see it.
type Source struct {
	// Peer names the peer; "" for the registry.
	Peer string
	// Upstream says the source is the registry.
	Upstream bool
	// Designated says the peer is asked to fetch the blob for the cluster.
	Designated bool
	// Silenced says the peer went silent in some download since this
	// round listed it, and is left out by every download until it
	// answers a ping.
	Silenced bool
	// Leads says the peer, when it answered, fetched the blob from the
	// registry for the cluster (see HeldPace).
	Leads bool
}

// Round is what one round over a download's sources learned from their
// answers so far.
type Round struct {
	// Busy: a peer that holds the blob, or will soon, had no free slot or
	// not the bytes yet; DesignatedBusy: a designated peer among them.
	Busy, DesignatedBusy bool
	// HeldInPart: a peer holds part of the blob only.
	HeldInPart bool
}

// Failure is why a source ended, sorted by the caller from its error.
type Failure struct {
	// LocalStore: this node's own store failed (a full disk), not the
	// source.
	LocalStore bool
	// Unavailable: the registry failed (5xx, a cut connection).
	Unavailable bool
	// Unreachable: the registry could not be reached at all.
	Unreachable bool
	// RateLimited: the source asked to slow down.
	RateLimited bool
	// NotNow: the peer was busy or does not hold the bytes yet.
	NotNow bool
	// Partial: the peer said it holds part of the blob only; Whole: that
	// it holds all of it (and was only busy).
	Partial, Whole bool
	// Have is how many bytes from the start the peer said it holds, when
	// it said so (see Download.Idle).
	Have int64
	// Behind: the peer was busy and holds no more of the blob than this
	// node does: it has nothing this node lacks until its own source
	// sends more (see Download.NotePeerFailure).
	Behind bool
	// NotArriving: the peer's copy stopped growing past what it held.
	NotArriving bool
	// Relaying: the peer relayed bytes that reached it after it answered,
	// or relays now, and its stream went quiet while it answers a ping:
	// its own source stopped (see AskOnceMore).
	Relaying bool
	// UnledRelay: the peer's stream had passed the bytes the peer held
	// when it answered, and the peer did not lead then (see
	// AskIfLeadsNow).
	UnledRelay bool
	// Stalled: the source stopped sending; Slow: a peer's stream fell
	// too far behind.
	Stalled, Slow bool
	// Final: asking again will not help (the registry does not have the
	// blob, refuses this node, or rate limits it; a size mismatch, say).
	Final bool
	// LeftToUs: a designated peer that does not want the blob left it to
	// this node (see Coordinate); PointedOn: it named the peer that fetches
	// it. Neither is the peer's failure.
	LeftToUs, PointedOn bool
	// Leads: the peer answered that it fetches the blob from the
	// registry for the cluster now (see LeadsNow).
	Leads bool
	// Cut: the peer, alive, ended the stream, or its answer came too late
	// while its other bytes reached this node; NoAnswer: its answer did
	// not come in time, nothing else from it either; OwnLinkSlow: this
	// node's own link holds its bytes up (its other peers are as slow to
	// answer). See CutByOwnLink.
	Cut, NoAnswer, OwnLinkSlow bool
}

// CutByOwnLink is the rule for a peer that cut this node's stream while
// the node's own link is slow: it counts as busy, asked again after a
// wait, and not as failed. An uploader ends a stream whose reader took no
// byte and did not answer a ping for seconds, and behind a link cut to a
// tenth a reader's streams and pings wait that long, as do the answers to
// its requests, queued behind the bytes of its other streams. Counted as
// failed, the peer would not be asked again, and the node would fetch the
// rest from the registry through the same slow link while whole copies
// sit in the cluster: the registry would send the cluster those bytes
// once more. So for a request the peer did not answer at all: behind a
// link cut to a tenth with its queue full, an answer can take longer than
// the request may wait, though no other stream of that peer's is there to
// show it alive.
func CutByOwnLink(f Failure) bool { return (f.Cut || f.NoAnswer) && f.OwnLinkSlow }

// Step is what a download does with a source in a round.
type Step int

const (
	// Try the source.
	Try Step = iota
	// Pass over the source in this round.
	Pass
	// PassBackedOff: pass over it, the registry having asked to slow down.
	PassBackedOff
	// Stop the round here and wait.
	Stop
)

func (s Step) String() string {
	switch s {
	case Try:
		return "try"
	case Pass:
		return "pass"
	case PassBackedOff:
		return "pass, backed off"
	case Stop:
		return "stop"
	}
	return "unknown"
}

// Limits are the times the download rules count with.
type Limits struct {
	// BusyWait is how long a download before its first byte prefers
	// waiting for a busy peer to asking the registry.
	BusyWait time.Duration
	// BusyRetryFor is how long a download keeps asking again, from its
	// last progress, when every source was busy; once bytes flow it
	// prefers waiting to the registry for half of it.
	BusyRetryFor time.Duration
	// Unreachable is how long the registry is not asked again by a
	// download once it could not be reached.
	Unreachable time.Duration
	// BehindFor is how long, once the download lost a peer, a designated
	// peer that is busy and behind this node gets to pull ahead of it
	// (see NotePeerFailure): the time a peer gets after a lost one (see
	// HandOver).
	BehindFor time.Duration
}

// Download is one download's knowledge across its sources and rounds:
// what failed, when it last made progress, and how long it waits next.
// Its methods are the rules for when a download tries a source, passes
// over it, waits, or gives up.
type Download struct {
	Limits Limits
	// Published says readers can follow the download already: the blob's
	// size was known before any source answered.
	Published bool
	// FailedPeers failed this download and are not asked again by it: a
	// peer listed twice (designated, and a provider) that went silent
	// would cost the stall timeout once more.
	FailedPeers map[string]bool
	// LostPeer: a peer's stream went silent or slow mid-blob; the blob
	// passes to the next in its ranking. LostSlow: slow (see WaitOn).
	LostPeer, LostSlow bool
	// WholeBusy lists the peers that answered busy holding the whole blob,
	// LeaderBusy those that answered busy leading it ahead of this node
	// (see WaitsOnLeader) and have not answered otherwise since (see
	// Holders).
	WholeBusy, LeaderBusy map[string]bool
	// LeftToUs: a designated peer left the blob to this node (see
	// Coordinate): it leads, and asks no other designated peer.
	LeftToUs bool
	// Pointed is the peer a designated peer pointed this download at, as
	// the one fetching the blob or reading it whole (see Fetchers).
	Pointed string
	// LocalFailed: this node's store failed.
	LocalFailed bool
	// RegistryFailed: the registry's last answer was a failure, not a
	// "no" nor a rate limit (see MissFor).
	RegistryFailed bool
	// UnreachableUntil: the registry could not be reached; until then it
	// is not asked again, and peers that hold part of the blob are
	// waited for.
	UnreachableUntil time.Time
	// Progress is how many bytes from the start arrived at ProgressAt:
	// the waits for busy peers count from the last progress, not from the
	// start.
	Progress   int64
	ProgressAt time.Time
	// SwarmProgressAt is when the download last saw the cluster move
	// on: its node received bytes of any blob (NodeReceived), or a busy
	// peer's copy of this blob had grown (see Failed). PeerHave is the
	// most a busy peer said it holds.
	SwarmProgressAt time.Time
	PeerHave        int64
	// BehindSince: when each designated peer first answered busy and
	// behind this node after a lost peer (see NotePeerFailure).
	BehindSince map[string]time.Time
	// Unled lists the relays this download left that said, asked, they
	// did not lead (see AskIfLeadsNow, Reask).
	Unled   map[string]bool
	backoff time.Duration
}

// FirstBackoff is the first wait after a round in which every peer that
// holds the blob was busy; each further wait doubles, up to MaxBackoff.
const (
	FirstBackoff = 50 * time.Millisecond
	MaxBackoff   = time.Second
)

// NewDownload starts a download's knowledge at now.
func NewDownload(l Limits, now time.Time) *Download {
	return &Download{Limits: l, FailedPeers: map[string]bool{}, WholeBusy: map[string]bool{}, LeaderBusy: map[string]bool{}, BehindSince: map[string]time.Time{}, Unled: map[string]bool{}, ProgressAt: now, backoff: FirstBackoff}
}

// Reask says whether peer p, which failed this download, is asked again,
// without waiting, whether it leads now when a round looks the holders up
// again before the registry (see Relist): it is a relay the download left
// that said it did not lead (Unled). A relay whose own source was lost
// takes up the lead a moment after its readers find it slow, as the next
// in the ranking does; asked once as it was left, it said no, and this
// node would lead beside it and have the registry send the rest twice.
// Seen: an unharmed node left a relay 0.4 s before it led, tried two
// harmed peers for 1.8 s, and led beside it. One that leads is taken back
// (see LeadsAgain).
func (d *Download) Reask(p string) bool {
	return d.FailedPeers[p] && d.Unled[p]
}

// LeadsAgain takes p, a peer that failed this download, back as a source:
// asked again, it said it leads now (see Reask).
func (d *Download) LeadsAgain(p string) {
	delete(d.FailedPeers, p)
	delete(d.Unled, p)
}

// BusyLimit is how long, from its last progress, a download prefers
// waiting for a busy peer to asking the registry: before the first byte
// the wait is short, containerd is waiting for an answer; once readers
// follow the download it may be longer.
func (d *Download) BusyLimit() time.Duration {
	if d.Published {
		return d.Limits.BusyRetryFor / 2
	}
	return d.Limits.BusyWait
}

// Idle is the rule for how long a download has waited without progress,
// which the waits for busy peers count (see Skip, WaitAgain): from its own
// last byte; once readers follow it (Published), from the swarm's last
// progress too. A node whose link is busy with its other blobs, or whose
// busy peers are receiving this one, is not stalled: every peer being busy
// is the swarm at work, and asking the registry then would only add to
// the link the whole cluster is waiting on. Before the first byte the
// wait stays short: containerd waits for an answer.
func (d *Download) Idle(now time.Time) time.Duration {
	last := d.ProgressAt
	if d.Published && d.SwarmProgressAt.After(last) {
		last = d.SwarmProgressAt
	}
	return now.Sub(last)
}

// NodeReceived takes in that the download's node received bytes, of any
// blob, at at (see Idle).
func (d *Download) NodeReceived(at time.Time) { d.swarmMoved(at) }

// Progressed is the rule for what counts as the download's progress
// within a round: held, the bytes from the start it holds at now, and
// nodeAt, when its node last received a byte of any blob (zero: none
// yet), both reset Idle; more bytes held also reset the wait after a busy
// round to FirstBackoff (see Backoff). Told before each source of a round,
// not only between rounds: a round reads each source for as long as it
// delivers, and a download that streamed for longer than BusyLimit before
// a peer that holds the blob answered busy, or cut a node whose own link
// is slow (see CutByOwnLink), would find itself idle since the round
// began and ask the registry for bytes the peer holds.
func (d *Download) Progressed(held int64, nodeAt, now time.Time) {
	if held > d.Progress {
		d.Progress, d.ProgressAt = held, now
		d.backoff = FirstBackoff
	}
	if !nodeAt.IsZero() {
		d.swarmMoved(nodeAt)
	}
}

func (d *Download) swarmMoved(at time.Time) {
	if at.After(d.SwarmProgressAt) {
		d.SwarmProgressAt = at
	}
}

// Skip is the rule for whether a round tries src. backedOff says the
// registry asked this node to slow down. A peer that failed this download
// is passed over, and so is a peer silenced since the round began, which
// then counts as failed: the round's list of sources is as old as the
// round, and asking a frozen peer costs the time it takes to find it
// silent again. So is the
// registry while unreachable, and, while backed
// off, every source that would ask it (the registry, a designated peer).
// Once the first designated peer answered busy (it fetches the blob, only
// out of slots), the next designated peers are passed over: they would
// fetch it from the registry a second time, and the peers it feeds come
// next. Once a designated peer left the blob to this node, the others are
// passed over too: the first spoke for the cluster. The registry itself is
// not asked while a peer that holds the blob is only busy, for BusyLimit
// of Idle: the round stops and the download waits, sparing the registry.
func (d *Download) Skip(src Source, st Round, backedOff bool, now time.Time) Step {
	switch {
	case src.Peer != "" && src.Silenced:
		d.FailedPeers[src.Peer] = true
		return Pass
	case src.Peer != "" && d.FailedPeers[src.Peer]:
		return Pass
	case src.Upstream && now.Before(d.UnreachableUntil):
		return Pass
	case backedOff && (src.Upstream || src.Designated):
		return PassBackedOff
	case src.Designated && (st.DesignatedBusy || d.LeftToUs):
		return Pass
	case src.Upstream && st.Busy && d.Idle(now) < d.BusyLimit():
		return Stop
	}
	return Try
}

// Failed takes in why src ended, noting it in st, and says whether the
// round ends here (stop: this node's store failed, or asking again will
// not help) and whether the peer is to be avoided by every download
// (silence: it stopped sending). lead says this node fetches the blob for
// the cluster now (see Leads). A busy peer that holds more of the blob
// than any before it is the swarm's progress (see Idle).
func (d *Download) Failed(src Source, f Failure, lead bool, st *Round, now time.Time) (stop, silence bool) {
	if f.LocalStore {
		// Every other source would fail the same way.
		d.LocalFailed = true
		return true, false
	}
	if f.NotNow && f.Have > d.PeerHave {
		d.PeerHave = f.Have
		d.swarmMoved(now)
	}
	d.RegistryFailed = src.Upstream && f.Unavailable
	if src.Upstream && f.Unreachable {
		d.UnreachableUntil = now.Add(d.Limits.Unreachable)
	}
	if f.RateLimited {
		if src.Peer != "" {
			d.FailedPeers[src.Peer] = true
		}
		return false, false
	}
	silence = d.NotePeerFailure(src, f, lead, st, now)
	return f.Final, silence
}

// NotePeerFailure sorts a peer's failure: busy or still receiving (asked
// again after a wait), holding part of the blob, or failed for this
// download. A node that fetches for the cluster (lead) does not wait for
// a peer that holds part of the blob: the rest would come from this node,
// or from nowhere; unless the peer leads too and is ahead of this node
// (see WaitsOnLeader). A peer handed the rest of a blob after a lost peer
// that sent none of it in time waits on the lost peer too, or has nothing
// to send: it fails. So does a designated peer still busy and behind this
// node BehindFor after it first was, once this download lost a peer: it
// read from the lost peer too, and its own download has not moved past
// this node's since; the node then leads (see Leads) rather than wait
// for it to find its next source, or for its slow link. Once the lost
// peer was slow, a designated peer behind this node that does not lead
// gets only a share of that (see behindFor): it may read the slow peer
// for seconds more (see WaitOn), or it found the peer slow first and is
// on its way to the registry.
// A designated peer that left the blob to this node, or pointed at the
// peer fetching it, did not fail (see Coordinate), nor did a peer that cut
// a node whose own link is slow (see CutByOwnLink). It says whether the
// peer stalled (silence).
func (d *Download) NotePeerFailure(src Source, f Failure, lead bool, st *Round, now time.Time) (silence bool) {
	if !f.Behind {
		delete(d.BehindSince, src.Peer)
	}
	if !(f.NotNow && WaitsOnLeader(f)) {
		delete(d.LeaderBusy, src.Peer)
	}
	switch {
	case src.Peer == "" || f.PointedOn:
	case f.LeftToUs:
		d.LeftToUs = true
	case d.LostPeer && f.NotArriving:
		d.FailedPeers[src.Peer] = true
	case d.LostPeer && src.Designated && f.NotNow && f.Behind && d.behindTooLong(src.Peer, f.Leads, now):
		d.FailedPeers[src.Peer] = true
	case CutByOwnLink(f):
		st.Busy = true
		st.DesignatedBusy = st.DesignatedBusy || src.Designated
	case f.NotNow && f.Whole:
		d.WholeBusy[src.Peer] = true
		st.Busy = true
		st.DesignatedBusy = st.DesignatedBusy || src.Designated
	case f.NotNow && WaitsOnLeader(f):
		d.LeaderBusy[src.Peer] = true
		st.Busy = true
		st.DesignatedBusy = st.DesignatedBusy || src.Designated
	case f.NotNow && !(lead && f.Partial):
		st.Busy = true
		st.DesignatedBusy = st.DesignatedBusy || src.Designated
	case f.NotNow:
		st.HeldInPart = true
	default:
		d.FailedPeers[src.Peer] = true
		d.LostPeer = d.LostPeer || f.Stalled || f.Slow
		d.LostSlow = d.LostSlow || f.Slow
		return f.Stalled
	}
	return false
}

// WaitsOnLeader is the rule for a node that leads a blob and finds a peer
// that holds part of it busy or without the bytes asked for (f): it waits
// for the peer, as a node that does not lead does, when the peer leads the
// blob too and holds more of it than this node. Two nodes each lead when
// both lost the peer before them, and the one behind, taking what the
// other's readers hold and the rest from the registry, would have the
// registry send the rest a second time. The peer stays among the holders
// a round asks while it answers so, though a busy peer ranks low in the
// look-up (see Holders). The wait is bounded as any wait for a busy peer
// is: by Idle (the peer's growing copy, and once readers follow this
// download, this node's bytes of any blob), and, once the peer streams to
// this node, by its rate.
func WaitsOnLeader(f Failure) bool { return f.Leads && !f.Behind }

// behindTooLong notes that designated peer p answered busy and behind
// this node at now, leading or not (leads), and says whether it has been
// so for as long as it gets (see behindFor).
func (d *Download) behindTooLong(p string, leads bool, now time.Time) bool {
	since, ok := d.BehindSince[p]
	if !ok {
		d.BehindSince[p], since = now, now
	}
	return now.Sub(since) >= d.behindFor(leads)
}

// SlowBehindShare: once a download gave a peer up as slow, a designated
// peer behind it that does not lead gets this share of BehindFor to lead
// (see behindFor).
const SlowBehindShare = 3

// behindFor is how long a designated peer busy and behind this node after
// a lost peer gets to pull ahead of it: BehindFor; once the lost peer was
// slow, unless the designated peer leads, BehindFor / SlowBehindShare, in
// which it can only lead: it is read for the bytes it holds only (see
// WaitOn), and such a read ends behind this node however much it sent.
// No one tells a designated peer that a peer is slow: it finds out when
// its own stream does, if ever, so it may read the slow peer for seconds
// more. But it may also have found the peer slow first: between sources
// it holds no more than this node and does not lead yet, as it looks up
// the holders and takes what they hold before it asks the registry, some
// 200-300 ms in the lab. Given up at once, such a peer and this node
// would both lead, and the registry send the rest of the blob twice.
func (d *Download) behindFor(leads bool) time.Duration {
	if d.LostSlow && !leads {
		return d.Limits.BehindFor / SlowBehindShare
	}
	return d.Limits.BehindFor
}

// Holders is the rule for which peers holding the blob a round asks:
// those the look-up found (found: a few, best first), and every peer that
// answered busy while it held the whole blob, or while it led the blob
// ahead of this node (see WaitsOnLeader), even once the look-up no longer
// lists it (a busy holder ranks low, and many peers announce a blob while
// they receive it). While such a peer is only busy the registry is not
// asked (see Skip): otherwise a node that leads, having taken what the
// receiving peers hold, would fetch the rest from the registry while a
// whole copy sits in the cluster, or while another node fetches it.
func (d *Download) Holders(found []string) []string {
	out := slices.Clone(found)
	for _, busy := range []map[string]bool{d.WholeBusy, d.LeaderBusy} {
		for _, p := range slices.Sorted(maps.Keys(busy)) {
			if !slices.Contains(out, p) && !d.FailedPeers[p] {
				out = append(out, p)
			}
		}
	}
	return out
}

// Fetchers is the rule for the peers a download asks first in each round,
// before swarm.Sources, each waited on (it fetches the blob for the
// cluster): the peer this node left the blob to lately (left; "" none),
// unless the download is for a peer, and the peer a designated peer
// pointed the download at in an earlier round (Pointed); neither once it
// failed the download. Remembered only for the round it was named in, a
// pointed-at fetcher would be passed over once the designated peer that
// named it froze mid-stream: this node would lead the blob from the
// registry beside the fetcher already pulling it.
func (d *Download) Fetchers(left string, forPeer bool) []string {
	var out []string
	if left != "" && !forPeer && !d.FailedPeers[left] {
		out = append(out, left)
	}
	if p := d.Pointed; p != "" && p != left && !d.FailedPeers[p] {
		out = append(out, p)
	}
	return out
}

// WaitAgain is the rule for whether a download whose round failed waits
// and tries again rather than failing: a peer that holds the blob was
// only busy, or, while the registry cannot be reached, holds part of it
// (the only sources of the rest, for this node and for containerd); and
// the store did not fail, and the download was idle (see Idle) no longer
// than BusyRetryFor.
func (d *Download) WaitAgain(st Round, now time.Time) bool {
	waitForPeers := st.Busy || (st.HeldInPart && now.Before(d.UnreachableUntil))
	return waitForPeers && !d.LocalFailed && d.Idle(now) <= d.Limits.BusyRetryFor
}

// Backoff is how long to wait before the next round, held says how many
// bytes from the start the node holds now: from FirstBackoff after
// progress, doubling to MaxBackoff while none comes; and no longer than
// until a designated peer behind this node has been so for as long as it
// gets (see behindFor), so that it is given up on time (see
// NotePeerFailure).
func (d *Download) Backoff(held int64, now time.Time) time.Duration {
	d.Progressed(held, time.Time{}, now)
	b := d.backoff
	d.backoff = min(2*d.backoff, MaxBackoff)
	for _, since := range d.BehindSince {
		// Due at the shorter time unless it leads, at the longer if it does.
		for _, leads := range []bool{false, true} {
			if left := since.Add(d.behindFor(leads)).Sub(now); left > 0 && left < b {
				b = left
			}
		}
	}
	return b
}

// How long a blob is a miss after its download failed (see MissFor).
const (
	UnstorableFor     = time.Minute
	RegistryFailedFor = 10 * time.Second
)

// MissFor is the rule for how long a failed download's blob stays a miss,
// so that containerd fetches it from the registry itself: the store could
// not hold it (a full disk), so a resume would fail at the same byte; or
// the registry failed every attempt (5xx, or cut off), so the next request
// would ask it again while containerd, after the miss, fetches the blob
// from it anyway. Zero when the next request should try again.
func (d *Download) MissFor() (time.Duration, string) {
	switch {
	case d.LocalFailed:
		return UnstorableFor, "shoal's store could not hold it lately"
	case d.RegistryFailed:
		return RegistryFailedFor, "the registry failed it lately"
	}
	return 0, ""
}
