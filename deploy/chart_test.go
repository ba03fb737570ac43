package deploy_test

import (
	"encoding/base64"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/shoal-dev/shoal/deploy"
)

// layout is where a distribution keeps containerd on its nodes.
type layout struct {
	socket, contentDir, hostsDir, config string
}

// knownLayouts is what each preset must render, written down here apart
// from values.yaml so that a typo in either fails the test.
func knownLayouts() map[string]layout {
	upstream := layout{
		socket:     "/run/containerd/containerd.sock",
		contentDir: "/var/lib/containerd/io.containerd.content.v1.content",
		hostsDir:   "/etc/containerd/certs.d",
		config:     "/etc/containerd/config.toml",
	}
	gke := upstream
	gke.hostsDir = "/etc/containerd/hosts.d"
	return map[string]layout{
		"containerd": upstream,
		"eks":        upstream,
		"aks":        upstream,
		"gke":        gke,
		"k3s": {
			socket:     "/run/k3s/containerd/containerd.sock",
			contentDir: "/var/lib/rancher/k3s/agent/containerd/io.containerd.content.v1.content",
			hostsDir:   "/var/lib/rancher/k3s/agent/etc/containerd/certs.d",
			config:     "/var/lib/rancher/k3s/agent/etc/containerd/config.toml",
		},
		"rke2": {
			socket:     "/run/k3s/containerd/containerd.sock",
			contentDir: "/var/lib/rancher/rke2/agent/containerd/io.containerd.content.v1.content",
			hostsDir:   "/var/lib/rancher/rke2/agent/etc/containerd/certs.d",
			config:     "/var/lib/rancher/rke2/agent/etc/containerd/config.toml",
		},
		"talos": {
			socket:     "/run/containerd/containerd.sock",
			contentDir: "/var/lib/containerd/io.containerd.content.v1.content",
			hostsDir:   "/etc/cri/conf.d/hosts",
			config:     "/etc/cri/containerd.toml",
		},
	}
}

// expect is what a render must hold beyond the invariants.
type expect struct {
	layout
	storeHostPath string
	registries    []string // --registry flags of configure and unconfigure
	clusterSecret string   // the Secret the key is mounted from
	// mirrorAllow are the --mirror-allow networks; with any, the mirror
	// listens on every address of the node, else on loopback only.
	mirrorAllow []string
}

func defaultExpect(l layout) expect {
	return expect{layout: l, storeHostPath: "/var/lib/shoal", clusterSecret: deploy.ReleaseName + "-cluster-key"}
}

func TestChartPresetsMatchTheTest(t *testing.T) {
	t.Parallel()
	chrt, err := loader.Load(deploy.ChartDir)
	if err != nil {
		t.Fatal(err)
	}
	presets, ok := chrt.Values["presets"].(map[string]any)
	if !ok {
		t.Fatalf("values.yaml has no presets map")
	}
	got := slices.Sorted(maps.Keys(presets))
	want := slices.Sorted(maps.Keys(knownLayouts()))
	if !slices.Equal(got, want) {
		t.Fatalf("values.yaml presets %v, the test knows %v: add the new layout to knownLayouts", got, want)
	}
}

// TestChartPresets renders the chart for every preset, decodes every
// object strictly into the Kubernetes API types and checks that the parts
// agree: the mirror the init container writes is the one the daemon
// listens on, the ports of Service, probes and flags are the same, and
// every path a flag names is on a volume that maps to the preset's path
// on the node.
func TestChartPresets(t *testing.T) {
	t.Parallel()
	for name, l := range knownLayouts() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := sortRelease(t, render(t, map[string]any{"preset": name}))
			checkRelease(t, r, defaultExpect(l))
		})
	}
}

