package resolver

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/p2p/swarm"
)

// feed has each Read wait gap for k bytes, from *now for d, checking the
// pace after each; it returns the first verdict.
func feed(p *pace, node *nodePace, now *time.Time, d, gap time.Duration, k int) error {
	for end := now.Add(d); now.Before(end); {
		p.reading(*now)
		*now = now.Add(gap)
		p.read(*now, k)
		if node != nil {
			node.read(*now, k)
		}
		if err := p.check(*now, node); err != nil {
			return err
		}
	}
	return nil
}

// measuredStream starts a node's pace at *now with one stream from peer,
// fed k bytes per gap for two seconds: both have a best.
func measuredStream(t *testing.T, now *time.Time, peer string, gap time.Duration, k int) (*nodePace, *pace) {
	t.Helper()
	node := newNodePace(time.Second)
	node.p.at = *now
	node.open(peer, 1)
	p := newPace(*now, 500*time.Millisecond, 10*time.Second, time.Second)
	if err := feed(p, node, now, 2*time.Second, gap, k); err != nil {
		t.Fatalf("a steady stream: %v", err)
	}
	return node, p
}

// nodeWithBest starts a node's pace at *now whose best came from a stream
// of k bytes per gap for two seconds, now ended.
func nodeWithBest(now *time.Time, gap time.Duration, k int) *nodePace {
	node := newNodePace(time.Second)
	node.p.at = *now
	for end := now.Add(2 * time.Second); now.Before(end); *now = now.Add(gap) {
		node.read(*now, k)
	}
	return node
}

func TestPaceSilence(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	p := newPace(now, 500*time.Millisecond, 10*time.Second, time.Second)
	if err := feed(p, nil, &now, 3*time.Second, 5*time.Millisecond, 64<<10); err != nil {
		t.Fatalf("a steady stream: %v", err)
	}
	p.reading(now)
	if err := p.check(now.Add(450*time.Millisecond), nil); err != nil {
		t.Fatalf("450ms quiet, under PeerStall: %v", err)
	}
	if err := p.check(now.Add(500*time.Millisecond), nil); !errors.Is(err, errStalled) {
		t.Fatalf("500ms quiet: %v, want silent", err)
	}

	// A stream whose reads come 200ms apart gets 8 of its gaps.
	now = time.Unix(2000, 0)
	p = newPace(now, 500*time.Millisecond, 10*time.Second, time.Second)
	if err := feed(p, nil, &now, 3*time.Second, 200*time.Millisecond, 64<<10); err != nil {
		t.Fatalf("a bursty stream: %v", err)
	}
	p.reading(now)
	if err := p.check(now.Add(time.Second), nil); err != nil {
		t.Fatalf("1s quiet after 200ms gaps: %v", err)
	}
	if err := p.check(now.Add(1600*time.Millisecond), nil); !errors.Is(err, errStalled) {
		t.Fatalf("1.6s quiet after 200ms gaps: %v, want silent", err)
	}

	// Never past StallTimeout, whatever the gaps.
	now = time.Unix(3000, 0)
	p = newPace(now, 500*time.Millisecond, 2*time.Second, time.Second)
	if err := feed(p, nil, &now, 5*time.Second, time.Second, 64<<10); err != nil {
		t.Fatalf("a stream with 1s gaps: %v", err)
	}
	p.reading(now)
	if err := p.check(now.Add(2*time.Second), nil); !errors.Is(err, errStalled) {
		t.Fatalf("2s quiet with a 2s StallTimeout: %v, want silent", err)
	}

	// A download held up by its own side (each Read returns at once, but
	// comes 600ms after the last): the peer is not silent, nor slow.
	now = time.Unix(4000, 0)
	p = newPace(now, 500*time.Millisecond, 10*time.Second, time.Second)
	if err := feed(p, nil, &now, 2*time.Second, 5*time.Millisecond, 64<<10); err != nil {
		t.Fatalf("a steady stream: %v", err)
	}
	for range 10 {
		now = now.Add(600 * time.Millisecond)
		if err := p.check(now, nil); err != nil {
			t.Fatalf("a download that reads every 600ms: %v", err)
		}
		p.reading(now)
		p.read(now, 64<<10)
	}
}

