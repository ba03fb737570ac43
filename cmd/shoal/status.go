package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/docker/go-units"
	"github.com/spf13/cobra"

	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/resolver/upstream"
)

// daemonStatus is what /status answers and `shoal status` prints.
type daemonStatus struct {
	Version    string      `json:"version"`
	Mirror     string      `json:"mirror"`
	StoreBlobs int         `json:"store_blobs"`
	StoreBytes int64       `json:"store_bytes"`
	Containerd string      `json:"containerd"` // "connected", "unreachable: ...", or "not configured"
	Mesh       *p2p.Status `json:"mesh,omitempty"`
	// Upstream is, per registry, the hosts shoal fetches from, in order.
	Upstream []upstream.RegistryStatus `json:"upstream,omitempty"`
}

func newStatusCommand() *cobra.Command {
	var addr, listen string
	var asJSON, web bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show what the node's daemon is doing: members, peer ID, blobs, traffic, encryption",
		Long: `Ask the local daemon (its --status-addr) for its state: the mesh's members
and their state, this node's peer ID, how many blobs it provides, the bytes
it served and fetched, and whether the mesh is encrypted.

With --web, serve the daemon's status page on a local port (--listen)
and print its URL, until interrupted: the page shows the members, the
transfers in flight, the last pulls layer by layer and the traffic, and
updates itself every second while it is open.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if web {
				return serveWeb(cmd.Context(), cmd.OutOrStdout(), addr, listen)
			}
			url := strings.TrimRight(addr, "/")
			if !strings.Contains(url, "://") {
				url = "http://" + url
			}
			c := &http.Client{Timeout: 5 * time.Second}
			resp, err := c.Get(url + "/status")
			if err != nil {
				return fmt.Errorf("daemon unreachable at %s: %w (is `shoal daemon` running with this --status-addr?)", addr, err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("daemon at %s answered %s", addr, resp.Status)
			}
			var st daemonStatus
			if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&st); err != nil {
				return fmt.Errorf("daemon at %s: bad status: %w", addr, err)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), st)
			}
			return printStatus(cmd.OutOrStdout(), st)
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:7504", "the daemon's --status-addr")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the raw JSON")
	cmd.Flags().BoolVar(&web, "web", false, "serve the daemon's status page on --listen and print its URL")
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:0", "with --web, the local address to serve the page on (port 0: a free one)")
	return cmd
}

func printStatus(w io.Writer, st daemonStatus) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "version\t%s\n", st.Version)
	fmt.Fprintf(tw, "mirror\t%s\n", st.Mirror)
	fmt.Fprintf(tw, "containerd\t%s\n", st.Containerd)
	fmt.Fprintf(tw, "store\t%d blobs, %s\n", st.StoreBlobs, units.BytesSize(float64(st.StoreBytes)))
	m := st.Mesh
	if m == nil {
		fmt.Fprintf(tw, "mesh\tdisabled (--p2p=false)\n")
		if err := tw.Flush(); err != nil {
			return err
		}
		return printUpstream(w, st.Upstream)
	}
	enc := "OPEN: no cluster key, anyone who reaches the ports can join and fetch"
	if m.Encrypted {
		enc = "encrypted (" + string(m.Protection) + ")"
	}
	fmt.Fprintf(tw, "mesh\t%s\n", enc)
	fmt.Fprintf(tw, "node\t%s\n", m.NodeName)
	fmt.Fprintf(tw, "peer id\t%s\n", m.ID)
	fmt.Fprintf(tw, "members\t%d live\n", m.LiveMembers)
	if m.LastJoinError != "" {
		fmt.Fprintf(tw, "join\t%s\n", m.LastJoinError)
	}
	fmt.Fprintf(tw, "provided\t%d blobs\n", m.BlobsProvided)
	fmt.Fprintf(tw, "served to peers\t%s (%d uploads now)\n", units.BytesSize(float64(m.BytesServed)), m.ActiveUploads)
	fmt.Fprintf(tw, "fetched from peers\t%s\n", units.BytesSize(float64(m.BytesFetched)))
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(m.Members) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "MEMBER\tADDRESS\tSTATE\tCONNECTED\tPEER ID")
		for _, mem := range m.Members {
			id := mem.ID.String()
			if mem.MetaError != "" {
				id = "bad metadata: " + mem.MetaError
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\n", mem.Name, mem.Addr, mem.State, mem.Connected, id)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return printUpstream(w, st.Upstream)
}

// printUpstream lists each registry's chain: the hosts shoal fetches
// from, in order, how each is trusted, and how each last failed.
func printUpstream(w io.Writer, regs []upstream.RegistryStatus) error {
	for _, r := range regs {
		src := "no hosts.toml: the registry alone"
		if r.Source != "" {
			src = "from " + r.Source
		}
		fmt.Fprintf(w, "\nupstream %s, %s\n", r.Registry, src)
		if msg := firstOf(r.Error, r.Warning); msg != "" {
			fmt.Fprintf(w, "  ! %s\n", msg)
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, h := range r.Hosts {
			last := ""
			if h.LastError != "" {
				last = "last error " + h.LastErrorAt.UTC().Format(time.RFC3339) + ": " + h.LastError
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", h.URL, strings.Join(h.Capabilities, ","), h.TLS, last)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

func firstOf(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// printJSON writes v to w as indented JSON, as `--json` prints it.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
