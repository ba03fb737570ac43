package swarm_test

import (
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/p2p/swarm"
)

func TestNotYet(t *testing.T) {
	t.Parallel()
	arriving := swarm.Copy{Size: 100, Have: 40, Arriving: true}
	tests := []struct {
		name string
		ask  swarm.Ask
		c    swarm.Copy
		want bool
	}{
		{"past what it holds", swarm.Ask{Off: 40, Ranged: true}, arriving, true},
		{"within what it holds", swarm.Ask{Off: 39, Ranged: true}, arriving, false},
		{"asks to wait", swarm.Ask{Off: 60, Ranged: true, Wait: true}, arriving, false},
		{"not ranged: always waits", swarm.Ask{Off: 60}, arriving, false},
		{"held whole", swarm.Ask{Off: 60, Ranged: true}, swarm.Copy{Size: 100, Have: 100}, false},
		{"at the end", swarm.Ask{Off: 100, Ranged: true}, arriving, false},
		{"a piece past what it holds", swarm.Ask{Off: 50, Length: 10, Ranged: true}, arriving, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := swarm.NotYet(tc.ask, tc.c); got != tc.want {
				t.Fatalf("NotYet = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestBlobUploadCap(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		arriving bool
		want     int
	}{
		{"arriving: per blob", true, 2},
		{"held whole: the node's slots", false, 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := swarm.BlobUploadCap(tc.arriving, 2, 4); got != tc.want {
				t.Fatalf("BlobUploadCap = %d, want %d", got, tc.want)
			}
		})
	}
	if swarm.CountsPerBlob(swarm.Ask{Length: 8}) || !swarm.CountsPerBlob(swarm.Ask{Off: 8}) {
		t.Error("a piece counts per blob, or a stream to the end does not")
	}
}

func TestBlobUploads(t *testing.T) {
	t.Parallel()
	a, b := digest.FromString("a"), digest.FromString("b")
	var u swarm.BlobUploads
	steps := []struct {
		name    string
		release bool
		d       digest.Digest
		want    bool
		open    int
	}{
		{"first of a", false, a, true, 1},
		{"second of a", false, a, true, 2},
		{"third of a: busy", false, a, false, 2},
		{"b counts apart", false, b, true, 1},
		{"one of a ends", true, a, true, 1},
		{"a again", false, a, true, 2},
	}
	for _, s := range steps {
		got := true
		if s.release {
			u.Release(s.d)
		} else {
			got = u.Take(s.d, 2)
		}
		if got != s.want || u.Open(s.d) != s.open {
			t.Fatalf("%s: took %v with %d open, want %v with %d", s.name, got, u.Open(s.d), s.want, s.open)
		}
	}
	u.Release(b)
	u.Release(b)
	if u.Open(b) != 0 || !u.Take(b, 1) {
		t.Error("releasing more than was taken leaves a count behind")
	}
}

func TestHeldRead(t *testing.T) {
	t.Parallel()
	arriving := swarm.Copy{Size: 100, Have: 40, Arriving: true}
	tests := []struct {
		name          string
		off, end, max int64
		c             swarm.Copy
		want          int64
	}{
		{"what is held, however large the buffer", 10, 100, 64, arriving, 30},
		{"a buffer smaller than what is held", 10, 100, 8, arriving, 8},
		{"a range that ends within what is held", 10, 20, 64, arriving, 10},
		{"caught up: the next byte", 40, 100, 64, arriving, 1},
		{"held whole", 10, 100, 64, swarm.Copy{Size: 100, Have: 100}, 64},
		{"no longer arriving: read to the end", 40, 100, 64, swarm.Copy{Size: 100, Have: 40}, 60},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := swarm.HeldRead(tc.off, tc.end, tc.max, tc.c); got != tc.want {
				t.Fatalf("HeldRead = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestUploadSlot(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                    string
		open, blobOpen, perNode int
		slowReaders             bool
		want                    bool
	}{
		{"a free slot", 3, 2, 4, false, true},
		{"no free slot, the blob streamed already", 4, 1, 4, false, false},
		{"no free slot, the blob streamed already, slow readers", 4, 1, 4, true, true},
		{"no free slot, a blob streamed to nobody", 4, 0, 4, false, true},
		{"over the slots, a blob streamed to nobody", 7, 0, 4, false, true},
		{"over the slots, slow readers", 7, 3, 4, true, true},
		{"twice the slots", 8, 0, 4, false, false},
		{"twice the slots, slow readers", 8, 0, 4, true, false},
		{"one slot, a second blob", 1, 0, 1, false, true},
		{"one slot, a third blob", 2, 0, 1, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := swarm.UploadSlot(tc.open, tc.blobOpen, tc.perNode, tc.slowReaders); got != tc.want {
				t.Fatalf("UploadSlot(%d, %d, %d, %v) = %v, want %v", tc.open, tc.blobOpen, tc.perNode, tc.slowReaders, got, tc.want)
			}
		})
	}
}

func TestUnderCeiling(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		open, perNode int
		want          bool
	}{
		{0, 4, true}, {7, 4, true}, {8, 4, false}, {9, 4, false}, {1, 1, true}, {2, 1, false},
	} {
		if got := swarm.UnderCeiling(tc.open, tc.perNode); got != tc.want {
			t.Errorf("UnderCeiling(%d, %d) = %v, want %v", tc.open, tc.perNode, got, tc.want)
		}
	}
}

func TestGoneReader(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name               string
		silent, chunkWaits bool
		want               bool
	}{
		{"left out as silent, its chunk waits", true, true, true},
		{"left out as silent, taking bytes", true, false, false},
		{"answers pings, its chunk waits", false, true, false},
		{"answers pings, taking bytes", false, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := swarm.GoneReader(tc.silent, tc.chunkWaits); got != tc.want {
				t.Fatalf("GoneReader(%v, %v) = %v, want %v", tc.silent, tc.chunkWaits, got, tc.want)
			}
		})
	}
}