func TestChartValues(t *testing.T) {
	t.Parallel()
	upstream := knownLayouts()["containerd"]
	tests := []struct {
		name   string
		values map[string]any
		expect func(*expect)
		check  func(t *testing.T, r *release)
	}{
		{
			name:   "defaults",
			values: nil,
			check: func(t *testing.T, r *release) {
				if r.serviceMonitor != nil {
					t.Error("a ServiceMonitor by default: clusters without the Prometheus operator would reject it")
				}
				key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(r.secret.Data["cluster.key"])))
				if err != nil || len(key) != 32 {
					t.Errorf("generated cluster key %q: %d bytes, %v; want 32 bytes base64 as shoal keygen writes", r.secret.Data["cluster.key"], len(key), err)
				}
			},
		},
		{
			name:   "registries",
			values: map[string]any{"registries": []any{"docker.io", "http://10.0.0.5:5000"}},
			expect: func(e *expect) { e.registries = []string{"docker.io", "http://10.0.0.5:5000"} },
		},
		{
			name: "insecure registries and credentials",
			values: map[string]any{
				"insecureRegistries": []any{"10.0.0.5:5000"},
				"registryAuth":       map[string]any{"existingSecret": "regcred"},
			},
			check: func(t *testing.T, r *release) {
				pod := &r.daemonSet.Spec.Template.Spec
				c := container(t, pod, "shoal")
				cl := parseCLI(t, c)
				if got := cl.flags["insecure-registry"]; !slices.Equal(got, []string{"10.0.0.5:5000"}) {
					t.Errorf("--insecure-registry %q", got)
				}
				m := resolvePath(t, pod, c, cl.one(t, "registry-auth-file"))
				if m.volume.Secret == nil || m.volume.Secret.SecretName != "regcred" || !m.mount.ReadOnly {
					t.Fatalf("--registry-auth-file is on %+v", m.volume)
				}
				if !slices.ContainsFunc(m.volume.Secret.Items, func(k corev1.KeyToPath) bool {
					return k.Key == corev1.DockerConfigJsonKey && k.Path == m.sub
				}) {
					t.Errorf("--registry-auth-file %s is not the Secret's %s: %+v", m.sub, corev1.DockerConfigJsonKey, m.volume.Secret.Items)
				}
			},
		},
		{
			name:   "existing cluster key",
			values: map[string]any{"clusterKey": map[string]any{"existingSecret": "our-key"}},
			expect: func(e *expect) { e.clusterSecret = "our-key" },
			check: func(t *testing.T, r *release) {
				if r.secret != nil {
					t.Errorf("rendered Secret %s beside the existing one", r.secret.Name)
				}
			},
		},
		{
			name:   "given cluster key",
			values: map[string]any{"clusterKey": map[string]any{"value": "c2hvYWwtdGVzdC1rZXktMzItYnl0ZXMtbG9uZy4uLi4="}},
			check: func(t *testing.T, r *release) {
				if got := string(r.secret.Data["cluster.key"]); got != "c2hvYWwtdGVzdC1rZXktMzItYnl0ZXMtbG9uZy4uLi4=" {
					t.Errorf("cluster.key %q", got)
				}
			},
		},
		{
			name:   "service monitor",
			values: map[string]any{"serviceMonitor": map[string]any{"enabled": true, "labels": map[string]any{"release": "prom"}}},
			check: func(t *testing.T, r *release) {
				if r.serviceMonitor == nil {
					t.Fatal("no ServiceMonitor")
				}
				if r.serviceMonitor.Labels["release"] != "prom" {
					t.Errorf("labels %v", r.serviceMonitor.Labels)
				}
			},
		},
		{
			name:   "custom ports",
			values: map[string]any{"ports": map[string]any{"mirror": 17500, "p2p": 17501, "gossip": 17502, "metrics": 17503}},
			check: func(t *testing.T, r *release) {
				c := container(t, &r.daemonSet.Spec.Template.Spec, "shoal")
				if got := parseCLI(t, c).one(t, "mirror-addr"); got != "127.0.0.1:17500" {
					t.Errorf("--mirror-addr %s", got)
				}
			},
		},
		{
			name: "preheated images and node labels",
			values: map[string]any{
				"preheat":    map[string]any{"images": []any{"ghcr.io/org/app:v1", "docker.io/library/alpine:3.20"}, "interval": "5m"},
				"nodeLabels": map[string]any{"pool": "gpu", "zone": "a"},
			},
			check: func(t *testing.T, r *release) {
				d := parseCLI(t, container(t, &r.daemonSet.Spec.Template.Spec, "shoal"))
				if got := d.flags["preheat"]; !slices.Equal(got, []string{"ghcr.io/org/app:v1", "docker.io/library/alpine:3.20"}) {
					t.Errorf("--preheat %v", got)
				}
				if got := d.one(t, "preheat-interval"); got != "5m" {
					t.Errorf("--preheat-interval %s", got)
				}
				got := d.flags["node-labels"]
				slices.Sort(got)
				if !slices.Equal(got, []string{"pool=gpu", "zone=a"}) {
					t.Errorf("--node-labels %v", got)
				}
			},
		},
		{
			name:   "peer mirror",
			values: map[string]any{"peerMirror": map[string]any{"enabled": true, "allow": []any{"10.0.0.0/16", "fd00::/64"}}},
			expect: func(e *expect) { e.mirrorAllow = []string{"10.0.0.0/16", "fd00::/64"} },
		},
		{
			name:   "path overrides",
			values: map[string]any{"containerd": map[string]any{"socket": "/run/custom/containerd.sock", "hostsDir": "/etc/custom/certs.d"}},
			expect: func(e *expect) {
				e.socket = "/run/custom/containerd.sock"
				e.hostsDir = "/etc/custom/certs.d"
			},
		},
		{
			name:   "reads through the socket",
			values: map[string]any{"containerd": map[string]any{"directReads": false}},
			expect: func(e *expect) { e.contentDir = "" },
		},
		{
			name:   "hosts.toml left to the operator",
			values: map[string]any{"configure": map[string]any{"enabled": false}},
			check: func(t *testing.T, r *release) {
				pod := &r.daemonSet.Spec.Template.Spec
				if len(pod.InitContainers) != 0 || r.unconfigure != nil || r.unconfigureWait != nil {
					t.Errorf("configure.enabled=false still renders the init container or the uninstall hook")
				}
				for _, v := range pod.Volumes {
					if v.HostPath != nil && v.HostPath.Path == upstream.hostsDir {
						t.Errorf("the hosts dir is still mounted")
					}
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := sortRelease(t, render(t, tt.values))
			e := defaultExpect(upstream)
			if tt.expect != nil {
				tt.expect(&e)
			}
			checkRelease(t, r, e)
			if tt.check != nil {
				tt.check(t, r)
			}
		})
	}
}

