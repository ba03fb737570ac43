package deploy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	"github.com/shoal-dev/shoal/deploy"
)

// object is one rendered document decoded into its Kubernetes API type.
type object struct {
	deploy.Doc
	obj runtime.Object
}

// newDecoder decodes into the built-in API types and the Prometheus
// operator's, refusing unknown and duplicate fields: a misspelt or
// misplaced key fails here instead of being dropped by the API server.
func newDecoder() (runtime.Decoder, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, err
	}
	if err := monitoringv1.AddToScheme(s); err != nil {
		return nil, err
	}
	return serializer.NewCodecFactory(s, serializer.EnableStrict).UniversalDeserializer(), nil
}

// render renders the chart with values and decodes every object strictly.
func render(t *testing.T, values map[string]any) []object {
	t.Helper()
	docs, err := deploy.Render(t.Context(), deploy.ChartDir, deploy.ReleaseName, deploy.Namespace, values)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeAll(docs)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func decodeAll(docs []deploy.Doc) ([]object, error) {
	dec, err := newDecoder()
	if err != nil {
		return nil, err
	}
	var objs []object
	for _, d := range docs {
		obj, gvk, err := dec.Decode([]byte(d.YAML), nil, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: %w\n%s", d.Template, err, d.YAML)
		}
		if gvk.Kind == "" {
			return nil, fmt.Errorf("%s: no kind", d.Template)
		}
		objs = append(objs, object{Doc: d, obj: obj})
	}
	return objs, nil
}

// release sorts a render into the objects the tests look at.
type release struct {
	daemonSet      *appsv1.DaemonSet
	service        *corev1.Service
	secret         *corev1.Secret
	serviceAccount *corev1.ServiceAccount
	serviceMonitor *monitoringv1.ServiceMonitor

	// The pre-delete hooks.
	unconfigure     *appsv1.DaemonSet
	unconfigureWait *batchv1.Job
	hookAccount     *corev1.ServiceAccount
	hookRole        *rbacv1.Role
	hookBinding     *rbacv1.RoleBinding

	all []object
}

func sortRelease(t *testing.T, objs []object) *release {
	t.Helper()
	r := &release{all: objs}
	set := func(dst any, src runtime.Object, what string) {
		switch d := dst.(type) {
		case **appsv1.DaemonSet:
			if *d != nil {
				t.Fatalf("two %s", what)
			}
			*d = src.(*appsv1.DaemonSet)
		case **corev1.ServiceAccount:
			if *d != nil {
				t.Fatalf("two %s", what)
			}
			*d = src.(*corev1.ServiceAccount)
		}
	}
	for _, o := range objs {
		hook := o.IsHook()
		if hook && !o.HasHook("pre-delete") {
			t.Fatalf("%s: unexpected hook %v", o.Template, o.Hooks)
		}
		switch v := o.obj.(type) {
		case *appsv1.DaemonSet:
			if hook {
				set(&r.unconfigure, v, "unconfigure DaemonSets")
			} else {
				set(&r.daemonSet, v, "DaemonSets")
			}
		case *corev1.ServiceAccount:
			if hook {
				set(&r.hookAccount, v, "hook ServiceAccounts")
			} else {
				set(&r.serviceAccount, v, "ServiceAccounts")
			}
		case *corev1.Service:
			r.service = v
		case *corev1.Secret:
			r.secret = v
		case *monitoringv1.ServiceMonitor:
			r.serviceMonitor = v
		case *batchv1.Job:
			r.unconfigureWait = v
		case *rbacv1.Role:
			r.hookRole = v
		case *rbacv1.RoleBinding:
			r.hookBinding = v
		default:
			t.Fatalf("%s: unexpected %T", o.Template, o.obj)
		}
	}
	if r.daemonSet == nil || r.service == nil || r.serviceAccount == nil {
		t.Fatalf("the render lacks the DaemonSet, the Service or the ServiceAccount")
	}
	return r
}

func container(t *testing.T, spec *corev1.PodSpec, name string) *corev1.Container {
	t.Helper()
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for i := range cs {
			if cs[i].Name == name {
				return &cs[i]
			}
		}
	}
	t.Fatalf("no container %q", name)
	return nil
}

// cli is a container's command line as shoal's flag parsing sees it:
// positional words, then --flag=value pairs, then SHOAL_<FLAG> variables
// for flags not given.
type cli struct {
	words []string
	flags map[string][]string
}

