package report

import (
	"bytes"
	"fmt"
	"image/color"
	"math"
	"slices"
	"strconv"

	units "github.com/docker/go-units"
	xfont "golang.org/x/image/font"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Chart geometry. The PNGs are drawn at twice the CSS resolution so that
// they stay sharp on high-density screens; the HTML shows them at chartCSSWidth.
const (
	chartWidth    = 7 * vg.Inch
	chartHeight   = 3.75 * vg.Inch
	chartDPI      = 192
	chartCSSWidth = 672 // 7 in at 96 CSS pixels per inch
	// headroom above the highest value leaves room for the bar labels.
	headroom = 1.12
	// typeface variant for every text: sans reads better on screens.
	sans = "Sans"
)

// chart is one rendered figure of the report.
type chart struct {
	File    string // file name in the report directory
	Title   string // alt text and caption
	Caption string // how to read it
	PNG     []byte
}

// scenarioData is one scenario's records and summaries, candidates in the
// report's order.
type scenarioData struct {
	Name       string
	Candidates []string
	Records    map[string][]Record
	Sums       map[string]Summary
}

// style is how one candidate is drawn in every chart, so that a reader who
// learnt its colour in the first chart keeps it.
type style struct {
	Color color.Color
	Shape draw.GlyphDrawer
}

// candidateStyle picks a style by the candidate's place in the report: the
// direct baseline is grey, the others take the Okabe–Ito palette, which stays
// distinct for colour-blind readers, and a glyph shape each as well.
func candidateStyle(name string, i int) style {
	palette := [...]color.RGBA{
		{0x00, 0x72, 0xB2, 0xff}, // blue
		{0xD5, 0x5E, 0x00, 0xff}, // vermillion
		{0x00, 0x9E, 0x73, 0xff}, // bluish green
		{0xCC, 0x79, 0xA7, 0xff}, // reddish purple
		{0xE6, 0x9F, 0x00, 0xff}, // orange
		{0x56, 0xB4, 0xE9, 0xff}, // sky blue
	}
	shapes := [...]draw.GlyphDrawer{
		draw.TriangleGlyph{}, draw.BoxGlyph{}, draw.PyramidGlyph{},
		draw.RingGlyph{}, draw.CrossGlyph{}, draw.PlusGlyph{},
	}
	if name == Direct {
		return style{Color: color.RGBA{0x66, 0x66, 0x66, 0xff}, Shape: draw.CircleGlyph{}}
	}
	return style{Color: palette[i%len(palette)], Shape: shapes[i%len(shapes)]}
}

// styles assigns every candidate its style; i counts the non-baseline ones.
func styles(candidates []string) map[string]style {
	out := make(map[string]style, len(candidates))
	i := 0
	for _, c := range candidates {
		out[c] = candidateStyle(c, i)
		if c != Direct {
			i++
		}
	}
	return out
}

// nodeTimesChart draws, per candidate, every node's completion time sorted
// from fastest to slowest: a dot per node and repetition, and a line through
// the median over repetitions at each rank. T* is a dashed line. It returns
// nil when no record has node times.
func nodeTimesChart(sd scenarioData, st map[string]style) (*plot.Plot, error) {
	p := newPlot(sd.Name + ": per-node completion time")
	p.X.Label.Text = "nodes, fastest to slowest"
	p.Y.Label.Text = "seconds from start to image usable"
	p.X.Tick.Marker = intTicks{}

	maxRank, maxY := 0, 0.0
	for _, c := range sd.Candidates {
		var byRank [][]float64 // byRank[k] holds rank k+1's times over the reps
		var dots plotter.XYs
		for _, r := range sd.Records[c] {
			ts := finite(r.NodeSeconds)
			slices.Sort(ts)
			for k, t := range ts {
				if k == len(byRank) {
					byRank = append(byRank, nil)
				}
				byRank[k] = append(byRank[k], t)
				dots = append(dots, plotter.XY{X: float64(k + 1), Y: t})
				maxY = math.Max(maxY, t)
			}
		}
		if len(dots) == 0 {
			continue
		}
		maxRank = max(maxRank, len(byRank))
		line := make(plotter.XYs, len(byRank))
		for k, ts := range byRank {
			m, _, _ := Spread(ts)
			line[k] = plotter.XY{X: float64(k + 1), Y: m}
		}

		s := st[c]
		l, err := plotter.NewLine(line)
		if err != nil {
			return nil, fmt.Errorf("%s/%s node times: %w", sd.Name, c, err)
		}
		l.Color, l.Width = s.Color, vg.Points(1.5)
		sc, err := plotter.NewScatter(dots)
		if err != nil {
			return nil, fmt.Errorf("%s/%s node times: %w", sd.Name, c, err)
		}
		sc.Color, sc.Shape, sc.Radius = s.Color, s.Shape, vg.Points(3)
		if len(byRank) > 24 { // many nodes: small dots, or they merge into a band
			sc.Radius = vg.Points(1.5)
		}
		p.Add(l, sc)
		p.Legend.Add(c, l, sc)
	}
	if maxRank == 0 {
		return nil, nil
	}

	// One T* line when the candidates share it (they should, see
	// Record.BoundSeconds); one per candidate, in its colour, when not.
	bounds := make(map[string]float64)
	for _, c := range sd.Candidates {
		if b := sd.Sums[c].BoundSeconds; b > 0 && !math.IsInf(b, 0) {
			bounds[c] = b
		}
	}
	xmin, xmax := 0.5, float64(maxRank)+0.5
	if b, shared := sharedValue(bounds); shared {
		if err := addHLine(p, "T* (bound)", b, xmin, xmax, color.Black); err != nil {
			return nil, err
		}
		maxY = math.Max(maxY, b)
	} else {
		for _, c := range sd.Candidates {
			if b, ok := bounds[c]; ok {
				if err := addHLine(p, "T* for "+c, b, xmin, xmax, st[c].Color); err != nil {
					return nil, err
				}
				maxY = math.Max(maxY, b)
			}
		}
	}
	p.X.Min, p.X.Max = xmin, xmax
	p.Y.Min, p.Y.Max = 0, maxY*1.05
	return p, nil
}

// egressChart draws the median registry egress per candidate as a bar, the
// spread over repetitions as an error bar, and the image size S as a dashed
// line, with each bar labelled in multiples of S.
func egressChart(sd scenarioData, st map[string]style) (*plot.Plot, error) {
	var s int64
	for _, c := range sd.Candidates {
		if b := sd.Sums[c].ImageBytes; b > 0 {
			s = b
			break
		}
	}
	top := float64(s)
	for _, c := range sd.Candidates {
		top = math.Max(top, sd.Sums[c].EgressMax)
	}
	unit, div := byteUnit(top)

	p := newPlot(sd.Name + ": registry egress")
	p.Y.Label.Text = "bytes the registry sent (" + unit + ")"
	bars := make([]bar, len(sd.Candidates))
	for i, c := range sd.Candidates {
		sum := sd.Sums[c]
		bars[i] = bar{
			Name: c, Median: sum.EgressMedian / div,
			Min: sum.EgressMin / div, Max: sum.EgressMax / div,
			Label: formatRatio(sum.EgressRatioMedian) + " × S",
		}
	}
	if err := addBars(p, bars, st); err != nil {
		return nil, fmt.Errorf("%s egress: %w", sd.Name, err)
	}
	if s > 0 {
		label := "S = " + units.BytesSize(float64(s)) + ", one copy"
		if err := addHLine(p, label, float64(s)/div, -0.5, float64(len(bars))-0.5, color.Black); err != nil {
			return nil, err
		}
	}
	p.Y.Min, p.Y.Max = 0, nonZero(top/div)*headroom
	return p, nil
}

// makespanChart draws the median makespan/T* per candidate with its spread,
// and dashed lines at the bound (1) and at shoal's target (targetRatio).
func makespanChart(sd scenarioData, st map[string]style) (*plot.Plot, error) {
	p := newPlot(sd.Name + ": slowest node / T*")
	p.Y.Label.Text = "makespan / T*"
	top := targetRatio
	bars := make([]bar, len(sd.Candidates))
	for i, c := range sd.Candidates {
		sum := sd.Sums[c]
		bars[i] = bar{
			Name: c, Median: sum.MakespanRatioMedian,
			Min: sum.MakespanRatioMin, Max: sum.MakespanRatioMax,
			Label: formatRatio(sum.MakespanRatioMedian) + "×",
		}
		if !math.IsNaN(sum.MakespanRatioMax) {
			top = math.Max(top, sum.MakespanRatioMax)
		}
	}
	if err := addBars(p, bars, st); err != nil {
		return nil, fmt.Errorf("%s makespan: %w", sd.Name, err)
	}
	xmin, xmax := -0.5, float64(len(bars))-0.5
	if err := addHLine(p, "T*, the bound", 1, xmin, xmax, color.Black); err != nil {
		return nil, err
	}
	if err := addHLine(p, formatRatio(targetRatio)+" × T*, the target", targetRatio, xmin, xmax,
		color.RGBA{0xB0, 0x00, 0x00, 0xff}); err != nil {
		return nil, err
	}
	p.Y.Min, p.Y.Max = 0, top*headroom
	return p, nil
}

// targetRatio is the makespan/T* shoal aims for in the cold and warm
// scenarios (docs/benchmarks.md).
const targetRatio = 1.2

// bar is one candidate's bar: a median with its spread and a label on top.
type bar struct {
	Name             string
	Median, Min, Max float64
	Label            string
}

// addBars draws one bar per candidate at x = 0, 1, …, each in the
// candidate's colour, names them on the X axis, and labels them on top. A
// candidate with no value gets an empty slot labelled "n/a".
func addBars(p *plot.Plot, bars []bar, st map[string]style) error {
	names := make([]string, len(bars))
	var labels plotter.XYLabels
	for i, b := range bars {
		names[i] = b.Name
		x := float64(i)
		if math.IsNaN(b.Median) {
			labels.XYs = append(labels.XYs, plotter.XY{X: x, Y: 0})
			labels.Labels = append(labels.Labels, "n/a")
			continue
		}
		bc, err := plotter.NewBarChart(plotter.Values{b.Median}, vg.Points(40))
		if err != nil {
			return err
		}
		bc.XMin = x
		bc.Color = st[b.Name].Color
		bc.LineStyle.Width = 0
		p.Add(bc)

		top := b.Median
		if b.Max > b.Min {
			eb, err := plotter.NewYErrorBars(errBar{x: x, y: b.Median, lo: b.Median - b.Min, hi: b.Max - b.Median})
			if err != nil {
				return err
			}
			eb.Width = vg.Points(1.2)
			p.Add(eb)
			top = b.Max
		}
		labels.XYs = append(labels.XYs, plotter.XY{X: x, Y: top})
		labels.Labels = append(labels.Labels, b.Label)
	}
	l, err := plotter.NewLabels(labels)
	if err != nil {
		return err
	}
	for i := range l.TextStyle {
		l.TextStyle[i].XAlign = draw.XCenter
		l.TextStyle[i].Font.Size = vg.Points(11)
		l.TextStyle[i].Font.Variant = sans
	}
	l.Offset = vg.Point{Y: vg.Points(4)}
	p.Add(l)
	p.NominalX(names...)
	p.X.Min, p.X.Max = -0.5, float64(len(bars))-0.5
	return nil
}

// errBar is a single error bar for plotter.NewYErrorBars.
type errBar struct{ x, y, lo, hi float64 }

func (e errBar) Len() int                      { return 1 }
func (e errBar) XY(int) (float64, float64)     { return e.x, e.y }
func (e errBar) YError(int) (float64, float64) { return e.lo, e.hi }

// addHLine draws a dashed horizontal reference line with a legend entry.
func addHLine(p *plot.Plot, name string, y, xmin, xmax float64, c color.Color) error {
	l, err := plotter.NewLine(plotter.XYs{{X: xmin, Y: y}, {X: xmax, Y: y}})
	if err != nil {
		return fmt.Errorf("reference line %s: %w", name, err)
	}
	l.Color, l.Width = c, vg.Points(1.2)
	l.Dashes = []vg.Length{vg.Points(6), vg.Points(3)}
	p.Add(l)
	p.Legend.Add(name, l)
	return nil
}

func newPlot(title string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = vg.Points(13)
	p.Title.TextStyle.Font.Weight = xfont.WeightBold
	p.Title.Padding = vg.Points(10)
	p.Legend.TextStyle.Font.Size = vg.Points(11)
	p.Legend.Padding = vg.Points(4)
	p.Legend.ThumbnailWidth = vg.Points(24)
	for _, f := range []*font.Font{
		&p.Title.TextStyle.Font, &p.Legend.TextStyle.Font,
		&p.X.Label.TextStyle.Font, &p.X.Tick.Label.Font,
		&p.Y.Label.TextStyle.Font, &p.Y.Tick.Label.Font,
	} {
		f.Variant = sans
	}
	p.Y.Tick.Marker = niceTicks{}
	g := plotter.NewGrid()
	g.Vertical.Width = 0
	p.Add(g)
	return p
}

// renderPNG draws p into a PNG, with its legend to the right of the plot
// rather than over the data, where it could hide a line or a bar.
func renderPNG(p *plot.Plot) ([]byte, error) {
	c := vgimg.NewWith(vgimg.UseWH(chartWidth, chartHeight), vgimg.UseDPI(chartDPI))
	dc := draw.New(c)

	legend := p.Legend
	p.Legend = plot.NewLegend()
	r := legend.Rectangle(dc)
	if w := r.Max.X - r.Min.X; w > 0 {
		gap, margin := vg.Points(12), vg.Points(6)
		w += margin
		plotWidth := dc.Max.X - dc.Min.X - w - gap
		// Start the legend level with the top of the data area, below the title.
		top := p.Title.TextStyle.Height(p.Title.Text) + p.Title.Padding
		legend.Top, legend.Left = true, true
		legend.XOffs, legend.YOffs = 0, 0
		legend.Draw(draw.Crop(dc, plotWidth+gap, -margin, 0, -top))
		dc = draw.Crop(dc, 0, -(w + gap), 0, 0)
	}
	p.Draw(dc)
	var b bytes.Buffer
	if _, err := (vgimg.PngCanvas{Canvas: c}).WriteTo(&b); err != nil {
		return nil, fmt.Errorf("encode chart %q: %w", p.Title.Text, err)
	}
	return b.Bytes(), nil
}

// intTicks marks whole numbers only: every one when there are few, otherwise
// the whole numbers among niceTicks'.
type intTicks struct{}

func (intTicks) Ticks(lo, hi float64) []plot.Tick {
	first, last := math.Ceil(lo), math.Floor(hi)
	var ts []plot.Tick
	if last-first <= 12 {
		for v := first; v <= last; v++ {
			ts = append(ts, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'f', 0, 64)})
		}
		return ts
	}
	for _, t := range (niceTicks{}).Ticks(lo, hi) {
		if t.Value == math.Trunc(t.Value) {
			ts = append(ts, t)
		}
	}
	return ts
}