// checkMirrorFacing: the unauthenticated mirror faces the network only
// when peerMirror names the networks it may answer.
func checkMirrorFacing(t *testing.T, d cli, mirrorAddr string, allow []string) {
	t.Helper()
	h := host(t, mirrorAddr)
	if got := d.flags["mirror-allow"]; !slices.Equal(got, allow) {
		t.Errorf("--mirror-allow %q, want %q", got, allow)
	}
	switch {
	case len(allow) == 0 && !isLoopback(h):
		t.Errorf("--mirror-addr %s is not on loopback: the unauthenticated mirror would face the network", mirrorAddr)
	case len(allow) > 0 && h != "":
		t.Errorf("--mirror-addr %s with peerMirror: other nodes reach it at the node's IP, so it listens on every address", mirrorAddr)
	}
}

func host(t *testing.T, hostPort string) string {
	t.Helper()
	h, _, err := net.SplitHostPort(hostPort)
	if err != nil {
		t.Fatalf("%q: %v", hostPort, err)
	}
	return h
}

// TestChartRejectsBadValues: a mistake in the values fails the install
// with a message, instead of rendering something else.
func TestChartRejectsBadValues(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		values map[string]any
		want   string
	}{
		{"unknown preset", map[string]any{"preset": "k3z"}, `preset "k3z" is not one of`},
		{"misspelt key", map[string]any{"presett": "k3s"}, "presett"},
		{"port out of range", map[string]any{"ports": map[string]any{"mirror": 75000}}, "mirror"},
		{"peer mirror open to all", map[string]any{"peerMirror": map[string]any{"enabled": true}}, "peerMirror.allow"},
		{"peer mirror allowing a host name", map[string]any{"peerMirror": map[string]any{"enabled": true, "allow": []any{"nodes.example"}}}, "allow"},
		{"relative store path", map[string]any{"store": map[string]any{"hostPath": "var/lib/shoal"}}, "hostPath"},
		{"preheat interval without a unit", map[string]any{"preheat": map[string]any{"interval": "10"}}, "interval"},
		{"node label with a space", map[string]any{"nodeLabels": map[string]any{"pool": "g p u"}}, "nodeLabels"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := deploy.Render(t.Context(), deploy.ChartDir, deploy.ReleaseName, deploy.Namespace, tt.values)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("render: %v; want an error about %q", err, tt.want)
			}
		})
	}
}

