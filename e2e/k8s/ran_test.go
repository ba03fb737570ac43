package k8s_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shoal-dev/shoal/bench/lab/kube"
	"github.com/shoal-dev/shoal/deploy"
)

// wantMounts are the daemon's mounts as its process sees them, read-only
// or not: containerd's socket dir, content store and hosts dir read-only,
// its own store and /tmp writable, the cluster key read-only.
var wantMounts = map[string]bool{
	"/":               true,
	"/run/containerd": true,
	"/var/lib/containerd/io.containerd.content.v1.content": true,
	"/etc/containerd/certs.d":                              true,
	"/var/lib/shoal":                                       false,
	"/etc/shoal/cluster-key":                               true,
	"/tmp":                                                 false,
}

// checkWhatKubeletRan reads back, from the API server and from each node,
// what the real kubelet made of the chart's pod.
func checkWhatKubeletRan(t *testing.T, cs *kubernetes.Clientset, c *kube.Cluster) {
	t.Helper()
	pods, err := cs.CoreV1().Pods(deploy.Namespace).List(t.Context(), metav1.ListOptions{LabelSelector: shoalSelector})
	if err != nil {
		t.Fatal(err)
	}
	nodes := map[string]*kube.Node{}
	for _, n := range c.Nodes {
		nodes[n.Name] = n
	}
	for _, p := range pods.Items {
		n := nodes[p.Spec.NodeName]
		if n == nil {
			t.Errorf("pod %s on unknown node %q", p.Name, p.Spec.NodeName)
			continue
		}
		probes, err := checkPodStatus(p, n)
		if err != nil {
			t.Errorf("%s: %v", n.Name, err)
			continue
		}
		pid, err := containerPid(t, n, p, "shoal")
		if err != nil {
			t.Errorf("%s: %v", n.Name, err)
			continue
		}
		seen, err := checkProcess(pid, n)
		if err != nil {
			t.Errorf("%s: shoal (pid %d): %v", n.Name, pid, err)
			continue
		}
		key, err := checkClusterKey(t, cs, p, pid)
		if err != nil {
			t.Errorf("%s: %v", n.Name, err)
			continue
		}
		t.Logf("%s: pod %s Ready, no restarts (%s); shoal pid %d as the kubelet ran it: %s; %s", n.Name, p.Name, probes, pid, seen, key)
	}
}

// checkPodStatus checks what the API server says of p: the host's
// network, the init container done, the daemon Ready and never restarted
// (the kubelet's liveness probe never failed). It says which probes the
// kubelet ran.
func checkPodStatus(p corev1.Pod, n *kube.Node) (string, error) {
	if !p.Spec.HostNetwork || p.Status.PodIP != n.Host.IP.String() {
		return "", fmt.Errorf("pod %s: hostNetwork %v, pod IP %s; want the node's %s", p.Name, p.Spec.HostNetwork, p.Status.PodIP, n.Host.IP)
	}
	for _, s := range p.Status.InitContainerStatuses {
		if term := s.State.Terminated; term == nil || term.ExitCode != 0 {
			return "", fmt.Errorf("init container %s: %+v", s.Name, s.State)
		}
	}
	for _, s := range p.Status.ContainerStatuses {
		if !s.Ready || s.RestartCount != 0 {
			return "", fmt.Errorf("container %s: ready %v, %d restarts", s.Name, s.Ready, s.RestartCount)
		}
	}
	var probes []string
	for _, c := range p.Spec.Containers {
		for kind, pr := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
			if pr == nil || pr.HTTPGet == nil {
				return "", fmt.Errorf("container %s: no HTTP %s probe", c.Name, kind)
			}
			probes = append(probes, fmt.Sprintf("%s GET %s on port %s", kind, pr.HTTPGet.Path, pr.HTTPGet.Port.String()))
		}
	}
	slices.Sort(probes)
	return strings.Join(probes, ", "), nil
}

// containerPid asks the node's containerd, through CRI as the kubelet
// does, for the host pid of p's container.
func containerPid(t *testing.T, n *kube.Node, p corev1.Pod, container string) (int, error) {
	id := ""
	for _, s := range p.Status.ContainerStatuses {
		if s.Name == container {
			_, id, _ = strings.Cut(s.ContainerID, "://")
		}
	}
	if id == "" {
		return 0, fmt.Errorf("pod %s has no container %s", p.Name, container)
	}
	resp, err := n.Containerd.RuntimeService().ContainerStatus(t.Context(), &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		return 0, fmt.Errorf("CRI ContainerStatus %s: %w", id, err)
	}
	var info struct {
		Pid int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(resp.Info["info"]), &info); err != nil || info.Pid == 0 {
		return 0, fmt.Errorf("CRI ContainerStatus %s: no pid in %q: %v", id, resp.Info["info"], err)
	}
	return info.Pid, nil
}

