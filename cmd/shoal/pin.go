package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"

	"github.com/docker/go-units"
	"github.com/spf13/cobra"
)

func newPinCommand() *cobra.Command {
	var addr string
	var copies int
	cmd := &cobra.Command{
		Use:   "pin IMAGE",
		Short: "Keep copies of an image on that many nodes, whichever nodes fail",
		Long: `Ask the local daemon (its --status-addr) to resolve IMAGE once and add
it to the cluster's pin table, which every member holds. For each blob of
the image (index, manifest, config, layers) the --copies best-ranked live
members by rendezvous hashing over the blob's digest, in distinct zones
first (--node-labels zone=...), keep a copy that the store never evicts.
When a holder leaves, the next-ranked member fetches the blob from the
survivors within seconds.

The pin is refused, with a line that says why, when the node's
configuration does not mirror the image's registry, or when the pinned
blobs of every pin, this one's included, would not fit in the node's
--store-max-bytes.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out json.RawMessage
			if err := postPin(cmd.Context(), addr, "/pin", pinRequest{Image: args[0], Copies: copies}, &out); err != nil {
				return err
			}
			var p struct {
				Ref    string `json:"ref"`
				Digest string `json:"digest"`
				Copies int    `json:"copies"`
			}
			_ = json.Unmarshal(out, &p)
			fmt.Fprintf(cmd.OutOrStdout(), "pinned %s (%s), %d copies\n", p.Ref, shortDigest(p.Digest), p.Copies)
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:7504", "the daemon's --status-addr")
	cmd.Flags().IntVar(&copies, "copies", 2, "members that keep a copy of each blob")
	return cmd
}

func newUnpinCommand() *cobra.Command {
	var addr string
	cmd := &cobra.Command{
		Use:   "unpin IMAGE",
		Short: "Remove an image from the cluster's pin table; its copies become evictable",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := postPin(cmd.Context(), addr, "/unpin", pinRequest{Image: args[0]}, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "unpinned %s\n", args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:7504", "the daemon's --status-addr")
	return cmd
}

func newPinsCommand() *cobra.Command {
	var addr string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "pins",
		Short: "List the pinned images, each blob's copies and the nodes that hold them",
		Long: `List the cluster's pin table as the local daemon sees it: each pinned
image with the copies it asks for, and for each of its blobs the members
chosen to hold it and the live members that hold it (this node, and the
members that announce it in the mesh). A blob with fewer copies than
asked is marked "missing".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			pins, err := getPins(cmd.Context(), addr)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(pins)
			}
			return printPins(cmd.OutOrStdout(), pins)
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:7504", "the daemon's --status-addr")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the daemon's answer as JSON")
	return cmd
}

func printPins(w io.Writer, pins []pinStatus) error {
	if len(pins) == 0 {
		fmt.Fprintln(w, "no pinned images")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, p := range pins {
		fmt.Fprintf(tw, "%s\t%s\t%d copies\t%d blobs\n", p.Ref, shortDigest(p.Digest.String()), p.Copies, len(p.Blobs))
		if p.Error != "" {
			fmt.Fprintf(tw, "  error: %s\n", p.Error)
		}
		for _, b := range p.Blobs {
			state := "ok"
			if len(b.On) < min(p.Copies, len(b.Holders)) {
				state = "missing"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%d/%d\t%s\ton %s\tholders %s\n", shortDigest(b.Digest.String()), units.BytesSize(float64(b.Size)),
				len(b.On), p.Copies, state, strings.Join(b.On, ","), strings.Join(b.Holders, ","))
		}
	}
	return tw.Flush()
}

func postPin(ctx context.Context, addr, path string, req pinRequest, out any) error {
	body, _ := json.Marshal(req)
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, statusURL(addr, path), bytes.NewReader(body))
	if err != nil {
		return err
	}
	hr.Header.Set("Content-Type", "application/json")
	return doPin(hr, addr, out)
}

func getPins(ctx context.Context, addr string) ([]pinStatus, error) {
	hr, err := http.NewRequestWithContext(ctx, http.MethodGet, statusURL(addr, "/pins"), nil)
	if err != nil {
		return nil, err
	}
	var pins []pinStatus
	return pins, doPin(hr, addr, &pins)
}

func doPin(hr *http.Request, addr string, out any) error {
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		return fmt.Errorf("daemon unreachable at %s: %w (is `shoal daemon` running with this --status-addr?)", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("%s", strings.TrimSpace(firstOf(string(msg), resp.Status)))
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
