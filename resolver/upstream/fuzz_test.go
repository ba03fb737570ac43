package upstream

import (
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
)

// FuzzBodySize reads arbitrary Content-Range and Content-Length values as a
// registry's answer to a request from offset off: a size it accepts is
// non-negative, and for a 206 the range starts at off and runs to the
// blob's last byte, so a resumed download never trusts an impossible size.
func FuzzBodySize(f *testing.F) {
	for _, seed := range []struct {
		partial bool
		cr      string
		cl      int64
		off     int64
	}{
		{true, "bytes 10-99/100", 90, 10},
		{true, "bytes 0-0/-1", 1, 0},
		{true, "bytes 10-5/100", 0, 10},
		{true, "bytes 10-200/100", 0, 10},
		{true, "bytes 10-99/100 trailing", 0, 10},
		{true, "bytes +10-99/100", 0, 10},
		{true, "bytes 10-99/*", 0, 10},
		{true, "bytes  10-99/100", 0, 10},
		{false, "", 100, 0},
		{false, "", -1, 0},
	} {
		f.Add(seed.partial, seed.cr, seed.cl, seed.off)
	}
	f.Fuzz(func(t *testing.T, partial bool, cr string, cl, off int64) {
		if off < 0 {
			return // callers resume from offsets they counted
		}
		resp := &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, ContentLength: cl}
		if partial {
			resp.StatusCode = http.StatusPartialContent
			resp.Header.Set("Content-Range", cr)
		}
		size, err := bodySize(resp, off)
		if err != nil {
			return
		}
		if size < 0 {
			t.Fatalf("206=%v %q length %d off %d: size %d", partial, cr, cl, off, size)
		}
		if !partial {
			return
		}
		// An independent reading of RFC 9110's "bytes first-last/complete"
		// (digits only; leading zeros are allowed).
		m := contentRange.FindStringSubmatch(cr)
		if m == nil {
			t.Fatalf("%q accepted, not a byte range", cr)
		}
		first, err1 := strconv.ParseInt(m[1], 10, 64)
		last, err2 := strconv.ParseInt(m[2], 10, 64)
		total, err3 := strconv.ParseInt(m[3], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			t.Fatalf("%q accepted with numbers out of range", cr)
		}
		if first != off || last != size-1 || total != size || off >= size {
			t.Fatalf("%q accepted for offset %d as a %d-byte blob", cr, off, size)
		}
	})
}

var contentRange = regexp.MustCompile(`^bytes ([0-9]+)-([0-9]+)/([0-9]+)$`)

// FuzzLoadKeychain loads arbitrary bytes as the --registry-auth-file (a
// docker config.json): loading and resolving credentials for a registry
// never panic, and a file that loads always answers.
func FuzzLoadKeychain(f *testing.F) {
	for _, s := range []string{
		`{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"}}}`,
		`{"auths":{"ghcr.io":{"username":"u","password":"p"}}}`,
		`{"auths":{"ghcr.io":{"auth":"!!!"}}}`,
		`{"auths":{"ghcr.io":{"auth":"dXNlcg=="}}}`,
		`{"auths":{"ghcr.io":{"identitytoken":"t"}},"credsStore":""}`,
		`{"auths":null}`,
		`[]`,
		``,
	} {
		f.Add([]byte(s), "ghcr.io")
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte, registry string) {
		path := filepath.Join(dir, "config.json")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		k, err := loadKeychain(path)
		if err != nil {
			return
		}
		if k.cf != nil && (k.cf.CredentialsStore != "" || len(k.cf.CredentialHelpers) > 0) {
			return // would run a docker-credential-* program
		}
		reg, err := name.NewRegistry(registry)
		if err != nil {
			return
		}
		a, err := k.Resolve(reg)
		if err == nil {
			if a == nil {
				t.Fatal("nil authenticator without an error")
			}
			_, _ = a.Authorization()
		}
	})
}