func TestPaceSlow(t *testing.T) {
	t.Parallel()
	const fast, gap = 32 << 10, 10 * time.Millisecond // 3.2 MB/s
	tests := []struct {
		name string
		// others is what the node's other streams receive per gap, after
		// the drop; streams is how many streams it has then.
		others  int
		streams int
		// samePeer: the other streams come from this stream's peer.
		samePeer bool
		// drop is what this stream receives per gap after the drop.
		drop int
		want error
	}{
		{name: "alone, a tenth of its rate", drop: fast / 10, streams: 1, want: errSlow},
		{name: "alone, a quarter of its rate", drop: fast / 4, streams: 1},
		{name: "beside busy streams, a tenth of an even share", others: fast, drop: fast / 40, streams: 4, want: errSlow},
		{name: "sharing a busy link evenly with 15 others", others: fast * 15 / 16, drop: fast / 16, streams: 16},
		{name: "the node's own link cut to a tenth, every peer with it", others: 2 * fast / 10, drop: fast / 10, streams: 3},
		{name: "a tenth, beside a stream from another peer at its full rate", others: fast, drop: fast / 10, streams: 2, want: errSlow},
		{name: "a tenth, as another stream from the same peer", others: fast / 10, drop: fast / 10, streams: 2, samePeer: true, want: errSlow},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			now := time.Unix(1000, 0)
			node, p := measuredStream(t, &now, "peer", gap, fast)
			for i := 1; i < tt.streams; i++ {
				other := fmt.Sprintf("other%d", i)
				if tt.samePeer {
					other = "peer"
				}
				node.open(other, 1)
			}
			var err error
			for end := now.Add(3 * time.Second); err == nil && now.Before(end); {
				p.reading(now)
				now = now.Add(gap)
				node.read(now, tt.others)
				p.read(now, tt.drop)
				node.read(now, tt.drop)
				err = p.check(now, node)
			}
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("verdict %v, want %v", err, tt.want)
			}
		})
	}
}

