package k8s_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/shoal-dev/shoal/bench/lab/kube"
)

// repoRoot is shoal's module root, relative to this package.
const repoRoot = "../.."

// bins builds (or finds cached) the cluster's binaries. Missing binaries
// are built, not skipped: a skip would hide that the cluster never ran.
func bins(t *testing.T) string {
	t.Helper()
	start := time.Now()
	dir, err := kube.BuildBinaries(t.Context(), repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("binaries in %s (%v)", dir, time.Since(start).Round(time.Millisecond))
	return dir
}

// requireRoot fails, rather than skips, when the machine cannot run the
// cluster: a skipped test would pass without having checked anything.
func requireRoot(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a Kubernetes cluster; -short runs unit tests only")
	}
	if err := kube.CheckHost(); err != nil {
		t.Fatal(err)
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
