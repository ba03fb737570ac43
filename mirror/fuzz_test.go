package mirror

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/resolver"
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
		req := localRequest(http.MethodGet, "http://shoal.invalid/", nil)
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

// FuzzParsePath checks the path parser on its own: what it accepts
// re-assembles to the same path, names pass the distribution grammar,
// digests are sha256 and re-serialise identically, and what it refuses is
// a 400 or 404 with an OCI code.
func FuzzParsePath(f *testing.F) {
	for _, p := range []string{
		"/v2/library/alpine/manifests/latest",
		"/v2/a/b/c/blobs/sha256:" + strings.Repeat("a", 64),
		"/v2/a/manifests/sha256:" + strings.Repeat("A", 64),
		"/v2/a/blobs/manifests/blobs/sha256:" + strings.Repeat("0", 64),
		"/v2/a/manifests/x/blobs/y",
		"/v2/a__b/manifests/" + strings.Repeat("t", 128),
		"/v2/a/manifests/+sha256:" + strings.Repeat("0", 64),
		"/v2/a/manifests/sha256:" + strings.Repeat("0", 64) + "\n",
		"/v2/localhost:5000/a/manifests/v1",
		"/v2/-a/manifests/v1",
	} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, path string) {
		rt, err := parsePath(path)
		if err != nil {
			var pe *pathError
			if !errors.As(err, &pe) {
				t.Fatalf("%q: error %v is not a pathError", path, err)
			}
			if (pe.status != http.StatusBadRequest && pe.status != http.StatusNotFound) || pe.code == "" || pe.msg == "" {
				t.Fatalf("%q: refusal %+v", path, pe)
			}
			return
		}
		if rt.kind != kindManifest && rt.kind != kindBlob {
			t.Fatalf("%q: kind %q", path, rt.kind)
		}
		if got := "/v2/" + rt.name + "/" + rt.kind + "s/" + rt.ref; got != path {
			t.Fatalf("%q re-assembles to %q", path, got)
		}
		named, err := reference.ParseNamed("shoal.invalid/" + rt.name)
		if err != nil || reference.Path(named) != rt.name {
			t.Fatalf("%q: accepted name %q the grammar refuses: %v", path, rt.name, err)
		}
		d, err := digest.Parse(rt.ref)
		switch {
		case err == nil:
			if d.Algorithm() != digest.SHA256 || d.String() != rt.ref {
				t.Fatalf("%q: accepted digest %q re-serialises as %q", path, rt.ref, d)
			}
		case rt.kind == kindBlob:
			t.Fatalf("%q: blob by non-digest %q", path, rt.ref)
		case !anchoredTag.MatchString(rt.ref) || len(rt.ref) > 128:
			t.Fatalf("%q: accepted tag %q", path, rt.ref)
		}
	})
}

// fuzzBlob is the blob FuzzRange serves: long enough for multi-part answers.
var fuzzBlob = func() []byte {
	b := make([]byte, 1000)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}()

// FuzzRange sends arbitrary Range and If-Range headers for a blob shoal
// holds, the way containerd resumes a download: every answer must be a 200
// with the whole blob, a 206 whose Content-Range lies inside the blob and
// whose body is those bytes (one part or multipart/byteranges), or a 416
// with an OCI RANGE_INVALID body.
func FuzzRange(f *testing.F) {
	for _, seed := range []struct {
		rng, ifRange string
		head         bool
	}{
		{"bytes=0-", "", false},
		{"bytes=10-19", "", false},
		{"bytes=-5", "", true},
		{"bytes=990-5000", "", false},
		{"bytes=0-0,5-6,998-", "", false},
		{"bytes=0-0,-1", `"sha256:x"`, false},
		{"bytes=1000-", "", false},
		{"bytes=-0", "", false},
		{"bytes= 3 - 4 ", "", false},
		{"bytes=9223372036854775807-", "", false},
		{"bytes=0-9223372036854775807", "", false},
		{"bytes=-9223372036854775808", "", false},
		{"bytes=0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1", "", false},
		{"items=0-1", "", false},
		{"bytes=abc", "", true},
	} {
		f.Add(seed.rng, seed.ifRange, seed.head)
	}
	fr := &fakeResolver{blob: fuzzBlob}
	h, err := New(fr, Config{})
	if err != nil {
		f.Fatal(err)
	}
	dgst := digest.FromBytes(fuzzBlob)
	size := int64(len(fuzzBlob))
	f.Fuzz(func(t *testing.T, rng, ifRange string, head bool) {
		method := http.MethodGet
		if head {
			method = http.MethodHead
		}
		req := localRequest(method, "http://shoal.invalid/v2/a/b/blobs/"+dgst.String()+"?ns=docker.io", nil)
		req.Header.Set("Range", rng)
		if ifRange != "" {
			req.Header.Set("If-Range", ifRange)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		resp := w.Result()
		body := w.Body.Bytes()
		if head && len(body) != 0 {
			t.Fatalf("HEAD with a %d-byte body", len(body))
		}
		switch resp.StatusCode {
		case http.StatusOK:
			if resp.Header.Get("Content-Length") != strconv.FormatInt(size, 10) {
				t.Fatalf("200 with Content-Length %q", resp.Header.Get("Content-Length"))
			}
			if !head && !bytes.Equal(body, fuzzBlob) {
				t.Fatalf("200 with %d bytes that are not the blob", len(body))
			}
		case http.StatusPartialContent:
			checkPartial(t, resp, body, head, size)
		case http.StatusRequestedRangeNotSatisfiable:
			// A malformed header gets no Content-Range; one past the end
			// gets the size (RFC 9110 15.5.17).
			if cr := resp.Header.Get("Content-Range"); cr != "" && cr != "bytes */"+strconv.FormatInt(size, 10) {
				t.Fatalf("416 with Content-Range %q", cr)
			}
			if resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("416 with Content-Type %q", resp.Header.Get("Content-Type"))
			}
			if head {
				return
			}
			var e ociErrors
			if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) != 1 || e.Errors[0].Code != codeRangeInvalid {
				t.Fatalf("416 body %q is not one RANGE_INVALID error: %v", body, err)
			}
		default:
			t.Fatalf("status %d for Range %q", resp.StatusCode, rng)
		}
	})
}

