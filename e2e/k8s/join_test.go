package k8s_test

import (
	"net/http"
	"os"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/shoal-dev/shoal/bench/lab"
	"github.com/shoal-dev/shoal/bench/lab/kube"
)

// checkNodeJoinsLater adds a node to the running cluster, its hosts.toml
// for the lab registry written by its bootstrap to name the other nodes'
// mirrors (open to the nodes' network since the upgrade's peerMirror)
// before the registry. The DaemonSet's pod lands on it, and shoal's own
// image comes from the peers: the registry sends none of its blobs. The
// bootstrap's hosts.toml becomes the node's "before" for the uninstall
// check.
func checkNodeJoinsLater(t *testing.T, cs *kubernetes.Clientset, c *kube.Cluster, tr http.RoundTripper, shoalImage testImage, before map[string][]byte) {
	t.Helper()
	reg := c.Registry.Addr()
	var peers []string
	for _, n := range c.Nodes {
		peers = append(peers, "http://"+n.Host.Addr(mirrorPort))
	}
	regBefore := registryBlobBytes(t, c)
	servedBefore := scrapeNodes(t, c, tr)
	existing := c.Nodes

	start := time.Now()
	n, err := c.Join(t.Context(), func(n *kube.Node) error {
		return n.Containerd.WriteHosts(reg, lab.Hosts{Server: "http://" + reg, Mirrors: peers})
	})
	if err != nil {
		t.Fatalf("join: %v", err)
	}
	b, err := os.ReadFile(hostsPath(n, reg))
	if err != nil {
		t.Fatal(err)
	}
	before[n.Name] = b
	routeKubernetesService(t, c, n)
	t.Logf("%s joined, Ready %v after its containerd started; its bootstrap's hosts.toml names %d peer mirrors before the registry",
		n.Name, time.Since(start).Round(time.Millisecond), len(peers))

	waitShoalReady(t, cs, c)
	t.Logf("shoal Ready on %s %v after it joined", n.Name, time.Since(start).Round(time.Millisecond))

	egress, _ := egressRatio(shoalImage, regBefore, registryBlobBytes(t, c))
	var served float64
	for name, m := range scrapeServed(t, existing, servedBefore, scrapeNodes(t, c, tr)) {
		t.Logf("%s's mirror served %.0f bytes while %s joined", name, m, n.Name)
		served += m
	}
	all := shoalImage.newBytes()
	t.Logf("shoal's image on %s: the registry sent %d of its %d blob bytes; the peers' mirrors served %.0f bytes", n.Name, egress, all, served)
	if egress != 0 {
		t.Errorf("the registry sent %d bytes of shoal's image to the joining node, want 0: it comes from the peers", egress)
	}
	if served < float64(all) {
		t.Errorf("the peers' mirrors served %.0f bytes, less than shoal's image (%d): where did the rest come from?", served, all)
	}
	checkHostsNameShoal(t, c, reg, before)
	checkMesh(t, c)
}

// scrapeServed is, for each of nodes, what its mirror served between two
// scrapes.
func scrapeServed(t *testing.T, nodes []*kube.Node, before, after map[string]lab.Metrics) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, n := range nodes {
		a, b := after[n.Name], before[n.Name]
		if a == nil || b == nil {
			t.Fatalf("%s: no metrics", n.Name)
		}
		out[n.Name] = a.Sum("shoal_served_bytes_total", nil) - b.Sum("shoal_served_bytes_total", nil)
	}
	return out
}
