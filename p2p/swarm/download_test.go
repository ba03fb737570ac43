package swarm_test

import (
	"slices"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/p2p/swarm"
)

var (
	t0     = time.Unix(1000, 0)
	limits = swarm.Limits{BusyWait: 2 * time.Second, BusyRetryFor: 30 * time.Second, Unreachable: 10 * time.Second}
	peerA  = swarm.Source{Peer: "a"}
	desA   = swarm.Source{Peer: "a", Designated: true}
	desB   = swarm.Source{Peer: "b", Designated: true}
	reg    = swarm.Source{Upstream: true}
)

func TestSkip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		edit      func(d *swarm.Download)
		src       swarm.Source
		st        swarm.Round
		backedOff bool
		at        time.Duration // after t0
		want      swarm.Step
	}{
		{"a peer", nil, peerA, swarm.Round{}, false, 0, swarm.Try},
		{"a peer that failed", func(d *swarm.Download) { d.FailedPeers["a"] = true }, peerA, swarm.Round{}, false, 0, swarm.Pass},
		{"a peer silenced since the round began", nil, swarm.Source{Peer: "a", Silenced: true}, swarm.Round{}, false, 0, swarm.Pass},
		{"a designated peer silenced since the round began", nil, swarm.Source{Peer: "a", Designated: true, Silenced: true}, swarm.Round{}, false, 0, swarm.Pass},
		{"the same peer once it answers again: it failed this download", func(d *swarm.Download) {
			d.Skip(swarm.Source{Peer: "a", Silenced: true}, swarm.Round{}, false, t0)
		}, peerA, swarm.Round{}, false, 0, swarm.Pass},
		{"the registry", nil, reg, swarm.Round{}, false, 0, swarm.Try},
		{"the registry, unreachable", func(d *swarm.Download) { d.UnreachableUntil = t0.Add(time.Second) }, reg, swarm.Round{}, false, 0, swarm.Pass},
		{"the registry, reachable again", func(d *swarm.Download) { d.UnreachableUntil = t0.Add(time.Second) }, reg, swarm.Round{}, false, time.Second, swarm.Try},
		{"the registry, backed off", nil, reg, swarm.Round{}, true, 0, swarm.PassBackedOff},
		{"a designated peer, backed off", nil, desA, swarm.Round{}, true, 0, swarm.PassBackedOff},
		{"a peer, backed off: it may send what it holds", nil, peerA, swarm.Round{}, true, 0, swarm.Try},
		{"the next designated peer after a busy one", nil, desB, swarm.Round{DesignatedBusy: true}, false, 0, swarm.Pass},
		{"the next designated peer after one left the blob to us", func(d *swarm.Download) { d.LeftToUs = true }, desB, swarm.Round{}, false, 0, swarm.Pass},
		{"a holder after a designated peer left the blob to us", func(d *swarm.Download) { d.LeftToUs = true }, peerA, swarm.Round{}, false, 0, swarm.Try},
		{"the registry after a designated peer left the blob to us", func(d *swarm.Download) { d.LeftToUs = true }, reg, swarm.Round{}, false, 0, swarm.Try},
		{"a peer after a busy designated one", nil, peerA, swarm.Round{Busy: true, DesignatedBusy: true}, false, 0, swarm.Try},
		{"the registry, a peer busy: wait", nil, reg, swarm.Round{Busy: true}, false, time.Second, swarm.Stop},
		{"the registry, a peer busy past BusyWait", nil, reg, swarm.Round{Busy: true}, false, 2 * time.Second, swarm.Try},
		{"published: waits up to half BusyRetryFor", func(d *swarm.Download) { d.Published = true }, reg, swarm.Round{Busy: true}, false, 14 * time.Second, swarm.Stop},
		{"published, past half BusyRetryFor", func(d *swarm.Download) { d.Published = true }, reg, swarm.Round{Busy: true}, false, 15 * time.Second, swarm.Try},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := swarm.NewDownload(limits, t0)
			if tc.edit != nil {
				tc.edit(d)
			}
			if got := d.Skip(tc.src, tc.st, tc.backedOff, t0.Add(tc.at)); got != tc.want {
				t.Fatalf("Skip = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestFailed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		lostPeer      bool
		src           swarm.Source
		f             swarm.Failure
		lead          bool
		stop, silence bool
		st            swarm.Round
		failedPeer    bool
		check         func(d *swarm.Download) bool
	}{
		{name: "the store failed: stop", src: peerA, f: swarm.Failure{LocalStore: true}, stop: true,
			check: func(d *swarm.Download) bool { return d.LocalFailed }},
		{name: "the registry failed", src: reg, f: swarm.Failure{Unavailable: true},
			check: func(d *swarm.Download) bool { return d.RegistryFailed }},
		{name: "a peer unavailable is no registry failure", src: peerA, f: swarm.Failure{Unavailable: true}, failedPeer: true,
			check: func(d *swarm.Download) bool { return !d.RegistryFailed }},
		{name: "the registry unreachable", src: reg, f: swarm.Failure{Unreachable: true},
			check: func(d *swarm.Download) bool { return d.UnreachableUntil.Equal(t0.Add(limits.Unreachable)) }},
		{name: "rate limited by a peer", src: desA, f: swarm.Failure{RateLimited: true, NotNow: true}, failedPeer: true},
		{name: "the registry says no: stop", src: reg, f: swarm.Failure{Final: true}, stop: true},
		{name: "busy", src: peerA, f: swarm.Failure{NotNow: true}, st: swarm.Round{Busy: true}},
		{name: "designated busy", src: desA, f: swarm.Failure{NotNow: true}, st: swarm.Round{Busy: true, DesignatedBusy: true}},
		{name: "partial, not leading: wait", src: peerA, f: swarm.Failure{NotNow: true, Partial: true}, st: swarm.Round{Busy: true}},
		{name: "partial, leading: not waited for", src: peerA, f: swarm.Failure{NotNow: true, Partial: true}, lead: true, st: swarm.Round{HeldInPart: true}},
		{name: "partial, leading, the peer leads and is ahead: waited for", src: peerA, f: swarm.Failure{NotNow: true, Partial: true, Leads: true, Have: 300}, lead: true, st: swarm.Round{Busy: true}},
		{name: "partial, leading, the peer leads and is behind: not waited for", src: peerA, f: swarm.Failure{NotNow: true, Partial: true, Leads: true, Have: 100, Behind: true}, lead: true, st: swarm.Round{HeldInPart: true}},
		{name: "busy holding it whole, leading: waited for and kept", src: peerA, f: swarm.Failure{NotNow: true, Whole: true}, lead: true, st: swarm.Round{Busy: true},
			check: func(d *swarm.Download) bool { return d.WholeBusy["a"] }},
		{name: "busy, not said whole: not kept", src: peerA, f: swarm.Failure{NotNow: true}, st: swarm.Round{Busy: true},
			check: func(d *swarm.Download) bool { return len(d.WholeBusy) == 0 }},
		{name: "not arriving after a lost peer", lostPeer: true, src: peerA, f: swarm.Failure{NotNow: true, NotArriving: true}, failedPeer: true},
		{name: "not arriving", src: peerA, f: swarm.Failure{NotNow: true, NotArriving: true}, st: swarm.Round{Busy: true}},
		{name: "stalled: silenced, lost", src: peerA, f: swarm.Failure{Stalled: true}, silence: true, failedPeer: true,
			check: func(d *swarm.Download) bool { return d.LostPeer }},
		{name: "slow: lost", src: peerA, f: swarm.Failure{Slow: true}, failedPeer: true,
			check: func(d *swarm.Download) bool { return d.LostPeer }},
		{name: "left to us: no failure, this node leads", src: desA, f: swarm.Failure{LeftToUs: true},
			check: func(d *swarm.Download) bool { return d.LeftToUs }},
		{name: "pointed at the fetcher: no failure", src: desA, f: swarm.Failure{PointedOn: true},
			check: func(d *swarm.Download) bool { return !d.LeftToUs && !d.LostPeer }},
		{name: "cut while the own link is slow: busy", src: peerA, f: swarm.Failure{Cut: true, OwnLinkSlow: true}, st: swarm.Round{Busy: true}},
		{name: "designated, cut while the own link is slow: busy", src: desA, f: swarm.Failure{Cut: true, OwnLinkSlow: true}, lead: true, st: swarm.Round{Busy: true, DesignatedBusy: true}},
		{name: "cut while the own link is fine: failed", src: peerA, f: swarm.Failure{Cut: true}, failedPeer: true},
		{name: "no answer while the own link is slow: busy", src: peerA, f: swarm.Failure{NoAnswer: true, OwnLinkSlow: true}, st: swarm.Round{Busy: true}},
		{name: "no answer while the own link is fine: failed", src: peerA, f: swarm.Failure{NoAnswer: true}, failedPeer: true},
		{name: "another failure", src: peerA, f: swarm.Failure{}, failedPeer: true,
			check: func(d *swarm.Download) bool { return !d.LostPeer }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := swarm.NewDownload(limits, t0)
			d.LostPeer = tc.lostPeer
			var st swarm.Round
			stop, silence := d.Failed(tc.src, tc.f, tc.lead, &st, t0)
			if stop != tc.stop || silence != tc.silence || st != tc.st {
				t.Fatalf("Failed = stop %v, silence %v, %+v; want %v, %v, %+v", stop, silence, st, tc.stop, tc.silence, tc.st)
			}
			if d.FailedPeers[tc.src.Peer] != tc.failedPeer {
				t.Fatalf("the peer failed the download: %v, want %v", d.FailedPeers[tc.src.Peer], tc.failedPeer)
			}
			if tc.check != nil && !tc.check(d) {
				t.Fatalf("download after: %+v", d)
			}
		})
	}
}

