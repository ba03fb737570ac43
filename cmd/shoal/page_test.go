package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoal-dev/shoal/pulls"
	"github.com/shoal-dev/shoal/resolver"
)

// recordedPull records one pull of reg:5000/app:v1 whose only layer came
// from the registry and a peer.
func recordedPull(t *testing.T) *pulls.Log {
	t.Helper()
	log := pulls.New(5)
	layer := digest.FromString("layer")
	body, _ := json.Marshal(ocispec.Manifest{Config: ocispec.Descriptor{Digest: digest.FromString("config"), Size: 10}, Layers: []ocispec.Descriptor{{Digest: layer, Size: 3000}}})
	m := resolver.Manifest{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(body), Body: body}
	req := resolver.ManifestRequest{Registry: "reg:5000", Repo: "app", Reference: "v1"}
	log.Tagged(req, m)
	log.Fetched(req, m)
	log.Started(layer, 3000)
	log.Trying(layer, resolver.SourcePeer, "12D3KooWpeer")
	log.Received(layer, resolver.SourcePeer, "12D3KooWpeer", 1000)
	log.FellBack(layer, resolver.SourcePeer, "12D3KooWpeer", resolver.ReasonSlow, nil)
	log.Trying(layer, resolver.SourceUpstream, "")
	log.Received(layer, resolver.SourceUpstream, "", 2000)
	log.Ended(layer, nil)
	return log
}

func get(t *testing.T, url string) (string, *http.Response) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), resp
}

// TestStatusAddressServesPageAndRecords: the status address serves the
// page with its assets from the binary, /live, and the pull records.
func TestStatusAddressServesPageAndRecords(t *testing.T) {
	t.Parallel()
	v := statusViews{status: func() daemonStatus { return daemonStatus{Version: "test"} }, pulls: recordedPull(t), page: true}
	srv := httptest.NewServer(statusHandler(v))
	defer srv.Close()
	for path, want := range map[string]string{
		"/":                             `<script src="/ui/app.js"`,
		"/ui/app.js":                    "fetch(\"/live\"",
		"/ui/style.css":                 "@media (max-width: 600px)",
		"/live":                         `"image":"reg:5000/app:v1"`,
		"/pulls?image=reg:5000/app:v1":  `"reason":"slow"`,
		"/pulls?image=reg%3A5000%2Fapp": "", // no tag: latest, not recorded
		"/status":                       `"version":"test"`,
	} {
		body, resp := get(t, srv.URL+path)
		if want == "" {
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("GET %s: %s, want 404", path, resp.Status)
			}
			continue
		}
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("GET %s: %s, body lacks %q:\n%.300s", path, resp.Status, want, body)
		}
	}

	v.page = false
	off := httptest.NewServer(statusHandler(v))
	defer off.Close()
	for _, path := range []string{"/", "/live", "/ui/app.js"} {
		if _, resp := get(t, off.URL+path); resp.StatusCode != http.StatusNotFound {
			t.Errorf("with --status-page=false, GET %s: %s", path, resp.Status)
		}
	}
}

func TestExplainPrintsEveryBlob(t *testing.T) {
	t.Parallel()
	p, ok := recordedPull(t).Latest("reg:5000/app:v1", func(string) string { return "node2" })
	if !ok {
		t.Fatal("no record")
	}
	var b strings.Builder
	if err := printPull(&b, p); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	t.Log("\n" + out)
	for _, want := range []string{"reg:5000/app:v1", "config ", "held", "layer ", "stored", "registry 1.953KiB, node2 1000B", "node2 slow", "total 2.93KiB", "(bytes: registry 2000, node2 1000)", "1 fallbacks"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

// TestStatusWeb: `shoal status --web` serves the daemon's page on a
// local port and prints its URL.
func TestStatusWeb(t *testing.T) {
	t.Parallel()
	v := statusViews{status: func() daemonStatus { return daemonStatus{Version: "test"} }, pulls: pulls.New(1), page: true}
	daemon := httptest.NewServer(statusHandler(v))
	defer daemon.Close()
	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- serveWeb(ctx, pw, daemon.Listener.Addr().String(), "127.0.0.1:0") }()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(line, "http://127.0.0.1:")
	if i < 0 {
		t.Fatalf("no URL in %q", line)
	}
	url := strings.Fields(line[i:])[0]
	if body, resp := get(t, url+"live"); resp.StatusCode != http.StatusOK || !strings.Contains(body, `"version":"test"`) {
		t.Errorf("GET %slive through --web: %s %.200s", url, resp.Status, body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("--web ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("--web did not stop")
	}

	v.page = false
	nopage := httptest.NewServer(statusHandler(v))
	defer nopage.Close()
	if err := serveWeb(t.Context(), io.Discard, nopage.Listener.Addr().String(), "127.0.0.1:0"); err != errNoPage {
		t.Errorf("--web against a daemon without the page: %v, want %v", err, errNoPage)
	}
}

// TestProfilesOnlyWithPprof: Go's profiles are served on the status
// address with --pprof, and not without it.
func TestProfilesOnlyWithPprof(t *testing.T) {
	t.Parallel()
	v := statusViews{status: func() daemonStatus { return daemonStatus{} }}
	off := httptest.NewServer(statusHandler(v))
	defer off.Close()
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/profile?seconds=1"} {
		if _, resp := get(t, off.URL+path); resp.StatusCode != http.StatusNotFound {
			t.Errorf("without --pprof, GET %s: %s, want 404", path, resp.Status)
		}
	}
	v.pprof = true
	on := httptest.NewServer(statusHandler(v))
	defer on.Close()
	if body, resp := get(t, on.URL+"/debug/pprof/"); resp.StatusCode != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("with --pprof, GET /debug/pprof/: %s\n%.300s", resp.Status, body)
	}
	body, resp := get(t, on.URL+"/debug/pprof/profile?seconds=1")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/octet-stream" || len(body) == 0 {
		t.Errorf("with --pprof, a 1 s CPU profile: %s, %s, %d bytes", resp.Status, resp.Header.Get("Content-Type"), len(body))
	}
}
