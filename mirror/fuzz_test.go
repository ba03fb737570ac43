package mirror

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzPath feeds arbitrary paths, ns values and Range headers to the
// handler: it must answer every one with a status, never panic, and
// never answer 200 to a path it did not parse.
func FuzzPath(f *testing.F) {
	for _, seed := range []struct{ path, ns, rng string }{
		{"/v2/library/alpine/manifests/latest", "docker.io", ""},
		{"/v2/a/b/c/blobs/sha256:" + strings.Repeat("a", 64), "registry.example:5000", "bytes=10-"},
		{"/v2//blobs/", "", "bytes=-5"},
		{"/v2/a/blobs/uploads/x", "a b", "bytes=abc"},
		{"/v2/A/manifests/..", "docker.io/x", "pages=1-2"},
		{"/v2/a/manifests/sha512:" + strings.Repeat("f", 128), "[::1]:5000", "bytes=0-0,5-6"},
	} {
		f.Add(seed.path, seed.ns, seed.rng)
	}
	srv, _ := newFuzzServer(f)
	f.Fuzz(func(t *testing.T, path, ns, rng string) {
		req := httptest.NewRequest(http.MethodGet, "http://shoal.invalid/", nil)
		req.URL.Path = path
		q := req.URL.Query()
		q.Set("ns", ns)
		req.URL.RawQuery = q.Encode()
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, req)
		if w.Code == 0 {
			t.Fatal("no status")
		}
		if w.Code < 300 && path != "/v2/" && path != "/v2" {
			if _, err := parsePath(path); err != nil {
				t.Fatalf("%d for a path the parser refuses: %q", w.Code, path)
			}
		}
	})
}

func newFuzzServer(f *testing.F) (http.Handler, *fakeResolver) {
	f.Helper()
	fr := &fakeResolver{blob: []byte("0123456789")}
	h, err := New(fr, Config{})
	if err != nil {
		f.Fatal(err)
	}
	return h, fr
}
