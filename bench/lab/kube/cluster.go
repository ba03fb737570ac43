package kube

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/shoal-dev/shoal/bench/lab"
)

// Version is the Kubernetes release scripts/k8s-bins.sh builds and the
// cluster runs.
const Version = "v1.34.2"

// Binaries are the executables Config.Bin must hold.
var Binaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet"}

// Fixed addresses inside the namespaces. Each namespace has its own
// loopback and ports, so every node uses the same ones.
const (
	etcdClientURL = "http://127.0.0.1:2379"
	etcdPeerURL   = "http://127.0.0.1:2380"
	apiserverPort = 6443
	registryPort  = 5000
	serviceCIDR   = "10.96.0.0/16"
	serviceIP     = "10.96.0.1" // the first address of serviceCIDR: the kubernetes Service
)

// Config says what cluster to run. Only Bin is required.
type Config struct {
	// Bin is the directory holding Binaries, as scripts/k8s-bins.sh prints.
	Bin string
	// Nodes is how many kubelets run, each in a network namespace of its
	// own with its own containerd 2.x; 0 means 2.
	Nodes int
	// Spare is how many more node namespaces are made for nodes that
	// Join later.
	Spare int
	// Name names the network; its namespaces are <Name>-h0 (control plane
	// and registry), <Name>-h1… (nodes, named the same minus the prefix:
	// "node1"…). "" is "kube".
	Name string
	// Subnet is the nodes' /24 (lab.NetworkConfig.Subnet); "" is
	// 10.214.0.0/24.
	Subnet string
	// Dir is where the cluster's temp dir is made; "" is os.TempDir().
	// containerd's unix sockets live under it, so keep it short.
	Dir string
	// ContainerdBinary is the 2.x daemon; "" is containerd in lab.GoBin(),
	// whose runc shim must sit beside it (make deps).
	ContainerdBinary string
	// ReadyTimeout bounds each wait while starting (etcd, apiserver, every
	// Node Ready); 0 means 3 minutes: the machine may be shared.
	ReadyTimeout time.Duration
	// Logger receives lifecycle events; nil discards them.
	Logger *slog.Logger
}

// Cluster is a running control plane with its nodes. Its fields are set by
// Start and must not be changed.
type Cluster struct {
	// Network holds the control plane's namespace (Hosts[0]) and one per
	// node.
	Network *lab.Network
	// Registry runs in the control plane's namespace; every node's
	// containerd pulls from it over plain HTTP.
	Registry *lab.Registry
	// Nodes are the kubelets, in order.
	Nodes []*Node
	// PodImage is the labpod image in Registry: a static binary that waits
	// for SIGTERM and, given `-listen ADDR`, answers GET /ready. It is also
	// every node's pod sandbox image.
	PodImage string

	cfg       Config
	log       *slog.Logger
	dir       string
	pki       *ca
	admin     keyPair
	transport *http.Transport // the admin clients'
	server    string          // https://ip:port of the apiserver
	control   []*component
	sysctls   map[string]string // saved before the first kubelet changes them
	// made lists the mount points (standardPaths) that did not exist
	// before the nodes started, for Close to remove.
	made []string

	closeOnce sync.Once
	closeErr  error
}

// component is one control-plane process.
type component struct {
	name string
	log  string
	proc *lab.Process
}

