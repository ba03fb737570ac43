package main

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/spf13/cobra"

	containerdplugin "github.com/shoal-dev/shoal/containerd-plugin"
)

func newConfigureCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "configure", Short: "Point a container runtime at shoal"}
	var (
		hostsDir, mirrorURL, containerdConfig string
		registries                            []string
	)
	ctrd := &cobra.Command{
		Use:   "containerd",
		Short: "Write hosts.toml files that make containerd pull through shoal",
		Long: `Write <hosts-dir>/<registry>/hosts.toml for each --registry (or
<hosts-dir>/_default/hosts.toml, which covers every registry, when none is
named) with shoal's mirror as the first host and the registry as the server.
Host entries a file already had are kept after shoal's, and the original is
backed up beside it so 'shoal unconfigure containerd' restores it exactly.
containerd re-reads hosts.toml on every pull: no restart is needed, but CRI
must have registry config_path set; this command checks --containerd-config
and prints the line to add when it is missing.`,
		Example: `  shoal configure containerd --hosts-dir /etc/containerd/certs.d
  shoal configure containerd --registry docker.io --registry ghcr.io
  shoal configure containerd --registry http://10.0.0.5:5000   # a plain-HTTP registry`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			changed, err := containerdplugin.Configure(containerdplugin.ConfigureOptions{
				HostsDir:   hostsDir,
				Mirror:     mirrorURL,
				Registries: registries,
			})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			for _, p := range changed {
				fmt.Fprintln(out, "wrote", p)
			}
			if len(changed) == 0 {
				fmt.Fprintln(out, "hosts.toml files already point at", mirrorURL)
			}
			return reportContainerdConfig(cmd, containerdConfig)
		},
	}
	f := ctrd.Flags()
	f.StringVar(&hostsDir, "hosts-dir", "/etc/containerd/certs.d", "containerd's registry config_path directory")
	f.StringVar(&mirrorURL, "mirror", "http://127.0.0.1:7500", "shoal's mirror URL as containerd reaches it (the daemon's --mirror-addr)")
	f.StringSliceVar(&registries, "registry", nil, "registry to mirror, HOST[:PORT] or http://HOST[:PORT] (repeatable); none means _default, every registry")
	f.StringVar(&containerdConfig, "containerd-config", "/etc/containerd/config.toml", "containerd config to check for config_path and discard_unpacked_layers; empty skips the check")
	cmd.AddCommand(ctrd)
	return cmd
}

func reportContainerdConfig(cmd *cobra.Command, path string) error {
	if path == "" {
		return nil
	}
	rep, err := containerdplugin.CheckConfig(path)
	if errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(cmd.ErrOrStderr(), "note: %s not found; make sure containerd's CRI registry config_path includes the hosts dir\n", path)
		return nil
	}
	if err != nil {
		return err
	}
	w := cmd.ErrOrStderr()
	if rep.Fix != "" {
		fmt.Fprintf(w, "containerd's CRI does not read hosts.toml yet. Add to %s", path)
		if rep.FixTable != "" {
			fmt.Fprintf(w, " under %s", rep.FixTable)
		}
		fmt.Fprintf(w, ", then restart containerd:\n\n%s\n\n", rep.Fix)
	}
	if rep.DiscardUnpackedLayers {
		fmt.Fprintln(w, "warning: discard_unpacked_layers is on: containerd deletes layers after unpacking, so this node has none to share with its peers")
	}
	for _, s := range rep.Warnings {
		fmt.Fprintln(w, "warning:", s)
	}
	return nil
}

func newUnconfigureCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "unconfigure", Short: "Undo 'shoal configure'"}
	var (
		hostsDir   string
		registries []string
	)
	ctrd := &cobra.Command{
		Use:   "containerd",
		Short: "Restore the hosts.toml files shoal changed",
		Long: `Restore every hosts.toml that 'shoal configure containerd' wrote for the
given registries (or _default) to the exact bytes it had before, and remove
the files and directories shoal created.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := containerdplugin.Unconfigure(hostsDir, registries); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "restored hosts.toml under", hostsDir)
			return nil
		},
	}
	ctrd.Flags().StringVar(&hostsDir, "hosts-dir", "/etc/containerd/certs.d", "containerd's registry config_path directory")
	ctrd.Flags().StringSliceVar(&registries, "registry", nil, "registries given to 'shoal configure containerd' (repeatable); none means _default")
	cmd.AddCommand(ctrd)
	return cmd
}