// checkRelease checks the invariants every render must hold.
func checkRelease(t *testing.T, r *release, e expect) {
	t.Helper()
	ds := r.daemonSet
	pod := &ds.Spec.Template.Spec
	daemon := container(t, pod, "shoal")
	d := parseCLI(t, daemon)
	if !slices.Equal(d.words, []string{"daemon"}) {
		t.Errorf("daemon container runs shoal %v", d.words)
	}

	// The selector picks the pods, and the Service finds them.
	sel, err := metaSelector(ds.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Errorf("DaemonSet selector %v does not match its pods %v (%v)", ds.Spec.Selector, ds.Spec.Template.Labels, err)
	}

	// Ports: flags, container ports, probes and Service agree.
	mirrorAddr := d.one(t, "mirror-addr")
	checkMirrorFacing(t, d, mirrorAddr, e.mirrorAllow)
	if got := namedPort(t, daemon, "mirror", corev1.ProtocolTCP); got != port(t, mirrorAddr) {
		t.Errorf("mirror containerPort %d, --mirror-addr %s", got, mirrorAddr)
	}
	if got, want := namedPort(t, daemon, "p2p", corev1.ProtocolTCP), port(t, d.one(t, "p2p-addr")); got != want {
		t.Errorf("p2p containerPort %d, --p2p-addr port %d", got, want)
	}
	gossip := port(t, d.one(t, "gossip-addr"))
	for _, p := range []struct {
		name  string
		proto corev1.Protocol
	}{{"gossip", corev1.ProtocolTCP}, {"gossip-udp", corev1.ProtocolUDP}} {
		if got := namedPort(t, daemon, p.name, p.proto); got != gossip {
			t.Errorf("%s containerPort %d, --gossip-addr port %d", p.name, got, gossip)
		}
	}
	metricsAddr := d.one(t, "metrics-addr")
	if h, _, _ := net.SplitHostPort(metricsAddr); h != "" && h != "0.0.0.0" {
		// The kubelet probes the pod's IP (the node's, with hostNetwork).
		t.Errorf("--metrics-addr %s: the kubelet's probes reach the pod IP, not %s", metricsAddr, h)
	}
	metrics := port(t, metricsAddr)
	if got := namedPort(t, daemon, "metrics", corev1.ProtocolTCP); got != metrics {
		t.Errorf("metrics containerPort %d, --metrics-addr %s", got, metricsAddr)
	}
	for _, p := range []struct {
		what  string
		probe *corev1.Probe
		path  string
	}{{"liveness", daemon.LivenessProbe, "/healthz"}, {"readiness", daemon.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("no HTTP %s probe", p.what)
			continue
		}
		if p.probe.HTTPGet.Path != p.path {
			t.Errorf("%s probe on %s, want %s", p.what, p.probe.HTTPGet.Path, p.path)
		}
		if got := containerPort(t, daemon, p.probe.HTTPGet.Port, corev1.ProtocolTCP).ContainerPort; got != metrics {
			t.Errorf("%s probe on port %d, the daemon serves %s on %d", p.what, got, p.path, metrics)
		}
	}
	svc := r.service
	if svc.Spec.ClusterIP != corev1.ClusterIPNone || !svc.Spec.PublishNotReadyAddresses {
		t.Errorf("Service is not headless with unready addresses: clusterIP %q, publishNotReadyAddresses %v", svc.Spec.ClusterIP, svc.Spec.PublishNotReadyAddresses)
	}
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(ds.Spec.Template.Labels)) || len(svc.Spec.Selector) == 0 {
		t.Errorf("Service selector %v does not pick the pods %v", svc.Spec.Selector, ds.Spec.Template.Labels)
	}
	svcPorts := map[string]corev1.ServicePort{}
	for _, sp := range svc.Spec.Ports {
		svcPorts[sp.Name] = sp
		cp := containerPort(t, daemon, sp.TargetPort, sp.Protocol)
		if cp.ContainerPort != sp.Port {
			t.Errorf("Service port %s is %d but reaches container port %d", sp.Name, sp.Port, cp.ContainerPort)
		}
	}
	for _, want := range []struct {
		port  int32
		proto corev1.Protocol
	}{{gossip, corev1.ProtocolTCP}, {gossip, corev1.ProtocolUDP}, {metrics, corev1.ProtocolTCP}} {
		if !slices.ContainsFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool { return sp.Port == want.port && sp.Protocol == want.proto }) {
			t.Errorf("Service lacks %s port %d", want.proto, want.port)
		}
	}
	join := d.one(t, "join")
	jh, _, err := net.SplitHostPort(join)
	if err != nil {
		t.Fatalf("--join %q: %v", join, err)
	}
	if want := svc.Name + "." + svc.Namespace + ".svc.cluster.local"; jh != want {
		t.Errorf("--join host %s, want the headless Service %s", jh, want)
	}
	if port(t, join) != gossip {
		t.Errorf("--join port %d, the daemons gossip on %d", port(t, join), gossip)
	}
	if sm := r.serviceMonitor; sm != nil {
		if len(sm.Spec.Endpoints) != 1 {
			t.Fatalf("ServiceMonitor endpoints %+v", sm.Spec.Endpoints)
		}
		ep := sm.Spec.Endpoints[0]
		sp, ok := svcPorts[ep.Port]
		if !ok || sp.Port != metrics || ep.Path != "/metrics" {
			t.Errorf("ServiceMonitor scrapes port %q path %s; the Service's metrics port is %+v", ep.Port, ep.Path, sp)
		}
		sel, err := metaSelector(&sm.Spec.Selector)
		if err != nil || !sel.Matches(labels.Set(svc.Labels)) {
			t.Errorf("ServiceMonitor selector %v does not pick the Service %v", sm.Spec.Selector, svc.Labels)
		}
		if !slices.Contains(sm.Spec.NamespaceSelector.MatchNames, svc.Namespace) {
			t.Errorf("ServiceMonitor looks in %v, not %s", sm.Spec.NamespaceSelector.MatchNames, svc.Namespace)
		}
	}

	// The mirror the init container writes is the one the daemon serves.
	var init *corev1.Container
	var in cli
	if len(pod.InitContainers) > 0 {
		init = container(t, pod, "configure-containerd")
		in = parseCLI(t, init)
		if !slices.Equal(in.words, []string{"configure", "containerd"}) {
			t.Errorf("init container runs shoal %v", in.words)
		}
		if got := mirrorHostPort(t, in.one(t, "mirror")); port(t, got) != port(t, mirrorAddr) || !isLoopback(host(t, got)) {
			t.Errorf("init container points containerd at %s, the daemon listens on %s", got, mirrorAddr)
		}
		if got := in.flags["registry"]; !slices.Equal(got, e.registries) {
			t.Errorf("configure --registry %q, want %q", got, e.registries)
		}
		hosts := resolvePath(t, pod, init, in.one(t, "hosts-dir"))
		if hosts.hostPath != e.hostsDir || hosts.mount.ReadOnly {
			t.Errorf("--hosts-dir is node path %q (read-only %v), want %s writable", hosts.hostPath, hosts.mount.ReadOnly, e.hostsDir)
		}
		if cfg := in.one(t, "containerd-config"); e.config == "" {
			if cfg != "" {
				t.Errorf("--containerd-config %q, want none", cfg)
			}
		} else if m := resolvePath(t, pod, init, cfg); m.hostPath != e.config {
			t.Errorf("--containerd-config is node path %q, want %s", m.hostPath, e.config)
		}
	}

	// Every path the daemon is given is on a volume, at the node path the
	// preset names.
	sock := resolvePath(t, pod, daemon, d.one(t, "containerd-sock"))
	if sock.hostPath != e.socket {
		t.Errorf("--containerd-sock is node path %q, want %s", sock.hostPath, e.socket)
	}
	if cd := d.one(t, "containerd-content-dir"); e.contentDir == "" {
		if cd != "" {
			t.Errorf("--containerd-content-dir %q, want reads through the socket", cd)
		}
	} else if m := resolvePath(t, pod, daemon, cd); m.hostPath != e.contentDir || !m.mount.ReadOnly {
		t.Errorf("--containerd-content-dir is node path %q (read-only %v), want %s read-only", m.hostPath, m.mount.ReadOnly, e.contentDir)
	}
	data := resolvePath(t, pod, daemon, d.one(t, "data-dir"))
	if data.hostPath != e.storeHostPath || data.mount.ReadOnly {
		t.Errorf("--data-dir is node path %q (read-only %v), want %s writable", data.hostPath, data.mount.ReadOnly, e.storeHostPath)
	}
	key := resolvePath(t, pod, daemon, d.one(t, "cluster-key-file"))
	if key.volume.Secret == nil || key.volume.Secret.SecretName != e.clusterSecret {
		t.Errorf("--cluster-key-file is on %+v, want Secret %s", key.volume.VolumeSource, e.clusterSecret)
	} else if !slices.ContainsFunc(key.volume.Secret.Items, func(k corev1.KeyToPath) bool { return k.Key == "cluster.key" && k.Path == key.sub }) {
		t.Errorf("--cluster-key-file names %s, not the Secret's cluster.key: %+v", key.sub, key.volume.Secret.Items)
	}
	if r.secret != nil {
		if r.secret.Name != e.clusterSecret {
			t.Errorf("rendered Secret %s, mounted %s", r.secret.Name, e.clusterSecret)
		}
		if _, ok := r.secret.Data["cluster.key"]; !ok {
			t.Errorf("Secret %s has no cluster.key", r.secret.Name)
		}
	}
	checkVolumes(t, pod)

	// Locked down, on every node, with the node's identity.
	if !pod.HostNetwork || pod.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("hostNetwork %v, dnsPolicy %s: containerd must reach the loopback mirror and the pod must resolve the Service", pod.HostNetwork, pod.DNSPolicy)
	}
	if pod.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName %q", pod.PriorityClassName)
	}
	if !slices.ContainsFunc(pod.Tolerations, func(tl corev1.Toleration) bool {
		return tl.Operator == corev1.TolerationOpExists && tl.Key == "" && tl.Effect == ""
	}) {
		t.Errorf("tolerations %+v do not tolerate every taint", pod.Tolerations)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("the pod mounts a service account token it never uses")
	}
	if pod.ServiceAccountName != r.serviceAccount.Name {
		t.Errorf("pod runs as %q, the chart made %q", pod.ServiceAccountName, r.serviceAccount.Name)
	}
	for _, c := range slices.Concat(pod.InitContainers, pod.Containers) {
		checkLockedDown(t, &c)
	}
	if s := ds.Spec.UpdateStrategy; s.Type != appsv1.RollingUpdateDaemonSetStrategyType || s.RollingUpdate == nil ||
		(s.RollingUpdate.MaxSurge != nil && s.RollingUpdate.MaxSurge.String() != "0") {
		t.Errorf("update strategy %+v: want a rolling update without surge (host ports)", s)
	}
	for name, field := range map[string]string{"SHOAL_NODE_NAME": "spec.nodeName", "SHOAL_ADVERTISE_IP": "status.podIP"} {
		ev := envVar(daemon, name)
		if ev == nil || ev.ValueFrom == nil || ev.ValueFrom.FieldRef == nil || ev.ValueFrom.FieldRef.FieldPath != field {
			t.Errorf("%s is not the downward API's %s: %+v", name, field, ev)
		}
	}

	checkUnconfigure(t, r, e, init, in)
}

