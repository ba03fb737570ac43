package deploy_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/shoal-dev/shoal/bench/lab"
	"github.com/shoal-dev/shoal/deploy/image"
)

// This file is a small kubelet for tests: it runs the containers of a
// rendered pod spec on a lab host (a network namespace, as hostNetwork
// pods share the node's), each in a sandbox built from the spec: its
// volumes, its securityContext, its environment with the downward API
// filled in, and its command and args expanded as the kubelet does.

// imageBinary is where shoal's image keeps the binary, on its PATH: the
// chart's `command: [shoal]` runs it.
const imageBinary = image.BinaryPath

const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// node is one machine of the test cluster: a lab host with its containerd,
// and the host paths the pod's hostPath volumes map to.
type node struct {
	name string
	host *lab.Host
	ctrd *lab.Containerd
	// fs maps node paths to the test directories that stand for them; a
	// hostPath volume must lie at or below one of them.
	fs  map[string]string
	dir string // this node's scratch space
}

// hostPath returns the test directory standing for the node path p,
// applying the volume type's checks and creation as the kubelet does.
func (n *node) hostPath(t *testing.T, v *corev1.HostPathVolumeSource) string {
	t.Helper()
	var best, bestSrc string
	for nodePath, src := range n.fs {
		if _, ok := within(nodePath, v.Path); ok && len(nodePath) > len(best) {
			best, bestSrc = nodePath, src
		}
	}
	if best == "" {
		t.Fatalf("%s: the pod mounts node path %s, which this node does not have (%v)", n.name, v.Path, slices.Sorted(maps.Keys(n.fs)))
	}
	rel, _ := within(best, v.Path)
	p := filepath.Join(bestSrc, filepath.FromSlash(rel))
	typ := corev1.HostPathUnset
	if v.Type != nil {
		typ = *v.Type
	}
	fi, err := os.Stat(p)
	switch typ {
	case corev1.HostPathDirectoryOrCreate:
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	case corev1.HostPathDirectory:
		if err != nil || !fi.IsDir() {
			t.Fatalf("%s: hostPath %s (%s) is not a directory: %v", n.name, v.Path, p, err)
		}
	case corev1.HostPathFile:
		if err != nil || !fi.Mode().IsRegular() {
			t.Fatalf("%s: hostPath %s (%s) is not a file: %v", n.name, v.Path, p, err)
		}
	case corev1.HostPathSocket:
		if err != nil || fi.Mode()&os.ModeSocket == 0 {
			t.Fatalf("%s: hostPath %s (%s) is not a socket: %v", n.name, v.Path, p, err)
		}
	default:
		t.Fatalf("%s: hostPath %s has type %q, which this test kubelet does not run", n.name, v.Path, typ)
	}
	return p
}

// pod is a rendered pod spec placed on a node, with what the API server
// and the kubelet would know about it.
type pod struct {
	name      string
	namespace string
	spec      *corev1.PodSpec
	node      *node
	secrets   map[string]*corev1.Secret
	binary    string // the image's shoal, built from this tree
	dir       string
}

// fieldRef answers the downward API for this pod.
func (p *pod) fieldRef(t *testing.T, f *corev1.ObjectFieldSelector) string {
	t.Helper()
	ip := p.node.host.IP.String() // hostNetwork: the pod's IP is the node's
	switch f.FieldPath {
	case "metadata.name":
		return p.name
	case "metadata.namespace":
		return p.namespace
	case "spec.nodeName":
		return p.node.name
	case "spec.serviceAccountName":
		return p.spec.ServiceAccountName
	case "status.podIP", "status.podIPs", "status.hostIP", "status.hostIPs":
		return ip
	}
	t.Fatalf("downward API field %s is not known to the test kubelet", f.FieldPath)
	return ""
}

func (p *pod) resourceRef(t *testing.T, c *corev1.Container, r *corev1.ResourceFieldSelector) string {
	t.Helper()
	if r.ContainerName != "" && r.ContainerName != c.Name {
		t.Fatalf("%s: resourceFieldRef names container %s", c.Name, r.ContainerName)
	}
	var q resource.Quantity
	switch r.Resource {
	case "limits.memory":
		q = *c.Resources.Limits.Memory()
	case "requests.memory":
		q = *c.Resources.Requests.Memory()
	case "limits.cpu":
		q = *c.Resources.Limits.Cpu()
	case "requests.cpu":
		q = *c.Resources.Requests.Cpu()
	default:
		t.Fatalf("%s: resourceFieldRef %s is not known to the test kubelet", c.Name, r.Resource)
	}
	if q.IsZero() {
		// The kubelet would give the node's allocatable, which a test node has not.
		t.Fatalf("%s: resourceFieldRef %s of an unset resource", c.Name, r.Resource)
	}
	div := r.Divisor
	if div.IsZero() {
		div = resource.MustParse("1")
	}
	// As the kubelet does: round up to a whole number of divisors.
	n := (q.MilliValue() + div.MilliValue() - 1) / div.MilliValue()
	return strconv.FormatInt(n, 10)
}

