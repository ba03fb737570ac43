package k8s_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/shoal-dev/shoal/bench/lab"
	"github.com/shoal-dev/shoal/bench/lab/kube"
	"github.com/shoal-dev/shoal/deploy"
)

// statusPort is the chart's default /status port, on the node's loopback.
const statusPort = 7504

// initContainer is the chart's init container, which writes hosts.toml.
const initContainer = "configure-containerd"

// nodeStatus is the part of a daemon's /status the checks read.
type nodeStatus struct {
	Containerd string `json:"containerd"`
	Mesh       *struct {
		NodeName      string
		Encrypted     bool
		LastJoinError string
		LiveMembers   int
		BlobsProvided int
	} `json:"mesh"`
}

// readStatus asks n's shoal for /status on the node's loopback, where
// `shoal status` on the node reads it.
func readStatus(ctx context.Context, n *kube.Node) (nodeStatus, error) {
	tr := lab.TransportIn(n.Host.Netns)
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	url := "http://127.0.0.1:" + strconv.Itoa(statusPort) + "/status"
	var st nodeStatus
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return st, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return st, err
	}
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	if err := json.Unmarshal(b, &st); err != nil || st.Mesh == nil {
		return st, fmt.Errorf("GET %s: no mesh in %s: %v", url, b, err)
	}
	return st, nil
}

// meshProblem says what keeps st, node's status in a mesh of nodes, from
// a formed mesh: every node a live member, gossip encrypted with the
// Secret's key, containerd reached, and the downward API's spec.nodeName
// as the member's name.
func meshProblem(st nodeStatus, node string, nodes int) error {
	switch m := st.Mesh; {
	case m.LiveMembers != nodes:
		return fmt.Errorf("%s sees %d live members, want %d (last join error %q)", node, m.LiveMembers, nodes, m.LastJoinError)
	case !m.Encrypted:
		return fmt.Errorf("%s: the mesh is not encrypted", node)
	case !strings.HasPrefix(st.Containerd, "connected"):
		return fmt.Errorf("%s: containerd %s", node, st.Containerd)
	case m.NodeName != node:
		return fmt.Errorf("%s calls itself %q, not spec.nodeName", node, m.NodeName)
	}
	return nil
}

// checkMesh waits until every node's shoal sees all of them as live
// members of one encrypted mesh.
func checkMesh(t *testing.T, c *kube.Cluster) {
	t.Helper()
	ctx := t.Context()
	start := time.Now()
	err := lab.WaitFor(ctx, "the mesh forms", waitTimeout, func() error {
		for _, n := range c.Nodes {
			st, err := readStatus(ctx, n)
			if err != nil {
				return fmt.Errorf("%s: %w", n.Name, err)
			}
			if err := meshProblem(st, n.Name, len(c.Nodes)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("mesh formed: every node's /status (on its loopback) sees %d live members, encrypted, containerd connected, named after spec.nodeName; %v after Ready",
		len(c.Nodes), time.Since(start).Round(time.Millisecond))
}

// checkBlobsProvided waits until every node's shoal provides at least
// want blobs to its peers: what it pulled, it now offers.
func checkBlobsProvided(t *testing.T, c *kube.Cluster, want int) {
	t.Helper()
	ctx := t.Context()
	got := map[string]int{}
	err := lab.WaitFor(ctx, "every node provides the image", 30*time.Second, func() error {
		for _, n := range c.Nodes {
			st, err := readStatus(ctx, n)
			if err != nil {
				return fmt.Errorf("%s: %w", n.Name, err)
			}
			if got[n.Name] = st.Mesh.BlobsProvided; got[n.Name] < want {
				return fmt.Errorf("%s provides %d blobs, want at least %d", n.Name, got[n.Name], want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("blobs provided to peers, per node: %v (the image has %d new blobs)", got, want)
}

// checkInitOutput reads, through the API server as `kubectl logs` does,
// what each pod's init container printed: it wrote reg's hosts.toml and
// warned of nothing.
func checkInitOutput(t *testing.T, cs *kubernetes.Clientset, reg string) {
	t.Helper()
	ctx := t.Context()
	pods, err := cs.CoreV1().Pods(deploy.Namespace).List(ctx, metav1.ListOptions{LabelSelector: shoalSelector})
	if err != nil {
		t.Fatal(err)
	}
	want := "wrote /etc/containerd/certs.d/" + reg + "/hosts.toml"
	for _, p := range pods.Items {
		b, err := cs.CoreV1().Pods(deploy.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{Container: initContainer}).DoRaw(ctx)
		if err != nil {
			t.Errorf("%s: logs of %s: %v", p.Spec.NodeName, initContainer, err)
			continue
		}
		out := strings.TrimSpace(string(b))
		if !strings.Contains(out, want) || strings.Contains(out, "warning") || strings.Contains(out, "does not read hosts.toml") {
			t.Errorf("%s: %s printed %q, want %q and no warning", p.Spec.NodeName, initContainer, out, want)
			continue
		}
		t.Logf("%s: %s printed: %s", p.Spec.NodeName, initContainer, strings.ReplaceAll(out, "\n", " | "))
	}
}

// checkDashboard checks that every metric the Grafana dashboard reads, and
// every label it groups by, is one the nodes' shoals export.
func checkDashboard(t *testing.T, c *kube.Cluster, tr http.RoundTripper) {
	t.Helper()
	refs, err := deploy.DashboardMetrics(repoRoot + "/deploy")
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var scraped []lab.Metrics
	for _, n := range c.Nodes {
		m, err := scrapeFamilies(t.Context(), client, "http://"+n.Host.Addr(metricsPort)+"/metrics")
		if err != nil {
			t.Fatalf("%s: %v", n.Name, err)
		}
		scraped = append(scraped, m)
	}
	labels := 0
	for _, r := range refs {
		if err := dashboardProblem(r, scraped); err != nil {
			t.Error(err)
		}
		labels += len(r.Labels)
	}
	t.Logf("the Grafana dashboard's %d metrics and %d group-by labels are all exported by the nodes' shoals", len(refs), labels)
}

// dashboardProblem says what of r no scraped daemon exports.
func dashboardProblem(r deploy.MetricRef, scraped []lab.Metrics) error {
	family := r.Name
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(r.Name, suffix); ok && exported(scraped, base) {
			family = base
		}
	}
	if !exported(scraped, family) {
		return fmt.Errorf("the dashboard reads %s, which no node's shoal exports", r.Name)
	}
	for _, l := range r.Labels {
		if l == "instance" || l == "le" { // added by Prometheus, and histograms' own
			continue
		}
		found := false
		for _, m := range scraped {
			for _, s := range m[family].GetMetric() {
				for _, lp := range s.GetLabel() {
					found = found || lp.GetName() == l
				}
			}
		}
		if !found {
			return fmt.Errorf("the dashboard groups %s by %q, a label it does not have", r.Name, l)
		}
	}
	return nil
}

func exported(scraped []lab.Metrics, family string) bool {
	for _, m := range scraped {
		if _, ok := m[family]; ok {
			return true
		}
	}
	return false
}

// scrapeFamilies reads url's metrics as Prometheus parses them.
func scrapeFamilies(ctx context.Context, client *http.Client, url string) (lab.Metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	return lab.Metrics(fams), nil
}
