package main

import (
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