// environment resolves c's env as the kubelet does, in order, each value
// able to refer to the ones before it, after the image's PATH.
func (p *pod) environment(t *testing.T, c *corev1.Container) []string {
	t.Helper()
	if len(c.EnvFrom) > 0 {
		t.Fatalf("%s: envFrom is not known to the test kubelet", c.Name)
	}
	env := []string{defaultPath}
	vars := map[string]string{}
	for _, e := range c.Env {
		v := expand(e.Value, vars)
		if f := e.ValueFrom; f != nil {
			switch {
			case f.FieldRef != nil:
				v = p.fieldRef(t, f.FieldRef)
			case f.ResourceFieldRef != nil:
				v = p.resourceRef(t, c, f.ResourceFieldRef)
			case f.SecretKeyRef != nil:
				s := p.secrets[f.SecretKeyRef.Name]
				if s == nil {
					t.Fatalf("%s: env %s from missing Secret %s", c.Name, e.Name, f.SecretKeyRef.Name)
				}
				v = string(s.Data[f.SecretKeyRef.Key])
			default:
				t.Fatalf("%s: env %s source is not known to the test kubelet", c.Name, e.Name)
			}
		}
		vars[e.Name] = v
		env = append(env, e.Name+"="+v)
	}
	return env
}

// expand replaces $(VAR) with known variables and $$ with $, leaving
// unknown references as they are, like the kubelet.
func expand(s string, vars map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := vars[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// sandbox turns container c of the pod into the spec the re-executed test
// binary runs it from. argv may replace the container's command line.
func (p *pod) sandbox(t *testing.T, c *corev1.Container, argv []string) sandboxSpec {
	t.Helper()
	env := p.environment(t, c)
	if argv == nil {
		argv = p.argv(t, c, env)
	}
	root := filepath.Join(p.dir, c.Name, "rootfs")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	s := sandboxSpec{Root: root, Binary: p.binary, BinaryAt: imageBinary, Argv: argv, Env: env}
	for _, m := range c.VolumeMounts {
		if m.SubPath != "" || m.SubPathExpr != "" {
			t.Fatalf("%s: subPath mounts are not known to the test kubelet", c.Name)
		}
		v := volume(t, p.spec, m.Name)
		var src string
		switch {
		case v.HostPath != nil:
			src = p.node.hostPath(t, v.HostPath)
		case v.EmptyDir != nil:
			src = filepath.Join(p.dir, "volumes", v.Name)
			if err := os.MkdirAll(src, 0o755); err != nil {
				t.Fatal(err)
			}
		case v.Secret != nil:
			src = p.secretVolume(t, v)
		default:
			t.Fatalf("%s: volume %s's source is not known to the test kubelet", c.Name, v.Name)
		}
		s.Mounts = append(s.Mounts, sandboxMount{Source: src, Target: m.MountPath, ReadOnly: m.ReadOnly})
	}
	sc := c.SecurityContext
	if sc == nil {
		t.Fatalf("%s: no securityContext: the test kubelet runs only locked-down containers", c.Name)
	}
	s.ReadOnlyRoot = sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem
	s.NoNewPrivs = sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Fatalf("%s: the test kubelet runs only containers that drop ALL capabilities", c.Name)
	}
	for _, a := range sc.Capabilities.Add {
		s.Caps = append(s.Caps, string(a))
	}
	if sc.RunAsUser != nil {
		s.UID = int(*sc.RunAsUser)
	}
	if sc.RunAsGroup != nil {
		s.GID = int(*sc.RunAsGroup)
	}
	return s
}

// argv is the container's command and args, expanded against its
// environment. The image has no entrypoint the chart could rely on, so a
// command is required.
func (p *pod) argv(t *testing.T, c *corev1.Container, env []string) []string {
	t.Helper()
	if len(c.Command) == 0 {
		t.Fatalf("%s: no command", c.Name)
	}
	vars := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	var argv []string
	for _, a := range slices.Concat(c.Command, c.Args) {
		argv = append(argv, expand(a, vars))
	}
	return argv
}

// secretVolume writes a Secret volume's files as the kubelet would.
func (p *pod) secretVolume(t *testing.T, v corev1.Volume) string {
	t.Helper()
	s := p.secrets[v.Secret.SecretName]
	if s == nil {
		t.Fatalf("volume %s: Secret %s was not rendered", v.Name, v.Secret.SecretName)
	}
	dir := filepath.Join(p.dir, "volumes", v.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	mode := os.FileMode(0o644)
	if v.Secret.DefaultMode != nil {
		mode = os.FileMode(*v.Secret.DefaultMode)
	}
	items := v.Secret.Items
	if len(items) == 0 {
		for k := range s.Data {
			items = append(items, corev1.KeyToPath{Key: k, Path: k})
		}
	}
	for _, it := range items {
		b, ok := s.Data[it.Key]
		if !ok {
			t.Fatalf("volume %s: Secret %s has no key %s", v.Name, s.Name, it.Key)
		}
		m := mode
		if it.Mode != nil {
			m = os.FileMode(*it.Mode)
		}
		p := filepath.Join(dir, filepath.FromSlash(it.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, m); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// proc is a container's process.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// start runs the sandbox in the node's network namespace.
func (p *pod) start(t *testing.T, name string, s sandboxSpec) *proc {
	t.Helper()
	spec, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(p.dir, name+".log")
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(ipTool(), "netns", "exec", p.node.host.Netns, self)
	cmd.Env = []string{sandboxEnv + "=" + string(spec)}
	cmd.Stdout, cmd.Stderr = out, out
	// A group of its own, so stop reaches everything; the death signal
	// ends the container if the test process dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pr := &proc{name: p.node.name + "/" + name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		pr.err = cmd.Wait()
		close(pr.done)
	}()
	return pr
}

// wait waits for the process to end within d and returns how it ended.
func (pr *proc) wait(d time.Duration) error {
	select {
	case <-pr.done:
		return pr.err
	case <-time.After(d):
		pr.stop()
		return fmt.Errorf("%s did not finish within %v", pr.name, d)
	}
}

// stop sends SIGTERM to the group, then SIGKILL after a grace period, as
// the kubelet does at pod deletion.
func (pr *proc) stop() {
	pgid := pr.cmd.Process.Pid
	select {
	case <-pr.done:
	default:
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-pr.done:
		case <-time.After(10 * time.Second):
		}
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	<-pr.done
}

func (pr *proc) tail(n int) string {
	b, err := os.ReadFile(pr.log)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (pr *proc) running() bool {
	select {
	case <-pr.done:
		return false
	default:
		return true
	}
}

func ipTool() string {
	if p, err := exec.LookPath("ip"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "ip"
}

// probe runs an HTTP probe of c against the pod, as the kubelet does: to
// the pod's IP (the node's) and the named or numbered container port.
func (p *pod) probe(ctx context.Context, c *corev1.Container, pr *corev1.Probe) error {
	g := pr.HTTPGet
	if g == nil {
		return errors.New("not an HTTP probe")
	}
	host := g.Host
	if host == "" {
		host = p.node.host.IP.String()
	}
	var port int32
	switch g.Port.Type {
	case intstr.Int:
		port = g.Port.IntVal
	case intstr.String:
		i := slices.IndexFunc(c.Ports, func(cp corev1.ContainerPort) bool { return cp.Name == g.Port.StrVal })
		if i < 0 {
			return fmt.Errorf("no port named %s", g.Port.StrVal)
		}
		port = c.Ports[i].ContainerPort
	}
	scheme := strings.ToLower(string(g.Scheme))
	if scheme == "" {
		scheme = "http"
	}
	u := scheme + "://" + net.JoinHostPort(host, strconv.Itoa(int(port))) + path.Clean("/"+g.Path)
	if _, err := p.get(ctx, u); err != nil {
		return fmt.Errorf("probe %s: %w", u, err)
	}
	return nil
}

// get fetches a URL from inside the node's network namespace.
func (p *pod) get(ctx context.Context, u string) ([]byte, error) {
	tr := lab.TransportIn(p.node.host.Netns)
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return b, fmt.Errorf("%s: %s", u, resp.Status)
	}
	return b, nil
}

func (p *pod) metrics(ctx context.Context, base string) (lab.Metrics, error) {
	b, err := p.get(ctx, base+"/metrics")
	if err != nil {
		return nil, err
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(b)))
	if err != nil {
		return nil, err
	}
	return lab.Metrics(fams), nil
}
