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