// TestBusyDesignatedBehind: after a lost peer, a designated peer that
// answers busy while it holds no more than this node is waited on for
// BehindFor from its first such answer, then fails the download, and this
// node leads. One that pulled ahead meanwhile starts the count again;
// before any loss, or ahead of this node, busy is only busy. After a peer
// lost as slow, one behind that does not lead gets a share of BehindFor
// (SlowBehindShare); one that leads, or leads by its next answer, gets the
// whole of it.
func TestBusyDesignatedBehind(t *testing.T) {
	t.Parallel()
	l := limits
	l.BehindFor = time.Second
	behind := swarm.Failure{NotNow: true, Partial: true, Have: 100, Behind: true}
	ahead := swarm.Failure{NotNow: true, Partial: true, Have: 300}
	type answer struct {
		at     time.Duration
		f      swarm.Failure
		failed bool
	}
	behindLeads := behind
	behindLeads.Leads = true
	tests := []struct {
		name     string
		lostPeer bool
		lostSlow bool
		src      swarm.Source
		answers  []answer
	}{
		{"behind after a loss: failed after BehindFor", true, false, desA, []answer{
			{0, behind, false}, {400 * time.Millisecond, behind, false}, {time.Second, behind, true}}},
		{"pulled ahead meanwhile: counted again", true, false, desA, []answer{
			{0, behind, false}, {500 * time.Millisecond, ahead, false}, {time.Second, behind, false},
			{1900 * time.Millisecond, behind, false}, {2 * time.Second, behind, true}}},
		{"behind, no loss: busy only", false, false, desA, []answer{
			{0, behind, false}, {5 * time.Second, behind, false}}},
		{"a holder behind after a loss: busy only", true, false, peerA, []answer{
			{0, behind, false}, {5 * time.Second, behind, false}}},
		{"behind after a slow peer: failed after a share of BehindFor", true, true, desA, []answer{
			{0, behind, false}, {200 * time.Millisecond, behind, false}, {time.Second / swarm.SlowBehindShare, behind, true}}},
		{"behind after a slow peer, and it leads now: waited on", true, true, desA, []answer{
			{0, behindLeads, false}, {500 * time.Millisecond, behindLeads, false}}},
		{"behind after a slow peer, then it leads: waited on", true, true, desA, []answer{
			{0, behind, false}, {200 * time.Millisecond, behindLeads, false}, {500 * time.Millisecond, behindLeads, false}}},
		{"ahead after a slow peer: busy only", true, true, desA, []answer{
			{0, ahead, false}, {5 * time.Second, ahead, false}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := swarm.NewDownload(l, t0)
			d.LostPeer, d.LostSlow = tc.lostPeer, tc.lostSlow
			for i, a := range tc.answers {
				var st swarm.Round
				d.Failed(tc.src, a.f, false, &st, t0.Add(a.at))
				if d.FailedPeers[tc.src.Peer] != a.failed {
					t.Fatalf("answer %d at %v: the peer failed the download: %v, want %v", i, a.at, d.FailedPeers[tc.src.Peer], a.failed)
				}
				if st.Busy == a.failed {
					t.Fatalf("answer %d at %v: the round waits for the peer: %v, want %v", i, a.at, st.Busy, !a.failed)
				}
			}
			if last := tc.answers[len(tc.answers)-1]; last.failed && !swarm.Leads(true, []string{"x", tc.src.Peer}, map[string]bool{"x": true, tc.src.Peer: true}) {
				t.Fatal("this node does not lead once the designated peers above it failed")
			}
		})
	}
}

