package main

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/pflag"
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

// FuzzApplyEnv sets arbitrary SHOAL_* values for the daemon's flags: a
// string flag takes the value as given, a list flag its comma-separated
// items, and any other flag either takes the value or applyEnv names the
// variable in its error.
func FuzzApplyEnv(f *testing.F) {
	for _, seed := range []struct{ flag, v string }{
		{"mirror-addr", "127.0.0.1:7500"},
		{"join", "a:7502,b,,[::1]:1"},
		{"insecure-registry", ""},
		{"miss-timeout", "5s"},
		{"miss-timeout", "-1h"},
		{"max-uploads", "0x10"},
		{"p2p", "maybe"},
		{"store-max-bytes", "10GiB"},
	} {
		f.Add(seed.flag, seed.v)
	}
	f.Fuzz(func(t *testing.T, flag, v string) {
		fs := newDaemonCommand().Flags()
		fl := fs.Lookup(flag)
		if fl == nil || strings.ContainsRune(v, 0) {
			return
		}
		env := "SHOAL_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
		t.Setenv(env, v)
		err := applyEnv(fs)
		if err != nil {
			if !strings.Contains(err.Error(), env) {
				t.Fatalf("%s=%q: error %v does not name the variable", env, v, err)
			}
			return
		}
		if !fl.Changed {
			t.Fatalf("%s=%q did not set --%s", env, v, flag)
		}
		switch sv := fl.Value.(type) {
		case pflag.SliceValue:
			if got := sv.GetSlice(); !slices.Equal(got, strings.Split(v, ",")) {
				t.Fatalf("%s=%q: --%s is %q", env, v, flag, got)
			}
		default:
			if fl.Value.Type() == "string" && fl.Value.String() != v {
				t.Fatalf("%s=%q: --%s is %q", env, v, flag, fl.Value.String())
			}
		}
	})
}
