package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "shoal",
		Short: "Peer-to-peer container layer distribution for containerd",
		Long: `shoal runs on every node of a cluster as a containerd registry mirror.
containerd asks its local shoal first; shoal answers from the node's own
content, from peers, or by fetching from the upstream registry once for the
whole cluster. Whatever shoal cannot serve, containerd fetches itself.

Every flag can also be set through an environment variable: SHOAL_ followed
by the flag name in upper case with dashes as underscores, for example
SHOAL_MIRROR_ADDR=127.0.0.1:7500. A flag given on the command line wins.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return applyEnv(cmd.Flags())
		},
	}
	root.AddCommand(newDaemonCommand(), newConfigureCommand(), newUnconfigureCommand(), newKeygenCommand(), newStatusCommand(), newExplainCommand(), newPreheatCommand(), newPinCommand(), newUnpinCommand(), newPinsCommand(), newBenchCommand(), newVersionCommand())
	return root
}

// applyEnv sets every flag not given on the command line from SHOAL_<NAME>.
func applyEnv(fs *pflag.FlagSet) error {
	var errs []string
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed {
			return
		}
		env := "SHOAL_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		v, ok := os.LookupEnv(env)
		if !ok {
			return
		}
		if sv, isSlice := f.Value.(pflag.SliceValue); isSlice {
			if err := sv.Replace(strings.Split(v, ",")); err != nil {
				errs = append(errs, fmt.Sprintf("%s=%q: %v", env, v, err))
			}
			f.Changed = true
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Sprintf("%s=%q: %v", env, v, err))
		}
	})
	if len(errs) > 0 {
		return fmt.Errorf("environment: %s", strings.Join(errs, "; "))
	}
	return nil
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print shoal's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), "shoal", version)
			return err
		},
	}
}