// Start runs the cluster and returns when every Node is Ready. On failure
// it removes whatever it made; the error carries the failing component's
// log tail.
func Start(ctx context.Context, cfg Config) (_ *Cluster, err error) {
	if cfg.Bin == "" {
		return nil, errors.New("kube: Config.Bin is required")
	}
	for _, b := range Binaries {
		if _, err := os.Stat(filepath.Join(cfg.Bin, b)); err != nil {
			return nil, fmt.Errorf("kube: %w (scripts/k8s-bins.sh builds it)", err)
		}
	}
	if cfg.Nodes == 0 {
		cfg.Nodes = 2
	}
	if cfg.Name == "" {
		cfg.Name = "kube"
	}
	if cfg.Subnet == "" {
		cfg.Subnet = "10.214.0.0/24"
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 3 * time.Minute
	}
	dir, err := os.MkdirTemp(cfg.Dir, "lab-kube-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{cfg: cfg, log: logger(cfg.Logger).With("component", "kube"), dir: dir}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Close())
		}
	}()
	start := time.Now()
	if c.Network, err = lab.NewNetwork(ctx, cfg.Name, cfg.Nodes+cfg.Spare+1, lab.NetworkConfig{Subnet: cfg.Subnet, Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	if err := c.writeLeftovers(); err != nil {
		return nil, err
	}
	cp := c.controlHost()
	c.server = "https://" + cp.Addr(apiserverPort)
	if c.Registry, err = lab.StartRegistry(ctx, lab.RegistryConfig{Netns: cp.Netns, Addr: cp.Addr(registryPort), Dir: dir, Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	if err := c.pushPodImage(ctx); err != nil {
		return nil, err
	}
	if err := c.startControlPlane(ctx); err != nil {
		return nil, err
	}
	c.log.Info("control plane ready", "apiserver", c.server, "took", time.Since(start).Round(time.Millisecond))
	if c.sysctls, err = saveSysctls(); err != nil {
		return nil, err
	}
	for _, d := range standardPaths() {
		if _, err := os.Stat(d); errors.Is(err, os.ErrNotExist) {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return nil, err
			}
			c.made = append(c.made, d)
		}
	}
	if err := c.writeLeftovers(); err != nil {
		return nil, err
	}
	for range cfg.Nodes {
		if _, err := c.addNode(ctx, nil); err != nil {
			return nil, err
		}
	}
	if err := c.waitNodesReady(ctx); err != nil {
		return nil, err
	}
	c.log.Info("cluster ready", "nodes", len(c.Nodes), "took", time.Since(start).Round(time.Millisecond))
	return c, nil
}

func (c *Cluster) controlHost() *lab.Host { return c.Network.Hosts[0] }

// Subnet is the nodes' network (Config.Subnet), as CIDR.
func (c *Cluster) Subnet() string { return c.cfg.Subnet }

// Join starts a node on the next spare namespace (Config.Spare) as a node
// added to a running cluster: its containerd starts, bootstrap (when not
// nil) prepares it as the node's provisioning would, say by writing
// hosts.toml, and then its kubelet registers. Join returns when the new
// Node is Ready; the node is in Nodes from then on.
func (c *Cluster) Join(ctx context.Context, bootstrap func(*Node) error) (*Node, error) {
	if len(c.Nodes)+1 >= len(c.Network.Hosts) {
		return nil, fmt.Errorf("kube: no spare node namespace left (Config.Spare %d)", c.cfg.Spare)
	}
	n, err := c.addNode(ctx, bootstrap)
	if err != nil {
		return n, err
	}
	if err := c.waitNodesReady(ctx); err != nil {
		return n, err
	}
	c.log.Info("node joined", "node", n.Name)
	return n, nil
}

// addNode starts the next node and appends it to Nodes whenever anything
// of it runs, so that Close stops it.
func (c *Cluster) addNode(ctx context.Context, bootstrap func(*Node) error) (*Node, error) {
	i := len(c.Nodes) + 1
	n, err := c.startNode(ctx, i, c.Network.Hosts[i], bootstrap)
	if n != nil {
		c.Nodes = append(c.Nodes, n)
	}
	return n, err
}

// Dir is the cluster's temp dir: certificates, kubeconfigs, logs
// (<component>.log, node<i>/kubelet.log, node<i>/lab-ctrd-*/containerd.log).
func (c *Cluster) Dir() string { return c.dir }

// Server is the apiserver's URL, reachable from the node namespaces and
// through RESTConfig's dialer.
func (c *Cluster) Server() string { return c.server }

// AdminKubeconfig is a kubeconfig with a system:masters client
// certificate. Its server address is inside the lab network: a client in
// the caller's namespace must dial through Network.Hosts[0] (RESTConfig
// does).
func (c *Cluster) AdminKubeconfig() string { return filepath.Join(c.dir, "admin.kubeconfig") }

// RESTConfig is an admin client config whose connections start in the
// control plane's namespace. Every config shares one transport, which
// Close shuts; its certificates are loaded once, so client-go starts no
// file-watching goroutines.
func (c *Cluster) RESTConfig() *rest.Config {
	return &rest.Config{Host: c.server, Transport: c.transport, QPS: 50, Burst: 100, Timeout: 30 * time.Second}
}

// newTransport is the admin client's transport: TLS with the admin
// certificate, dialing from the control plane's namespace.
func (c *Cluster) newTransport() (*http.Transport, error) {
	cert, err := tls.LoadX509KeyPair(c.admin.Cert, c.admin.Key)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(c.pki.cert)
	return &http.Transport{
		DialContext:         lab.DialerIn(c.controlHost().Netns),
		TLSClientConfig:     &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout: 10 * time.Second,
		IdleConnTimeout:     30 * time.Second,
		ForceAttemptHTTP2:   true,
	}, nil
}

// Client is an admin clientset (see RESTConfig).
func (c *Cluster) Client() (*kubernetes.Clientset, error) {
	return kubernetes.NewForConfig(c.RESTConfig())
}

// pushPodImage builds labpod and pushes it as <registry>/lab/labpod:v1.
func (c *Cluster) pushPodImage(ctx context.Context) error {
	bin, err := buildLabpod(ctx, c.dir)
	if err != nil {
		return err
	}
	tr := lab.TransportIn(c.controlHost().Netns)
	defer tr.CloseIdleConnections()
	ref := c.Registry.Addr() + "/lab/labpod:v1"
	d, err := pushLabpod(ctx, bin, ref, tr)
	if err != nil {
		return err
	}
	c.PodImage = ref
	c.log.Info("pushed pod image", "ref", ref, "digest", d)
	return nil
}

// startControlPlane makes the PKI and starts etcd, the apiserver, the
// controller-manager and the scheduler, each waited for in turn.
func (c *Cluster) startControlPlane(ctx context.Context) error {
	pki := filepath.Join(c.dir, "pki")
	if err := os.Mkdir(pki, 0o700); err != nil {
		return err
	}
	var err error
	if c.pki, err = newCA(pki); err != nil {
		return err
	}
	cp := c.controlHost()
	serving, err := c.pki.issue(certSpec{
		name: "apiserver", cn: "kube-apiserver", server: true,
		ips: []net.IP{net.IP(cp.IP.AsSlice()), net.ParseIP("127.0.0.1"), net.ParseIP(serviceIP)},
		dns: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
	})
	if err != nil {
		return err
	}
	kubeletClient, err := c.pki.issue(certSpec{name: "apiserver-kubelet-client", cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}, client: true})
	if err != nil {
		return err
	}
	// The aggregation layer's client; with the requestheader flags it also
	// fills the extension-apiserver-authentication ConfigMap, whose
	// missing CA the controller-manager and scheduler log every few
	// seconds otherwise.
	frontProxy, err := c.pki.issue(certSpec{name: "front-proxy-client", cn: "front-proxy-client", client: true})
	if err != nil {
		return err
	}
	if c.admin, err = c.pki.issue(certSpec{name: "admin", cn: "lab-admin", orgs: []string{"system:masters"}, client: true}); err != nil {
		return err
	}
	if err := kubeconfig(c.AdminKubeconfig(), c.server, c.pki.CertPath(), c.admin); err != nil {
		return err
	}
	if c.transport, err = c.newTransport(); err != nil {
		return err
	}
	saKey, saPub, err := newServiceAccountKey(pki)
	if err != nil {
		return err
	}
	kcs := map[string]string{}
	for _, u := range []struct{ name, cn string }{
		{"kube-controller-manager", "system:kube-controller-manager"},
		{"kube-scheduler", "system:kube-scheduler"},
	} {
		kp, err := c.pki.issue(certSpec{name: u.name, cn: u.cn, client: true})
		if err != nil {
			return err
		}
		kcs[u.name] = filepath.Join(c.dir, u.name+".kubeconfig")
		if err := kubeconfig(kcs[u.name], c.server, c.pki.CertPath(), kp); err != nil {
			return err
		}
	}

	// etcd: one member on the control namespace's loopback. No fsync: the
	// cluster lives for one test, and the disk is shared.
	if err := c.startComponent("etcd",
		"--name=lab", "--data-dir="+filepath.Join(c.dir, "etcd"),
		"--listen-client-urls="+etcdClientURL, "--advertise-client-urls="+etcdClientURL,
		"--listen-peer-urls="+etcdPeerURL, "--initial-advertise-peer-urls="+etcdPeerURL,
		"--initial-cluster=lab="+etcdPeerURL, "--unsafe-no-fsync", "--log-level=warn",
	); err != nil {
		return err
	}
	if err := c.waitHTTP(ctx, "etcd", etcdClientURL+"/health", `"health":"true"`); err != nil {
		return err
	}
	if err := c.startComponent("kube-apiserver",
		"--etcd-servers="+etcdClientURL,
		"--bind-address="+cp.IP.String(), "--advertise-address="+cp.IP.String(), fmt.Sprintf("--secure-port=%d", apiserverPort),
		"--cert-dir="+filepath.Join(c.dir, "apiserver"),
		"--tls-cert-file="+serving.Cert, "--tls-private-key-file="+serving.Key,
		"--client-ca-file="+c.pki.CertPath(),
		"--kubelet-client-certificate="+kubeletClient.Cert, "--kubelet-client-key="+kubeletClient.Key,
		"--kubelet-certificate-authority="+c.pki.CertPath(), "--kubelet-preferred-address-types=InternalIP",
		"--proxy-client-cert-file="+frontProxy.Cert, "--proxy-client-key-file="+frontProxy.Key,
		"--requestheader-client-ca-file="+c.pki.CertPath(), "--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+saPub, "--service-account-signing-key-file="+saKey,
		"--service-cluster-ip-range="+serviceCIDR,
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true", "--profiling=false", "--v=1",
	); err != nil {
		return err
	}
	if err := c.waitAPIServer(ctx); err != nil {
		return err
	}
	cm := kcs["kube-controller-manager"]
	if err := c.startComponent("kube-controller-manager",
		"--kubeconfig="+cm, "--authentication-kubeconfig="+cm, "--authorization-kubeconfig="+cm,
		"--bind-address=127.0.0.1", "--leader-elect=false",
		"--service-account-private-key-file="+saKey, "--root-ca-file="+c.pki.CertPath(),
		"--use-service-account-credentials=true", "--service-cluster-ip-range="+serviceCIDR,
		"--profiling=false", "--v=1",
	); err != nil {
		return err
	}
	sched := kcs["kube-scheduler"]
	return c.startComponent("kube-scheduler",
		"--kubeconfig="+sched, "--authentication-kubeconfig="+sched, "--authorization-kubeconfig="+sched,
		"--bind-address=127.0.0.1", "--leader-elect=false", "--profiling=false", "--v=1",
	)
}

// startComponent runs a control-plane binary in the control namespace.
func (c *Cluster) startComponent(name string, args ...string) error {
	log := filepath.Join(c.dir, name+".log")
	p, err := lab.StartProcess(lab.ProcessConfig{
		Name:   name,
		Argv:   append([]string{filepath.Join(c.cfg.Bin, name)}, args...),
		Netns:  c.controlHost().Netns,
		Dir:    c.dir,
		Log:    log,
		Logger: c.log,
	})
	if err != nil {
		return err
	}
	c.control = append(c.control, &component{name: name, log: log, proc: p})
	return nil
}

// alive fails, with its log's tail, if a control-plane process or a
// kubelet has exited.
func (c *Cluster) alive() error {
	check := func(name string, p *lab.Process, log string) error {
		if p == nil {
			return nil
		}
		select {
		case <-p.Exited():
			return fmt.Errorf("%w\n%s log:\n%s", p.Err(), name, lab.Tail(log, 20))
		default:
			return nil
		}
	}
	for _, comp := range c.control {
		if err := check(comp.name, comp.proc, comp.log); err != nil {
			return err
		}
	}
	for _, n := range c.Nodes {
		if err := check(n.Name+" kubelet", n.kubelet, n.KubeletLog()); err != nil {
			return err
		}
	}
	return nil
}

// wait polls cond until it passes, a process dies or ReadyTimeout passes.
func (c *Cluster) wait(ctx context.Context, what string, cond func(context.Context) error) error {
	start := time.Now()
	var dead error
	err := lab.WaitFor(ctx, what, c.cfg.ReadyTimeout, func() error {
		if dead = c.alive(); dead != nil {
			return nil
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return cond(cctx)
	})
	if dead != nil {
		return fmt.Errorf("%s: %w", what, dead)
	}
	if err != nil {
		return err
	}
	c.log.Info("ready", "what", what, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// waitHTTP waits for url, fetched from the control namespace, to answer
// 200 with a body containing want.
func (c *Cluster) waitHTTP(ctx context.Context, what, url, want string) error {
	tr := lab.TransportIn(c.controlHost().Netns)
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	return c.wait(ctx, what, func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), want) {
			return fmt.Errorf("%s: %s: %s", url, resp.Status, b)
		}
		return nil
	})
}

// waitAPIServer waits for /readyz, which passes once etcd is reachable
// and the bootstrap RBAC roles and priority classes are in.
func (c *Cluster) waitAPIServer(ctx context.Context) error {
	cs, err := c.Client()
	if err != nil {
		return err
	}
	return c.wait(ctx, "kube-apiserver", func(ctx context.Context) error {
		b, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			return fmt.Errorf("%w: %s", err, b)
		}
		return nil
	})
}

