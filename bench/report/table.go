package report

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"strconv"
	"text/tabwriter"

	units "github.com/docker/go-units"
)

// WriteTable writes sums as an aligned text table for the terminal. The first
// line says which mode produced the numbers (see ModeLine), the second the
// nodes and image size when every summary shares them; notes follow the table.
func WriteTable(w io.Writer, sums []Summary, mode string) error {
	head, err := ModeLine(mode)
	if err != nil {
		return err
	}
	// The table is small: build it whole and write it once, so that one
	// error check covers every line.
	var b bytes.Buffer
	fmt.Fprintln(&b, head)
	if setup := setupLine(sums); setup != "" {
		fmt.Fprintln(&b, setup)
	}
	fmt.Fprintln(&b)

	// Only the real mode runs each daemon as a process of its own whose CPU
	// time can be read.
	cpuColumn := mode == ModeReal
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	header := "scenario\tcandidate\treps\tegress/S\tmakespan (median, min–max)\tmakespan/T*\tfailed"
	if cpuColumn {
		header += "\tcore-s/GiB"
	}
	fmt.Fprintln(tw, header)
	for _, s := range sums {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%d",
			s.Scenario, s.Candidate, s.Reps,
			formatRatio(s.EgressRatioMedian),
			formatMakespan(s),
			formatRatio(s.MakespanRatioMedian),
			s.Failed)
		if cpuColumn {
			fmt.Fprintf(tw, "\t%s", formatCoreSeconds(s))
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	first := true
	for _, s := range sums {
		for _, n := range s.Notes {
			if first {
				fmt.Fprintln(&b, "\nnotes:")
				first = false
			}
			fmt.Fprintf(&b, "  %s/%s: %s\n", s.Scenario, s.Candidate, n)
		}
	}
	_, err = w.Write(b.Bytes())
	return err
}

// setupLine names N and S when all summaries agree on them, and is empty
// otherwise: a per-row figure would crowd the table for a rare case.
func setupLine(sums []Summary) string {
	if len(sums) == 0 {
		return ""
	}
	n, s := sums[0].Nodes, sums[0].ImageBytes
	for _, x := range sums[1:] {
		if x.Nodes != n || x.ImageBytes != s {
			return ""
		}
	}
	if n <= 0 || s <= 0 {
		return ""
	}
	return fmt.Sprintf("N = %d nodes, image S = %s", n, units.BytesSize(float64(s)))
}

func formatMakespan(s Summary) string {
	if math.IsNaN(s.MakespanMedian) {
		return "n/a"
	}
	if s.Reps == 1 || s.MakespanMin == s.MakespanMax {
		return formatSeconds(s.MakespanMedian) + " s"
	}
	return fmt.Sprintf("%s s (%s–%s)", formatSeconds(s.MakespanMedian),
		formatSeconds(s.MakespanMin), formatSeconds(s.MakespanMax))
}

// formatCoreSeconds is the core-s/GiB column: a dash for direct, which
// runs no daemon, and n/a for a candidate whose daemons were not measured.
func formatCoreSeconds(s Summary) string {
	if s.Candidate == Direct {
		return "–"
	}
	return formatSeconds(s.CoreSecondsPerGiB)
}

// formatSeconds keeps about three significant digits without an exponent.
func formatSeconds(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "n/a"
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

func formatRatio(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "n/a"
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}