// TestOwnLinkExcusesSilence: a stream's silence is laid to the node's own
// link only while every other stream of the node still delivers, each far
// below its best.
func TestOwnLinkExcusesSilence(t *testing.T) {
	t.Parallel()
	const fast, gap = 32 << 10, 10 * time.Millisecond // 3.2 MB/s
	tests := []struct {
		name string
		// other is what the node's other stream receives per gap after the
		// drop; none: it has no other stream.
		other int
		none  bool
		quiet time.Duration // how long the silent stream has been quiet
		want  bool
	}{
		{name: "the other stream trickles at a tenth", other: fast / 10, quiet: time.Second, want: true},
		{name: "the other stream trickles, but the silence is too long", other: fast / 10, quiet: 3 * time.Second},
		{name: "the other stream flows at its full rate", other: fast, quiet: time.Second},
		{name: "the other stream is silent too (a relay of the silent peer)", other: 0, quiet: time.Second},
		{name: "no other stream", none: true, quiet: time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			now := time.Unix(1000, 0)
			node := newNodePace(time.Second)
			newJudge := func(peer string) *judge {
				j := &judge{p: newPace(now, 500*time.Millisecond, 10*time.Second, time.Second), node: node, peer: peer}
				node.join(j)
				return j
			}
			silent := newJudge("silent")
			var other *judge
			if !tt.none {
				other = newJudge("other")
			}
			// Two seconds at the full rate, each stream.
			for end := now.Add(2 * time.Second); now.Before(end); now = now.Add(gap) {
				for _, j := range []*judge{silent, other} {
					if j != nil {
						j.p.reading(now)
						j.p.read(now.Add(gap), fast)
					}
				}
			}
			// Then the other stream's second after the drop.
			silent.p.reading(now)
			for end := now.Add(time.Second); now.Before(end); now = now.Add(gap) {
				if other != nil {
					other.p.reading(now)
					other.p.read(now.Add(gap), tt.other)
					other.trickles.Store(other.p.trickling())
				}
			}
			if got := silent.excused(tt.quiet, silent.p.silence()); got != tt.want {
				t.Fatalf("excused = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestIdleLinkSlow: a stream slow from its first byte is not slow by its
// own best; it is by the node's, when the node's link is mostly idle, or
// busy with other streams that get many times its share, unless it
// relays.
func TestIdleLinkSlow(t *testing.T) {
	t.Parallel()
	const fast, gap = 32 << 10, 10 * time.Millisecond // 3.2 MB/s
	tests := []struct {
		name string
		// rate is what this stream receives per gap from its first byte;
		// others what the node's other streams receive per gap meanwhile,
		// from otherPeers peers.
		rate, others, otherPeers int
		// burst: the stream's bytes come this far apart, all at once
		// (0: every gap), so that it is too bursty to measure over a
		// window.
		burst time.Duration
		// relayed: the stream is past the bytes the peer held.
		relayed bool
		want    error
		// within: a verdict comes this soon after the stream opened (0:
		// any time).
		within time.Duration
	}{
		{name: "a thirtieth of the node's best, the link idle", rate: fast / 30, want: errSlow},
		{name: "a tenth of the node's best, alone: the node's own link cut to a tenth", rate: fast / 10},
		{name: "a thirtieth, the link busy with another peer's stream: starved", rate: fast / 30, others: fast * 3 / 4, otherPeers: 1, want: errSlow},
		// Left only if a ping shows the relay's own link holds it up:
		// see TestStarvedRelayLeftWhenItsLinkIsFull.
		{name: "a thirtieth, relayed, the link busy with another peer's stream: in doubt", rate: fast / 30, others: fast * 3 / 4, otherPeers: 1, relayed: true, want: errRelayInDoubt},
		{name: "a tenth, relayed, the link busy with another peer's stream", rate: fast / 10, others: fast * 3 / 4, otherPeers: 1, relayed: true},
		{name: "a thirtieth, one of eight streams sharing a busy link", rate: fast / 30, others: 7 * fast / 10, otherPeers: 7},
		{name: "a tenth, the link busy with another peer's stream", rate: fast / 10, others: fast * 3 / 4, otherPeers: 1},
		{name: "a thirtieth, beside another peer as slow: the node's own link", rate: fast / 30, others: fast / 30, otherPeers: 1},
		{name: "a thirtieth, beside a stream at half its rate, the link still idle", rate: fast / 30, others: fast / 60, otherPeers: 1, want: errSlow},
		{name: "a thirtieth, beside streams that bring more: a cut link they share", rate: fast / 30, others: fast / 20, otherPeers: 2},
		// Left once measured over as long as its silence may last (eight
		// gaps of 300ms), from the start of its first window.
		{name: "a thirtieth in bursts 300ms apart, the link idle", rate: fast / 30, burst: 300 * time.Millisecond, want: errSlow, within: 2600 * time.Millisecond},
		{name: "a tenth in bursts 300ms apart, alone", rate: fast / 10, burst: 300 * time.Millisecond},
		// In doubt over the span since it turned bursty, not the ten
		// seconds its silence may last.
		{name: "a thirtieth in bursts 1.5s apart, relayed, the link busy: in doubt", rate: fast / 30, burst: 1500 * time.Millisecond, others: fast * 3 / 4, otherPeers: 1, relayed: true, want: errRelayInDoubt, within: 3500 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			now := time.Unix(1000, 0)
			node := nodeWithBest(&now, gap, fast)
			node.open("peer", 1)
			for i := range tt.otherPeers {
				node.open(fmt.Sprintf("other%d", i), 1)
			}
			p := newPace(now, 500*time.Millisecond, 10*time.Second, time.Second)
			p.relayed = tt.relayed
			burst, span := max(tt.burst, gap), 3*time.Second
			if tt.burst > 0 {
				// Measured once bursty for as long as its silence may last.
				span = 5 * time.Second
			}
			var err error
			p.reading(now)
			opened := now
			for last, end := now, now.Add(span); err == nil && now.Before(end); {
				now = now.Add(gap)
				k := 0
				if now.Sub(last) >= burst {
					k, last = tt.rate*int(burst/gap), now
					p.read(now, k)
					p.reading(now)
				}
				node.read(now, k+tt.others)
				err = p.check(now, node)
			}
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) || (tt.want == errSlow && errors.Is(err, errRelayInDoubt)) {
				t.Fatalf("verdict %v, want %v", err, tt.want)
			}
			if took := now.Sub(opened); tt.within > 0 && took > tt.within {
				t.Fatalf("verdict %v after %v, want it within %v", err, took, tt.within)
			}
		})
	}
}

// TestStarvedRelayLeftWhenItsLinkIsFull: a relay that brings a thirtieth
// of the node's best while another peer's stream keeps the node's link
// busy is left as slow when a ping shows its own link holds it up (its
// answer queued behind what it sends, or did not come, while another
// peer's came at once) twice in a row, and not asked once more; it is
// kept when the pings do not show that (it may be as slow as its own
// source), or when the judge cannot ask.
func TestStarvedRelayLeftWhenItsLinkIsFull(t *testing.T) {
	t.Parallel()
	const fast, gap = 32 << 10, 10 * time.Millisecond // 3.2 MB/s
	for _, tc := range []struct {
		name   string
		pings  bool // the judge can ask
		queued bool // the relay's answer waits behind its bytes, another's comes at once
		once   bool // …only at every other probe
		want   error
	}{
		{name: "the relay's answer queued", pings: true, queued: true, want: errSlow},
		{name: "the relay's answer queued once, not the next time", pings: true, queued: true, once: true},
		{name: "the relay's answer not queued, or no other answers", pings: true},
		{name: "no way to ask"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			now := time.Unix(1000, 0)
			node := nodeWithBest(&now, gap, fast)
			node.open("relay", 1)
			node.open("other", 1)
			p := newPace(now, 500*time.Millisecond, 10*time.Second, time.Second)
			p.relayed = true
			j := &judge{p: p, node: node, peer: "relay"}
			asked, pinged := 0, 0
			if tc.pings {
				j.peerLinkFull = func() bool { asked++; return tc.queued && (!tc.once || asked%2 == 1) }
			}
			j.probe = func() bool { pinged++; return true }
			var err error
			opened := now
			for end := now.Add(4 * time.Second); err == nil && now.Before(end); {
				p.reading(now)
				now = now.Add(gap)
				p.read(now, fast/30)
				node.read(now, fast/30+fast*3/4)
				err = j.verdict(now)
			}
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) || errors.Is(err, errRelaying) {
				t.Fatalf("verdict %v after %v, want %v", err, now.Sub(opened), tc.want)
			}
			if tc.want != nil && now.Sub(opened) > 3*time.Second {
				t.Fatalf("left after %v, want within a window, its span and PeerStall (3s)", now.Sub(opened))
			}
			if tc.pings && (asked == 0 || asked > 8) {
				t.Fatalf("the judge asked about the relay's link %d times in %v, want at least once and at most twice a second", asked, now.Sub(opened))
			}
			if pinged > 0 {
				t.Fatalf("the relay was pinged %d times while it sent steadily", pinged)
			}
		})
	}
}

// TestRelayKeptInDoubtStillGraced: a relay kept in doubt for three
// seconds (starved beside a busy link, its own link not shown full), that
// then falls to a tenth of its own best, is found slow no sooner than
// PeerStall after its window shows it: its time in doubt does not count
// as time slow (see graced).
func TestRelayKeptInDoubtStillGraced(t *testing.T) {
	t.Parallel()
	const fast, gap, stall = 32 << 10, 10 * time.Millisecond, 500 * time.Millisecond
	now := time.Unix(1000, 0)
	node := nodeWithBest(&now, gap, fast)
	node.open("relay", 1)
	node.open("other", 1)
	p := newPace(now, stall, 10*time.Second, time.Second)
	p.relayed = true
	j := &judge{p: p, node: node, peer: "relay"}
	inDoubt := 0
	j.peerLinkFull = func() bool { inDoubt++; return false }
	var slowAt time.Time // when its window first shows it slow
	step := func(k int) error {
		p.reading(now)
		now = now.Add(gap)
		p.read(now, k)
		node.read(now, k+fast*3/4)
		if r, _, ok := p.measured(now); ok && r*slowFactor < p.best && slowAt.IsZero() {
			slowAt = now
		}
		return j.verdict(now)
	}
	for end := now.Add(3 * time.Second); now.Before(end); {
		if err := step(fast / 30); err != nil {
			t.Fatalf("in doubt, its link not shown full: %v", err)
		}
	}
	if inDoubt == 0 {
		t.Fatal("the relay was never in doubt")
	}
	if !slowAt.IsZero() {
		t.Fatalf("slow by its own best before it fell, at %v", slowAt)
	}
	var err error
	for end := now.Add(4 * time.Second); err == nil && now.Before(end); {
		err = step(fast / 300)
	}
	if !errors.Is(err, errSlow) || errors.Is(err, errRelayInDoubt) {
		t.Fatalf("verdict %v, want slow by its own best", err)
	}
	if slowAt.IsZero() || now.Sub(slowAt) < stall-2*paceBucket {
		t.Fatalf("found slow %v after its window showed it, want PeerStall (%v)", now.Sub(slowAt), stall)
	}
}

// TestIdleLinkCalmAfterADrop: right after a stream of the node fell far
// below its own best, as every stream does when the node's own link is
// cut, a stream slow from its first byte is kept: the node's best may no
// longer be what its link carries.
func TestIdleLinkCalmAfterADrop(t *testing.T) {
	t.Parallel()
	const fast, gap = 32 << 10, 10 * time.Millisecond
	now := time.Unix(1000, 0)
	node, old := measuredStream(t, &now, "old", gap, fast)
	// The link is cut: the old stream falls to a sixtieth (its peer's
	// share of what is left), and a new one from another peer starts at
	// a thirtieth, most of what the node now receives.
	node.open("new", 1)
	p := newPace(now, 500*time.Millisecond, 10*time.Second, time.Second)
	cut := now
	for end := now.Add(2500 * time.Millisecond); now.Before(end); {
		old.reading(now)
		p.reading(now)
		now = now.Add(gap)
		old.read(now, fast/60)
		p.read(now, fast/30)
		node.read(now, fast/60+fast/30)
		_ = old.check(now, node)
		if err := p.check(now, node); err != nil {
			t.Fatalf("the new stream, %v after the cut: %v", now.Sub(cut), err)
		}
	}
}

// TestIdleLinkNotCalmedByAPeersDrop: a stream of the node that fell while
// the node's other streams kept its link busy (its peer frozen or
// throttled) does not hold off the rule: once the node's other blobs are
// in, a stream slow from its first byte, all the node still receives, is
// slow within two windows.
func TestIdleLinkNotCalmedByAPeersDrop(t *testing.T) {
	t.Parallel()
	const fast, gap = 32 << 10, 10 * time.Millisecond
	now := time.Unix(1000, 0)
	node, old := measuredStream(t, &now, "old", gap, fast)
	// Another peer's stream starts slow from its first byte, beside the
	// old one at full rate; then the old one's peer slows to a sixtieth.
	// A third peer's seven streams share the link too: the slow stream
	// gets over a quarter of an even share, and is not starved.
	node.open("slow", 1)
	p := newPace(now, 500*time.Millisecond, 10*time.Second, time.Second)
	node.open("busy", 7)
	step := func(oldRate, busyRate int) error {
		old.reading(now)
		p.reading(now)
		now = now.Add(gap)
		old.read(now, oldRate)
		p.read(now, fast/30)
		node.read(now, oldRate+busyRate+fast/30)
		_ = old.check(now, node)
		return p.check(now, node)
	}
	for end := now.Add(1500 * time.Millisecond); now.Before(end); {
		if err := step(fast, 0); err != nil {
			t.Fatalf("beside a busy link: %v", err)
		}
	}
	for end := now.Add(1500 * time.Millisecond); now.Before(end); {
		// The old stream drops; a third peer keeps the link busy.
		if err := step(fast/60, fast); err != nil {
			t.Fatalf("beside a busy link, another stream dropping: %v", err)
		}
	}
	node.open("old", -1)
	node.open("busy", -7)
	ended := now
	for end := now.Add(2 * time.Second); now.Before(end); {
		p.reading(now)
		now = now.Add(gap)
		p.read(now, fast/30)
		node.read(now, fast/30)
		if err := p.check(now, node); err != nil {
			if !errors.Is(err, errSlow) {
				t.Fatalf("verdict %v, want slow", err)
			}
			return
		}
	}
	t.Fatalf("a stream at a thirtieth of the node's best, all it receives for %v after its other streams ended, is kept", now.Sub(ended))
}

// TestRelaySlowGraced: a relaying stream that falls to a tenth of its rate
// is found slow PeerStall later than a stream of bytes its peer held, and
// not at all when it picks up again within that time: the relay found its
// own source slow and moved to the next.
func TestRelaySlowGraced(t *testing.T) {
	t.Parallel()
	const fast, gap, stall = 32 << 10, 10 * time.Millisecond, 500 * time.Millisecond
	// slowAfter feeds a stream at its full rate, then at a tenth for drop,
	// then at its full rate again, and says how long after the drop it was
	// found slow (-1: never).
	slowAfter := func(relayed bool, drop time.Duration) time.Duration {
		now := time.Unix(1000, 0)
		p := newPace(now, stall, 10*time.Second, time.Second)
		p.relayed = relayed
		if err := feed(p, nil, &now, 2*time.Second, gap, fast); err != nil {
			t.Fatalf("a steady stream: %v", err)
		}
		start := now
		err := feed(p, nil, &now, drop, gap, fast/10)
		if err == nil {
			err = feed(p, nil, &now, 3*time.Second, gap, fast)
		}
		if err == nil {
			return -1
		}
		if !errors.Is(err, errSlow) {
			t.Fatalf("relayed %v: %v, want slow", relayed, err)
		}
		return now.Sub(start)
	}
	held := slowAfter(false, 5*time.Second)
	relayed := slowAfter(true, 5*time.Second)
	if held < 0 || relayed < 0 {
		t.Fatalf("a stream at a tenth for 5s: found slow after %v (held bytes), %v (relayed); want both found", held, relayed)
	}
	if d := relayed - held; d < stall-gap || d > stall+gap {
		t.Fatalf("a relay found slow %v after a stream of held bytes, want PeerStall (%v)", d, stall)
	}
	if got := slowAfter(true, held+200*time.Millisecond); got >= 0 {
		t.Fatalf("a relay back at its full rate 200ms after a stream of held bytes would have been left: found slow after %v", got)
	}
	if got := slowAfter(false, held+200*time.Millisecond); got < 0 {
		t.Fatal("a stream of held bytes at a tenth for as long: not found slow")
	}
}

// TestRelayMeasuredFromItsFirstByte: a relay asked for bytes it has not
// received yet, whose first byte comes 0.9 s later (it waited on its own
// source), is measured from that byte: at a quarter of the rate the
// download had before it lost a peer it is kept, as it is when it sends
// at once; at a tenth it is still found slow, a window and PeerStall
// after its first byte.
func TestRelayMeasuredFromItsFirstByte(t *testing.T) {
	t.Parallel()
	const fast, gap, stall = 32 << 10, 10 * time.Millisecond, 500 * time.Millisecond
	held := float64(fast) / gap.Seconds()
	for _, tc := range []struct {
		name  string
		wait  time.Duration // before the first byte
		share int           // of the held rate after it, 1/share
		slow  bool
	}{
		{"a relay at a quarter from the start", 0, 4, false},
		{"a relay at a quarter after waiting 0.9 s", 900 * time.Millisecond, 4, false},
		{"a relay at a tenth after waiting 0.9 s", 900 * time.Millisecond, 10, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			now := time.Unix(1000, 0)
			p := newPace(now, stall, 10*time.Second, time.Second)
			p.relayed, p.fromFirstByte, p.held = true, true, held
			start := now
			err := feed(p, nil, &now, max(tc.wait, gap), max(tc.wait, gap), fast/tc.share)
			first := now
			if err == nil {
				err = feed(p, nil, &now, 4*time.Second, gap, fast/tc.share)
			}
			if errors.Is(err, errSlow) != tc.slow {
				t.Fatalf("after %v: verdict %v, want slow: %v", now.Sub(start), err, tc.slow)
			}
			if tc.slow {
				if d, want := now.Sub(first), time.Second+stall; d < want-2*paceBucket || d > want+2*paceBucket {
					t.Fatalf("found slow %v after its first byte, want a window and PeerStall (%v)", d, want)
				}
			}
		})
	}
}