// niceTicks labels about five round values (steps of 1, 2, 2.5 or 5 times a
// power of ten) with as few decimals as the step needs, and marks the
// halves between them.
type niceTicks struct{}

func (niceTicks) Ticks(lo, hi float64) []plot.Tick {
	if !(hi > lo) {
		return []plot.Tick{{Value: lo, Label: strconv.FormatFloat(lo, 'g', 3, 64)}}
	}
	raw := (hi - lo) / 5
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step, decimals := 10*mag, -math.Floor(math.Log10(mag))-1
	for _, m := range []float64{1, 2, 2.5, 5} {
		if raw <= m*mag {
			step, decimals = m*mag, -math.Floor(math.Log10(mag))
			if m == 2.5 {
				decimals++
			}
			break
		}
	}
	prec := int(math.Max(0, decimals))
	var ts []plot.Tick
	for i := math.Ceil(lo / step * 2); i/2*step <= hi*(1+1e-9); i++ {
		v := i / 2 * step
		t := plot.Tick{Value: v}
		if math.Mod(i, 2) == 0 {
			t.Label = strconv.FormatFloat(v, 'f', prec, 64)
		}
		ts = append(ts, t)
	}
	return ts
}

// byteUnit picks the binary unit in which v reads as a number below 1024.
func byteUnit(v float64) (name string, div float64) {
	names := [...]string{"B", "KiB", "MiB", "GiB", "TiB"}
	div = 1
	i := 0
	for v >= 1024*div && i < len(names)-1 {
		div *= 1024
		i++
	}
	return names[i], div
}

// sharedValue reports whether every value in m is the same, within rounding.
func sharedValue(m map[string]float64) (float64, bool) {
	first := true
	var v float64
	for _, x := range m {
		if first {
			v, first = x, false
			continue
		}
		if math.Abs(x-v) > 1e-9*math.Max(math.Abs(x), math.Abs(v)) {
			return 0, false
		}
	}
	return v, !first
}

func finite(vs []float64) []float64 {
	out := make([]float64, 0, len(vs))
	for _, v := range vs {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			out = append(out, v)
		}
	}
	return out
}

// nonZero keeps an axis from collapsing when every value is zero.
func nonZero(v float64) float64 {
	if v <= 0 || math.IsNaN(v) {
		return 1
	}
	return v
}
