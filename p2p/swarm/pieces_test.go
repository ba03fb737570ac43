package swarm_test

import (
	"testing"
	"time"

	"github.com/shoal-dev/shoal/p2p/swarm"
)

// pieces is a blob of 10 pieces of 10 bytes, the last one 5 bytes.
func pieces() swarm.Pieces {
	return swarm.Pieces{Size: 95, PieceSize: 10, Done: make([]bool, 10), Taken: make([]bool, 10)}
}

func TestNextPiece(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	tests := []struct {
		name      string
		edit      func(p *swarm.Pieces)
		srcs      []swarm.PieceSource
		wantPiece int
		wantPeer  string // "": none
	}{
		{"the last piece first, from the peer furthest ahead", nil,
			[]swarm.PieceSource{{Peer: "a", Have: 95}, {Peer: "b", Have: -1}, {Peer: "c", Have: 50}}, 9, "a"},
		{"a peer that has not said may hold it", nil,
			[]swarm.PieceSource{{Peer: "b", Have: -1}, {Peer: "c", Have: 50}}, 9, "b"},
		{"none holds it: the piece, no peer", nil,
			[]swarm.PieceSource{{Peer: "c", Have: 50}}, 9, ""},
		{"what a peer said a second ago is stale: asked again", nil,
			[]swarm.PieceSource{{Peer: "c", Have: 50, HaveAt: now.Add(-swarm.HaveStale)}}, 9, "c"},
		{"what a peer said just under a second ago stands", nil,
			[]swarm.PieceSource{{Peer: "c", Have: 50, HaveAt: now.Add(-swarm.HaveStale + time.Millisecond)}}, 9, ""},
		{"done and taken pieces are passed over", func(p *swarm.Pieces) { p.Done[9], p.Taken[8] = true, true },
			[]swarm.PieceSource{{Peer: "c", Have: 80}}, 7, "c"},
		{"not the primary stream's peer", func(p *swarm.Pieces) { p.Primary = "a" },
			[]swarm.PieceSource{{Peer: "a", Have: 95}, {Peer: "b", Have: 95}}, 9, "b"},
		{"failed, busy and not yet due peers are passed over", nil,
			[]swarm.PieceSource{{Peer: "a", Have: 95, Failed: true}, {Peer: "b", Have: 95, Busy: true}, {Peer: "c", Retry: now.Add(time.Second), Have: 95}}, 9, ""},
		{"a silent peer is passed over", nil,
			[]swarm.PieceSource{{Peer: "a", Have: 95, Silent: true}}, 9, ""},
		{"a peer due now is asked", nil,
			[]swarm.PieceSource{{Peer: "c", Retry: now, Have: 95}}, 9, "c"},
		{"at least a piece ahead of the stream", func(p *swarm.Pieces) { p.Pos = 75 },
			[]swarm.PieceSource{{Peer: "a", Have: 95}}, 9, "a"},
		{"nothing left ahead of the stream", func(p *swarm.Pieces) { p.Pos = 81 },
			[]swarm.PieceSource{{Peer: "a", Have: 95}}, -1, ""},
		{"lagging: the piece the stream is in, raced", func(p *swarm.Pieces) { p.Pos, p.Lagging, p.Done[9] = 81, true, true },
			[]swarm.PieceSource{{Peer: "a", Have: 95}}, 8, "a"},
		{"lagging: the pieces ahead first", func(p *swarm.Pieces) { p.Pos, p.Lagging = 75, true },
			[]swarm.PieceSource{{Peer: "a", Have: 95}}, 9, "a"},
		{"lagging, the pieces ahead taken: the next piece", func(p *swarm.Pieces) { p.Pos, p.Lagging, p.Taken[9] = 75, true, true },
			[]swarm.PieceSource{{Peer: "a", Have: 95}}, 8, "a"},
		{"lagging: not from the stream's own peer", func(p *swarm.Pieces) { p.Pos, p.Lagging, p.Primary, p.Done[9] = 81, true, "a", true },
			[]swarm.PieceSource{{Peer: "a", Have: 95}}, 8, ""},
		{"waiting: the first missing piece", func(p *swarm.Pieces) { p.Waiting, p.Contiguous = true, 20 },
			[]swarm.PieceSource{{Peer: "a", Have: 95}}, 2, "a"},
		{"waiting: a peer that has not said may send the first", func(p *swarm.Pieces) { p.Waiting, p.Contiguous = true, 20 },
			[]swarm.PieceSource{{Peer: "a", Have: 25}, {Peer: "b", Have: -1}}, 2, "b"},
		{"waiting, nobody to ask for the first: the last", func(p *swarm.Pieces) { p.Waiting, p.Contiguous = true, 20 },
			[]swarm.PieceSource{{Peer: "a", Have: 25}}, 9, ""},
		{"waiting, the primary stream's peer may send the first", func(p *swarm.Pieces) { p.Waiting, p.Primary = true, "a" },
			[]swarm.PieceSource{{Peer: "a", Have: 95}}, 0, "a"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := pieces()
			if tc.edit != nil {
				tc.edit(&p)
			}
			srcs := make([]*swarm.PieceSource, len(tc.srcs))
			for i := range tc.srcs {
				if tc.srcs[i].HaveAt.IsZero() {
					tc.srcs[i].HaveAt = now // said just now, unless the case says when
				}
				srcs[i] = &tc.srcs[i]
			}
			i, s := swarm.NextPiece(p, srcs, now)
			var peer string
			if s != nil {
				peer = s.Peer
			}
			if i != tc.wantPiece || peer != tc.wantPeer {
				t.Fatalf("NextPiece = %d from %q, want %d from %q", i, peer, tc.wantPiece, tc.wantPeer)
			}
		})
	}
}

