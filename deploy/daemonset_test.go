package deploy_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/shoal-dev/shoal/bench/lab"
)

// TestRenderedDaemonSetServesPeers runs what the chart renders, not a
// hand-written command line: the DaemonSet's init container and daemon
// container, with their command, args and environment (the downward API
// filled in per node), volumes (hostPath volumes mapped to each node's
// containerd, the Secret's generated cluster key written where it is
// mounted) and securityContext (read-only root, no capabilities), on three
// nodes in network namespaces, each with its own containerd. They form an
// encrypted mesh, and an image pulled through CRI on one node is served to
// the others by their peers, not by the registry. Then the uninstall hook's
// container restores every node's hosts.toml.
func TestRenderedDaemonSetServesPeers(t *testing.T) {
	requireRealProcesses(t)
	ctx := t.Context()
	log := testLogger(t)
	bin := buildShoal(t)

	network, err := lab.NewNetwork(ctx, "dpl-"+strconv.Itoa(os.Getpid()%100000), 4, lab.NetworkConfig{Subnet: "10.213.11.0/24", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	cleanup(t, network.Close)
	regHost := network.Hosts[0]
	reg, err := lab.StartRegistry(ctx, lab.RegistryConfig{Netns: regHost.Netns, Addr: regHost.Addr(5000), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	cleanup(t, reg.Close)
	im, err := lab.PushImage(ctx, reg.Addr(), "deploy/app", "v1", 3, 4<<20, lab.WithTransport(lab.TransportIn(regHost.Netns)))
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Addr() + "/" + im.Repo + ":" + im.Tag

	// The chart's defaults, but for the lab registry, which speaks plain HTTP.
	r := sortRelease(t, render(t, map[string]any{"insecureRegistries": []any{reg.Addr()}}))
	spec := &r.daemonSet.Spec.Template.Spec
	daemon := container(t, spec, "shoal")
	secrets := map[string]*corev1.Secret{r.secret.Name: r.secret}
	nodes := startNodes(t, network.Hosts[1:], []lab.Flavor{lab.Flavor2, lab.Flavor16, lab.Flavor2}, log)

	mirror := parseCLI(t, container(t, spec, "configure-containerd")).one(t, "mirror")

	// Run each node's pod: init containers to completion, then the daemon.
	pods := make([]*pod, len(nodes))
	procs := make([]*proc, len(nodes))
	for i, n := range nodes {
		p := &pod{name: r.daemonSet.Name + "-" + n.name, namespace: r.daemonSet.Namespace, spec: spec, node: n, secrets: secrets, binary: bin, dir: filepath.Join(n.dir, "pod")}
		pods[i] = p
		for _, ic := range spec.InitContainers {
			pr := p.start(t, ic.Name, p.sandbox(t, &ic, nil))
			if err := pr.wait(time.Minute); err != nil {
				t.Fatalf("%s: init container %s: %v\n%s", n.name, ic.Name, err, pr.tail(20))
			}
			t.Logf("%s: init container %s:\n%s", n.name, ic.Name, pr.tail(10))
		}
		hostsToml := filepath.Join(n.ctrd.HostsDir(), "_default", "hosts.toml")
		if b, err := os.ReadFile(hostsToml); err != nil || !strings.Contains(string(b), mirror) {
			t.Fatalf("%s: the init container did not point containerd at shoal: %v\n%s", n.name, err, b)
		}
		s := p.sandbox(t, daemon, nil)
		s.Argv = seedJoin(t, s.Argv, r.service, nodes[0].host.IP.String())
		pr := p.start(t, daemon.Name, s)
		procs[i] = pr
		t.Cleanup(func() {
			pr.stop()
			if t.Failed() {
				t.Logf("%s: shoal log:\n%s", n.name, pr.tail(40))
			}
		})
	}

	// The kubelet's view: the rendered probes pass on every node.
	for i, p := range pods {
		for _, probe := range []*corev1.Probe{daemon.ReadinessProbe, daemon.LivenessProbe} {
			waitFor(t, p.node.name+" passes its probe "+probe.HTTPGet.Path, 30*time.Second, func() error {
				if !procs[i].running() {
					t.Fatalf("%s: shoal exited: %v\n%s", p.node.name, procs[i].err, procs[i].tail(20))
				}
				return p.probe(ctx, daemon, probe)
			})
		}
	}
	metricsPort := strconv.Itoa(int(namedPort(t, daemon, "metrics", corev1.ProtocolTCP)))
	base := func(p *pod) string { return "http://" + net.JoinHostPort(p.node.host.IP.String(), metricsPort) }
	// /status listens on the node's loopback, where `shoal status` reads it.
	statusAddr := ""
	for _, a := range daemon.Args {
		if v, ok := strings.CutPrefix(a, "--status-addr="); ok {
			statusAddr = v
		}
	}
	if !strings.HasPrefix(statusAddr, "127.0.0.1:") {
		t.Fatalf("the daemon's --status-addr is %q, want the node's loopback", statusAddr)
	}
	status := func(p *pod) daemonStatus {
		t.Helper()
		b, err := p.get(ctx, "http://"+statusAddr+"/status")
		if err != nil {
			t.Fatal(err)
		}
		var st daemonStatus
		if err := json.Unmarshal(b, &st); err != nil || st.Mesh == nil {
			t.Fatalf("%s status %s: %v", p.node.name, b, err)
		}
		return st
	}
	waitFor(t, "the mesh forms", 60*time.Second, func() error {
		for _, p := range pods {
			st := status(p)
			switch {
			case st.Mesh.LiveMembers != len(pods):
				return fmt.Errorf("%s sees %d live members (%s)", p.node.name, st.Mesh.LiveMembers, st.Mesh.LastJoinError)
			case !st.Mesh.Encrypted:
				return fmt.Errorf("%s: the mesh is not encrypted with the Secret's key", p.node.name)
			case !strings.HasPrefix(st.Containerd, "connected"):
				return fmt.Errorf("%s: containerd %s", p.node.name, st.Containerd)
			case st.Mesh.NodeName != p.node.name:
				return fmt.Errorf("%s calls itself %q, not the downward API's spec.nodeName", p.node.name, st.Mesh.NodeName)
			}
		}
		return nil
	})
	t.Logf("mesh formed: every node sees %d live members, encrypted, containerd connected", len(pods))

	metric := func(p *pod, name string, match map[string]string) float64 {
		t.Helper()
		m, err := p.metrics(ctx, base(p))
		if err != nil {
			t.Fatal(err)
		}
		return m.Sum(name, match)
	}
	served := func() []float64 {
		var s []float64
		for _, p := range pods {
			s = append(s, metric(p, "shoal_p2p_served_bytes_total", nil))
		}
		return s
	}
	blobBytes := float64(im.Size - im.ManifestSize) // config and layers

	upstream := func() float64 {
		var sum float64
		for _, p := range pods {
			sum += metric(p, "shoal_fetched_bytes_total", map[string]string{"source": "upstream"})
		}
		return sum
	}
	fromMesh := func(p *pod) float64 {
		return metric(p, "shoal_served_bytes_total", map[string]string{"source": "peer"}) +
			metric(p, "shoal_served_bytes_total", map[string]string{"source": "store"})
	}

	// Node 1 pulls alone: each blob is fetched from the registry once. The
	// chart's hosts.toml is _default, which names no registry, and the
	// other nodes' containerd has not pulled from this one yet, so they do
	// not fetch for node 1 (see docs/security.md): node 1 fetches it all.
	if err := nodes[0].ctrd.CRIPull(ctx, ref); err != nil {
		t.Fatalf("%s: %v", nodes[0].name, err)
	}
	if got := upstream(); got < blobBytes || got > blobBytes*1.01 {
		t.Errorf("the shoals fetched %v bytes from the registry for %s's pull, want the image's %v once", got, nodes[0].name, blobBytes)
	}
	upstreamAfterFirst := upstream()
	waitFor(t, nodes[0].name+" provides the image", 30*time.Second, func() error {
		if got := status(pods[0]).Mesh.BlobsProvided; got < len(im.Blobs()) {
			return fmt.Errorf("%d blobs provided, want %d", got, len(im.Blobs()))
		}
		return nil
	})

	// Nodes 2 and 3 pull in turn: the mesh serves every blob, from peers
	// or from what the node fetched for the cluster before.
	for i := 1; i < len(pods); i++ {
		before := served()
		meshBefore := fromMesh(pods[i])
		if err := nodes[i].ctrd.CRIPull(ctx, ref); err != nil {
			t.Fatalf("%s: %v", nodes[i].name, err)
		}
		if ok, err := nodes[i].ctrd.HasImage(ctx, ref); err != nil || !ok {
			t.Fatalf("%s does not hold the image: %v", nodes[i].name, err)
		}
		if got := fromMesh(pods[i]) - meshBefore; got < blobBytes {
			t.Errorf("%s's shoal gave containerd %v bytes from peers and its store, want the image's %v", nodes[i].name, got, blobBytes)
		}
		if got := upstream(); got != upstreamAfterFirst {
			t.Errorf("%s's pull made the shoals fetch %v more bytes from the registry", nodes[i].name, got-upstreamAfterFirst)
		}
		after := served()
		var by []string
		var total float64
		for j := range pods {
			if d := after[j] - before[j]; d > 0 {
				by = append(by, fmt.Sprintf("%s %.0f bytes", nodes[j].name, d))
				total += d
			}
		}
		t.Logf("%s's pull (%.0f bytes of config and layers) was served by: %s", nodes[i].name, blobBytes, strings.Join(by, ", "))
		waitFor(t, nodes[i].name+" provides the image", 30*time.Second, func() error {
			if got := status(pods[i]).Mesh.BlobsProvided; got < len(im.Blobs()) {
				return fmt.Errorf("%d blobs provided, want %d", got, len(im.Blobs()))
			}
			return nil
		})
	}
	gets, err := reg.BlobGets()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range im.Blobs() {
		if gets[d] != 1 {
			t.Errorf("the registry served %s %d times for %d pulls, want once", d, gets[d], len(pods))
		}
	}

	// The Grafana dashboard reads what the daemons export.
	var scraped []lab.Metrics
	for _, p := range pods {
		m, err := p.metrics(ctx, base(p))
		if err != nil {
			t.Fatal(err)
		}
		scraped = append(scraped, m)
	}
	checkDashboardMetrics(t, scraped)

	// Uninstall: the pre-delete hook's container, on every node.
	hook := &r.unconfigure.Spec.Template.Spec
	for _, n := range nodes {
		p := &pod{name: r.unconfigure.Name + "-" + n.name, namespace: r.unconfigure.Namespace, spec: hook, node: n, secrets: secrets, binary: bin, dir: filepath.Join(n.dir, "unconfigure")}
		for _, ic := range hook.InitContainers {
			pr := p.start(t, ic.Name, p.sandbox(t, &ic, nil))
			if err := pr.wait(time.Minute); err != nil {
				t.Fatalf("%s: %s: %v\n%s", n.name, ic.Name, err, pr.tail(20))
			}
		}
		if _, err := os.Stat(filepath.Join(n.ctrd.HostsDir(), "_default", "hosts.toml")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: hosts.toml still there after the uninstall hook: %v", n.name, err)
		}
	}
}

// daemonStatus is the part of a daemon's /status this test reads.
type daemonStatus struct {
	Containerd string `json:"containerd"`
	Mesh       *struct {
		NodeName      string
		Encrypted     bool
		LastJoinError string
		LiveMembers   int
		BlobsProvided int
		BytesServed   int64
	} `json:"mesh"`
}

// seedJoin swaps the headless Service's DNS name in --join for the seed
// node's IP. In a cluster the name resolves to the IPs of every node that
// runs shoal; no DNS serves it inside the lab's namespaces, so the seed's
// IP, one of those addresses, stands in for it. Nothing else is changed.
func seedJoin(t *testing.T, argv []string, svc *corev1.Service, seedIP string) []string {
	t.Helper()
	name := svc.Name + "." + svc.Namespace + ".svc.cluster.local"
	out := make([]string, len(argv))
	copy(out, argv)
	n := 0
	for i, a := range out {
		v, ok := strings.CutPrefix(a, "--join=")
		if !ok {
			continue
		}
		host, port, err := net.SplitHostPort(v)
		if err != nil || host != name {
			t.Fatalf("--join=%s, want the headless Service %s", v, name)
		}
		out[i] = "--join=" + net.JoinHostPort(seedIP, port)
		n++
	}
	if n != 1 {
		t.Fatalf("%d --join flags in %q", n, argv)
	}
	return out
}

// startNodes starts a containerd on each host, in parallel, and maps the
// containerd preset's node paths to it.
func startNodes(t *testing.T, hosts []*lab.Host, flavors []lab.Flavor, log *slog.Logger) []*node {
	t.Helper()
	l := knownLayouts()["containerd"]
	nodes := make([]*node, len(hosts))
	errs := make([]error, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Go(func() {
			c, err := lab.StartContainerd(t.Context(), lab.ContainerdConfig{Flavor: flavors[i], Netns: h.Netns, Logger: log})
			if err != nil {
				errs[i] = err
				return
			}
			nodes[i] = &node{name: fmt.Sprintf("node-%d", i+1), host: h, ctrd: c}
		})
	}
	wg.Wait()
	for _, n := range nodes {
		if n != nil {
			cleanup(t, n.ctrd.Close)
		}
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		c := n.ctrd
		// lab's containerd keeps its socket and config side by side in
		// its own directory, under the names the preset uses.
		if path.Base(l.socket) != filepath.Base(c.Socket()) || path.Base(l.config) != filepath.Base(c.ConfigPath()) ||
			filepath.Dir(c.Socket()) != c.Dir() || filepath.Dir(c.ConfigPath()) != c.Dir() {
			t.Fatalf("lab's containerd layout (%s, %s) no longer stands in for the preset's (%s, %s)", c.Socket(), c.ConfigPath(), l.socket, l.config)
		}
		n.dir = t.TempDir()
		n.fs = map[string]string{
			path.Dir(l.socket): c.Dir(),
			path.Dir(l.config): c.Dir(),
			l.hostsDir:         c.HostsDir(),
			l.contentDir:       c.ContentDir(),
			"/var/lib/shoal":   filepath.Join(n.dir, "var-lib-shoal"),
		}
	}
	return nodes
}

// requireRealProcesses fails a test that runs real processes when it
// cannot: a skip would hide a gap. -short runs the render tests alone.
func requireRealProcesses(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts real containerd, registry and shoal processes; -short runs the render tests only")
	}
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (network namespaces, containerd, mounts)")
	}
	for _, b := range []string{lab.DefaultRegistryBinary, "/usr/bin/containerd", "/usr/bin/ctr", filepath.Join(lab.GoBin(), "containerd"), filepath.Join(lab.GoBin(), "ctr")} {
		if _, err := os.Stat(b); err != nil {
			t.Fatalf("this test needs %s (make deps installs it): %v", b, err)
		}
	}
}

// buildShoal builds the binary the image would hold: static, as a
// distroless image needs.
func buildShoal(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "shoal")
	cmd := exec.CommandContext(t.Context(), "go", "build", "-trimpath", "-o", bin, "../cmd/shoal")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building shoal: %v\n%s", err, out)
	}
	return bin
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() error) {
	t.Helper()
	if err := lab.WaitFor(t.Context(), what, timeout, cond); err != nil {
		t.Fatal(err)
	}
}

func cleanup(t *testing.T, close func() error) {
	t.Cleanup(func() {
		if err := close(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
