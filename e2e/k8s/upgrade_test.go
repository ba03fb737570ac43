package k8s_test

import (
	"bytes"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/shoal-dev/shoal/bench/lab"
	"github.com/shoal-dev/shoal/bench/lab/kube"
	"github.com/shoal-dev/shoal/deploy"
)

// upgradeLogLevel is one value the upgrade changes: the daemon's
// --log-level, part of the pod template, so the DaemonSet rolls every pod.
// The other is peerMirror, which opens each node's mirror to the nodes'
// network for a node that joins later (checkNodeJoinsLater).
const upgradeLogLevel = "debug"

// pullFailures are the kubelet's event reasons for an image it could not
// pull, or that a container could not start from.
var pullFailures = []string{"Failed", "BackOff", "ErrImagePull", "ImagePullBackOff", "InspectFailed", "ErrImageNeverPull"}

// checkUpgradeDuringScaleOut upgrades the release with a changed pod
// template and, as the DaemonSet begins to roll, starts one pod per node
// of an image none has. The DaemonSet rolls every node's shoal while
// their containerd pull through it; every pod still starts, with no
// failed pull.
func checkUpgradeDuringScaleOut(t *testing.T, helm *action.Configuration, cs *kubernetes.Clientset, c *kube.Cluster, tr http.RoundTripper, values map[string]any) {
	t.Helper()
	ctx := t.Context()
	im := pushTestImage(t, c, tr, "e2e/scale:v1", 4, 8<<20)
	ds, err := cs.AppsV1().DaemonSets(deploy.Namespace).Get(ctx, deploy.ReleaseName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	oldPods := shoalPodUIDs(t, cs)
	keyBefore := clusterKey(t, cs)
	regBefore := registryBlobBytes(t, c)

	start := time.Now()
	upgraded := maps.Clone(values)
	upgraded["log"] = map[string]any{"level": upgradeLogLevel}
	upgraded["peerMirror"] = map[string]any{"enabled": true, "allow": []any{c.Subnet()}}
	upgradeChart(t, helm, upgraded)
	// The scale-out starts the moment the roll does: that node's
	// containerd pulls while its shoal shuts down.
	first := waitRollBegun(t, cs, oldPods)
	createSpreadDeployment(t, cs, "scale", im.Ref, int32(len(c.Nodes)))
	t.Logf("the roll began %v after helm upgrade: %s's shoal terminating; the scale Deployment created then",
		time.Since(start).Round(time.Millisecond), first)

	running := waitSpreadRunning(t, cs, c, "scale", start)
	rolled := waitRolled(t, cs, c, ds.Generation, oldPods, start)
	t.Logf("during the upgrade: one %s pod Running on each of %d nodes %v after helm upgrade; the DaemonSet rolled in %v",
		im.Ref, len(c.Nodes), running.Round(time.Millisecond), rolled.Round(time.Millisecond))

	logTimeline(t, cs, start)
	egress, ratio := egressRatio(im, regBefore, registryBlobBytes(t, c))
	t.Logf("registry egress for the second image's blobs, pulled while shoal rolled: %d bytes for %d new blob bytes: ratio %.3f", egress, im.newBytes(), ratio)
	checkNoPullFailure(t, cs, "scale-")
	if !bytes.Equal(clusterKey(t, cs), keyBefore) {
		t.Error("helm upgrade changed the cluster key: the mesh splits while pods roll")
	}
	checkMesh(t, c)
}

// waitRollBegun waits until one of the old shoal pods is terminating or
// gone, and names its node.
func waitRollBegun(t *testing.T, cs *kubernetes.Clientset, old map[types.UID]bool) string {
	t.Helper()
	ctx := t.Context()
	node := ""
	err := lab.WaitFor(ctx, "the DaemonSet begins to roll", waitTimeout, func() error {
		pods, err := cs.CoreV1().Pods(deploy.Namespace).List(ctx, metav1.ListOptions{LabelSelector: shoalSelector})
		if err != nil {
			return err
		}
		left := 0
		for _, p := range pods.Items {
			if !old[p.UID] {
				continue
			}
			left++
			if p.DeletionTimestamp != nil {
				node = p.Spec.NodeName
				return nil
			}
		}
		if left < len(old) {
			node = "a node"
			return nil
		}
		return fmt.Errorf("all %d old shoal pods still running", left)
	})
	if err != nil {
		t.Fatal(err)
	}
	return node
}

// logTimeline says, per node and in seconds after start (the API's
// precision), when the scale pod's container started and when the node's
// shoal was replaced and Ready again: whether the pull met the roll.
func logTimeline(t *testing.T, cs *kubernetes.Clientset, start time.Time) {
	t.Helper()
	ctx := t.Context()
	since := func(tm metav1.Time) string { return fmt.Sprintf("%+.0fs", tm.Sub(start).Seconds()) }
	line := map[string][]string{}
	scale, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=scale"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range scale.Items {
		for _, s := range p.Status.ContainerStatuses {
			if r := s.State.Running; r != nil {
				line[p.Spec.NodeName] = append(line[p.Spec.NodeName], "scale container started "+since(r.StartedAt))
			}
		}
	}
	shoal, err := cs.CoreV1().Pods(deploy.Namespace).List(ctx, metav1.ListOptions{LabelSelector: shoalSelector})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range shoal.Items {
		l := "shoal replaced " + since(p.CreationTimestamp)
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady {
				l += ", Ready " + since(cond.LastTransitionTime)
			}
		}
		line[p.Spec.NodeName] = append(line[p.Spec.NodeName], l)
	}
	for _, n := range slices.Sorted(maps.Keys(line)) {
		t.Logf("%s: %s", n, strings.Join(line[n], "; "))
	}
}