// TestBackoffUntilBehindIsDue: a designated peer behind this node is asked
// again by the time it is due (BehindFor, or its share after a slow peer
// unless the peer leads), not after the longer back-off.
func TestBackoffUntilBehindIsDue(t *testing.T) {
	t.Parallel()
	l := limits
	l.BehindFor = time.Second
	d := swarm.NewDownload(l, t0)
	d.LostPeer = true
	for range 4 {
		d.Backoff(0, t0) // 50, 100, 200, 400 ms: the next is 800 ms
	}
	var st swarm.Round
	d.Failed(desA, swarm.Failure{NotNow: true, Behind: true}, false, &st, t0.Add(500*time.Millisecond))
	if got, want := d.Backoff(0, t0.Add(time.Second)), 500*time.Millisecond; got != want {
		t.Fatalf("Backoff = %v, want %v: the peer is due then", got, want)
	}

	// After a slow peer, a designated peer behind is due sooner.
	d = swarm.NewDownload(l, t0)
	d.LostPeer, d.LostSlow = true, true
	d.Failed(desA, swarm.Failure{NotNow: true, Behind: true}, false, &st, t0)
	if got, want := d.Backoff(0, t0.Add(100*time.Millisecond)), 50*time.Millisecond; got != want {
		t.Fatalf("Backoff = %v, want %v: the first back-off is shorter than the peer's time", got, want)
	}
	d.Backoff(0, t0.Add(100*time.Millisecond)) // 100 ms; the next would be 200 ms
	if got, want := d.Backoff(0, t0.Add(200*time.Millisecond)), time.Second/swarm.SlowBehindShare-200*time.Millisecond; got != want {
		t.Fatalf("Backoff = %v, want %v: the peer is due then", got, want)
	}

	// One that leads is due at BehindFor: asked then, not a back-off later.
	d.Failed(desA, swarm.Failure{NotNow: true, Behind: true, Leads: true}, false, &st, t0.Add(400*time.Millisecond))
	for range 4 {
		d.Backoff(0, t0.Add(400*time.Millisecond)) // up to 1 s
	}
	if got, want := d.Backoff(0, t0.Add(800*time.Millisecond)), 200*time.Millisecond; got != want {
		t.Fatalf("Backoff = %v, want %v: the leading peer is due then", got, want)
	}
}

