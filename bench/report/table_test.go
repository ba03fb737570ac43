package report

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestWriteTable(t *testing.T) {
	t.Parallel()
	sums := Summarize(sampleRecords())
	tests := []struct {
		name     string
		mode     string
		wantHead string
		wantErr  error
	}{
		{name: "simulated", mode: ModeSimulated, wantHead: "SIMULATED: in-process registry and nodes, rate limits stand in for tc"},
		{name: "real", mode: ModeReal, wantHead: "REAL: network namespaces, tc-shaped links"},
		{name: "no mode", mode: "", wantErr: ErrUnknownMode},
		{name: "made-up mode", mode: "fast", wantErr: ErrUnknownMode},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var b bytes.Buffer
			err := WriteTable(&b, sums, tt.mode)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("WriteTable error = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				if b.Len() != 0 {
					t.Errorf("wrote %q before failing", b.String())
				}
				return
			}
			lines := strings.Split(b.String(), "\n")
			if !strings.HasPrefix(lines[0], tt.wantHead) {
				t.Errorf("first line = %q, want it to start with %q", lines[0], tt.wantHead)
			}
			if want := "N = 8 nodes, image S = 64MiB"; lines[1] != want {
				t.Errorf("second line = %q, want %q", lines[1], want)
			}
			checkTable(t, lines[3:], sums, tt.mode)
		})
	}
}

// checkTable checks the header and that every row's columns line up under it
// and hold the summary's figures. The real mode adds core-s/GiB, which the
// sample records do not measure.
func checkTable(t *testing.T, lines []string, sums []Summary, mode string) {
	t.Helper()
	header := lines[0]
	cols := []string{"scenario", "candidate", "reps", "egress/S", "makespan (median, min–max)", "makespan/T*", "failed"}
	if mode == ModeReal {
		cols = append(cols, "core-s/GiB")
	} else if strings.Contains(header, "core-s/GiB") {
		t.Errorf("the %s table has a core-s/GiB column: only the real mode measures the daemons", mode)
	}
	var starts []int
	for _, c := range cols {
		i := strings.Index(header, c)
		if i < 0 {
			t.Fatalf("header %q lacks column %q", header, c)
		}
		starts = append(starts, len([]rune(header[:i])))
	}
	if !slices.IsSorted(starts) {
		t.Fatalf("columns out of order in %q", header)
	}
	for i, s := range sums {
		row := []rune(lines[1+i])
		field := func(k int) string {
			end := len(row)
			if k+1 < len(starts) {
				end = starts[k+1]
			}
			if starts[k] > 0 && row[starts[k]-1] != ' ' {
				t.Errorf("row %q: column %q does not start under its header", string(row), cols[k])
			}
			return strings.TrimSpace(string(row[starts[k]:end]))
		}
		want := []string{s.Scenario, s.Candidate, "3", formatRatio(s.EgressRatioMedian),
			formatMakespan(s), formatRatio(s.MakespanRatioMedian), "0"}
		if mode == ModeReal {
			cpu := "n/a"
			if s.Candidate == Direct {
				cpu = "–"
			}
			want = append(want, cpu)
		}
		for k := range cols {
			if got := field(k); got != want[k] {
				t.Errorf("row %d column %q = %q, want %q", i, cols[k], got, want[k])
			}
		}
	}
	if !strings.Contains(strings.Join(lines, "\n"), "cold/direct: direct baseline reached only") {
		t.Errorf("table lacks the baseline note:\n%s", strings.Join(lines, "\n"))
	}
}

// TestWriteTableCoreSeconds checks the real mode's core-s/GiB column: the
// median over the repetitions that measured it, a dash for direct, which
// runs no daemon, and n/a for a candidate none of whose repetitions did.
func TestWriteTableCoreSeconds(t *testing.T) {
	t.Parallel()
	rec := func(candidate string, cpu float64) Record {
		return Record{Candidate: candidate, Scenario: "cold", Mode: ModeReal, Nodes: 4, ImageBytes: 64 << 20,
			RegistryEgressBytes: 64 << 20, BoundSeconds: 2, MakespanSeconds: 3, CoreSecondsPerGiB: cpu}
	}
	recs := []Record{
		rec(Direct, 0), rec(Direct, 0),
		rec("shoal", 4), rec("shoal", 6.5), rec("shoal", 5),
		rec("spegel", 0), rec("spegel", 12.5),
		rec("nop2p", 0),
	}
	var b bytes.Buffer
	if err := WriteTable(&b, Summarize(recs), ModeReal); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(b.String(), "\n")[3:]
	col := strings.Index(lines[0], "core-s/GiB")
	if col < 0 || !strings.HasSuffix(lines[0], "core-s/GiB") {
		t.Fatalf("header %q: want core-s/GiB as its last column", lines[0])
	}
	start := len([]rune(lines[0][:col]))
	want := map[string]string{Direct: "–", "shoal": "5.00", "spegel": "12.5", "nop2p": "n/a"}
	for _, l := range lines[1 : 1+len(want)] {
		row := []rune(l)
		if len(row) <= start || row[start-1] != ' ' {
			t.Errorf("row %q: no cell under core-s/GiB", l)
			continue
		}
		candidate := strings.Fields(l)[1]
		if got := strings.TrimSpace(string(row[start:])); got != want[candidate] {
			t.Errorf("%s: core-s/GiB = %q, want %q", candidate, got, want[candidate])
		}
		delete(want, candidate)
	}
	if len(want) > 0 {
		t.Errorf("table lacks rows for %v:\n%s", want, b.String())
	}
}

func TestFormatMakespanShowsSpread(t *testing.T) {
	t.Parallel()
	s := Summarize([]Record{
		{Scenario: "cold", Candidate: "shoal", MakespanSeconds: 12.34},
		{Scenario: "cold", Candidate: "shoal", MakespanSeconds: 150.2},
		{Scenario: "cold", Candidate: "shoal", MakespanSeconds: 0.5},
	})[0]
	if got, want := formatMakespan(s), "12.3 s (0.50–150)"; got != want {
		t.Errorf("formatMakespan = %q, want %q", got, want)
	}
}
