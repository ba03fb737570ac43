package main

import (
	"strconv"
	"testing"
)

// FuzzParseBytes reads arbitrary --store-max-bytes values: an accepted size
// is non-negative, and its plain byte count reads back as the same size.
func FuzzParseBytes(f *testing.F) {
	for _, s := range []string{"10GiB", "0", "", "512MiB", "1.5GB", "-1", "8EiB", "7.99EiB", "1e3", "NaN", "+Inf", "9223372036854775807", "1 GiB", "0x10"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		n, err := parseBytes("store-max-bytes", v)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("%q: accepted %d", v, n)
		}
		back, err := parseBytes("store-max-bytes", strconv.FormatInt(n, 10))
		if err != nil || back != n {
			t.Fatalf("%q is %d bytes, which reads back as %d: %v", v, n, back, err)
		}
	})
}