// TestRecoveredStreamNotSlow: a stream silent for its whole window but
// the last 300 ms is not found slow when those came at its full rate (a
// relay whose own source moved on), and is when they came at a quarter or
// a fortieth.
func TestRecoveredStreamNotSlow(t *testing.T) {
	t.Parallel()
	const fast, gap = 32 << 10, 10 * time.Millisecond
	for _, tc := range []struct {
		name    string
		relayed bool
		after   int // bytes per gap after the silence
		slow    bool
	}{
		{"a relay back at its full rate", true, fast, false},
		{"a stream of held bytes back at its full rate", false, fast, false},
		{"a stream of held bytes back at a fortieth", false, fast / 40, true},
		{"a relay back at a quarter, as a burst behind a cut link comes", true, fast / 4, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			now := time.Unix(1000, 0)
			p := newPace(now, 500*time.Millisecond, 10*time.Second, 2*time.Second)
			p.relayed = tc.relayed
			if err := feed(p, nil, &now, 4*time.Second, gap, fast); err != nil {
				t.Fatalf("a steady stream: %v", err)
			}
			// Silent for two seconds, judged once 1.7 s in (a relay's
			// grace begins), then again only at the end, as a download
			// whose verdicts were held back by its node's other streams.
			p.reading(now)
			if err := p.check(now.Add(1700*time.Millisecond), nil); tc.relayed && err != nil {
				t.Fatalf("a relay silent for 1.7 s: %v, want its grace", err)
			}
			now = now.Add(2 * time.Second)
			p.read(now, 0)
			for end := now.Add(300 * time.Millisecond); now.Before(end); {
				p.reading(now)
				now = now.Add(gap)
				p.read(now, tc.after)
			}
			if err := p.check(now, nil); errors.Is(err, errSlow) != tc.slow {
				t.Fatalf("verdict %v, want slow: %v", err, tc.slow)
			}
		})
	}
}

