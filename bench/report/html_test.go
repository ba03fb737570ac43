package report

import (
	"bytes"
	"encoding/base64"
	"errors"
	"flag"
	"html"
	"image/png"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// sampleDir, when set, makes TestSampleReport keep its report there, so that a
// person can open the HTML and look at the charts:
//
//	go test ./bench/report -run TestSampleReport -report.dir /tmp/report
var sampleDir = flag.String("report.dir", "", "write the sample report to this directory")

func sampleMeta() Meta {
	return Meta{
		Command: "shoal bench --nodes 8 --layers 4 --layer-size 16MiB --reps 3 --candidate 'shoal-nopeers=shoal daemon --peers=false'",
		Date:    time.Date(2026, 5, 4, 13, 30, 0, 0, time.UTC),
		Machine: "test machine", Cores: 2, Layers: 4, LayerBytes: 16 << 20,
		LinkMbit: 200, RegistryMbit: 200, Mode: ModeSimulated,
	}
}

func TestWriteHTML(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if *sampleDir != "" {
		dir = *sampleDir // keep it to look at, even when the checks below fail
		t.Logf("sample report in %s", dir)
	}
	recs := sampleRecords()
	if err := WriteHTML(dir, recs, sampleMeta()); err != nil {
		t.Fatal(err)
	}
	if err := WriteJSON(filepath.Join(dir, "results.json"), recs); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, HTMLFile))
	if err != nil {
		t.Fatal(err)
	}
	page := string(b)

	for _, want := range []string{
		"SIMULATED: in-process registry and nodes",
		"direct", "shoal", "shoal-nopeers",
		"cold", "warm",
		"--layer-size 16MiB",
		"4 layers × 16MiB = 64MiB",
		"direct baseline reached only",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("report lacks %q", want)
		}
	}

	// Every chart is embedded as a valid PNG and also written next to the
	// report under the name the caption links to.
	imgs := regexp.MustCompile(`<img src="([^"]+)"`).FindAllStringSubmatch(page, -1)
	links := regexp.MustCompile(`<a href="([^"]+\.png)">`).FindAllStringSubmatch(page, -1)
	if want := 2 * 3; len(imgs) != want || len(links) != want {
		t.Fatalf("report has %d embedded charts and %d chart links, want %d of each", len(imgs), len(links), want)
	}
	for i, m := range imgs {
		// The attribute is HTML-escaped ('+' is &#43;), as a browser reads it.
		b64, ok := strings.CutPrefix(html.UnescapeString(m[1]), "data:image/png;base64,")
		if !ok {
			t.Fatalf("chart %d is not a PNG data URI: %.40s", i, m[1])
		}
		data, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			t.Fatalf("chart %d: bad base64: %v", i, err)
		}
		cfg, err := png.DecodeConfig(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("chart %d: not a PNG: %v", i, err)
		}
		if cfg.Width < 600 || cfg.Height < 400 {
			t.Errorf("chart %d is %d×%d, too small to read", i, cfg.Width, cfg.Height)
		}
		file, err := os.ReadFile(filepath.Join(dir, links[i][1]))
		if err != nil {
			t.Fatalf("chart %d: %v", i, err)
		}
		if !bytes.Equal(file, data) {
			t.Errorf("chart %d: %s differs from the embedded copy", i, links[i][1])
		}
	}

}

func TestWriteHTMLRefusesMixedModes(t *testing.T) {
	t.Parallel()
	recs := sampleRecords()
	recs[4].Mode = ModeReal
	err := WriteHTML(t.TempDir(), recs, sampleMeta())
	if !errors.Is(err, ErrModeMismatch) {
		t.Errorf("WriteHTML with a real record in a simulated report: error = %v, want %v", err, ErrModeMismatch)
	}
	if err := WriteHTML(t.TempDir(), recs, Meta{}); !errors.Is(err, ErrUnknownMode) {
		t.Errorf("WriteHTML without a mode: error = %v, want %v", err, ErrUnknownMode)
	}
}

func TestWriteHTMLEscapes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	recs := []Record{{Candidate: "<script>x</script>", Scenario: "../cold", Mode: ModeReal, Nodes: 1, ImageBytes: 10,
		RegistryEgressBytes: 10, BoundSeconds: 1, MakespanSeconds: 1, NodeSeconds: []float64{1}}}
	if err := WriteHTML(dir, recs, Meta{Mode: ModeReal}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, HTMLFile))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "<script>") {
		t.Error("a candidate name reached the page unescaped")
	}
	if _, err := os.Stat(filepath.Join(dir, "01-___cold-nodes.png")); err != nil {
		t.Errorf("scenario name not made file-safe: %v", err)
	}
}

// TestWriteHTMLCoreSeconds checks that a real-mode report's summary table
// has the daemons' core-s/GiB and a simulated one, which cannot measure
// them, does not.
func TestWriteHTMLCoreSeconds(t *testing.T) {
	t.Parallel()
	rec := func(mode, candidate string, cpu float64) Record {
		return Record{Candidate: candidate, Scenario: "cold", Mode: mode, Nodes: 2, ImageBytes: 10,
			RegistryEgressBytes: 10, BoundSeconds: 1, MakespanSeconds: 1, NodeSeconds: []float64{1, 1}, CoreSecondsPerGiB: cpu}
	}
	for _, tt := range []struct {
		mode string
		want []string // cells in the summary table
		not  []string
	}{
		{mode: ModeReal, want: []string{"<th>core-s/GiB</th>", `<td class="num">–</td></tr>`, `<td class="num">3.25</td></tr>`}},
		{mode: ModeSimulated, not: []string{"core-s/GiB"}},
	} {
		t.Run(tt.mode, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			recs := []Record{rec(tt.mode, Direct, 0), rec(tt.mode, "shoal", 3.25)}
			if err := WriteHTML(dir, recs, Meta{Mode: tt.mode}); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(filepath.Join(dir, HTMLFile))
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(string(b), w) {
					t.Errorf("report lacks %s", w)
				}
			}
			for _, n := range tt.not {
				if strings.Contains(string(b), n) {
					t.Errorf("report has %s", n)
				}
			}
		})
	}
}
