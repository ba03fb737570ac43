package p2p

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func testPin(ref string, version uint64, origin string, copies int) Pin {
	return Pin{Ref: ref, Registry: "registry:5000", Repo: "team/app", Digest: digest.FromString(ref), Copies: copies, Version: version, Origin: origin}
}

// TestPinTableMerge feeds the same entries to tables in shuffled orders,
// each entry split between a gossip message and a push-pull of a table:
// every table ends with the same entries, the newest of each reference.
func TestPinTableMerge(t *testing.T) {
	t.Parallel()
	now := time.Now()
	v := uint64(now.UnixMilli())
	unpin := Pin{Ref: "b", Version: v + 5, Origin: "node2", Deleted: true}
	entries := []Pin{
		testPin("a", v, "node1", 2),
		testPin("a", v+1, "node3", 3), // newer: wins
		testPin("b", v, "node1", 2),
		unpin,                       // newer: b is unpinned
		testPin("c", v, "node1", 2), // same version, higher origin below wins
		testPin("c", v, "node2", 1),
		testPin("d", v+2, "node1", 2), // unpin at the same version and origin wins
		{Ref: "d", Version: v + 2, Origin: "node1", Deleted: true},
	}
	want := map[string]Pin{"a": entries[1], "b": unpin, "c": entries[5], "d": entries[7]}
	for seed := range uint64(50) {
		rng := rand.New(rand.NewPCG(seed, 1))
		left, right := newPinTable(""), newPinTable("")
		order := slices.Clone(entries)
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for i, p := range order {
			if i%2 == 0 {
				left.merge([]Pin{p}, now)
			} else {
				right.merge([]Pin{p}, now)
			}
		}
		ps, err := decodePins(right.encode())
		if err != nil {
			t.Fatal(err)
		}
		left.merge(ps, now)
		got := left.all()
		if len(got) != len(want) {
			t.Fatalf("seed %d: %d entries, want %d: %+v", seed, len(got), len(want), got)
		}
		for _, p := range got {
			if p != want[p.Ref] {
				t.Errorf("seed %d: %s is %+v, want %+v", seed, p.Ref, p, want[p.Ref])
			}
		}
	}
}

func TestPinTableRefuses(t *testing.T) {
	t.Parallel()
	now := time.Now()
	v := uint64(now.UnixMilli())
	tests := []struct {
		name string
		pin  Pin
	}{
		{"no version", testPin("a", 0, "n", 2)},
		{"no copies", testPin("a", v, "n", 0)},
		{"too many copies", testPin("a", v, "n", MaxPinCopies+1)},
		{"bad registry", Pin{Ref: "a", Registry: "a b", Repo: "x", Digest: digest.FromString("a"), Copies: 1, Version: v}},
		{"bad digest", Pin{Ref: "a", Registry: "r", Repo: "x", Digest: "sha256:zz", Copies: 1, Version: v}},
		{"an unpin past its keep", Pin{Ref: "a", Version: uint64(now.Add(-PinTombstoneKeep - time.Hour).UnixMilli()), Deleted: true}},
	}
	for _, tc := range tests {
		tb := newPinTable("")
		if news := tb.merge([]Pin{tc.pin}, now); len(news) != 0 {
			t.Errorf("%s: merged %+v", tc.name, news)
		}
	}
	tb := newPinTable("")
	for i := range MaxPins + 10 {
		tb.merge([]Pin{testPin(string(rune('A'+i%26))+string(rune('a'+i/26)), v, "n", 1)}, now)
	}
	if n := len(tb.all()); n != MaxPins {
		t.Errorf("table of %d entries, want at most %d", n, MaxPins)
	}
	if _, err := tb.next(testPin("new", 0, "n", 1), now); err == nil {
		t.Errorf("a pin past MaxPins was accepted")
	}
}

// TestPinTableSaved checks that a node's table outlives a restart.
func TestPinTableSaved(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	now := time.Now()
	a := newPinTable(dir)
	a.merge([]Pin{testPin("a", uint64(now.UnixMilli()), "n", 2)}, now)
	if err := a.save(); err != nil {
		t.Fatal(err)
	}
	b := newPinTable(dir)
	if err := b.load(now); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a.all(), b.all()) {
		t.Errorf("loaded %+v, saved %+v", b.all(), a.all())
	}
}
