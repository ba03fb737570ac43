package kube

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/shoal-dev/shoal/bench/lab"
)

// BuildBinaries returns the directory holding the cluster's binaries, building
// the missing ones first with scripts/k8s-bins.sh of the checkout at
// repoRoot (what `make k8s-bins` runs). A cold build takes minutes; cached
// binaries are found at once.
func BuildBinaries(ctx context.Context, repoRoot string) (string, error) {
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(repoRoot, "scripts", "k8s-bins.sh"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("scripts/k8s-bins.sh: %w\n%s", err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

// CheckHost says what this machine lacks to run a cluster: root, and what
// `make deps` installs (the registry, containerd 2.x and its runc shim,
// the CNI plugins).
func CheckHost() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("the lab cluster needs root (namespaces, containerd, kubelet)")
	}
	for _, b := range []string{lab.DefaultRegistryBinary, lab.GoBin() + "/containerd", lab.GoBin() + "/containerd-shim-runc-v2", "/usr/lib/cni/bridge"} {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("the lab cluster needs %s (make deps installs it): %w", b, err)
		}
	}
	return nil
}