// parseCLI reads args that use --flag=value only (the chart's form, which
// leaves no doubt which word is a value), except bare boolean flags.
func parseCLI(t *testing.T, c *corev1.Container) cli {
	t.Helper()
	cl := cli{flags: map[string][]string{}}
	for _, a := range c.Args {
		name, ok := strings.CutPrefix(a, "--")
		if !ok {
			if len(cl.flags) > 0 {
				t.Fatalf("%s: positional %q after flags", c.Name, a)
			}
			cl.words = append(cl.words, a)
			continue
		}
		name, value, hasValue := strings.Cut(name, "=")
		if !hasValue {
			value = "true"
		}
		cl.flags[name] = append(cl.flags[name], value)
	}
	for _, e := range c.Env {
		f, ok := strings.CutPrefix(e.Name, "SHOAL_")
		if !ok {
			continue
		}
		f = strings.ToLower(strings.ReplaceAll(f, "_", "-"))
		if _, given := cl.flags[f]; given {
			continue // a flag on the command line wins
		}
		cl.flags[f] = []string{"$env:" + e.Name}
	}
	return cl
}

// one returns the single value of flag, failing when it is absent or given twice.
func (c cli) one(t *testing.T, flag string) string {
	t.Helper()
	v := c.flags[flag]
	if len(v) != 1 {
		t.Fatalf("--%s given %d times: %q", flag, len(v), v)
	}
	return v[0]
}

func port(t *testing.T, hostport string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatalf("%q: %v", hostport, err)
	}
	n, err := strconv.ParseInt(p, 10, 32)
	if err != nil {
		t.Fatalf("%q: %v", hostport, err)
	}
	return int32(n)
}

// containerPort finds the port a probe or Service names, by name or number.
func containerPort(t *testing.T, c *corev1.Container, p intstr.IntOrString, proto corev1.Protocol) corev1.ContainerPort {
	t.Helper()
	if proto == "" {
		proto = corev1.ProtocolTCP
	}
	for _, cp := range c.Ports {
		proto2 := cp.Protocol
		if proto2 == "" {
			proto2 = corev1.ProtocolTCP
		}
		if proto2 != proto {
			continue
		}
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp
		}
	}
	t.Fatalf("container %s has no %s port %s", c.Name, proto, p.String())
	return corev1.ContainerPort{}
}

func namedPort(t *testing.T, c *corev1.Container, name string, proto corev1.Protocol) int32 {
	t.Helper()
	return containerPort(t, c, intstr.FromString(name), proto).ContainerPort
}

// mounted is where a path inside a container comes from.
type mounted struct {
	volume   corev1.Volume
	mount    corev1.VolumeMount
	hostPath string // for hostPath volumes: the path on the node
	sub      string // the path below the mount point
}

// resolvePath finds the volume that holds p in container c: the mount with
// the longest mount path that contains p. A path on no volume would land
// in the image's read-only root.
func resolvePath(t *testing.T, spec *corev1.PodSpec, c *corev1.Container, p string) mounted {
	t.Helper()
	if !path.IsAbs(p) {
		t.Fatalf("%s: path %q is not absolute", c.Name, p)
	}
	var best *corev1.VolumeMount
	for i, m := range c.VolumeMounts {
		if _, ok := within(m.MountPath, p); !ok {
			continue
		}
		if best == nil || len(m.MountPath) > len(best.MountPath) {
			best = &c.VolumeMounts[i]
		}
	}
	if best == nil {
		t.Fatalf("%s: %s is on no volume (mounts: %v)", c.Name, p, mountPaths(c))
	}
	rel, _ := within(best.MountPath, p)
	v := volume(t, spec, best.Name)
	m := mounted{volume: v, mount: *best, sub: rel}
	if v.HostPath != nil {
		m.hostPath = path.Join(v.HostPath.Path, rel)
	}
	return m
}

func mountPaths(c *corev1.Container) []string {
	var s []string
	for _, m := range c.VolumeMounts {
		s = append(s, m.MountPath)
	}
	return s
}

// within says whether p is dir or below it, and returns the rest.
func within(dir, p string) (string, bool) {
	dir, p = path.Clean(dir), path.Clean(p)
	if p == dir {
		return "", true
	}
	rest, ok := strings.CutPrefix(p, strings.TrimSuffix(dir, "/")+"/")
	return rest, ok
}

func volume(t *testing.T, spec *corev1.PodSpec, name string) corev1.Volume {
	t.Helper()
	for _, v := range spec.Volumes {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("volume %q is mounted but not in the pod spec", name)
	return corev1.Volume{}
}

func mirrorHostPort(t *testing.T, mirrorURL string) string {
	t.Helper()
	u, err := url.Parse(mirrorURL)
	if err != nil || u.Scheme != "http" || u.Host == "" || (u.Path != "" && u.Path != "/") {
		t.Fatalf("--mirror %q: want http://host:port (%v)", mirrorURL, err)
	}
	return u.Host
}

func metaOf(t *testing.T, o runtime.Object) metav1.Object {
	t.Helper()
	m, err := meta.Accessor(o)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func metaSelector(s *metav1.LabelSelector) (labels.Selector, error) {
	return metav1.LabelSelectorAsSelector(s)
}

// equalJSON compares two API values as they would be sent.
func equalJSON(a, b any) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && bytes.Equal(ja, jb)
}

func envVar(c *corev1.Container, name string) *corev1.EnvVar {
	i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == name })
	if i < 0 {
		return nil
	}
	return &c.Env[i]
}
