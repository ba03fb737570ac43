package report

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
)

// The two modes a bench session runs in. They are written into every record
// and said plainly at the top of every table and report, so that a simulated
// figure is never mistaken for a measured one.
const (
	// ModeReal is `shoal bench --real`: network namespaces, tc-shaped links,
	// real containerd, registry and shoal processes.
	ModeReal = "real"
	// ModeSimulated is the embedded default: an in-process registry, nodes and
	// puller on loopback, with in-process rate limits standing in for tc.
	ModeSimulated = "simulated"
	// ModeModel is `shoal bench --model`: the swarm's rules on a model
	// network in virtual time (package bench/model); nothing is measured.
	ModeModel = "model"
)

// ErrUnknownMode is returned when a mode is not one of the modes above.
var ErrUnknownMode = errors.New("unknown bench mode")

// ModeLine is the header line that says which mode produced the numbers.
func ModeLine(mode string) (string, error) {
	switch mode {
	case ModeReal:
		return "REAL: network namespaces, tc-shaped links, real containerd, registry and shoal processes", nil
	case ModeSimulated:
		return "SIMULATED: in-process registry and nodes, rate limits stand in for tc", nil
	case ModeModel:
		return "MODEL: the swarm's rules on model links in virtual time, nothing measured: times are computed, not timed", nil
	default:
		return "", fmt.Errorf("mode %q: %w", mode, ErrUnknownMode)
	}
}

// Record is one run of one candidate in one scenario. The JSON field names are
// results.json's format: readers outside Go depend on them.
type Record struct {
	// Candidate is "direct" (no mirror, the baseline), "shoal", or the name
	// given with --candidate.
	Candidate string `json:"candidate"`
	// Scenario is cold, warm, rolling, churn or outage.
	Scenario string `json:"scenario"`
	// Mode is ModeReal, ModeSimulated or ModeModel.
	Mode string `json:"mode"`
	// Rep numbers the repetition, from 1.
	Rep int `json:"rep"`
	// Nodes is N, the number of nodes in the run.
	Nodes int `json:"nodes"`
	// ImageBytes is S, the payload of the image (its layers and config).
	ImageBytes int64 `json:"image_bytes"`
	// RegistryEgressBytes is the payload the registry's own access log says
	// it wrote, never a figure reported by the candidate.
	RegistryEgressBytes int64 `json:"registry_egress_bytes"`
	// RegistryTxBytes is what the registry's network interface sent during
	// the run, headers included (real mode only): the cross-check of
	// RegistryEgressBytes, which it exceeds by the TCP/IP and HTTP headers.
	RegistryTxBytes int64 `json:"registry_tx_bytes,omitempty"`
	// RegistryEgressByNode is what the registry's log says it wrote to
	// each node, in node order (real mode only): where the egress went,
	// the harmed nodes' shares included. It adds up to the log's count,
	// which RegistryEgressBytes replaces when requests were cut short.
	RegistryEgressByNode []int64 `json:"registry_egress_by_node,omitempty"`
	// BoundSeconds is T* for this scenario ([ColdBound] or
	// [WarmBound]). Give every candidate of a scenario the same T* so that
	// makespan/T* compares them; the direct baseline's own floor,
	// [DirectBound], belongs in a note ([BaselineNote]).
	BoundSeconds float64 `json:"bound_seconds"`
	// MakespanSeconds is the time the slowest node took.
	MakespanSeconds float64 `json:"makespan_seconds"`
	// NodeSeconds is each pulling node's time from start to image usable, in
	// node order.
	NodeSeconds []float64 `json:"node_seconds"`
	// FailedPulls counts the pulls that did not end with a usable image.
	FailedPulls int `json:"failed_pulls"`
	// NodeUploadBytes is what each node uploaded to its peers, in node order.
	NodeUploadBytes []int64 `json:"node_upload_bytes,omitempty"`
	// LinkMbit is each node's shaped upload and download rate; 0 if unshaped.
	LinkMbit float64 `json:"link_mbit"`
	// RegistryMbit is the registry's shaped upload rate; 0 if unshaped.
	RegistryMbit float64 `json:"registry_mbit"`
	// HostCPUBusy is the share of the host's CPU time that was busy while
	// the nodes pulled (real mode only: every lab process shares the one
	// host). Near 1 the run was short of CPU, which T* does not count.
	HostCPUBusy float64 `json:"host_cpu_busy,omitempty"`
	// Daemons is what each node's mirror daemon cost while the nodes
	// pulled (real mode, candidates other than direct), in node order. A
	// node whose daemon was killed, frozen or restarted in that time is
	// left out.
	Daemons []DaemonCost `json:"daemons,omitempty"`
	// CoreSecondsPerGiB is [CoreSecondsPerGiB] of Daemons: the daemons' CPU
	// time over the bytes their nodes' links carried. 0 when not measured.
	CoreSecondsPerGiB float64 `json:"core_seconds_per_gib,omitempty"`
	// Tail is, per unharmed node of a shoal run, when each blob's bytes
	// came and were verified, beside when the node's pull returned (real
	// mode; see NodeTail).
	Tail []NodeTail `json:"tail,omitempty"`
	// UnharmedOverCold is, in slowpeers, the largest ratio of an unharmed
	// node's time to the same node's time in the cold scenario of the same
	// candidate and repetition (0 when cold did not run).
	UnharmedOverCold float64 `json:"unharmed_over_cold,omitempty"`
	// UnharmedOverColdMedian is, on the last slowpeers record of a
	// candidate run more than once, the largest ratio of an unharmed
	// node's median slowpeers time to its median cold time.
	UnharmedOverColdMedian float64 `json:"unharmed_over_cold_median,omitempty"`
	// IdleStoredBytes and IdleReceivedBytes are, in lone, the blob bytes
	// the nodes that did not pull keep in their stores (the mirror's and
	// containerd's, finished or not) after the pull, and what their links
	// received during it.
	IdleStoredBytes   int64 `json:"idle_stored_bytes,omitempty"`
	IdleReceivedBytes int64 `json:"idle_received_bytes,omitempty"`
	// Notes are remarks for the reader, such as [BaselineNote]'s.
	Notes []string `json:"notes,omitempty"`
}