func TestWaitAgain(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		st          swarm.Round
		unreachable bool
		localFailed bool
		at          time.Duration
		want        bool
	}{
		{"nothing busy", swarm.Round{}, false, false, 0, false},
		{"a peer busy", swarm.Round{Busy: true}, false, false, 0, true},
		{"a peer busy, no progress for BusyRetryFor", swarm.Round{Busy: true}, false, false, 31 * time.Second, false},
		{"a peer busy, the store failed", swarm.Round{Busy: true}, false, true, 0, false},
		{"held in part", swarm.Round{HeldInPart: true}, false, false, 0, false},
		{"held in part, the registry unreachable", swarm.Round{HeldInPart: true}, true, false, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := swarm.NewDownload(limits, t0)
			d.LocalFailed = tc.localFailed
			if tc.unreachable {
				d.UnreachableUntil = t0.Add(time.Minute)
			}
			if got := d.WaitAgain(tc.st, t0.Add(tc.at)); got != tc.want {
				t.Fatalf("WaitAgain = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	d := swarm.NewDownload(limits, t0)
	steps := []struct {
		held int64
		want time.Duration
	}{
		{0, 50 * time.Millisecond},
		{0, 100 * time.Millisecond},
		{0, 200 * time.Millisecond},
		{0, 400 * time.Millisecond},
		{0, 800 * time.Millisecond},
		{0, time.Second},
		{0, time.Second},
		{10, 50 * time.Millisecond}, // progress: from the start again
		{10, 100 * time.Millisecond},
	}
	for i, s := range steps {
		at := t0.Add(time.Duration(i) * time.Second)
		if got := d.Backoff(s.held, at); got != s.want {
			t.Fatalf("step %d: Backoff = %v, want %v", i, got, s.want)
		}
	}
	if d.Progress != 10 || !d.ProgressAt.Equal(t0.Add(7*time.Second)) {
		t.Errorf("progress %d at %v, want 10 at step 7", d.Progress, d.ProgressAt)
	}
}

func TestMissFor(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                   string
		localFailed, regFailed bool
		want                   time.Duration
	}{
		{"try again", false, false, 0},
		{"the store failed", true, false, swarm.UnstorableFor},
		{"the registry failed", false, true, swarm.RegistryFailedFor},
		{"both: the store's", true, true, swarm.UnstorableFor},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := swarm.NewDownload(limits, t0)
			d.LocalFailed, d.RegistryFailed = tc.localFailed, tc.regFailed
			if got, _ := d.MissFor(); got != tc.want {
				t.Fatalf("MissFor = %v, want %v", got, tc.want)
			}
		})
	}
}