func TestCounted(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name              string
		open, gone, limit int
		askerSilent       bool
		want              int
	}{
		{"no gone reader", 4, 0, 4, false, 4},
		{"one gone reader", 4, 1, 4, false, 3},
		{"every stream to gone readers", 2, 2, 2, false, 0},
		{"more gone readers than the cap", 7, 5, 4, false, 3},
		{"an asker left out as silent", 4, 1, 4, true, 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := swarm.Counted(tc.open, tc.gone, tc.limit, tc.askerSilent); got != tc.want {
				t.Fatalf("Counted(%d, %d, %d, %v) = %d, want %d", tc.open, tc.gone, tc.limit, tc.askerSilent, got, tc.want)
			}
		})
	}
}

func TestReplacesOwn(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                  string
		own                   int
		arriving, askerSilent bool
		want                  bool
	}{
		{"an earlier stream of a blob arriving", 1, true, false, true},
		{"no earlier stream", 0, true, false, false},
		{"a blob held whole", 1, false, false, false},
		{"an asker left out as silent", 1, true, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := swarm.ReplacesOwn(tc.own, tc.arriving, tc.askerSilent); got != tc.want {
				t.Fatalf("ReplacesOwn = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSlowReaders(t *testing.T) {
	t.Parallel()
	const best = 12e6
	tests := []struct {
		name          string
		open, waiting int
		rate, best    float64
		askerWaits    bool
		want          bool
	}{
		{"every stream waits on its reader, the uplink a tenth busy", 4, 4, best / 10, best, false, true},
		{"half wait, the uplink a tenth busy", 4, 2, best / 10, best, false, true},
		{"the asker is one of the slow readers", 4, 4, best / 10, best, true, false},
		{"one of four waits", 4, 1, best / 10, best, false, false},
		{"every stream waits, the uplink busy", 4, 4, best * 0.8, best, false, false},
		{"no best measured yet", 4, 4, 0, 0, false, false},
		{"no stream", 0, 0, 0, best, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := swarm.SlowReaders(tc.open, tc.waiting, tc.rate, tc.best, tc.askerWaits); got != tc.want {
				t.Fatalf("SlowReaders(%d, %d, %v, %v, %v) = %v, want %v", tc.open, tc.waiting, tc.rate, tc.best, tc.askerWaits, got, tc.want)
			}
		})
	}
}