func TestPieceRange(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		i          int
		from, cont int64
		// lagging: the stream lags, at cont
		lagging    bool
		start, end int64
	}{
		{"a whole piece", 3, 0, 0, false, 30, 40},
		{"the short last piece", 9, 0, 0, false, 90, 95},
		{"resumed where the last attempt got to", 3, 34, 0, false, 34, 40},
		{"held from the start past it", 3, 0, 45, false, 45, 40},
		{"the piece a lagging stream is in: from halfway to its end", 3, 0, 32, true, 36, 40},
		{"an odd rest: the helper's half is the shorter", 3, 0, 33, true, 37, 40},
		{"a byte left: that byte", 3, 0, 39, true, 40, 40},
		{"the piece after a lagging stream's: from its start", 4, 0, 32, true, 40, 50},
		{"where the last attempt got to, past halfway", 3, 38, 32, true, 38, 40},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := pieces()
			p.Contiguous = tc.cont
			if tc.lagging {
				p.Lagging, p.Pos = true, tc.cont
			}
			if start, end := p.Range(tc.i, tc.from); start != tc.start || end != tc.end {
				t.Fatalf("Range = %d-%d, want %d-%d", start, end, tc.start, tc.end)
			}
		})
	}
}

func TestAfterPiece(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	tests := []struct {
		name   string
		res    swarm.PieceResult
		done   bool
		retry  time.Time
		failed bool
	}{
		{"written", swarm.PieceWritten, true, time.Time{}, false},
		{"stopped", swarm.PieceStopped, false, time.Time{}, false},
		{"not now: asked again later", swarm.PieceNotNow, false, now.Add(time.Second), false},
		{"cut: asked again after PieceCutRetry", swarm.PieceCut, false, now.Add(swarm.PieceCutRetry), false},
		{"failed: not asked again", swarm.PieceFailed, false, time.Time{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := &swarm.PieceSource{Peer: "a", Have: -1}
			done := swarm.AfterPiece(s, tc.res, now, time.Second)
			if done != tc.done || !s.Retry.Equal(tc.retry) || s.Failed != tc.failed {
				t.Fatalf("AfterPiece = %v, retry %v, failed %v; want %v, %v, %v", done, s.Retry, s.Failed, tc.done, tc.retry, tc.failed)
			}
		})
	}
}