// checkPartial checks a 206: one part, or multipart/byteranges, each part's
// Content-Range inside the blob and its bytes the blob's.
func checkPartial(t *testing.T, resp *http.Response, body []byte, head bool, size int64) {
	t.Helper()
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err == nil && mt == "multipart/byteranges" {
		if resp.Header.Get("Content-Range") != "" {
			t.Fatalf("multipart 206 with a Content-Range header")
		}
		if head {
			return
		}
		mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
		parts := 0
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("multipart body: %v", err)
			}
			b, err := io.ReadAll(p)
			if err != nil {
				t.Fatalf("multipart part: %v", err)
			}
			checkPart(t, p.Header.Get("Content-Range"), b, size)
			parts++
		}
		if parts < 2 {
			t.Fatalf("multipart 206 with %d parts", parts)
		}
		return
	}
	start, end := checkContentRange(t, resp.Header.Get("Content-Range"), size)
	if resp.Header.Get("Content-Length") != strconv.FormatInt(end-start+1, 10) {
		t.Fatalf("206 %d-%d with Content-Length %q", start, end, resp.Header.Get("Content-Length"))
	}
	if !head {
		checkPart(t, resp.Header.Get("Content-Range"), body, size)
	}
}

func checkPart(t *testing.T, cr string, b []byte, size int64) {
	t.Helper()
	start, end := checkContentRange(t, cr, size)
	if !bytes.Equal(b, fuzzBlob[start:end+1]) {
		t.Fatalf("part %q carries %d bytes that are not the blob's", cr, len(b))
	}
}

// checkContentRange parses "bytes START-END/SIZE" strictly and checks it
// lies inside the blob.
func checkContentRange(t *testing.T, cr string, size int64) (start, end int64) {
	t.Helper()
	rest, ok := strings.CutPrefix(cr, "bytes ")
	se, total, ok2 := strings.Cut(rest, "/")
	s, e, ok3 := strings.Cut(se, "-")
	start, err1 := strconv.ParseInt(s, 10, 64)
	end, err2 := strconv.ParseInt(e, 10, 64)
	if !ok || !ok2 || !ok3 || err1 != nil || err2 != nil || total != strconv.FormatInt(size, 10) {
		t.Fatalf("206 with Content-Range %q", cr)
	}
	if start < 0 || start > end || end >= size {
		t.Fatalf("Content-Range %q outside a %d-byte blob", cr, size)
	}
	return start, end
}

// FuzzNS sends arbitrary ?ns= values: each is refused with 400
// NAME_INVALID, or reaches the resolver unchanged as a registry host that
// the distribution grammar reads back as the same domain.
func FuzzNS(f *testing.F) {
	for _, ns := range []string{
		"docker.io", "registry.example:5000", "[::1]:5000", "localhost", "", "a b",
		"docker.io/x", "x@y", "ghcr.io:", "ghcr.io:0", "[::1]", "a..b", "-a.b", "EXAMPLE.COM", "1.2.3.4:99999",
		"\x00", "docker.io\n",
	} {
		f.Add(ns)
	}
	body := []byte(`{"schemaVersion":2}`)
	f.Fuzz(func(t *testing.T, ns string) {
		fr := &fakeResolver{manifest: resolver.Manifest{MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: digest.FromBytes(body), Body: body}}
		h, err := New(fr, Config{})
		if err != nil {
			t.Fatal(err)
		}
		req := localRequest(http.MethodGet, "http://shoal.invalid/v2/a/manifests/v1", nil)
		req.URL.RawQuery = url.Values{"ns": {ns}}.Encode()
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		switch w.Code {
		case http.StatusOK:
			if got := fr.lastReg.Load(); got != ns {
				t.Fatalf("ns %q reached the resolver as %q", ns, got)
			}
			ref, err := reference.Parse(ns + "/a")
			named, _ := ref.(reference.Named)
			if err != nil || named == nil || reference.Domain(named) != ns || strings.ContainsAny(ns, "/@ \t\r\n") {
				t.Fatalf("accepted ns %q: %v", ns, err)
			}
		case http.StatusBadRequest:
			if fr.lastReg.Load() != nil {
				t.Fatalf("refused ns %q reached the resolver", ns)
			}
			var e ociErrors
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || len(e.Errors) != 1 || e.Errors[0].Code != codeNameInvalid {
				t.Fatalf("400 body %q is not one NAME_INVALID error", w.Body.Bytes())
			}
		default:
			t.Fatalf("ns %q: status %d", ns, w.Code)
		}
	})
}
