package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/docker/go-units"
	"github.com/spf13/cobra"
)

type preheatOptions struct {
	addr     string
	nodes    []string
	selector map[string]string
	count    int
	all      bool
	into     bool
	every    time.Duration
}

func newPreheatCommand() *cobra.Command {
	var o preheatOptions
	cmd := &cobra.Command{
		Use:   "preheat IMAGE...",
		Short: "Fill chosen nodes with whole images through the mesh, before a rollout",
		Long: `Ask the local daemon (its --status-addr) to resolve each IMAGE once
(registry:5000/team/app:v1, docker.io/library/alpine:3.20, or by digest)
and have the chosen nodes fetch the whole image for their platform (index,
manifest, config and layers) through the mesh: each blob's designated
fetcher takes it from the registry once for the cluster and the others from
their peers, so the registry sends each image about once whatever the number
of nodes.

The nodes are every live member (--all, the default), those named with
--nodes, those whose --node-labels hold every --selector key=value, and at
most --count of them (by name). Each chosen node fetches only from
registries its own configuration mirrors.

With --into-containerd, each node also creates the image in its containerd
(--containerd-namespace, k8s.io for CRI), unpacked for the daemon's
--containerd-snapshotter, by pulling it through its own mirror from what it
just preheated: the kubelet then finds the image present, and a later pull
fetches nothing.

A line per node shows its progress: bytes held of the image's, and whether
it is done or failed. The command exits 0 when every chosen node holds every
blob of every image, and otherwise non-zero after a line per failing node
saying why.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.all && (len(o.nodes) > 0 || len(o.selector) > 0 || o.count > 0) {
				return fmt.Errorf("--all chooses every live member: drop it to use --nodes, --selector or --count")
			}
			if o.count < 0 {
				return fmt.Errorf("--count %d: want 0 (all) or more", o.count)
			}
			req := preheatRequest{Images: args, Nodes: o.nodes, Selector: o.selector, Count: o.count, IntoContainerd: o.into}
			return runPreheat(cmd.Context(), cmd.OutOrStdout(), o.addr, req, o.every)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.addr, "addr", "127.0.0.1:7504", "the daemon's --status-addr")
	f.BoolVar(&o.all, "all", false, "fill every live member (the default when no other choice is given)")
	f.StringSliceVar(&o.nodes, "nodes", nil, "fill these members (node names, comma separated or repeated)")
	f.StringToStringVar(&o.selector, "selector", nil, "fill the members whose --node-labels hold every key=value given")
	f.IntVar(&o.count, "count", 0, "fill at most this many of the chosen members, by name (0: all)")
	f.BoolVar(&o.into, "into-containerd", false, "also create each image in every chosen node's containerd (CRI namespace, unpacked), so that the kubelet finds it present and a pull fetches nothing")
	f.DurationVar(&o.every, "progress-every", 2*time.Second, "how often a line of progress is printed per node still running")
	return cmd
}

// nodeProgress is one node's preheat, all images together.
type nodeProgress struct {
	images    map[string]preheatEvent // by image, the latest
	ended     map[string]bool
	errs      []string
	lastPrint time.Time
}

func (n *nodeProgress) sum() (blobs, held int, bytes, heldBytes int64) {
	for _, e := range n.images {
		blobs += e.Blobs
		held += e.HeldBlobs
		bytes += e.Bytes
		heldBytes += e.HeldBytes
	}
	return
}

// state is "done" when every image ended holding every blob, "failed"
// when one ended otherwise, "running" before.
func (n *nodeProgress) state(images int) string {
	if len(n.errs) > 0 {
		return "failed"
	}
	if len(n.ended) < images {
		return "running"
	}
	for _, e := range n.images {
		if e.HeldBlobs != e.Blobs || e.HeldBytes != e.Bytes {
			return "failed"
		}
	}
	return "done"
}

func (n *nodeProgress) line(name string, images int) string {
	blobs, held, b, hb := n.sum()
	return fmt.Sprintf("%s\t%s / %s\t%d / %d blobs\t%s", name, units.BytesSize(float64(hb)), units.BytesSize(float64(b)), held, blobs, n.state(images))
}

func runPreheat(ctx context.Context, w io.Writer, addr string, req preheatRequest, every time.Duration) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, statusURL(addr, "/preheat"), bytes.NewReader(body))
	if err != nil {
		return err
	}
	hr.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		return fmt.Errorf("daemon unreachable at %s: %w (is `shoal daemon` running with this --status-addr?)", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("daemon at %s: %s", addr, strings.TrimSpace(firstOf(string(msg), resp.Status)))
	}
	nodes, order, err := followPreheat(w, resp.Body, len(req.Images), every)
	if err != nil {
		return err
	}
	return preheatSummary(w, nodes, order, len(req.Images), time.Since(start))
}

// followPreheat reads the daemon's events and prints a line per node as it
// progresses, at most one per node every `every`, and one as it ends.
func followPreheat(w io.Writer, r io.Reader, images int, every time.Duration) (map[string]*nodeProgress, []string, error) {
	nodes := map[string]*nodeProgress{}
	var order []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e preheatEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, nil, fmt.Errorf("bad answer from the daemon: %w", err)
		}
		if e.Kind == "plan" {
			order = e.Nodes
			for _, n := range e.Nodes {
				nodes[n] = &nodeProgress{images: map[string]preheatEvent{}, ended: map[string]bool{}}
			}
			fmt.Fprintf(w, "preheating %s on %d nodes: %s\n", strings.Join(sortedDigests(e.Digests), ", "), len(e.Nodes), strings.Join(e.Nodes, ", "))
			continue
		}
		n, ok := nodes[e.Node]
		if !ok {
			continue
		}
		if e.Kind == "progress" && e.Blobs == 0 {
			// A member asked again reports nothing until it has read the
			// manifest again: keep what it said before.
			continue
		}
		n.images[e.Image] = e
		if e.Kind == "end" {
			n.ended[e.Image] = true
			if e.Error != "" {
				n.errs = append(n.errs, e.Image+": "+e.Error)
			}
		}
		last := e.Kind == "end" && len(n.ended) == images
		if last || (e.Kind == "progress" && time.Since(n.lastPrint) >= every) {
			n.lastPrint = time.Now()
			fmt.Fprintln(w, strings.ReplaceAll(n.line(e.Node, images), "\t", "  "))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("the daemon's answer broke off: %w", err)
	}
	if order == nil {
		return nil, nil, fmt.Errorf("the daemon sent no plan")
	}
	return nodes, order, nil
}

func sortedDigests(d map[string]string) []string {
	var out []string
	for ref, dg := range d {
		out = append(out, ref+" ("+shortDigest(dg)+")")
	}
	sort.Strings(out)
	return out
}

// preheatSummary prints a table of every node and a line per failing one,
// and returns an error when a node does not hold every blob.
func preheatSummary(w io.Writer, nodes map[string]*nodeProgress, order []string, images int, took time.Duration) error {
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tHELD\tBLOBS\tSTATE")
	var failed []string
	for _, name := range order {
		n := nodes[name]
		if len(n.ended) < images && len(n.errs) == 0 {
			n.errs = append(n.errs, "the daemon's answer ended before this node did")
		}
		fmt.Fprintln(tw, n.line(name, images))
		if n.state(images) == "done" {
			continue
		}
		why := strings.Join(n.errs, "; ")
		if why == "" {
			why = "it does not hold every blob"
		}
		failed = append(failed, name+": "+why)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "took %s\n", took.Round(10*time.Millisecond))
	if len(failed) > 0 {
		fmt.Fprintln(w)
		for _, f := range failed {
			fmt.Fprintln(w, f)
		}
		return fmt.Errorf("%d of %d nodes do not hold every blob", len(failed), len(order))
	}
	return nil
}