// A peer that answered busy holding the whole blob, or leading it ahead of
// this node, is asked again in the next rounds even when the look-up no
// longer lists it, once, and not after it failed the download, or, for
// the leader, answered otherwise.
func TestHoldersAskedAgain(t *testing.T) {
	t.Parallel()
	d := swarm.NewDownload(limits, t0)
	var st swarm.Round
	d.Failed(swarm.Source{Peer: "whole"}, swarm.Failure{NotNow: true, Whole: true}, true, &st, t0)
	d.Failed(swarm.Source{Peer: "part"}, swarm.Failure{NotNow: true, Partial: true}, true, &st, t0)
	for _, tc := range []struct {
		found, want []string
	}{
		{found: []string{"x", "y"}, want: []string{"x", "y", "whole"}},
		{found: []string{"whole", "x"}, want: []string{"whole", "x"}},
		{found: nil, want: []string{"whole"}},
	} {
		if got := d.Holders(tc.found); !slices.Equal(got, tc.want) {
			t.Errorf("Holders(%v) = %v, want %v", tc.found, got, tc.want)
		}
	}
	d.Failed(swarm.Source{Peer: "whole"}, swarm.Failure{Stalled: true}, true, &st, t0)
	if got := d.Holders([]string{"x"}); !slices.Equal(got, []string{"x"}) {
		t.Errorf("Holders after the whole holder stalled = %v, want [x]", got)
	}

	// A peer busy while it leads the blob ahead of this node is asked
	// again, until it answers otherwise.
	leader := swarm.Source{Peer: "leader"}
	d.Failed(leader, swarm.Failure{NotNow: true, Partial: true, Leads: true, Have: 300}, true, &st, t0)
	if got := d.Holders([]string{"x"}); !slices.Equal(got, []string{"x", "leader"}) {
		t.Errorf("Holders after a leading peer was busy = %v, want [x leader]", got)
	}
	d.Failed(leader, swarm.Failure{NotNow: true, Partial: true, Have: 300}, true, &st, t0)
	if got := d.Holders([]string{"x"}); !slices.Equal(got, []string{"x"}) {
		t.Errorf("Holders after it answered busy without leading = %v, want [x]", got)
	}
}

func TestFetchers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name          string
		left, pointed string
		forPeer       bool
		failed        []string
		want          []string
	}{
		{name: "none", want: nil},
		{name: "the peer the blob was left to", left: "l", want: []string{"l"}},
		{name: "not for a peer's download", left: "l", forPeer: true, want: nil},
		{name: "the peer pointed at, in a peer's download too", pointed: "p", forPeer: true, want: []string{"p"}},
		{name: "both, the one left to first", left: "l", pointed: "p", want: []string{"l", "p"}},
		{name: "the same peer once", left: "l", pointed: "l", want: []string{"l"}},
		{name: "not once they failed", left: "l", pointed: "p", failed: []string{"l", "p"}, want: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := swarm.NewDownload(limits, t0)
			d.Pointed = tc.pointed
			for _, p := range tc.failed {
				d.FailedPeers[p] = true
			}
			if got := d.Fetchers(tc.left, tc.forPeer); !slices.Equal(got, tc.want) {
				t.Fatalf("Fetchers = %v, want %v", got, tc.want)
			}
		})
	}
}

