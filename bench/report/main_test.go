package report

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// sampleRecords fakes a session that looks like a real one: N = 8 nodes, a
// 64 MiB image, 200 Mbit/s links, three repetitions of cold and warm for the
// direct baseline, shoal, and a second shoal configuration with peers off.
func sampleRecords() []Record {
	const (
		n    = 8
		s    = 64 << 20
		mbit = 200
	)
	rate := MbitToBytes(mbit)
	rng := rand.New(rand.NewPCG(1, 2))
	cold := ColdBound(s, rate, rate, rate, n)
	warm := WarmBound(s, rate, rate, n)
	direct := map[string]float64{ // the baseline's own floor, for its note
		"cold": DirectBound(s, rate, rate, n),
		"warm": DirectBound(s, rate, rate, n-1),
	}

	var out []Record
	add := func(scenario, candidate string, rep int, bound float64, egress int64, times func(i int) float64) {
		r := Record{
			Candidate: candidate, Scenario: scenario, Mode: ModeSimulated, Rep: rep,
			Nodes: n, ImageBytes: s, RegistryEgressBytes: egress, BoundSeconds: bound,
			LinkMbit: mbit, RegistryMbit: mbit,
		}
		for i := range n {
			t := times(i) * (1 + 0.05*rng.Float64())
			r.NodeSeconds = append(r.NodeSeconds, t)
			r.MakespanSeconds = math.Max(r.MakespanSeconds, t)
		}
		if candidate == Direct {
			if note := BaselineNote(r.MakespanSeconds, direct[scenario]); note != "" {
				r.Notes = append(r.Notes, note)
			}
		}
		out = append(out, r)
	}
	for rep := 1; rep <= 3; rep++ {
		// Straight from the registry, N nodes share its uplink: all finish
		// near N·S/U. Here the baseline is slower than that, to show the note.
		add("cold", Direct, rep, cold, n*s, func(i int) float64 { return direct["cold"] * (1.2 + 0.01*float64(i)) })
		add("cold", "shoal", rep, cold, s+s/20, func(i int) float64 { return cold * (1.15 + 0.03*float64(i)) })
		add("cold", "shoal-nopeers", rep, cold, n*s, func(i int) float64 { return direct["cold"] * (0.98 + 0.01*float64(i)) })
	}
	for rep := 1; rep <= 3; rep++ {
		add("warm", Direct, rep, warm, (n-1)*s, func(i int) float64 { return float64(n-1) * warm * (0.95 + 0.01*float64(i)) })
		add("warm", "shoal", rep, warm, 0, func(i int) float64 { return warm * (1.1 + 0.04*float64(i)) })
		add("warm", "shoal-nopeers", rep, warm, (n-1)*s, func(i int) float64 { return float64(n-1) * warm })
	}
	return out
}

func ExampleWriteTable() {
	recs := []Record{
		{Candidate: "shoal", Scenario: "cold", Mode: ModeSimulated, Nodes: 4, ImageBytes: 100, RegistryEgressBytes: 105, BoundSeconds: 2, MakespanSeconds: 2.5},
		{Candidate: Direct, Scenario: "cold", Mode: ModeSimulated, Nodes: 4, ImageBytes: 100, RegistryEgressBytes: 400, BoundSeconds: 2, MakespanSeconds: 8.2},
		{Candidate: Direct, Scenario: "cold", Mode: ModeSimulated, Nodes: 4, ImageBytes: 100, RegistryEgressBytes: 400, BoundSeconds: 2, MakespanSeconds: 8.6},
	}
	var sb strings.Builder
	if err := WriteTable(&sb, Summarize(recs), ModeSimulated); err != nil {
		panic(err)
	}
	fmt.Print(sb.String())
	// Output:
	// SIMULATED: in-process registry and nodes, rate limits stand in for tc
	// N = 4 nodes, image S = 100B
	//
	// scenario  candidate  reps  egress/S  makespan (median, min–max)  makespan/T*  failed
	// cold      direct     2     4.00      8.40 s (8.20–8.60)          4.20         0
	// cold      shoal      1     1.05      2.50 s                      1.25         0
}

func ExampleWriteTable_real() {
	recs := []Record{
		{Candidate: Direct, Scenario: "cold", Mode: ModeReal, Nodes: 4, ImageBytes: 100, RegistryEgressBytes: 400, BoundSeconds: 2, MakespanSeconds: 8.2},
		{Candidate: "shoal", Scenario: "cold", Mode: ModeReal, Nodes: 4, ImageBytes: 100, RegistryEgressBytes: 105, BoundSeconds: 2, MakespanSeconds: 2.5,
			Daemons:           []DaemonCost{{Node: 0, CPUSeconds: 1.2, LinkBytes: GiB / 4}, {Node: 1, CPUSeconds: 0.8, LinkBytes: GiB / 4}},
			CoreSecondsPerGiB: 4},
	}
	var sb strings.Builder
	if err := WriteTable(&sb, Summarize(recs), ModeReal); err != nil {
		panic(err)
	}
	fmt.Print(sb.String())
	// Output:
	// REAL: network namespaces, tc-shaped links, real containerd, registry and shoal processes
	// N = 4 nodes, image S = 100B
	//
	// scenario  candidate  reps  egress/S  makespan (median, min–max)  makespan/T*  failed  core-s/GiB
	// cold      direct     1     4.00      8.20 s                      4.10         0       –
	// cold      shoal      1     1.05      2.50 s                      1.25         0       4.00
}