// TestSlowRelayAskedOnceMoreWhenItStopped: a relaying stream found slow is
// given up as slow while its bytes still come in (it trickles), but when
// its Read has waited half of PeerStall the relay is pinged, and one that
// answers is asked once more (errRelaying): its own source stopped, and
// its last bytes came in slowly.
func TestSlowRelayAskedOnceMoreWhenItStopped(t *testing.T) {
	t.Parallel()
	const fast, gap, stall = 32 << 10, 10 * time.Millisecond, 500 * time.Millisecond
	now := time.Unix(1000, 0)
	pinged := 0
	j := &judge{p: newPace(now, stall, 10*time.Second, time.Second), probe: func() bool { pinged++; return true }}
	j.p.relayed = true
	if err := feed(j.p, nil, &now, 2*time.Second, gap, fast); err != nil {
		t.Fatalf("a steady relay: %v", err)
	}
	if err := feed(j.p, nil, &now, 5*time.Second, 100*time.Millisecond, fast/10); !errors.Is(err, errSlow) {
		t.Fatalf("a relay at a hundredth of its rate: %v, want slow", err)
	}
	j.p.reading(now)
	if err := j.verdict(now.Add(100 * time.Millisecond)); !errors.Is(err, errSlow) || errors.Is(err, errRelaying) || pinged != 0 {
		t.Fatalf("slow, its Read waiting 100ms: %v after %d pings, want slow without a ping", err, pinged)
	}
	if err := j.verdict(now.Add(stall / 2)); !errors.Is(err, errRelaying) || pinged != 1 {
		t.Fatalf("slow, its Read waiting half of PeerStall: %v after %d pings, want one ping and asked once more", err, pinged)
	}
}

