package kube_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/shoal-dev/shoal/bench/lab"
	"github.com/shoal-dev/shoal/bench/lab/kube"
)

// bins builds (or finds cached) the cluster's binaries. Missing binaries
// are built, not skipped: a skip would hide that the cluster never ran.
func bins(t *testing.T) string {
	t.Helper()
	start := time.Now()
	dir, err := kube.BuildBinaries(t.Context(), "../../..")
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

var nodes = flag.Int("kube.nodes", 2, "how many kubelets the smoke test starts")

func TestClusterRunsADaemonSet(t *testing.T) {
	requireRoot(t)
	bin := bins(t)
	ctx := t.Context()
	log := slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))

	start := time.Now()
	c, err := kube.Start(ctx, kube.Config{Bin: bin, Nodes: *nodes, Name: fmt.Sprintf("kube%d", os.Getpid()), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range c.Nodes {
				t.Logf("%s kubelet log:\n%s", n.Name, lab.Tail(n.KubeletLog(), 40))
				t.Logf("%s containerd log:\n%s", n.Name, lab.Tail(n.Containerd.LogPath(), 20))
			}
		}
		if err := c.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	t.Logf("cluster up: %d nodes Ready in %v", len(c.Nodes), time.Since(start).Round(time.Millisecond))

	cs, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	labels := map[string]string{"app": "labpod"}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "labpod", Namespace: "default"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					HostNetwork: true,
					// The standard paths shoal's chart mounts: each node's
					// own, from its mount namespace.
					Volumes: []corev1.Volume{
						hostPath("containerd-socket", "/run/containerd", corev1.HostPathDirectory),
						hostPath("containerd-content", "/var/lib/containerd/io.containerd.content.v1.content", corev1.HostPathDirectory),
						hostPath("containerd-hosts", "/etc/containerd/certs.d", corev1.HostPathDirectoryOrCreate),
						hostPath("data", "/var/lib/shoal", corev1.HostPathDirectoryOrCreate),
					},
					Containers: []corev1.Container{{
						Name:  "labpod",
						Image: c.PodImage,
						Args: []string{"-listen", ":18080",
							"-require", "/host/run/containerd/containerd.sock",
							"-require", "/host/content/blobs/sha256",
							"-require", "/host/hosts/" + c.Registry.Addr() + "/hosts.toml",
							"-touch", "/data/labpod",
						},
						VolumeMounts: []corev1.VolumeMount{
							{Name: "containerd-socket", MountPath: "/host/run/containerd"},
							{Name: "containerd-content", MountPath: "/host/content", ReadOnly: true},
							{Name: "containerd-hosts", MountPath: "/host/hosts", ReadOnly: true},
							{Name: "data", MountPath: "/data"},
						},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt32(18080)}},
							PeriodSeconds: 1,
						},
					}},
				},
			},
		},
	}
	if _, err := cs.AppsV1().DaemonSets("default").Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err = lab.WaitFor(ctx, "one ready labpod per node", 3*time.Minute, func() error {
		pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=labpod"})
		if err != nil {
			return err
		}
		ready := map[string]int{}
		var states []string
		for _, p := range pods.Items {
			states = append(states, fmt.Sprintf("%s on %q: %s", p.Name, p.Spec.NodeName, podState(p)))
			if p.Status.Phase == corev1.PodRunning && podReady(p) {
				ready[p.Spec.NodeName]++
			}
		}
		for _, n := range c.Nodes {
			if ready[n.Name] != 1 {
				return fmt.Errorf("%s has %d ready labpods; pods: %s", n.Name, ready[n.Name], strings.Join(states, "; "))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		if _, err := os.Stat(filepath.Join(n.Dir(), "shoal", "labpod")); err != nil {
			t.Errorf("%s: the pod's /var/lib/shoal is not the node's: %v", n.Name, err)
		}
	}
	t.Logf("pods running: one ready labpod on each of %d nodes %v after the DaemonSet was created", len(c.Nodes), time.Since(start).Round(time.Millisecond))

	// Logs go apiserver -> kubelet (port 10250, client certificate both
	// ways), which the Helm chart's checks will need too.
	pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=labpod"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		b, err := cs.CoreV1().Pods("default").GetLogs(p.Name, &corev1.PodLogOptions{}).DoRaw(ctx)
		if err != nil {
			t.Fatalf("logs of %s on %s: %v", p.Name, p.Spec.NodeName, err)
		}
		if !strings.Contains(string(b), "serving /ready") {
			t.Errorf("logs of %s on %s: %q", p.Name, p.Spec.NodeName, b)
		}
	}
}

// TestStartFailsWithTheKubeletsLogAndLeavesNothing runs a cluster whose
// kubelet is a script that exits: Start must say so with the script's
// output, and remove every process, mount, namespace and directory.
func TestStartFailsWithTheKubeletsLogAndLeavesNothing(t *testing.T) {
	requireRoot(t)
	real := bins(t)
	bin := t.TempDir()
	for _, b := range kube.Binaries {
		if b == "kubelet" {
			continue
		}
		if err := os.Symlink(filepath.Join(real, b), filepath.Join(bin, b)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(bin, "kubelet"), []byte("#!/bin/sh\necho kubelet refuses to run\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Short: containerd's socket paths live under it (t.TempDir is too long).
	dir, err := os.MkdirTemp("", "kf-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	name := fmt.Sprintf("kubefail%d", os.Getpid())
	log := slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	c, err := kube.Start(t.Context(), kube.Config{Bin: bin, Nodes: 1, Name: name, Dir: dir, Logger: log})
	if err == nil {
		c.Close()
		t.Fatal("Start succeeded with a kubelet that exits")
	}
	if !strings.Contains(err.Error(), "kubelet refuses to run") || !errors.Is(err, lab.ErrExited) {
		t.Errorf("Start: %v; want lab.ErrExited with the kubelet's output", err)
	}
	t.Logf("Start failed as it should: %v", err)
	if left, _ := os.ReadDir(dir); len(left) > 0 {
		t.Errorf("left in Dir: %v", left)
	}
	netns, err := lab.ListNetns()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range netns {
		if strings.HasPrefix(n, name+"-") {
			t.Errorf("namespace %s left", n)
		}
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mounts), dir) {
		t.Errorf("mounts left under %s", dir)
	}
}

func hostPath(name, path string, typ corev1.HostPathType) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: path, Type: &typ}}}
}

func podReady(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podState says why a pod is not yet ready, for the timeout's message.
func podState(p corev1.Pod) string {
	s := string(p.Status.Phase)
	for _, cs := range p.Status.ContainerStatuses {
		switch {
		case cs.State.Waiting != nil:
			s += fmt.Sprintf(" waiting %s: %s", cs.State.Waiting.Reason, cs.State.Waiting.Message)
		case cs.State.Terminated != nil:
			s += fmt.Sprintf(" terminated %s: %s", cs.State.Terminated.Reason, cs.State.Terminated.Message)
		case cs.State.Running != nil:
			s += fmt.Sprintf(" running ready=%v", cs.Ready)
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
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

func TestMain(m *testing.M) {
	if os.Geteuid() == 0 {
		// What an earlier run killed before its Close left behind.
		if removed, err := kube.Sweep(context.Background(), "", nil); err != nil || len(removed) > 0 {
			fmt.Fprintln(os.Stderr, "kube: swept", removed, err)
		}
	}
	goleak.VerifyTestMain(m)
}
