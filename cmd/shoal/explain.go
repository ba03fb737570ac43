package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/docker/go-units"
	"github.com/spf13/cobra"

	"github.com/shoal-dev/shoal/pulls"
)

func newExplainCommand() *cobra.Command {
	var addr string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "explain IMAGE",
		Short: "Show where each blob of the node's last pull of an image came from",
		Long: `Ask the local daemon (its --status-addr) for its record of the most recent
pull of IMAGE on this node (alpine, docker.io/library/alpine:3.20,
registry:5000/team/app:v1, or the manifest's digest), and print one line
per blob: its size, the bytes each source sent (this node's own copy, each
peer by member name, the registry), the time it took, and every source
given up on the way, with why and the time it cost; then the totals.

The peer and registry totals are bytes counted where
shoal_fetched_bytes_total counts them. The daemon keeps the last
--pull-history pulls.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := fetchPull(cmd.Context(), addr, args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), p)
			}
			return printPull(cmd.OutOrStdout(), p)
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:7504", "the daemon's --status-addr")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the record as JSON")
	return cmd
}

// statusURL makes a URL of the daemon's status address and a path.
func statusURL(addr, path string) string {
	u := strings.TrimRight(addr, "/")
	if !strings.Contains(u, "://") {
		u = "http://" + u
	}
	return u + path
}

func fetchPull(ctx context.Context, addr, image string) (pulls.Pull, error) {
	var p pulls.Pull
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, statusURL(addr, "/pulls?image="+url.QueryEscape(image)), nil)
	if err != nil {
		return p, err
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return p, fmt.Errorf("daemon unreachable at %s: %w (is `shoal daemon` running with this --status-addr?)", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return p, fmt.Errorf("daemon at %s: %s", addr, strings.TrimSpace(firstOf(string(msg), resp.Status)))
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&p); err != nil {
		return p, fmt.Errorf("daemon at %s: bad record: %w", addr, err)
	}
	return p, nil
}

// sourceLabel names a source for people: a peer by its member name.
func sourceLabel(s pulls.SourceBytes) string {
	switch s.Source {
	case "peer":
		if s.Name != "" {
			return s.Name
		}
		return "peer " + shortID(s.Peer)
	case "upstream":
		return "registry"
	}
	return s.Source
}

func shortID(id string) string {
	if len(id) > 12 {
		return "…" + id[len(id)-8:]
	}
	return id
}

func shortDigest(d string) string {
	_, hex, ok := strings.Cut(d, ":")
	if !ok {
		hex = d
	}
	return hex[:min(len(hex), 12)]
}

func seconds(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }

func sourcesText(ss []pulls.SourceBytes) string {
	var parts []string
	for _, s := range ss {
		parts = append(parts, sourceLabel(s)+" "+units.BytesSize(float64(s.Bytes)))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

func printPull(w io.Writer, p pulls.Pull) error {
	took := "running"
	if !p.Running && !p.Ended.IsZero() {
		took = "took " + seconds(p.Ended.Sub(p.Started))
	}
	fmt.Fprintf(w, "%s (%s), pulled %s, %s\n\n", p.Image, shortDigest(p.Manifest.String()), p.Started.UTC().Format(time.RFC3339), took)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BLOB\tSIZE\tSTATE\tTIME\tSOURCES\tFALLBACKS")
	for i, b := range p.Blobs {
		kind := "layer"
		if i == 0 {
			kind = "config"
		}
		t := "-"
		if !b.Started.IsZero() && !b.Ended.IsZero() {
			t = seconds(b.Ended.Sub(b.Started))
		}
		var falls []string
		for _, f := range b.Fallbacks {
			falls = append(falls, fmt.Sprintf("%s %s (%s lost)", sourceLabel(pulls.SourceBytes{Source: f.Source, Peer: f.Peer, Name: f.Name}), f.Reason, seconds(time.Duration(f.LostMS)*time.Millisecond)))
		}
		if b.MoreFallbacks > 0 {
			falls = append(falls, fmt.Sprintf("%d more", b.MoreFallbacks))
		}
		fmt.Fprintf(tw, "%s %s\t%s\t%s\t%s\t%s\t%s\n", kind, shortDigest(b.Digest.String()), units.BytesSize(float64(b.Size)), b.State, t, sourcesText(b.Sources), firstOf(strings.Join(falls, "; "), "-"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var total int64
	for _, s := range p.Totals {
		total += s.Bytes
	}
	fmt.Fprintf(w, "\ntotal %s: %s", units.BytesSize(float64(total)), sourcesText(p.Totals))
	if len(p.Totals) > 0 {
		var exact []string
		for _, s := range p.Totals {
			exact = append(exact, fmt.Sprintf("%s %d", sourceLabel(s), s.Bytes))
		}
		fmt.Fprintf(w, " (bytes: %s)", strings.Join(exact, ", "))
	}
	fmt.Fprintf(w, "; %d fallbacks, %s lost\n", p.Falls, seconds(time.Duration(p.LostMS)*time.Millisecond))
	if p.Omitted > 0 {
		fmt.Fprintf(w, "%d more blobs not recorded\n", p.Omitted)
	}
	return nil
}

// errNoPage: the daemon serves no status page.
var errNoPage = errors.New("the daemon serves no status page (--status-page=false)")
