package k8s_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/shoal-dev/shoal/bench/lab"
	"github.com/shoal-dev/shoal/bench/lab/kube"
)

// repoRoot is shoal's module root, relative to this package.
const repoRoot = "../.."

// bins builds (or finds cached) the cluster's binaries with the script
// make k8s-bins runs. Missing binaries are built, not skipped: a skip would
// hide that the cluster never ran.
func bins(t *testing.T) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "bash", repoRoot+"/scripts/k8s-bins.sh")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scripts/k8s-bins.sh: %v\n%s", err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// requireRoot fails, rather than skips, when the machine cannot run the
// cluster: a skipped e2e-k8s would pass without having checked anything.
func requireRoot(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a Kubernetes cluster; -short runs unit tests only")
	}
	if os.Geteuid() != 0 {
		t.Fatal("the lab cluster needs root (namespaces, containerd, kubelet)")
	}
	for _, b := range []string{lab.DefaultRegistryBinary, lab.GoBin() + "/containerd", lab.GoBin() + "/containerd-shim-runc-v2", "/usr/lib/cni/bridge"} {
		if _, err := os.Stat(b); err != nil {
			t.Fatalf("the lab cluster needs %s (make deps installs it): %v", b, err)
		}
	}
}

func podReady(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podState says why a pod is not yet ready, for a timeout's message.
func podState(p corev1.Pod) string {
	s := fmt.Sprintf("%s on %q: %s", p.Name, p.Spec.NodeName, p.Status.Phase)
	all := append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...)
	for _, cs := range all {
		switch {
		case cs.State.Waiting != nil:
			s += fmt.Sprintf(" %s waiting %s: %s", cs.Name, cs.State.Waiting.Reason, cs.State.Waiting.Message)
		case cs.State.Terminated != nil:
			s += fmt.Sprintf(" %s terminated %s (exit %d): %s", cs.Name, cs.State.Terminated.Reason, cs.State.Terminated.ExitCode, cs.State.Terminated.Message)
		case cs.State.Running != nil:
			s += fmt.Sprintf(" %s running ready=%v", cs.Name, cs.Ready)
		}
	}
	for _, c := range p.Status.Conditions {
		if c.Status != corev1.ConditionTrue && c.Message != "" {
			s += fmt.Sprintf(" %s: %s", c.Type, c.Message)
		}
	}
	return s
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// waitTimeout bounds each wait for pods: the machine is shared.
const waitTimeout = 4 * time.Minute

func TestMain(m *testing.M) {
	if os.Geteuid() == 0 {
		// What an earlier run killed before its Close left behind.
		if removed, err := kube.Sweep(context.Background(), "", nil); err != nil || len(removed) > 0 {
			fmt.Fprintln(os.Stderr, "k8s: swept", removed, err)
		}
	}
	os.Exit(m.Run())
}
