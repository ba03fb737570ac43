package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/spf13/cobra"

	"github.com/shoal-dev/shoal/p2p"
)

func newKeygenCommand() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "keygen",
		Short: "Make a cluster key for --cluster-key-file",
		Long: `Write a new random cluster key (32 bytes, base64) to --out, or to stdout
with --out -. Every node of a cluster uses the same key: it encrypts the
gossip and admits only members to the peer-to-peer streams. In Kubernetes,
keep it in a Secret and mount it into the DaemonSet.`,
		Example: `  shoal keygen --out /etc/shoal/cluster.key
  kubectl -n shoal create secret generic shoal-cluster-key --from-file=cluster.key=<(shoal keygen --out -)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, err := p2p.GenerateClusterKey()
			if err != nil {
				return err
			}
			enc := p2p.EncodeClusterKey(key)
			if out == "-" {
				_, err := cmd.OutOrStdout().Write(enc)
				return err
			}
			f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("%s exists; shoal keygen never overwrites a key", out)
			}
			if err != nil {
				return err
			}
			if _, err := f.Write(enc); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			fmt.Fprintln(cmd.ErrOrStderr(), "wrote cluster key to", out)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "cluster.key", "file to write the key to (mode 0600), or - for stdout")
	return cmd
}