// DaemonCost is one node's mirror daemon over the pulls of one run.
type DaemonCost struct {
	// Node is the node's index.
	Node int `json:"node"`
	// CPUSeconds is the user and system time of the daemon's process group.
	CPUSeconds float64 `json:"cpu_seconds"`
	// LinkBytes is what the node's link carried, received plus sent. The
	// node's containerd reaches its mirror over loopback, so these are
	// the daemon's bytes, unless containerd fell back to the registry.
	LinkBytes int64 `json:"link_bytes"`
}

// GiB is 2^30 bytes.
const GiB = 1 << 30

// CoreSecondsPerGiB is the CPU time of the daemons in ds over the bytes
// their links carried, in seconds of one core per GiB: what moving the
// image cost the mirrors, whatever the run's length or the host's load.
// It is 0 when the links carried nothing.
func CoreSecondsPerGiB(ds []DaemonCost) float64 {
	var cpu float64
	var bytes int64
	for _, d := range ds {
		cpu += d.CPUSeconds
		bytes += d.LinkBytes
	}
	if bytes <= 0 {
		return 0
	}
	return cpu / (float64(bytes) / GiB)
}

// WriteJSON writes records to path as results.json: an indented JSON list
// with one object per record. An empty list is written as [], and a missing
// node_seconds as [], so that readers need not special-case null.
func WriteJSON(path string, records []Record) error {
	out := make([]Record, len(records))
	for i, r := range records {
		if r.NodeSeconds == nil {
			r.NodeSeconds = []float64{}
		}
		out[i] = r
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	b = append(b, '\n')
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return nil
}

// ReadJSON reads records back from a results.json that WriteJSON wrote, so
// that a report can be drawn again without running the benchmark.
func ReadJSON(path string) ([]Record, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read results: %w", err)
	}
	var records []Record
	if err := json.Unmarshal(b, &records); err != nil {
		return nil, fmt.Errorf("decode results %s: %w", path, err)
	}
	return records, nil
}
