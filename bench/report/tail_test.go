package report

import (
	"strings"
	"testing"
)

func TestTailSplitFromTheBlobVerifiedLast(t *testing.T) {
	nt := NodeTail{Node: 2, PullSeconds: 5, Blobs: []BlobTail{
		{Digest: "sha256:a", Size: 10, Started: 0.5, FirstByte: 1, LastByte: 3, Verified: 3.1},
		{Digest: "sha256:b", Size: 10, Started: 0.5, FirstByte: 1, LastByte: 4, Verified: 4.2},
		{Digest: "sha256:c", Size: 10, Started: 0.5}, // held already
	}}
	s, ok := nt.Split()
	if !ok || s != (TailSplit{LastByte: 4, Verified: 4.2, Pull: 5}) {
		t.Fatalf("split %+v, %v; want the last verified blob's times and the pull's", s, ok)
	}
	note := TailNote([]NodeTail{nt, {Node: 3, PullSeconds: 2, Blobs: []BlobTail{{Digest: "sha256:c"}}}})
	for _, want := range []string{"containerd took 0.80 s", "node 2 last byte 4.00 s, verified +200 ms, pull returned +0.80 s"} {
		if !strings.Contains(note, want) {
			t.Errorf("note %q lacks %q", note, want)
		}
	}
	if strings.Contains(note, "node 3") {
		t.Errorf("note %q names node 3, which downloaded nothing", note)
	}
	nt.Blobs[0].Unpacked, nt.Blobs[0].UnpackSeconds = 3.5, 0.25
	nt.Blobs[1].Unpacked, nt.Blobs[1].UnpackSeconds = 4.7, 0.5
	if s, _ := nt.Split(); s.Unpacked != 4.7 || s.Unpacking != 0.75 {
		t.Errorf("split %+v: want the last unpack at 4.7 s and 0.75 s of unpacking", s)
	}
	if note := TailNote([]NodeTail{nt}); !strings.Contains(note, "last layer unpacked +0.50 s (unpacking took 0.75 s in all)") {
		t.Errorf("note %q lacks the unpacks", note)
	}
	if TailNote([]NodeTail{{Node: 1, PullSeconds: 1}}) != "" {
		t.Error("a run where no node downloaded has a tail note")
	}
}

// The tail chart shows the repetition with the median makespan, one row
// group per node that downloaded layers, and renders;
// a scenario without tails (the direct baseline, the sim mode) has none.
func TestTailChart(t *testing.T) {
	layer := func(started, first, last, unpacked float64) BlobTail {
		return BlobTail{Digest: "sha256:l", Size: 8, Started: started, FirstByte: first, LastByte: last, Verified: last, Unpacked: unpacked}
	}
	rec := func(rep int, makespan float64) Record {
		return Record{Candidate: "shoal", Scenario: "cold", Rep: rep, MakespanSeconds: makespan, Tail: []NodeTail{
			{Node: 0, PullSeconds: makespan, Blobs: []BlobTail{layer(0.2, 0.3, 1.4, 1.6), layer(0.2, 0.4, 1.2, 1.7), {Digest: "sha256:config", Size: 1, Started: 0.2, FirstByte: 0.25, LastByte: 0.25, Verified: 0.25}}},
			{Node: 1, PullSeconds: makespan - 0.1, Blobs: []BlobTail{layer(0.2, 0.5, 1.5, 1.8)}},
			{Node: 2, PullSeconds: 0.5, Blobs: []BlobTail{{Digest: "sha256:l", Size: 8}}}, // held it
		}}
	}
	sd := scenarioData{Name: "cold", Candidates: []string{"direct", "shoal"}, Records: map[string][]Record{
		"direct": {{Candidate: "direct", Scenario: "cold", MakespanSeconds: 5}},
		"shoal":  {rec(1, 9), rec(2, 3), rec(3, 2)},
	}}
	p, err := tailChart(sd)
	if err != nil || p == nil {
		t.Fatalf("tailChart = %v, %v", p, err)
	}
	if !strings.Contains(p.Title.Text, "rep. 2") {
		t.Errorf("title %q: want the median repetition, 2 (makespans 9, 3, 2 s)", p.Title.Text)
	}
	var nodes []string
	for _, tk := range p.Y.Tick.Marker.Ticks(p.Y.Min, p.Y.Max) {
		nodes = append(nodes, tk.Label)
	}
	if got := strings.Join(nodes, ","); got != "node 0,node 1" {
		t.Errorf("row groups %q, want node 0,node 1 (node 2 downloaded nothing)", got)
	}
	if png, err := renderPNG(p); err != nil || len(png) == 0 {
		t.Errorf("render: %d bytes, %v", len(png), err)
	}
	sd.Records["shoal"] = []Record{{Candidate: "shoal", Scenario: "cold", MakespanSeconds: 2}}
	if p, err := tailChart(sd); p != nil || err != nil {
		t.Errorf("tailChart without tails = %v, %v; want none", p, err)
	}
}
