package kube

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shoal-dev/shoal/bench/lab"
)

// Node is one kubelet with its own containerd, in a network namespace of
// its own.
type Node struct {
	// Name is the Node object's name ("node1"…).
	Name string
	// Host is the node's namespace; its IP is the Node's InternalIP and
	// every hostNetwork pod's address.
	Host *lab.Host
	// Containerd is the node's CRI runtime.
	Containerd *lab.Containerd

	// Mountns is the node's mount namespace, where its containerd, its
	// kubelet and their pods run and find the node's own directories at
	// the standard paths (nodeBinds, lab.StandardRoot…).
	Mountns *lab.Mountns

	dir     string
	kubelet *lab.Process
}

// nodeBinds are the node's directories (under Dir) bound at the standard
// paths in its mount namespace, besides containerd's. A 1.34 kubelet
// writes some of them whatever its flags say (the device-plugin socket in
// /var/lib/kubelet/device-plugins, log links in /var/log/containers), and
// shoal's chart keeps its store in /var/lib/shoal by default: without
// these, the nodes would share them.
var nodeBinds = []struct{ name, path string }{
	{"kubelet", "/var/lib/kubelet"},
	{"pod-logs", "/var/log/pods"},
	{"container-logs", "/var/log/containers"},
	{"shoal", "/var/lib/shoal"},
}

// standardPaths are the mount points a node's namespace binds over; the
// cluster makes those missing on the host and removes them at Close.
func standardPaths() []string {
	ps := []string{lab.StandardStateDir, lab.StandardRoot, lab.StandardConfigDir}
	for _, b := range nodeBinds {
		ps = append(ps, b.path)
	}
	return ps
}

// Dir is the node's directory: kubelet.log, the directories of nodeBinds
// and containerd's temp dir.
func (n *Node) Dir() string { return n.dir }

// KubeletLog is the kubelet's log file.
func (n *Node) KubeletLog() string { return filepath.Join(n.dir, "kubelet.log") }

// RootDir is the kubelet's root dir as the caller sees it; the kubelet
// sees it as /var/lib/kubelet.
func (n *Node) RootDir() string { return filepath.Join(n.dir, "kubelet") }

// startNode starts node i's containerd, then runs bootstrap (when not
// nil) as a node's provisioning would before its kubelet starts, then
// starts the kubelet. A non-nil Node comes back whenever something was
// started, so Close can stop it.
func (c *Cluster) startNode(ctx context.Context, i int, h *lab.Host, bootstrap func(*Node) error) (*Node, error) {
	n, err := c.startRuntime(ctx, i, h)
	if err != nil {
		return n, err
	}
	if bootstrap != nil {
		if err := bootstrap(n); err != nil {
			return n, fmt.Errorf("%s: bootstrap: %w", n.Name, err)
		}
	}
	return n, c.startKubelet(n)
}

// startRuntime makes node i's mount namespace and starts its containerd,
// pulling from the lab registry.
func (c *Cluster) startRuntime(ctx context.Context, i int, h *lab.Host) (*Node, error) {
	n := &Node{Name: fmt.Sprintf("node%d", i), Host: h, dir: filepath.Join(c.dir, fmt.Sprintf("node%d", i))}
	if err := os.MkdirAll(n.dir, 0o755); err != nil {
		return nil, err
	}
	var err error
	if n.Mountns, err = lab.NewMountns(ctx, filepath.Join(n.dir, "mnt.ns"), c.cfg.Logger); err != nil {
		return nil, err
	}
	for _, b := range nodeBinds {
		src := filepath.Join(n.dir, b.name)
		if err := os.Mkdir(src, 0o755); err != nil {
			return n, err
		}
		if err := n.Mountns.Bind(ctx, src, b.path); err != nil {
			return n, err
		}
	}
	n.Containerd, err = lab.StartContainerd(ctx, lab.ContainerdConfig{
		Flavor:  lab.Flavor2,
		Binary:  c.cfg.ContainerdBinary,
		Netns:   h.Netns,
		Dir:     n.dir,
		Kubelet: &lab.KubeletCRI{SandboxImage: c.PodImage},
		Mountns: n.Mountns,
		Logger:  c.cfg.Logger,
	})
	if err != nil {
		return n, fmt.Errorf("%s: %w", n.Name, err)
	}
	if err := n.Containerd.WriteHosts(c.Registry.Addr(), lab.Hosts{Server: "http://" + c.Registry.Addr()}); err != nil {
		return n, err
	}
	// Pod addresses are private to the node: there is no route between
	// nodes' bridges, and the smoke test's pods use the host network.
	if err := n.Containerd.WriteCNIBridge("lab-"+n.Name, fmt.Sprintf("10.88.%d.0/24", i)); err != nil {
		return n, err
	}
	return n, nil
}