// checkUnconfigure checks the uninstall hooks undo what the init container did.
func checkUnconfigure(t *testing.T, r *release, e expect, init *corev1.Container, in cli) {
	t.Helper()
	if init == nil {
		return
	}
	u := r.unconfigure
	if u == nil || r.unconfigureWait == nil || r.hookAccount == nil || r.hookRole == nil || r.hookBinding == nil {
		t.Fatal("the init container writes hosts.toml but no pre-delete hook restores it")
	}
	pod := &u.Spec.Template.Spec
	c := container(t, pod, "unconfigure-containerd")
	cl := parseCLI(t, c)
	if !slices.Equal(cl.words, []string{"unconfigure", "containerd"}) {
		t.Errorf("unconfigure runs shoal %v", cl.words)
	}
	if got := cl.flags["registry"]; !slices.Equal(got, in.flags["registry"]) {
		t.Errorf("unconfigure --registry %q, configure %q", got, in.flags["registry"])
	}
	if m := resolvePath(t, pod, c, cl.one(t, "hosts-dir")); m.hostPath != e.hostsDir || m.mount.ReadOnly {
		t.Errorf("unconfigure --hosts-dir is node path %q (read-only %v), want %s", m.hostPath, m.mount.ReadOnly, e.hostsDir)
	}
	main := &r.daemonSet.Spec.Template.Spec
	if !equalJSON(pod.Tolerations, main.Tolerations) || !equalJSON(pod.NodeSelector, main.NodeSelector) || !equalJSON(pod.Affinity, main.Affinity) {
		t.Error("the unconfigure DaemonSet is not scheduled where shoal runs")
	}
	sel, err := metaSelector(u.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(u.Spec.Template.Labels)) || sel.Matches(labels.Set(r.daemonSet.Spec.Template.Labels)) {
		t.Errorf("unconfigure selector %v: must pick its own pods and not shoal's", u.Spec.Selector)
	}
	for _, c := range slices.Concat(pod.InitContainers, pod.Containers) {
		checkLockedDown(t, &c)
	}
	checkVolumes(t, pod)

	job := r.unconfigureWait.Spec.Template.Spec
	if job.ServiceAccountName != r.hookAccount.Name || len(job.Containers) != 1 {
		t.Fatalf("wait Job runs as %q with %d containers", job.ServiceAccountName, len(job.Containers))
	}
	args := strings.Join(slices.Concat(job.Containers[0].Command, job.Containers[0].Args), " ")
	if !strings.Contains(args, "rollout status daemonset/"+u.Name) || !strings.Contains(args, "--namespace="+u.Namespace) {
		t.Errorf("wait Job runs %q, not a rollout status of %s/%s", args, u.Namespace, u.Name)
	}
	b := r.hookBinding
	if b.RoleRef.Name != r.hookRole.Name || len(b.Subjects) != 1 || b.Subjects[0].Name != r.hookAccount.Name {
		t.Errorf("RoleBinding %+v does not bind %s to %s", b, r.hookAccount.Name, r.hookRole.Name)
	}
	weight := map[string]int{}
	for _, o := range r.all {
		if o.IsHook() {
			weight[o.obj.GetObjectKind().GroupVersionKind().Kind] = o.Weight
		}
	}
	if !(weight["ServiceAccount"] < weight["DaemonSet"] && weight["DaemonSet"] < weight["Job"] && weight["Role"] < weight["Job"]) {
		t.Errorf("hook weights %v: the account, the DaemonSet, then the Job", weight)
	}
}

