package report

import (
	"bytes"
	_ "embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	units "github.com/docker/go-units"
	"gonum.org/v1/plot"
)

// ErrModeMismatch is returned when a record's mode differs from the report's:
// a report mixing simulated and real numbers would mislead whoever reads it.
var ErrModeMismatch = errors.New("record mode differs from report mode")

// Meta describes the session a report comes from. Zero fields are left out
// of the report, except Mode, which is required.
type Meta struct {
	// Command is the command line as it was run.
	Command string
	// Date is when the session started.
	Date time.Time
	// Machine names the host (e.g. its CPU model); Cores is runtime.NumCPU.
	Machine string
	Cores   int
	// Layers and LayerBytes describe the generated image.
	Layers     int
	LayerBytes int64
	// LinkMbit is each node's shaped rate up and down, RegistryMbit the
	// registry's upload; 0 means not shaped.
	LinkMbit, RegistryMbit float64
	// Mode is ModeReal or ModeSimulated.
	Mode string
}

// HTMLFile is the name of the report WriteHTML writes into its directory.
const HTMLFile = "report.html"

// WriteHTML writes dir/report.html and, next to it, one PNG per chart. The
// HTML embeds the same PNGs as data URIs, so it stays whole when copied
// alone; the files are there for docs that want a single chart. For each
// scenario it draws per-node completion times, registry egress and
// makespan/T* per candidate, and it repeats the terminal's summary table,
// with the daemons' core-seconds per GiB in the real mode.
func WriteHTML(dir string, records []Record, meta Meta) error {
	mode, err := ModeLine(meta.Mode)
	if err != nil {
		return err
	}
	for i, r := range records {
		if r.Mode != meta.Mode {
			return fmt.Errorf("record %d (%s/%s rep %d) is %q, report is %q: %w",
				i, r.Scenario, r.Candidate, r.Rep, r.Mode, meta.Mode, ErrModeMismatch)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("report dir: %w", err)
	}

	sums := Summarize(records)
	page := htmlPage{
		ModeLine:  mode,
		Simulated: meta.Mode == ModeSimulated,
		Facts:     facts(meta, sums),
		Rows:      rows(sums),
	}
	for _, s := range sums {
		for _, n := range s.Notes {
			page.Notes = append(page.Notes, s.Scenario+"/"+s.Candidate+": "+n)
		}
	}
	// Styles come from the whole session, so that a candidate keeps its
	// colour in a scenario where another one did not run.
	var candidates []string
	for _, s := range sums {
		if !slices.Contains(candidates, s.Candidate) {
			candidates = append(candidates, s.Candidate)
		}
	}
	st := styles(candidates)
	for i, sd := range byScenario(records, sums) {
		sec := htmlSection{Name: sd.Name, About: aboutScenario(sd.Name)}
		charts, err := drawScenario(i, sd, st)
		if err != nil {
			return err
		}
		for _, c := range charts {
			if err := os.WriteFile(filepath.Join(dir, c.File), c.PNG, 0o644); err != nil {
				return fmt.Errorf("write chart: %w", err)
			}
			sec.Charts = append(sec.Charts, htmlChart{
				Title: c.Title, Caption: c.Caption, File: c.File, Width: chartCSSWidth,
				// We drew these bytes ourselves: a data URI of them is safe.
				Src: template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(c.PNG)),
			})
		}
		page.Sections = append(page.Sections, sec)
	}

	var b bytes.Buffer
	if err := reportTemplate.Execute(&b, page); err != nil {
		return fmt.Errorf("render report: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, HTMLFile), b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// drawScenario renders the charts of the i-th scenario.
func drawScenario(i int, sd scenarioData, st map[string]style) ([]chart, error) {
	prefix := fmt.Sprintf("%02d-%s-", i+1, fileSafe(sd.Name))
	var out []chart
	add := func(p *plot.Plot, kind, caption string) error {
		if p == nil {
			return nil
		}
		png, err := renderPNG(p)
		if err != nil {
			return err
		}
		out = append(out, chart{File: prefix + kind + ".png", Title: p.Title.Text, Caption: caption, PNG: png})
		return nil
	}

	p, err := nodeTimesChart(sd, st)
	if err != nil {
		return nil, err
	}
	if err := add(p, "nodes", "Each node's time from the start of the scenario until its image was usable, "+
		"sorted from fastest to slowest. Dots are single repetitions, the line is their median at each rank; "+
		"the dashed line is the bound T*."); err != nil {
		return nil, err
	}
	if p, err = egressChart(sd, st); err != nil {
		return nil, err
	}
	if err := add(p, "egress", "Bytes the registry sent, by its own access log: median over repetitions, "+
		"the whisker spans the repetitions from least to most; the dashed line is one copy of the image."); err != nil {
		return nil, err
	}
	if p, err = makespanChart(sd, st); err != nil {
		return nil, err
	}
	if err := add(p, "makespan", "The slowest node's time divided by T*: 1 is the physical limit, "+
		"shoal aims for "+formatRatio(targetRatio)+" or less."); err != nil {
		return nil, err
	}
	if p, err = tailChart(sd); err != nil {
		return nil, err
	}
	if err := add(p, "tail", "One row per layer, grouped by node and in the order containerd unpacked them "+
		"(each layer only after the ones below it): grey while the daemon waits for the layer's first byte, "+
		"blue while its bytes arrive, orange from the moment the daemon verified it until containerd had it unpacked; "+
		"the dot is when the node's pull returned. The repetition with the median makespan, real mode only."); err != nil {
		return nil, err
	}
	return out, nil
}

// byScenario splits records by scenario, in Summarize's order.
func byScenario(records []Record, sums []Summary) []scenarioData {
	var out []scenarioData
	index := make(map[string]int)
	for _, s := range sums {
		i, ok := index[s.Scenario]
		if !ok {
			i = len(out)
			index[s.Scenario] = i
			out = append(out, scenarioData{Name: s.Scenario, Records: map[string][]Record{}, Sums: map[string]Summary{}})
		}
		out[i].Candidates = append(out[i].Candidates, s.Candidate)
		out[i].Sums[s.Candidate] = s
	}
	for _, r := range records {
		sd := &out[index[r.Scenario]]
		sd.Records[r.Candidate] = append(sd.Records[r.Candidate], r)
	}
	return out
}

func aboutScenario(name string) string {
	switch name {
	case "cold":
		return "All N nodes pull a new image at once. T* = max(S/U, S/d, N·S/(U + N·u))."
	case "warm":
		return "One node pulls first; then the other N−1 pull at once, and the node that holds the image " +
			"can serve them in the registry's place. T* = max(S/u, S/d, (N−1)·S/(N·u))."
	case "rolling":
		return "Nodes pull a few at a time, as in a rolling update; times run from the first batch's start. " +
			"T* adds up the batches' bounds, each a cold pull whose source is the registry plus the nodes that already hold the image."
	case "churn":
		return "All nodes pull at once and some are killed mid-pull, daemon and containerd both: every other pull must still succeed. " +
			"T* is the cold bound for the nodes that survive."
	case "outage":
		return "One node pulls, then the registry stops and the others pull. T* is the warm bound."
	case "lone":
		return "One node pulls a new image while the others run and pull nothing; they should receive and keep nothing for it. " +
			"T* = max(S/U, S/d), one node's direct bound."
	default:
		return ""
	}
}

// fileSafe keeps letters, digits, '-' and '_' of a name for a file name.
func fileSafe(name string) string {
	s := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		default:
			return '_'
		}
	}, name)
	if s == "" {
		return "scenario"
	}
	return s
}

