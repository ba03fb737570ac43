package k8s_test

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/shoal-dev/shoal/bench/lab"
	"github.com/shoal-dev/shoal/bench/lab/kube"
	"github.com/shoal-dev/shoal/deploy"
)

// The chart's default ports, which the checks reach.
const (
	mirrorPort  = 7500
	gossipPort  = 7502
	metricsPort = 7503
)

// shoalSelector picks the daemon's pods (not the uninstall hook's).
const shoalSelector = "app.kubernetes.io/name=shoal,app.kubernetes.io/instance=" + deploy.ReleaseName

// TestChartOnKubernetes installs the chart on a three-node cluster with
// Helm, as an operator would, and checks what each node then does.
func TestChartOnKubernetes(t *testing.T) {
	requireRoot(t)
	bin := bins(t)
	begin := time.Now()
	t.Cleanup(func() { t.Logf("wall time: %v", time.Since(begin).Round(time.Second)) })
	c := startCluster(t, bin, 3, 1)
	cs, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	tr := labTransport(t, c)
	reg := c.Registry.Addr()
	before := readHosts(t, c, reg)
	repo, tag, shoalImage := pushShoalImage(t, c, tr)
	values := chartValues(repo, tag, reg, c.Nodes)
	values["unconfigure"] = map[string]any{
		"pauseImage":   c.PodImage,
		"kubectlImage": pushKubectlImage(t, c, tr, bin),
	}
	routeKubernetesService(t, c, c.Nodes...)

	createNamespace(t, cs, deploy.Namespace)
	helm := helmConfig(t, c)
	installChart(t, helm, values)
	waitShoalReady(t, cs, c)
	checkHostsNameShoal(t, c, reg, before)
	checkInitOutput(t, cs, reg)
	checkWhatKubeletRan(t, cs, c)
	checkMesh(t, c)
	checkPullThroughPeers(t, cs, c, tr)
	checkDashboard(t, c, tr)
	checkUpgradeDuringScaleOut(t, helm, cs, c, tr, values)
	checkNodeJoinsLater(t, cs, c, tr, shoalImage, before)
	checkUninstall(t, helm, cs, c, reg, before)
}

// startCluster starts nodes nodes and makes room for spare more to Join.
func startCluster(t *testing.T, bin string, nodes, spare int) *kube.Cluster {
	t.Helper()
	log := slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	start := time.Now()
	c, err := kube.Start(t.Context(), kube.Config{Bin: bin, Nodes: nodes, Spare: spare, Name: fmt.Sprintf("k8s%d", os.Getpid()), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range c.Nodes {
				t.Logf("%s kubelet log:\n%s", n.Name, lab.Tail(n.KubeletLog(), 30))
			}
		}
		if err := c.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	t.Logf("cluster up: %d nodes Ready in %v", len(c.Nodes), time.Since(start).Round(time.Millisecond))
	return c
}

// chartValues point the chart at shoal's image in the lab registry and
// make every node's containerd pull that registry through shoal. The
// lab has no cluster DNS, so the headless Service's name in --join does
// not resolve: the node IPs are extra seeds.
func chartValues(repo, tag, reg string, nodes []*kube.Node) map[string]any {
	var extra []any
	for _, n := range nodes {
		extra = append(extra, "--join="+n.Host.Addr(gossipPort))
	}
	return map[string]any{
		"image":              map[string]any{"repository": repo, "tag": tag},
		"preset":             "containerd",
		"registries":         []any{"http://" + reg},
		"insecureRegistries": []any{reg},
		"extraArgs":          extra,
	}
}

func createNamespace(t *testing.T, cs *kubernetes.Clientset, name string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:   name,
		Labels: map[string]string{"pod-security.kubernetes.io/enforce": "privileged"},
	}}
	if _, err := cs.CoreV1().Namespaces().Create(t.Context(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitShoalReady waits until the DaemonSet has one Ready pod on every
// node: the kubelet's probes of /readyz and /healthz pass.
func waitShoalReady(t *testing.T, cs *kubernetes.Clientset, c *kube.Cluster) {
	t.Helper()
	ctx := t.Context()
	start := time.Now()
	var ds *appsv1.DaemonSet
	err := lab.WaitFor(ctx, "one Ready shoal pod per node", waitTimeout, func() error {
		pods, err := cs.CoreV1().Pods(deploy.Namespace).List(ctx, metav1.ListOptions{LabelSelector: shoalSelector})
		if err != nil {
			return err
		}
		if err := onePerNode(c, pods.Items, podReady); err != nil {
			return err
		}
		if ds, err = cs.AppsV1().DaemonSets(deploy.Namespace).Get(ctx, deploy.ReleaseName, metav1.GetOptions{}); err != nil {
			return err
		}
		if s, want := ds.Status, int32(len(c.Nodes)); s.DesiredNumberScheduled != want || s.NumberReady != want || s.NumberAvailable != want {
			return fmt.Errorf("DaemonSet %s: desired %d, ready %d, available %d", ds.Name, s.DesiredNumberScheduled, s.NumberReady, s.NumberAvailable)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("shoal Ready on every node: DaemonSet %s desired %d, ready %d, available %d, in %v of waiting",
		ds.Name, ds.Status.DesiredNumberScheduled, ds.Status.NumberReady, ds.Status.NumberAvailable, time.Since(start).Round(time.Millisecond))
}

// onePerNode says which node lacks exactly one pod for which ok holds.
func onePerNode(c *kube.Cluster, pods []corev1.Pod, ok func(corev1.Pod) bool) error {
	n := map[string]int{}
	var states []string
	for _, p := range pods {
		states = append(states, podState(p))
		if ok(p) {
			n[p.Spec.NodeName]++
		}
	}
	for _, node := range c.Nodes {
		if n[node.Name] != 1 {
			return fmt.Errorf("%s has %d such pods; pods: %s", node.Name, n[node.Name], strings.Join(states, "; "))
		}
	}
	return nil
}

// hostsPath is the node's hosts.toml for reg as its containerd reads it
// (/etc/containerd/certs.d in the node's mount namespace).
func hostsPath(n *kube.Node, reg string) string {
	return filepath.Join(n.Containerd.HostsDir(), reg, "hosts.toml")
}

func readHosts(t *testing.T, c *kube.Cluster, reg string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, n := range c.Nodes {
		b, err := os.ReadFile(hostsPath(n, reg))
		if err != nil {
			t.Fatal(err)
		}
		out[n.Name] = b
	}
	return out
}

// checkHostsNameShoal checks that every node's hosts.toml for reg, as the
// init container rewrote it, tries shoal's mirror first.
func checkHostsNameShoal(t *testing.T, c *kube.Cluster, reg string, before map[string][]byte) {
	t.Helper()
	want := fmt.Sprintf("[host.%q]", fmt.Sprintf("http://127.0.0.1:%d", mirrorPort))
	for name, b := range readHosts(t, c, reg) {
		first := ""
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "[host.") {
				first = strings.TrimSpace(line)
				break
			}
		}
		if first != want {
			t.Errorf("%s: %s names %s first, want %s:\n%s", name, hostsPath(c.Nodes[0], reg), first, want, b)
			continue
		}
		t.Logf("%s: certs.d/%s/hosts.toml (%d bytes, was %d) names %s first", name, reg, len(b), len(before[name]), first)
	}
}