// A download whose peers are all busy waits while its node receives other
// blobs, or while a busy peer's copy grows: only once readers follow it.
func TestIdle(t *testing.T) {
	t.Parallel()
	busy := swarm.Round{Busy: true}
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }

	t.Run("its node received bytes", func(t *testing.T) {
		t.Parallel()
		d := swarm.NewDownload(limits, t0)
		d.Published = true
		d.NodeReceived(at(14))
		if got := d.Skip(reg, busy, false, at(20)); got != swarm.Stop {
			t.Errorf("6 s after the node's last byte: %v, want stop (wait for the busy peer)", got)
		}
		if got := d.Skip(reg, busy, false, at(29)); got != swarm.Try {
			t.Errorf("15 s after the node's last byte: %v, want try", got)
		}
		if !d.WaitAgain(busy, at(44)) || d.WaitAgain(busy, at(45)) {
			t.Errorf("WaitAgain must hold up to BusyRetryFor after the node's last byte, and no longer")
		}
	})
	t.Run("not published: containerd waits for an answer", func(t *testing.T) {
		t.Parallel()
		d := swarm.NewDownload(limits, t0)
		d.NodeReceived(at(1))
		if got := d.Skip(reg, busy, false, at(2)); got != swarm.Try {
			t.Errorf("unpublished, 2 s in: %v, want try (the node's bytes do not count)", got)
		}
	})
	t.Run("its own bytes within a round", func(t *testing.T) {
		t.Parallel()
		d := swarm.NewDownload(limits, t0)
		d.Published = true
		// A round begins at 0 and reads a peer until 20 s, when the
		// peer answers busy.
		d.Progressed(0, time.Time{}, t0)
		d.Progressed(8<<20, time.Time{}, at(20))
		if got := d.Skip(reg, busy, false, at(20)); got != swarm.Stop {
			t.Errorf("20 s into a round that read bytes until then: %v, want stop", got)
		}
		if got := d.Skip(reg, busy, false, at(35)); got != swarm.Try {
			t.Errorf("15 s after its last byte: %v, want try", got)
		}
		if got := d.Backoff(8<<20, at(20)); got != swarm.FirstBackoff {
			t.Errorf("the wait after progress within the round: %v, want %v", got, swarm.FirstBackoff)
		}
	})
	t.Run("a busy peer's copy grows", func(t *testing.T) {
		t.Parallel()
		d := swarm.NewDownload(limits, t0)
		d.Published = true
		var st swarm.Round
		d.Failed(peerA, swarm.Failure{NotNow: true, Partial: true, Have: 10}, false, &st, at(10))
		d.Failed(peerA, swarm.Failure{NotNow: true, Partial: true, Have: 10}, false, &st, at(20))
		if got := d.Skip(reg, busy, false, at(24)); got != swarm.Stop {
			t.Errorf("14 s after the peer's copy grew: %v, want stop", got)
		}
		if got := d.Skip(reg, busy, false, at(25)); got != swarm.Try {
			t.Errorf("15 s after the peer's copy last grew: %v, want try (the same answer again is no progress)", got)
		}
	})
}

// TestReask: a relay the download left, which said it did not lead, is
// asked again at the registry's turn; taken back once it leads, it is a
// source again. A peer that failed otherwise (silent, cut) is not asked.
func TestReask(t *testing.T) {
	t.Parallel()
	d := swarm.NewDownload(swarm.Limits{}, time.Unix(1000, 0))
	d.FailedPeers["relay"], d.Unled["relay"] = true, true
	d.FailedPeers["frozen"] = true
	if !d.Reask("relay") {
		t.Error("a relay left unled is not asked again")
	}
	if d.Reask("frozen") {
		t.Error("a peer that went silent is asked again")
	}
	if d.Reask("other") {
		t.Error("a peer that did not fail is asked again: it is in the list as it is")
	}
	d.LeadsAgain("relay")
	if d.FailedPeers["relay"] || d.Reask("relay") {
		t.Error("a relay that leads now still counts as failed")
	}
}

// TestLostSlow: a peer's stream given up as slow marks the download as
// having lost a peer to slowness (see WaitOn); one given up as silent
// marks it as having lost a peer only: a silent peer is told to the mesh,
// and the designated peers find it silent too.
func TestLostSlow(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name           string
		f              swarm.Failure
		lost, lostSlow bool
	}{
		{"slow", swarm.Failure{Slow: true}, true, true},
		{"silent", swarm.Failure{Stalled: true}, true, false},
		{"busy", swarm.Failure{NotNow: true}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := swarm.NewDownload(limits, t0)
			var st swarm.Round
			d.Failed(peerA, tc.f, false, &st, t0)
			if d.LostPeer != tc.lost || d.LostSlow != tc.lostSlow {
				t.Fatalf("lost a peer %v, to slowness %v; want %v, %v", d.LostPeer, d.LostSlow, tc.lost, tc.lostSlow)
			}
		})
	}
}
