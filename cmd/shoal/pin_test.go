package main

import (
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestPinFits(t *testing.T) {
	t.Parallel()
	a, b, c := digest.FromString("a"), digest.FromString("b"), digest.FromString("c")
	tests := []struct {
		name  string
		sizes map[digest.Digest]int64
		mine  int64
		max   int64
		want  string
	}{
		{"fits exactly", map[digest.Digest]int64{a: 600, b: 400}, 400, 1000, ""},
		{"one byte over", map[digest.Digest]int64{a: 600, b: 401}, 401, 1000,
			"pin registry:5000/app:v1 refused: pinned blobs would take 1001B (1001 bytes; this image 401), over this node's --store-max-bytes of 1000B (1000 bytes)"},
		{"alone over", map[digest.Digest]int64{c: 3 << 20}, 3 << 20, 2 << 20,
			"pin registry:5000/app:v1 refused: pinned blobs would take 3MiB (3145728 bytes; this image 3145728), over this node's --store-max-bytes of 2MiB (2097152 bytes)"},
	}
	for _, tc := range tests {
		err := pinFits("registry:5000/app:v1", tc.mine, tc.sizes, tc.max)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestPrintPins(t *testing.T) {
	t.Parallel()
	p := pinStatus{Blobs: []pinnedBlob{
		{Digest: digest.FromString("a"), Size: 1 << 20, Holders: []string{"node1", "node3"}, On: []string{"node1", "node3"}},
		{Digest: digest.FromString("b"), Size: 512, Holders: []string{"node2", "node4"}, On: []string{"node4"}},
	}}
	p.Ref, p.Digest, p.Copies = "registry:5000/app:v1", digest.FromString("m"), 2
	var b strings.Builder
	if err := printPins(&b, []pinStatus{p}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	t.Logf("\n%s", out)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.Contains(lines[1], "2/2") || !strings.Contains(lines[1], " ok ") ||
		!strings.Contains(lines[2], "1/2") || !strings.Contains(lines[2], "missing") || !strings.Contains(lines[2], "holders node2,node4") {
		t.Errorf("shoal pins printed:\n%s", out)
	}
}