// checkProcess reads /proc/<pid>: the securityContext (root, no
// capabilities, no_new_privs, seccomp filter), the host network, the
// downward API environment, the mounts and the cluster key's mode.
func checkProcess(pid int, n *kube.Node) (string, error) {
	proc := fmt.Sprintf("/proc/%d", pid)
	status, err := procFields(filepath.Join(proc, "status"))
	if err != nil {
		return "", err
	}
	for k, want := range map[string]string{"CapEff": "0000000000000000", "CapPrm": "0000000000000000", "CapBnd": "0000000000000000", "NoNewPrivs": "1", "Seccomp": "2"} {
		if status[k] != want {
			return "", fmt.Errorf("%s %q, want %q", k, status[k], want)
		}
	}
	if uid := strings.Fields(status["Uid"]); len(uid) == 0 || uid[0] != "0" {
		return "", fmt.Errorf("uid %q, want 0", status["Uid"])
	}
	if err := sameNetns(proc, n); err != nil {
		return "", err
	}
	env, err := environ(proc)
	if err != nil {
		return "", err
	}
	for k, want := range map[string]string{"SHOAL_NODE_NAME": n.Name, "SHOAL_ADVERTISE_IP": n.Host.IP.String(), "GOMEMLIMIT": "536870912"} {
		if env[k] != want {
			return "", fmt.Errorf("env %s=%q, want %q", k, env[k], want)
		}
	}
	if err := checkMounts(proc); err != nil {
		return "", err
	}
	st, err := os.Stat(filepath.Join(proc, "root/etc/shoal/cluster-key/cluster.key"))
	if err != nil {
		return "", err
	}
	if st.Mode().Perm() != 0o400 {
		return "", fmt.Errorf("cluster.key mode %v, want 0400", st.Mode().Perm())
	}
	return fmt.Sprintf("uid 0, CapEff/CapPrm/CapBnd 0, NoNewPrivs 1, Seccomp 2 (filter), the node's netns, SHOAL_NODE_NAME=%s SHOAL_ADVERTISE_IP=%s GOMEMLIMIT=%s, root and host dirs read-only (store, /tmp writable), cluster.key %v",
		env["SHOAL_NODE_NAME"], env["SHOAL_ADVERTISE_IP"], env["GOMEMLIMIT"], st.Mode().Perm()), nil
}

// procFields reads a "Key:\tvalue" file such as /proc/<pid>/status.
func procFields(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out, nil
}

func environ(proc string) (map[string]string, error) {
	b, err := os.ReadFile(filepath.Join(proc, "environ"))
	if err != nil {
		return nil, err
	}
	env := map[string]string{}
	for _, kv := range strings.Split(string(b), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return env, nil
}

// sameNetns checks that the process is in the node's network namespace:
// hostNetwork.
func sameNetns(proc string, n *kube.Node) error {
	var a, b syscall.Stat_t
	if err := syscall.Stat(filepath.Join(proc, "ns/net"), &a); err != nil {
		return err
	}
	if err := syscall.Stat(filepath.Join("/run/netns", n.Host.Netns), &b); err != nil {
		return err
	}
	if a.Ino != b.Ino || a.Dev != b.Dev {
		return fmt.Errorf("network namespace %d, not the node's %d", a.Ino, b.Ino)
	}
	return nil
}

// checkMounts compares the process's mounts with wantMounts.
func checkMounts(proc string) error {
	f, err := os.Open(filepath.Join(proc, "mountinfo"))
	if err != nil {
		return err
	}
	defer f.Close()
	ro := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 {
			continue
		}
		// Mount point and per-mount options; a later mount over the same
		// point wins.
		ro[fields[4]] = strings.HasPrefix(fields[5], "ro")
	}
	if err := sc.Err(); err != nil {
		return err
	}
	for mp, want := range wantMounts {
		got, ok := ro[mp]
		if !ok {
			return fmt.Errorf("no mount at %s", mp)
		}
		if got != want {
			return fmt.Errorf("%s read-only %v, want %v", mp, got, want)
		}
	}
	return nil
}

// checkClusterKey checks that the key the daemon reads is the chart's
// Secret's, as the API server holds it.
func checkClusterKey(t *testing.T, cs *kubernetes.Clientset, p corev1.Pod, pid int) (string, error) {
	name := ""
	for _, v := range p.Spec.Volumes {
		if v.Name == "cluster-key" && v.Secret != nil {
			name = v.Secret.SecretName
		}
	}
	if name == "" {
		return "", fmt.Errorf("pod %s has no cluster-key Secret volume", p.Name)
	}
	s, err := cs.CoreV1().Secrets(p.Namespace).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	got, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/etc/shoal/cluster-key/cluster.key", pid))
	if err != nil {
		return "", err
	}
	want := s.Data["cluster.key"]
	if len(want) == 0 || !bytes.Equal(got, want) {
		return "", fmt.Errorf("the daemon reads a %d-byte cluster key, not Secret %s's %d bytes", len(got), name, len(want))
	}
	return fmt.Sprintf("cluster.key is Secret %s's (%d bytes)", name, len(got)), nil
}
