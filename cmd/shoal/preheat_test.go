package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestChooseNodes(t *testing.T) {
	t.Parallel()
	cands := []preheatNode{
		{Name: "node3", Labels: map[string]string{"pool": "gpu"}},
		{Name: "node1", Self: true, Labels: map[string]string{"pool": "cpu", "zone": "a"}},
		{Name: "node2", Labels: map[string]string{"pool": "gpu", "zone": "a"}},
		{Name: "node4"},
	}
	for _, tc := range []struct {
		name     string
		names    []string
		selector map[string]string
		count    int
		want     []string
		err      string
	}{
		{name: "all", want: []string{"node1", "node2", "node3", "node4"}},
		{name: "named", names: []string{"node4", "node2", "node4"}, want: []string{"node4", "node2"}},
		{name: "unknown name", names: []string{"node9"}, err: `"node9" is not a live member`},
		{name: "selector", selector: map[string]string{"pool": "gpu"}, want: []string{"node2", "node3"}},
		{name: "selector of two labels", selector: map[string]string{"pool": "gpu", "zone": "a"}, want: []string{"node2"}},
		{name: "named and selected", names: []string{"node1", "node3"}, selector: map[string]string{"pool": "gpu"}, want: []string{"node3"}},
		{name: "count", count: 2, want: []string{"node1", "node2"}},
		{name: "count of the selected", selector: map[string]string{"pool": "gpu"}, count: 1, want: []string{"node2"}},
		{name: "none matches", selector: map[string]string{"pool": "tpu"}, err: "no live member matches"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := chooseNodes(slices.Clone(cands), tc.names, tc.selector, tc.count)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, n := range got {
				names = append(names, n.Name)
			}
			if !slices.Equal(names, tc.want) {
				t.Errorf("chose %v, want %v", names, tc.want)
			}
		})
	}
}

func TestParseImage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ ref, registry, repo, reference string }{
		{"alpine", "docker.io", "library/alpine", "latest"},
		{"registry:5000/team/app:v1", "registry:5000", "team/app", "v1"},
		{"ghcr.io/org/app@sha256:" + strings.Repeat("a", 64), "ghcr.io", "org/app", "sha256:" + strings.Repeat("a", 64)},
	} {
		req, _, err := parseImage(tc.ref)
		if err != nil {
			t.Fatalf("%s: %v", tc.ref, err)
		}
		if req.Registry != tc.registry || req.Repo != tc.repo || req.Reference != tc.reference {
			t.Errorf("%s: %+v", tc.ref, req)
		}
	}
	if _, _, err := parseImage("Bad Name"); err == nil {
		t.Error("a malformed reference parsed")
	}
}

// preheatDaemon answers /preheat with the given events.
func preheatDaemon(t *testing.T, events ...preheatEvent) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/preheat" || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		enc := json.NewEncoder(w)
		for _, e := range events {
			_ = enc.Encode(e)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestPreheatExitsByWhatEveryNodeHolds(t *testing.T) {
	t.Parallel()
	plan := preheatEvent{Kind: "plan", Nodes: []string{"node1", "node2"}, Digests: map[string]string{"r/app:v1": "sha256:" + strings.Repeat("b", 64)}}
	held := func(node string) preheatEvent {
		return preheatEvent{Kind: "end", Node: node, Image: "r/app:v1", Blobs: 3, HeldBlobs: 3, Bytes: 3 << 20, HeldBytes: 3 << 20}
	}
	failed := preheatEvent{Kind: "end", Node: "node2", Image: "r/app:v1", Blobs: 3, HeldBlobs: 1, Bytes: 3 << 20, HeldBytes: 1 << 20, Error: "registry not mirrored by this node"}
	progress := preheatEvent{Kind: "progress", Node: "node2", Image: "r/app:v1", Blobs: 3, HeldBlobs: 1, Bytes: 3 << 20, HeldBytes: 1 << 20}
	for _, tc := range []struct {
		name    string
		events  []preheatEvent
		wantErr string
		wantOut []string
	}{
		{name: "every node holds every blob", events: []preheatEvent{plan, progress, held("node1"), held("node2")},
			wantOut: []string{"node1  3MiB / 3MiB  3 / 3 blobs  done", "node2  1MiB / 3MiB  1 / 3 blobs  running"}},
		{name: "a node failed", events: []preheatEvent{plan, held("node1"), failed}, wantErr: "1 of 2 nodes do not hold every blob",
			wantOut: []string{"node2: r/app:v1: registry not mirrored by this node"}},
		{name: "the answer broke off", events: []preheatEvent{plan, held("node1"), progress, {Kind: "progress", Node: "node2", Image: "r/app:v1"}}, wantErr: "1 of 2 nodes",
			wantOut: []string{"node2: the daemon's answer ended before this node did", "node2  1MiB / 3MiB  1 / 3 blobs  failed"}},
		{name: "a node holds less without an error", events: []preheatEvent{plan, held("node1"), {Kind: "end", Node: "node2", Image: "r/app:v1", Blobs: 3, HeldBlobs: 2, Bytes: 3, HeldBytes: 2}},
			wantErr: "1 of 2 nodes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			addr := preheatDaemon(t, tc.events...)
			var out bytes.Buffer
			err := runPreheat(t.Context(), &out, addr, preheatRequest{Images: []string{"r/app:v1"}}, time.Nanosecond)
			if tc.wantErr == "" && err != nil {
				t.Fatalf("%v\n%s", err, out.String())
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err %v, want %q\n%s", err, tc.wantErr, out.String())
			}
			for _, w := range tc.wantOut {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}

// A web page a browser on the node opens cannot post a preheat: a form's
// content types are refused, and JSON needs a CORS preflight.
func TestPreheatEndpointWantsJSON(t *testing.T) {
	t.Parallel()
	p := &preheater{}
	for _, ct := range []string{"application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x", ""} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/preheat", strings.NewReader(`{"images":["r/app:v1"]}`))
		req.Header.Set("Content-Type", ct)
		p.serveHTTP(rec, req)
		if rec.Code != http.StatusUnsupportedMediaType {
			t.Errorf("Content-Type %q: %d, want 415", ct, rec.Code)
		}
	}
}