// upgradeChart runs `helm upgrade` of the release with values, without
// waiting: the test watches the roll itself.
func upgradeChart(t *testing.T, cfg *action.Configuration, values map[string]any) {
	t.Helper()
	up := action.NewUpgrade(cfg)
	up.Namespace = deploy.Namespace
	up.Timeout = 2 * time.Minute
	start := time.Now()
	rel, err := up.RunWithContext(t.Context(), deploy.ReleaseName, loadChart(t), values)
	if err != nil {
		t.Fatalf("helm upgrade: %v", err)
	}
	t.Logf("helm upgrade: release %s revision %d, status %s, log.level %s, peerMirror %v, in %v", rel.Name, rel.Version, rel.Info.Status, upgradeLogLevel, values["peerMirror"], time.Since(start).Round(time.Millisecond))
}

// waitSpreadRunning waits until the Deployment app has one Running pod
// on every node and says how long after start that was.
func waitSpreadRunning(t *testing.T, cs *kubernetes.Clientset, c *kube.Cluster, app string, start time.Time) time.Duration {
	t.Helper()
	ctx := t.Context()
	err := lab.WaitFor(ctx, "one Running "+app+" pod per node", waitTimeout, func() error {
		pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			return err
		}
		return onePerNode(c, pods.Items, func(p corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
	})
	if err != nil {
		t.Fatal(err)
	}
	return time.Since(start)
}

// waitRolled waits until the DaemonSet has rolled past generation: the
// controller saw the new template, every node runs an updated pod that is
// Ready and carries the new flag, and none of the old pods is left.
func waitRolled(t *testing.T, cs *kubernetes.Clientset, c *kube.Cluster, generation int64, old map[types.UID]bool, start time.Time) time.Duration {
	t.Helper()
	ctx := t.Context()
	var ds *appsv1.DaemonSet
	err := lab.WaitFor(ctx, "the DaemonSet rolls", waitTimeout, func() error {
		var err error
		if ds, err = cs.AppsV1().DaemonSets(deploy.Namespace).Get(ctx, deploy.ReleaseName, metav1.GetOptions{}); err != nil {
			return err
		}
		if err := rollProblem(ds, generation, int32(len(c.Nodes))); err != nil {
			return err
		}
		pods, err := cs.CoreV1().Pods(deploy.Namespace).List(ctx, metav1.ListOptions{LabelSelector: shoalSelector})
		if err != nil {
			return err
		}
		for _, p := range pods.Items {
			if old[p.UID] {
				return fmt.Errorf("old pod %s is still there: %s", p.Name, podState(p))
			}
			if !slices.Contains(p.Spec.Containers[0].Args, "--log-level="+upgradeLogLevel) {
				return fmt.Errorf("pod %s runs %q, not the upgraded template", p.Name, p.Spec.Containers[0].Args)
			}
		}
		return onePerNode(c, pods.Items, podReady)
	})
	if err != nil {
		t.Fatal(err)
	}
	s := ds.Status
	t.Logf("DaemonSet %s rolled: generation %d (was %d) observed, desired %d, updated %d, ready %d, available %d; no old pod left",
		ds.Name, s.ObservedGeneration, generation, s.DesiredNumberScheduled, s.UpdatedNumberScheduled, s.NumberReady, s.NumberAvailable)
	return time.Since(start)
}

// rollProblem says why ds has not yet rolled past generation on nodes
// nodes.
func rollProblem(ds *appsv1.DaemonSet, generation int64, nodes int32) error {
	s := ds.Status
	switch {
	case ds.Generation <= generation || s.ObservedGeneration < ds.Generation:
		return fmt.Errorf("DaemonSet generation %d, observed %d; was %d before the upgrade", ds.Generation, s.ObservedGeneration, generation)
	case s.DesiredNumberScheduled != nodes || s.UpdatedNumberScheduled != nodes || s.NumberReady != nodes || s.NumberAvailable != nodes:
		return fmt.Errorf("DaemonSet: desired %d, updated %d, ready %d, available %d; want %d", s.DesiredNumberScheduled, s.UpdatedNumberScheduled, s.NumberReady, s.NumberAvailable, nodes)
	}
	return nil
}

// checkNoPullFailure reads from the API server the events of the pods
// whose names start with prefix in namespace default: none may say a
// pull failed or backed off.
func checkNoPullFailure(t *testing.T, cs *kubernetes.Clientset, prefix string) {
	t.Helper()
	evs, err := cs.CoreV1().Events("default").List(t.Context(), metav1.ListOptions{FieldSelector: "involvedObject.kind=Pod"})
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[string]int{}
	var pulled []string
	for _, e := range evs.Items {
		if !strings.HasPrefix(e.InvolvedObject.Name, prefix) {
			continue
		}
		reasons[e.Reason] += int(max(e.Count, 1))
		if e.Type == corev1.EventTypeWarning || slices.Contains(pullFailures, e.Reason) {
			t.Errorf("pod %s: %s event %s: %s", e.InvolvedObject.Name, e.Type, e.Reason, e.Message)
		}
		if e.Reason == "Pulled" {
			pulled = append(pulled, e.Message)
		}
	}
	if reasons["Pulled"] == 0 || reasons["Started"] == 0 {
		t.Errorf("no Pulled or Started event for the %s pods: %v", prefix, reasons)
	}
	t.Logf("events of the %s pods: %v; no pull failure", strings.TrimSuffix(prefix, "-"), reasons)
	for _, m := range pulled {
		t.Logf("  %s", m)
	}
}

// shoalPodUIDs are the daemon's pods now.
func shoalPodUIDs(t *testing.T, cs *kubernetes.Clientset) map[types.UID]bool {
	t.Helper()
	pods, err := cs.CoreV1().Pods(deploy.Namespace).List(t.Context(), metav1.ListOptions{LabelSelector: shoalSelector})
	if err != nil {
		t.Fatal(err)
	}
	out := map[types.UID]bool{}
	for _, p := range pods.Items {
		out[p.UID] = true
	}
	return out
}

// clusterKey is the release's cluster key as the API server holds it.
func clusterKey(t *testing.T, cs *kubernetes.Clientset) []byte {
	t.Helper()
	s, err := cs.CoreV1().Secrets(deploy.Namespace).Get(t.Context(), deploy.ReleaseName+"-cluster-key", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s.Data["cluster.key"]
}