// Close stops the kubelets and their pods, containerd, the control plane,
// the registry and the network, restores the kernel settings the kubelets
// changed, unmounts what was left mounted and removes the temp dir. It is
// safe to call more than once.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() {
		var errs []error
		for _, n := range c.Nodes {
			n.stopKubelet()
		}
		for _, n := range c.Nodes {
			errs = append(errs, n.close())
		}
		if c.transport != nil {
			c.transport.CloseIdleConnections()
		}
		for i := len(c.control) - 1; i >= 0; i-- {
			c.control[i].proc.Stop(10 * time.Second)
		}
		if c.Registry != nil {
			errs = append(errs, c.Registry.Close())
		}
		if c.Network != nil {
			errs = append(errs, c.Network.Close())
		}
		errs = append(errs, restoreSysctls(c.sysctls), lab.UnmountUnder(c.dir), os.RemoveAll(c.dir))
		errs = append(errs, c.removeMountPoints())
		c.closeErr = errors.Join(errs...)
		c.log.Info("cluster closed", "err", c.closeErr)
	})
	return c.closeErr
}

// removeMountPoints removes the empty mount points the cluster made on
// the host, deepest first. One that is not empty is left: something else
// wrote there since.
func (c *Cluster) removeMountPoints() error {
	var errs []error
	for i := len(c.made) - 1; i >= 0; i-- {
		if err := os.Remove(c.made[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// logger returns l, or a logger that discards everything.
func logger(l *slog.Logger) *slog.Logger {
	if l != nil {
		return l
	}
	return slog.New(slog.DiscardHandler)
}
