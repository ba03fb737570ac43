package report

import (
	"cmp"
	"fmt"
	"image/color"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// The tail chart's phases of a layer, each drawn as a stretch of the
// layer's row, and how.
var tailPhases = []struct {
	name  string
	color color.Color
	width vg.Length
}{
	{"waiting for the first byte", color.RGBA{0xbb, 0xbb, 0xbb, 0xff}, vg.Points(2)},
	{"bytes arriving", color.RGBA{0x00, 0x72, 0xb2, 0xff}, vg.Points(5)},
	{"containerd: read, commit, unpack", color.RGBA{0xe6, 0x9f, 0x00, 0xff}, vg.Points(5)},
}

// tailRecord picks the record whose tail the chart shows: the repetition
// with the median makespan among those that have one, so that the chart
// shows a typical run rather than the best or the worst.
func tailRecord(recs []Record) (Record, bool) {
	var with []Record
	for _, r := range recs {
		if len(r.Tail) > 0 {
			with = append(with, r)
		}
	}
	if len(with) == 0 {
		return Record{}, false
	}
	slices.SortFunc(with, func(a, b Record) int { return cmp.Compare(a.MakespanSeconds, b.MakespanSeconds) })
	return with[len(with)/2], true
}

// tailChart draws where each node's pull time went, layer by layer, for the
// first candidate whose records have a tail (see Record.Tail): one row per
// layer, in the order containerd unpacked them, grouped by node; a row
// shows the wait for the layer's first byte, its bytes arriving, and
// containerd's work from the moment shoal verified it until it was
// unpacked; a dot marks when the node's pull returned. Nil when no record
// has a tail.
func tailChart(sd scenarioData) (*plot.Plot, error) {
	var rec Record
	var cand string
	for _, c := range sd.Candidates {
		if r, ok := tailRecord(sd.Records[c]); ok {
			rec, cand = r, c
			break
		}
	}
	if cand == "" {
		return nil, nil
	}
	p := newPlot(fmt.Sprintf("%s: where the time went (%s, rep. %d)", sd.Name, cand, rec.Rep))
	p.X.Label.Text = "seconds from the start of the pulls"
	lines := make([]*plotter.Line, len(tailPhases))
	var returned plotter.XYs
	var ticks tailTicks
	y := 0.0
	for _, t := range rec.Tail {
		layers := slices.DeleteFunc(slices.Clone(t.Blobs), func(b BlobTail) bool { return b.Unpacked == 0 })
		slices.SortFunc(layers, func(a, b BlobTail) int { return cmp.Compare(a.Unpacked, b.Unpacked) })
		if len(layers) == 0 {
			continue
		}
		top := y
		for _, b := range layers {
			y--
			for i, seg := range [][2]float64{{b.Started, b.FirstByte}, {b.FirstByte, b.LastByte}, {b.Verified, b.Unpacked}} {
				if seg[1] <= seg[0] {
					continue
				}
				l, err := plotter.NewLine(plotter.XYs{{X: seg[0], Y: y}, {X: seg[1], Y: y}})
				if err != nil {
					return nil, fmt.Errorf("%s tail: %w", sd.Name, err)
				}
				l.Color, l.Width = tailPhases[i].color, tailPhases[i].width
				p.Add(l)
				lines[i] = l
			}
		}
		mid := (top - 1 + y) / 2
		returned = append(returned, plotter.XY{X: t.PullSeconds, Y: mid})
		ticks = append(ticks, plot.Tick{Value: mid, Label: "node " + strconv.Itoa(t.Node)})
		y-- // a gap between nodes
	}
	if len(ticks) == 0 {
		return nil, nil
	}
	for i, l := range lines {
		if l != nil {
			p.Legend.Add(tailPhases[i].name, l)
		}
	}
	sc, err := plotter.NewScatter(returned)
	if err != nil {
		return nil, fmt.Errorf("%s tail: %w", sd.Name, err)
	}
	sc.Color, sc.Radius = color.Black, vg.Points(3)
	p.Add(sc)
	p.Legend.Add("pull returned", sc)
	p.Y.Tick.Marker = ticks
	p.Y.Min, p.Y.Max = y, 0
	p.X.Min = 0
	return p, nil
}

// tailTicks labels the tail chart's node groups.
type tailTicks []plot.Tick

func (t tailTicks) Ticks(float64, float64) []plot.Tick { return t }