// TestPaceLagging: a stream that falls to a quarter of its best lags,
// and the helpers race it (see swarm.NextPiece); at two thirds it does
// not. Nor does one at a quarter of its best that gets an even share of
// what the node receives, beside two other streams as slow: many readers
// of one holder, or the node's own link full.
func TestPaceLagging(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		gap    time.Duration // after 2 s of 64 KiB every 10 ms
		others int           // streams beside it, each as slow
		want   bool
	}{
		{"a quarter of its best", 40 * time.Millisecond, 0, true},
		{"two thirds of its best", 15 * time.Millisecond, 0, false},
		{"a quarter, an even share beside two others", 40 * time.Millisecond, 2, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			now := time.Unix(1000, 0)
			node, p := measuredStream(t, &now, "peer", 10*time.Millisecond, 64<<10)
			for i := range tc.others {
				node.open(fmt.Sprintf("other%d", i), 1)
			}
			for end := now.Add(2 * time.Second); now.Before(end); {
				p.reading(now)
				now = now.Add(tc.gap)
				p.read(now, 64<<10)
				for range 1 + tc.others {
					node.read(now, 64<<10)
				}
			}
			if got := p.lagging(now, node); got != tc.want {
				t.Fatalf("lagging = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestStreamLeftWithItsPeer: a stream that brings under half an even
// share of what the node receives, and is slow by no rule of its own, is
// left as slow within half a window when the node left its peer out as
// silent, and within its first whole window when it gave the peer up
// lately or heard a member say lately that the peer went silent; kept
// otherwise, and kept when it brings its share, when the node reads from
// that peer alone, when the node's own link is as slow, and while a relay
// has sent nothing yet.
func TestStreamLeftWithItsPeer(t *testing.T) {
	t.Parallel()
	const fast, gap = 32 << 10, 10 * time.Millisecond // 3.2 MB/s
	for _, tc := range []struct {
		name string
		// gaveUp: the node gave up a stream of the peer this long before
		// this one opened (negative: never).
		gaveUp   time.Duration
		silenced bool
		// told: a member said this long before the stream opened that
		// the peer went silent (0: none did).
		told time.Duration
		// rate, others: what this stream and the node's other stream
		// receive per gap; othersFromPeer: that one is the same peer's.
		rate, others   int
		othersFromPeer bool
		// ownLinkSlow: the node's own link is found as slow.
		ownLinkSlow bool
		// relayWaits: the stream relays, and its first byte comes only
		// after the test.
		relayWaits bool
		want       error
	}{
		{name: "given up half a second before", gaveUp: 500 * time.Millisecond, rate: fast / 8, others: fast * 5 / 8, want: errSlow},
		{name: "left out as silent", gaveUp: -1, silenced: true, rate: fast / 8, others: fast * 5 / 8, want: errSlow},
		{name: "never given up", gaveUp: -1, rate: fast / 8, others: fast * 5 / 8},
		{name: "a member said half a second before that it went silent", gaveUp: -1, told: 500 * time.Millisecond, rate: fast / 8, others: fast * 5 / 8, want: errSlow},
		{name: "a member said so LeftPeerFor before", gaveUp: -1, told: swarm.LeftPeerFor, rate: fast / 8, others: fast * 5 / 8},
		{name: "a member said so, the stream bringing over half an even share", gaveUp: -1, told: 500 * time.Millisecond, rate: fast / 4, others: fast / 2},
		{name: "given up LeftPeerFor before", gaveUp: swarm.LeftPeerFor, rate: fast / 8, others: fast * 5 / 8},
		{name: "given up, bringing over half an even share", gaveUp: 500 * time.Millisecond, rate: fast / 4, others: fast / 2},
		{name: "given up, the node's one stream", gaveUp: 500 * time.Millisecond, rate: fast / 8},
		{name: "given up, the node reading from that peer alone", gaveUp: 500 * time.Millisecond, rate: fast / 8, others: fast * 5 / 8, othersFromPeer: true},
		{name: "given up, the node's own link as slow", gaveUp: 500 * time.Millisecond, rate: fast / 8, others: fast * 5 / 8, ownLinkSlow: true},
		{name: "given up, a relay before its first byte", gaveUp: 500 * time.Millisecond, others: fast * 5 / 8, relayWaits: true},
		{name: "left out as silent, a relay before its first byte", gaveUp: -1, silenced: true, others: fast * 5 / 8, relayWaits: true},
		{name: "left out as silent, bringing over half an even share", gaveUp: -1, silenced: true, rate: fast / 4, others: fast / 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			now := time.Unix(1000, 0)
			node := nodeWithBest(&now, gap, fast)
			node.open("peer", 1)
			switch {
			case tc.others > 0 && tc.othersFromPeer:
				node.open("peer", 1)
			case tc.others > 0:
				node.open("other", 1)
			}
			if tc.gaveUp >= 0 {
				node.gaveUp("peer", now.Add(-tc.gaveUp))
			}
			p := newPace(now, 500*time.Millisecond, 10*time.Second, time.Second)
			p.relayed, p.fromFirstByte = tc.relayWaits, tc.relayWaits
			j := &judge{p: p, node: node, peer: "peer", silenced: func() bool { return tc.silenced }}
			if tc.told > 0 {
				said := now.Add(-tc.told)
				j.heardSilent = func(at time.Time) (time.Duration, bool) { return at.Sub(said), true }
			}
			j.ownLink = func(time.Duration) bool { return tc.ownLinkSlow }
			var err error
			opened := now
			if tc.rate == 0 {
				p.reading(now) // one Read, waiting all along
			}
			for end := now.Add(3 * time.Second); err == nil && now.Before(end); {
				if tc.rate > 0 {
					p.reading(now)
					now = now.Add(gap)
					p.read(now, tc.rate)
				} else {
					now = now.Add(gap)
				}
				node.read(now, tc.rate+tc.others)
				err = j.verdict(now)
			}
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Fatalf("verdict %v after %v, want %v", err, now.Sub(opened), tc.want)
			}
			within, what := time.Second+2*paceBucket, "its first whole window"
			if tc.silenced {
				within, what = time.Second/2+2*paceBucket, "half a window"
			}
			if tc.want != nil && now.Sub(opened) > within {
				t.Fatalf("left after %v, want within %s", now.Sub(opened), what)
			}
			if tc.want != nil && !tc.silenced && now.Sub(opened) < time.Second {
				t.Fatalf("left after %v, before its first whole window", now.Sub(opened))
			}
		})
	}
}

// TestGivingUpIsRemembered: the node remembers a peer it gave up as
// silent or slow, but not one it asked once more as a relay waiting on
// its source, nor one whose stream it left only because it gave the peer
// up before: that memory runs out LeftPeerFor after the verdict that
// began it.
func TestGivingUpIsRemembered(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		verdict error
		want    bool
	}{
		{fmt.Errorf("no byte for 1s: %w", errStalled), true},
		{fmt.Errorf("below 1/5 of its best: %w", errSlow), true},
		{fmt.Errorf("slow: %w; %w", errSlow, errRelaying), false},
		{fmt.Errorf("under half an even share: %w: %w", errLeftWithPeer, errSlow), false},
	} {
		now := time.Unix(1000, 0)
		j := &judge{node: newNodePace(time.Second), peer: "peer"}
		j.gaveUp(tc.verdict, now)
		if _, got := j.node.gaveUpAgo("peer", now); got != tc.want {
			t.Errorf("after the verdict %q the peer counts as given up: %v, want %v", tc.verdict, got, tc.want)
		}
	}
}
