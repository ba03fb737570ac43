package swarm

import (
	"testing"
	"time"
)

func TestCoordinate(t *testing.T) {
	now := time.Unix(1000, 0)
	cases := []struct {
		name string
		a    Asked
		want Answer
	}{
		{"wanted here: fetched for the cluster", Asked{Wanted: true, Asker: "b"}, FetchForCluster},
		{"wanted here since it was left to another: read from that one", Asked{Wanted: true, Fetcher: "c", Told: now, Asker: "b"}, ReadFromFetcher},
		{"wanted here, the fetcher asking again: fetched for it", Asked{Wanted: true, Fetcher: "b", Told: now, Asker: "b"}, FetchForCluster},
		{"wanted here, left long ago: fetched for the cluster", Asked{Wanted: true, Fetcher: "c", Told: now.Add(-LeftFor), Asker: "b"}, FetchForCluster},
		{"an asker without a name: fetched for it", Asked{}, FetchForCluster},
		{"a lone asker fetches it itself", Asked{Asker: "b"}, FetchYourself},
		{"a second asker reads from the first", Asked{Fetcher: "c", Told: now.Add(-time.Second), Asker: "b"}, ReadFromFetcher},
		{"the fetcher asking again is told again", Asked{Fetcher: "b", Told: now.Add(-time.Second), Asker: "b"}, FetchYourself},
		{"a fetcher told long ago is forgotten", Asked{Fetcher: "c", Told: now.Add(-LeftFor), Asker: "b"}, FetchYourself},
	}
	for _, c := range cases {
		if got := Coordinate(c.a, now); got != c.want {
			t.Errorf("%s: Coordinate = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestWaitsForWant(t *testing.T) {
	now := time.Unix(1000, 0)
	cases := []struct {
		name string
		a    Asked
		want bool
	}{
		{"a lone asker that leads nothing is left the blob at once", Asked{Asker: "b"}, false},
		{"an asker that leads another blob waits for this node's want", Asked{Asker: "b", AskerLeads: true}, true},
		{"wanted here: fetched for the cluster at once", Asked{Wanted: true, Asker: "b", AskerLeads: true}, false},
		{"left to another: pointed at it at once", Asked{Fetcher: "c", Told: now, Asker: "b", AskerLeads: true}, false},
		{"the fetcher asking again is not held again", Asked{Fetcher: "b", Told: now, Asker: "b", AskerLeads: true}, false},
		{"a fetcher told long ago is forgotten: wait", Asked{Fetcher: "c", Told: now.Add(-LeftFor), Asker: "b", AskerLeads: true}, true},
	}
	for _, c := range cases {
		if got := WaitsForWant(c.a, now); got != c.want {
			t.Errorf("%s: WaitsForWant = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestWillLead(t *testing.T) {
	cases := []struct {
		name string
		b    Unfetched
		want bool
	}{
		{"ranked first for a layer it lacks: it will lead it", Unfetched{First: true, Size: LeadWorthy}, true},
		{"another node ranks first", Unfetched{Size: 64 << 20}, false},
		{"a config, a few hundred bytes, keeps no link busy", Unfetched{First: true, Size: 700}, false},
		{"a size the manifest did not give", Unfetched{First: true}, false},
		{"held already", Unfetched{First: true, Size: 64 << 20, Held: true}, false},
		{"its download tried a source: it says for itself whether it leads", Unfetched{First: true, Size: 64 << 20, Tried: true}, false},
	}
	for _, c := range cases {
		if got := WillLead(c.b); got != c.want {
			t.Errorf("%s: WillLead = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestTakesSlot(t *testing.T) {
	cases := []struct {
		a    Answer
		want bool
	}{
		{FetchForCluster, true},
		{FetchYourself, false},
		{ReadFromFetcher, false},
	}
	for _, c := range cases {
		if got := TakesSlot(c.a); got != c.want {
			t.Errorf("TakesSlot(%v) = %v, want %v", c.a, got, c.want)
		}
	}
}

func TestPointAtReader(t *testing.T) {
	now := time.Unix(1000, 0)
	cases := []struct {
		name string
		h    Holding
		want bool
	}{
		{"the first asker is streamed it", Holding{Asker: "b"}, false},
		{"the next is pointed at the first", Holding{Reader: "c", Since: now.Add(-time.Second), Asker: "b"}, true},
		{"the first asking again is streamed it", Holding{Reader: "b", Since: now.Add(-time.Second), Asker: "b"}, false},
		{"a reader of long ago is forgotten", Holding{Reader: "c", Since: now.Add(-LeftFor), Asker: "b"}, false},
		{"a cold start's leader streams it to every asker", Holding{Reader: "c", Since: now.Add(-time.Second), Led: true, Asker: "b"}, false},
		{"an asker without a name is streamed it", Holding{Reader: "c", Since: now.Add(-time.Second)}, false},
	}
	for _, c := range cases {
		if got := PointAtReader(c.h, now); got != c.want {
			t.Errorf("%s: PointAtReader = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestNewReader(t *testing.T) {
	now := time.Unix(1000, 0)
	if !NewReader(Holding{Asker: "b"}, now) {
		t.Error("no reader recorded: the asker is not the first reader")
	}
	if NewReader(Holding{Reader: "c", Since: now.Add(-time.Second), Asker: "b"}, now) {
		t.Error("a reader a second old is replaced")
	}
	if !NewReader(Holding{Reader: "c", Since: now.Add(-LeftFor), Asker: "b"}, now) {
		t.Error("a reader LeftFor old is kept")
	}
}
