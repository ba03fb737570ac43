package k8s_test

import (
	"bytes"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/shoal-dev/shoal/bench/lab"
	"github.com/shoal-dev/shoal/bench/lab/kube"
	"github.com/shoal-dev/shoal/deploy"
)

// kubernetesServiceIP is the lab's kubernetes Service (the first address
// of its service CIDR), which in-cluster clients such as the uninstall
// hook's kubectl dial.
const kubernetesServiceIP = "10.96.0.1"

// routeKubernetesService does on each of nodes what kube-proxy would for the
// one Service the chart's pods call: the lab runs no kube-proxy, and the
// uninstall hook's Job reaches the apiserver at the Service's address.
// The rules go with the node's namespace when the cluster closes.
func routeKubernetesService(t *testing.T, c *kube.Cluster, nodes ...*kube.Node) {
	t.Helper()
	u, err := url.Parse(c.Server())
	if err != nil {
		t.Fatal(err)
	}
	rules := [][]string{
		{"-t", "nat", "-A", "PREROUTING", "-d", kubernetesServiceIP + "/32", "-p", "tcp", "--dport", "443", "-j", "DNAT", "--to-destination", u.Host},
		// Pod addresses are private to their node: the apiserver answers
		// the node instead.
		{"-t", "nat", "-A", "POSTROUTING", "-m", "conntrack", "--ctstate", "DNAT", "-j", "MASQUERADE"},
	}
	for _, n := range nodes {
		for _, r := range rules {
			if out, err := n.Host.Command(t.Context(), "iptables", r...).CombinedOutput(); err != nil {
				t.Fatalf("%s: iptables %s: %v: %s", n.Name, strings.Join(r, " "), err, out)
			}
		}
	}
}

// checkUninstall runs `helm uninstall`, hooks included, and checks that
// no shoal pod is left and that every node's hosts.toml for reg is again
// byte for byte what it was before the install.
func checkUninstall(t *testing.T, cfg *action.Configuration, cs *kubernetes.Clientset, c *kube.Cluster, reg string, before map[string][]byte) {
	t.Helper()
	ctx := t.Context()
	start := time.Now()
	un := action.NewUninstall(cfg)
	un.Timeout = waitTimeout
	un.Wait = true
	res, err := un.Run(deploy.ReleaseName)
	if err != nil {
		t.Fatalf("helm uninstall: %v", err)
	}
	var hooks []string
	for _, h := range res.Release.Hooks {
		hooks = append(hooks, fmt.Sprintf("%s %s: %s", h.Kind, h.Name, h.LastRun.Phase))
	}
	t.Logf("helm uninstall: release %s in %v; pre-delete hooks: %s", res.Release.Info.Status, time.Since(start).Round(time.Millisecond), strings.Join(hooks, ", "))
	err = lab.WaitFor(ctx, "no pod left in namespace "+deploy.Namespace, waitTimeout, func() error {
		pods, err := cs.CoreV1().Pods(deploy.Namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		var left []string
		for _, p := range pods.Items {
			left = append(left, podState(p))
		}
		if len(left) > 0 {
			return fmt.Errorf("%d pods left: %s", len(left), strings.Join(left, "; "))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("no shoal pod left in namespace %s, %v after helm uninstall began", deploy.Namespace, time.Since(start).Round(time.Millisecond))
	for name, b := range readHosts(t, c, reg) {
		if !bytes.Equal(b, before[name]) {
			t.Errorf("%s: certs.d/%s/hosts.toml after uninstall:\n%s\nbefore install:\n%s", name, reg, b, before[name])
			continue
		}
		t.Logf("%s: certs.d/%s/hosts.toml restored byte for byte (%d bytes)", name, reg, len(b))
	}
}
