package report

import (
	"bytes"
	"encoding/json"
	"maps"
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
	all := append(slices.Clone(required), "rep", "link_mbit", "registry_mbit", "node_upload_bytes", "notes", "registry_tx_bytes")
	for _, k := range required {
		if _, ok := raw[1][k]; !ok {
			t.Errorf("record lacks %q; it has %v", k, slices.Sorted(maps.Keys(raw[1])))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(raw[0])) {
		if !slices.Contains(all, k) {
			t.Errorf("record has unexpected field %q", k)
		}
	}
	if !bytes.Contains(b, []byte("\n  {\n    \"candidate\": \"direct\",")) {
		t.Errorf("results.json is not indented as expected:\n%.200s", b)
	}
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
