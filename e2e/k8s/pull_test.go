package k8s_test

import (
	"net/http"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/shoal-dev/shoal/bench/lab"
	"github.com/shoal-dev/shoal/bench/lab/kube"
)

// maxEgressRatio bounds the registry's blob bytes for a new image pulled
// by every node at once, over the image's new blob bytes: one copy, plus
// a little for a transfer a peer cut short.
const maxEgressRatio = 1.1

// checkPullThroughPeers starts one pod per node of an image none has, all
// at once, and checks that the registry sent about one copy of its blobs
// while the nodes' shoals served each other the rest.
func checkPullThroughPeers(t *testing.T, cs *kubernetes.Clientset, c *kube.Cluster, tr http.RoundTripper) {
	t.Helper()
	im := pushTestImage(t, c, tr, "e2e/layers:v1", 3, 4<<20)
	regBefore := registryBlobBytes(t, c)
	peerBefore := scrapeNodes(t, c, tr)

	start := time.Now()
	createSpreadDeployment(t, cs, "layers", im.Ref, int32(len(c.Nodes)))
	running := waitSpreadRunning(t, cs, c, "layers", start)
	t.Logf("pods Running: one %s pod on each of %d nodes %v after the Deployment was created", im.Ref, len(c.Nodes), running.Round(time.Millisecond))

	egress, ratio := egressRatio(im, regBefore, registryBlobBytes(t, c))
	t.Logf("registry egress for the image's blobs: %d bytes for %d new blob bytes (%d blobs): ratio %.3f (at most %.1f)", egress, im.newBytes(), len(im.New), ratio, maxEgressRatio)
	if ratio > maxEgressRatio {
		t.Errorf("the registry sent %.3f copies of the image's new blobs, want at most %.1f", ratio, maxEgressRatio)
	}

	peerAfter := scrapeNodes(t, c, tr)
	var peer float64
	for _, n := range c.Nodes {
		a, b := peerAfter[n.Name], peerBefore[n.Name]
		delta := func(name string, match map[string]string) float64 { return a.Sum(name, match) - b.Sum(name, match) }
		served := delta("shoal_p2p_served_bytes_total", nil)
		peer += served
		t.Logf("%s: shoal fetched %.0f blob bytes from peers and %.0f from the registry, served %.0f to peers and %.0f to its containerd",
			n.Name, delta("shoal_fetched_bytes_total", map[string]string{"source": "peer"}),
			delta("shoal_fetched_bytes_total", map[string]string{"source": "upstream"}), served,
			delta("shoal_served_bytes_total", nil))
	}
	t.Logf("peer bytes: %.0f served between nodes, %.2f × the image's new blob bytes", peer, peer/float64(im.newBytes()))
	if peer == 0 {
		t.Error("no node's shoal served a byte to a peer")
	}
	checkBlobsProvided(t, c, len(im.New))
}

// createSpreadDeployment runs replicas pods of img, at most one per node
// (required pod anti-affinity on the hostname).
func createSpreadDeployment(t *testing.T, cs *kubernetes.Clientset, name, img string, replicas int32) {
	t.Helper()
	labels := map[string]string{"app": name}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
						RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
							LabelSelector: &metav1.LabelSelector{MatchLabels: labels},
							TopologyKey:   corev1.LabelHostname,
						}},
					}},
					// The lab runs no cluster DNS, and the pods need none:
					// ClusterFirst would only make the kubelet warn.
					DNSPolicy:                     corev1.DNSDefault,
					TerminationGracePeriodSeconds: new(int64(5)),
					Containers:                    []corev1.Container{{Name: name, Image: img, ImagePullPolicy: corev1.PullIfNotPresent}},
				},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments("default").Create(t.Context(), d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// egressRatio is the registry's egress for im's blobs between two
// readings of registryBlobBytes, and its ratio to im's new blob bytes.
func egressRatio(im testImage, before, after map[string]int64) (int64, float64) {
	var egress int64
	for d := range im.All {
		egress += after[d] - before[d]
	}
	return egress, float64(egress) / float64(im.newBytes())
}

// registryBlobBytes is the registry's egress per blob so far, from its
// access log.
func registryBlobBytes(t *testing.T, c *kube.Cluster) map[string]int64 {
	t.Helper()
	by, err := c.Registry.BlobBytes()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]int64, len(by))
	for d, n := range by {
		out[d.String()] = n
	}
	return out
}

// scrapeNodes reads every node's shoal /metrics on the node's IP, at the
// chart's metrics port, as Prometheus would.
func scrapeNodes(t *testing.T, c *kube.Cluster, tr http.RoundTripper) map[string]lab.Metrics {
	t.Helper()
	out := map[string]lab.Metrics{}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for _, n := range c.Nodes {
		m, err := scrapeFamilies(t.Context(), client, "http://"+n.Host.Addr(metricsPort)+"/metrics")
		if err != nil {
			t.Fatalf("%s: %v", n.Name, err)
		}
		out[n.Name] = m
	}
	return out
}
