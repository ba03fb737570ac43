package report

import (
	"bytes"
	"encoding/json"
	"maps"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestJSONRoundTrip(t *testing.T) {
	t.Parallel()
	recs := sampleRecords()
	recs[0].NodeUploadBytes = []int64{1, 2, 3, 4, 5, 6, 7, 8}
	recs[1].Daemons = []DaemonCost{{Node: 0, CPUSeconds: 1.5, LinkBytes: 3 << 20}, {Node: 2, CPUSeconds: 0.5, LinkBytes: 1 << 20}}
	recs[1].CoreSecondsPerGiB = CoreSecondsPerGiB(recs[1].Daemons)
	path := filepath.Join(t.TempDir(), "results.json")
	if err := WriteJSON(path, recs); err != nil {
		t.Fatal(err)
	}
	got, err := ReadJSON(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, recs) {
		t.Errorf("round trip changed the records:\ngot  %+v\nwant %+v", got[0], recs[0])
	}

	// The field names are a contract with readers outside Go.
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var raw []map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatalf("results.json is not a JSON list of objects: %v", err)
	}
	if len(raw) != len(recs) {
		t.Fatalf("results.json has %d records, want %d", len(raw), len(recs))
	}
	required := []string{"candidate", "scenario", "mode", "nodes", "image_bytes", "registry_egress_bytes",
		"bound_seconds", "makespan_seconds", "node_seconds", "failed_pulls"}
	all := append(slices.Clone(required), "rep", "link_mbit", "registry_mbit", "node_upload_bytes", "notes", "registry_tx_bytes",
		"daemons", "core_seconds_per_gib")
	for _, k := range required {
		if _, ok := raw[1][k]; !ok {
			t.Errorf("record lacks %q; it has %v", k, slices.Sorted(maps.Keys(raw[1])))
		}
	}
	for _, r := range raw[:2] {
		for _, k := range slices.Sorted(maps.Keys(r)) {
			if !slices.Contains(all, k) {
				t.Errorf("record has unexpected field %q", k)
			}
		}
	}
	// direct runs no daemon: its record says nothing of their cost.
	for _, k := range []string{"daemons", "core_seconds_per_gib"} {
		if _, ok := raw[0][k]; ok {
			t.Errorf("the direct record has %q", k)
		}
	}
	if got, want := string(raw[1]["daemons"]), `[{"node":0,"cpu_seconds":1.5,"link_bytes":3145728},{"node":2,"cpu_seconds":0.5,"link_bytes":1048576}]`; compactJSON(t, got) != want {
		t.Errorf("daemons = %s, want %s", got, want)
	}
	if got, want := string(raw[1]["core_seconds_per_gib"]), "512"; got != want {
		t.Errorf("core_seconds_per_gib = %s, want %s (2 s over 4 MiB)", got, want)
	}
	if !bytes.Contains(b, []byte("\n  {\n    \"candidate\": \"direct\",")) {
		t.Errorf("results.json is not indented as expected:\n%.200s", b)
	}
}

func compactJSON(t *testing.T, s string) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(s)); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestWriteJSONEmptyLists(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tt := range []struct {
		name string
		recs []Record
		want string
	}{
		{"no records is an empty list", nil, "[]\n"},
		{"missing node times are an empty list", []Record{{Candidate: "shoal"}}, `"node_seconds": []`},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-")+".json")
		if err := WriteJSON(path, tt.recs); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), tt.want) {
			t.Errorf("%s: got %s, want it to contain %s", tt.name, b, tt.want)
		}
	}
}

func TestCoreSecondsPerGiB(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		ds   []DaemonCost
		want float64
	}{
		{name: "no daemons", ds: nil, want: 0},
		{name: "one daemon, 2 s for 1 GiB", ds: []DaemonCost{{CPUSeconds: 2, LinkBytes: GiB}}, want: 2},
		{name: "half a GiB doubles it", ds: []DaemonCost{{CPUSeconds: 2, LinkBytes: GiB / 2}}, want: 4},
		{
			// 4 s over 4 GiB, not the mean of 3 and 1/3: a node that
			// moved little weighs little.
			name: "the sum of CPU over the sum of bytes",
			ds:   []DaemonCost{{Node: 0, CPUSeconds: 3, LinkBytes: GiB}, {Node: 1, CPUSeconds: 1, LinkBytes: 3 * GiB}},
			want: 1,
		},
		{name: "links that carried nothing", ds: []DaemonCost{{CPUSeconds: 0.5}}, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := CoreSecondsPerGiB(tt.ds); math.Abs(got-tt.want) > 1e-12 {
				t.Errorf("CoreSecondsPerGiB = %v, want %v", got, tt.want)
			}
		})
	}
}