// startKubelet issues the node's certificates and starts its kubelet,
// which registers the Node.
func (c *Cluster) startKubelet(n *Node) error {
	h := n.Host
	ip := net.IP(h.IP.AsSlice())
	client, err := c.pki.issue(certSpec{name: n.Name + "-client", cn: "system:node:" + n.Name, orgs: []string{"system:nodes"}, client: true})
	if err != nil {
		return err
	}
	serving, err := c.pki.issue(certSpec{name: n.Name + "-serving", cn: n.Name, ips: []net.IP{ip}, dns: []string{n.Name}, server: true})
	if err != nil {
		return err
	}
	kc := filepath.Join(n.dir, "kubelet.kubeconfig")
	if err := kubeconfig(kc, c.server, c.pki.CertPath(), client); err != nil {
		return err
	}
	cfgPath := filepath.Join(n.dir, "kubelet.yaml")
	if err := os.WriteFile(cfgPath, []byte(n.kubeletConfig(c.pki.CertPath(), serving)), 0o644); err != nil {
		return err
	}
	// The kubelet shares the node's mount namespace with its containerd:
	// the volumes it mounts must be visible to runc.
	n.kubelet, err = lab.StartProcess(lab.ProcessConfig{
		Name: n.Name + "-kubelet",
		Argv: []string{
			filepath.Join(c.cfg.Bin, "kubelet"),
			"--config=" + cfgPath,
			"--kubeconfig=" + kc,
			"--root-dir=/var/lib/kubelet",
			"--cert-dir=/var/lib/kubelet/pki",
			"--hostname-override=" + n.Name,
			"--node-ip=" + h.IP.String(),
			"--v=1",
		},
		Netns:   h.Netns,
		Mountns: n.Mountns.Path(),
		Dir:     n.dir,
		Log:     n.KubeletLog(),
		Logger:  c.log,
	})
	if err != nil {
		return err
	}
	c.log.Info("node started", "node", n.Name, "ip", h.IP, "netns", h.Netns)
	return nil
}

// kubeletConfig is the node's KubeletConfiguration. Facts of this machine
// it answers to: cgroups are v1 (failCgroupV1: false), there is no swap,
// and several kubelets share one cgroup hierarchy, so none makes QoS
// cgroups of its own (cgroupsPerQOS: false, which also means nothing to
// enforce node allocatable on). Eviction thresholds are low because the
// disk and memory are shared with other runs.
func (n *Node) kubeletConfig(caPath string, serving keyPair) string {
	endpoint := "unix://" + n.Containerd.Socket()
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: %[1]s
imageServiceEndpoint: %[1]s
failCgroupV1: false
failSwapOn: false
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: ["none"]
address: %[2]s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: %[3]s
tlsPrivateKeyFile: %[4]s
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
  x509:
    clientCAFile: %[5]s
authorization:
  mode: AlwaysAllow
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
maxPods: 32
serializeImagePulls: false
evictionHard:
  memory.available: 50Mi
  nodefs.available: 1%%
  nodefs.inodesFree: 1%%
  imagefs.available: 1%%
`, endpoint, n.Host.IP, serving.Cert, serving.Key, caPath)
}

// waitNodesReady waits until every node has registered and reports Ready.
func (c *Cluster) waitNodesReady(ctx context.Context) error {
	cs, err := c.Client()
	if err != nil {
		return err
	}
	return c.wait(ctx, "nodes ready", func(ctx context.Context) error {
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		ready := map[string]string{}
		for _, n := range nodes.Items {
			ready[n.Name] = "no Ready condition"
			for _, cond := range n.Status.Conditions {
				if cond.Type == corev1.NodeReady {
					ready[n.Name] = fmt.Sprintf("%s: %s", cond.Status, cond.Message)
					if cond.Status == corev1.ConditionTrue {
						ready[n.Name] = ""
					}
				}
			}
		}
		var not []string
		for _, n := range c.Nodes {
			switch why, ok := ready[n.Name]; {
			case !ok:
				not = append(not, n.Name+" not registered")
			case why != "":
				not = append(not, n.Name+" "+why)
			}
		}
		if len(not) > 0 {
			return errors.New(strings.Join(not, "; "))
		}
		return nil
	})
}

func (n *Node) stopKubelet() {
	if n.kubelet != nil {
		n.kubelet.Stop(5 * time.Second)
	}
}

// close removes the node's pods through CRI (which stops their containers
// and tears down their network namespaces), stops containerd, unbinds the
// mount namespace (whose mounts, the kubelet's volumes and the containers'
// root filesystems, end with its last process: Network.Close kills any
// left) and removes the node's directory.
func (n *Node) close() error {
	n.stopKubelet()
	var errs []error
	if n.Containerd != nil {
		errs = append(errs, removePods(n.Containerd))
		errs = append(errs, n.Containerd.Close())
	}
	if n.Mountns != nil {
		errs = append(errs, n.Mountns.Close())
	}
	errs = append(errs, lab.UnmountUnder(n.dir), os.RemoveAll(n.dir))
	return errors.Join(errs...)
}

func removePods(c *lab.Containerd) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rs := c.RuntimeService()
	resp, err := rs.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return fmt.Errorf("list pod sandboxes: %w", err)
	}
	var errs []error
	for _, s := range resp.Items {
		if _, err := rs.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: s.Id}); err != nil {
			errs = append(errs, fmt.Errorf("stop pod sandbox %s: %w", s.Metadata.GetName(), err))
			continue
		}
		if _, err := rs.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: s.Id}); err != nil {
			errs = append(errs, fmt.Errorf("remove pod sandbox %s: %w", s.Metadata.GetName(), err))
		}
	}
	return errors.Join(errs...)
}

// kernelTunables are the sysctls a kubelet sets at start when
// protectKernelDefaults is false (as here: true would make it refuse to
// start on this machine's defaults). They are not per network namespace,
// so the cluster saves them before the first kubelet and puts them back
// when it closes.
var kernelTunables = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

func saveSysctls() (map[string]string, error) {
	saved := map[string]string{}
	for _, k := range kernelTunables {
		b, err := os.ReadFile("/proc/sys/" + k)
		if err != nil {
			return nil, err
		}
		saved[k] = strings.TrimSpace(string(b))
	}
	return saved, nil
}

func restoreSysctls(saved map[string]string) error {
	var errs []error
	for k, v := range saved {
		b, err := os.ReadFile("/proc/sys/" + k)
		if err == nil && strings.TrimSpace(string(b)) == v {
			continue
		}
		errs = append(errs, os.WriteFile("/proc/sys/"+k, []byte(v+"\n"), 0o644))
	}
	return errors.Join(errs...)
}