// facts lists the session's set-up as label/value pairs, skipping what is not
// known.
func facts(m Meta, sums []Summary) [][2]string {
	var out [][2]string
	add := func(k, v string) {
		if v != "" {
			out = append(out, [2]string{k, v})
		}
	}
	add("command", m.Command)
	if !m.Date.IsZero() {
		add("date", m.Date.Format("2006-01-02 15:04 MST"))
	}
	machine := m.Machine
	if m.Cores > 0 {
		if machine != "" {
			machine += ", "
		}
		machine += fmt.Sprintf("%d cores", m.Cores)
	}
	add("machine", machine)
	if m.Layers > 0 && m.LayerBytes > 0 {
		add("image", fmt.Sprintf("%d layers × %s = %s", m.Layers,
			units.BytesSize(float64(m.LayerBytes)), units.BytesSize(float64(m.LayerBytes)*float64(m.Layers))))
	}
	if setup := setupLine(sums); setup != "" {
		add("N and S", setup)
	}
	add("links", fmt.Sprintf("each node %s up and down; registry %s up", rate(m.LinkMbit), rate(m.RegistryMbit)))
	return out
}

func rate(mbit float64) string {
	if mbit <= 0 {
		return "not shaped"
	}
	return formatSeconds(mbit) + " Mbit/s"
}

func rows(sums []Summary) []htmlRow {
	out := make([]htmlRow, len(sums))
	for i, s := range sums {
		out[i] = htmlRow{
			Scenario: s.Scenario, Candidate: s.Candidate, Reps: s.Reps,
			Egress:        formatRatio(s.EgressRatioMedian),
			Makespan:      formatMakespan(s),
			Bound:         formatSeconds(s.BoundSeconds) + " s",
			MakespanRatio: formatRatio(s.MakespanRatioMedian),
			CoreSeconds:   formatCoreSeconds(s),
			Failed:        s.Failed,
		}
	}
	return out
}

type htmlPage struct {
	ModeLine  string
	Simulated bool
	Facts     [][2]string
	Rows      []htmlRow
	Notes     []string
	Sections  []htmlSection
}

type htmlRow struct {
	Scenario, Candidate                                 string
	Reps                                                int
	Egress, Makespan, Bound, MakespanRatio, CoreSeconds string
	Failed                                              int
}

type htmlSection struct {
	Name, About string
	Charts      []htmlChart
}

type htmlChart struct {
	Title, Caption, File string
	Src                  template.URL
	Width                int
}

//go:embed report.html.tmpl
var reportHTML string

var reportTemplate = template.Must(template.New(HTMLFile).Parse(reportHTML))
