package swarm_test

import (
	"testing"
	"time"

	"github.com/shoal-dev/shoal/p2p/swarm"
)

func TestOwnLinkQueued(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		name          string
		rtt, quickest time.Duration
		want          bool
	}{
		{"an answer behind a link cut to a tenth", 162 * ms, 1 * ms, true},
		{"a ping behind a peer's full 100 Mbit/s uplink", 100 * ms, 1 * ms, false},
		{"a far peer, answering as quickly as ever", 160 * ms, 150 * ms, false},
		{"a far peer, 150 ms later than its quickest", 300 * ms, 150 * ms, true},
		{"no round trip seen yet", 240 * ms, 0, false},
	} {
		if got := swarm.OwnLinkQueued(tc.rtt, tc.quickest); got != tc.want {
			t.Errorf("%s: OwnLinkQueued(%v, %v) = %v, want %v", tc.name, tc.rtt, tc.quickest, got, tc.want)
		}
	}
}

func TestPeerLinkQueued(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name                                                 string
		peerAnswered, peerQueued, otherAnswered, otherQueued bool
		want                                                 bool
	}{
		{"the peer silent, another answers at once", false, false, true, false, true},
		{"the peer queued, another answers at once", true, true, true, false, true},
		{"the peer answers at once", true, false, true, false, false},
		{"the peer silent, the other queued too: the node's own link", false, false, true, true, false},
		{"no other answers", false, false, false, false, false},
	} {
		if got := swarm.PeerLinkQueued(tc.peerAnswered, tc.peerQueued, tc.otherAnswered, tc.otherQueued); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestBytesAnswerPing(t *testing.T) {
	t.Parallel()
	const mib = 1 << 20
	best := 11.5 * mib // a 100 Mbit/s link
	wait := 400 * time.Millisecond
	for _, tc := range []struct {
		name   string
		got    int64
		recent bool
		want   bool
	}{
		{"a full uplink shared by three readers", 1.5 * mib, true, true},
		{"a fifth of the node's best", int64(0.2*best*0.4) + 1, true, true},
		{"a link cut to a tenth", mib / 2, true, false},
		{"a frozen peer's socket drained, then nothing", 1.5 * mib, false, false},
		{"nothing", 0, true, false},
	} {
		if got := swarm.BytesAnswerPing(tc.got, wait, best, tc.recent); got != tc.want {
			t.Errorf("%s: BytesAnswerPing(%d, %v, %.0f, %v) = %v, want %v", tc.name, tc.got, wait, best, tc.recent, got, tc.want)
		}
	}
	if swarm.BytesAnswerPing(mib, wait, 0, true) {
		t.Error("with no best rate seen yet, bytes answered the ping")
	}
}