// checkVolumes: every mount names a volume, and every volume is mounted.
func checkVolumes(t *testing.T, pod *corev1.PodSpec) {
	t.Helper()
	used := map[string]bool{}
	for _, c := range slices.Concat(pod.InitContainers, pod.Containers) {
		for _, m := range c.VolumeMounts {
			volume(t, pod, m.Name)
			used[m.Name] = true
		}
	}
	for _, v := range pod.Volumes {
		if !used[v.Name] {
			t.Errorf("volume %s is mounted by no container", v.Name)
		}
		if hp := v.HostPath; hp != nil && (hp.Type == nil || *hp.Type == corev1.HostPathUnset) {
			// An unchecked host path that is missing becomes a new
			// directory on the node, even where a file was meant.
			t.Errorf("hostPath volume %s (%s) has no type", v.Name, hp.Path)
		}
	}
}

func checkLockedDown(t *testing.T, c *corev1.Container) {
	t.Helper()
	sc := c.SecurityContext
	if sc == nil {
		t.Errorf("%s: no securityContext", c.Name)
		return
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: root filesystem is writable", c.Name)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: privilege escalation allowed", c.Name)
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Errorf("%s: privileged", c.Name)
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) != 0 {
		t.Errorf("%s: capabilities %+v, want all dropped and none added", c.Name, sc.Capabilities)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("%s: resources %+v, want CPU and memory requests and a memory limit", c.Name, c.Resources)
	}
}

func isLoopback(host string) bool {
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}
