package deploy_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/shoal-dev/shoal/deploy"
)

// TestChartLint runs what `helm lint --strict` runs (Chart.yaml, values,
// every template rendered and parsed, dependencies) with the default
// values and with each preset, and fails on warnings as well as errors.
func TestChartLint(t *testing.T) {
	t.Parallel()
	kv, err := chartutil.ParseKubeVersion(deploy.KubeVersion)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]map[string]any{"defaults": nil}
	for name := range knownLayouts() {
		cases["preset "+name] = map[string]any{"preset": name}
	}
	cases["everything on"] = map[string]any{
		"registries":         []any{"docker.io"},
		"insecureRegistries": []any{"10.0.0.5:5000"},
		"registryAuth":       map[string]any{"existingSecret": "regcred"},
		"serviceMonitor":     map[string]any{"enabled": true},
	}
	for name, values := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			l := lint.AllWithKubeVersion(deploy.ChartDir, values, deploy.Namespace, kv)
			for _, m := range l.Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("%s", m)
				} else {
					t.Logf("%s", m)
				}
			}
		})
	}
}

// TestPlainManifestsMatchChart fails when deploy/kubernetes drifts from the
// chart rendered with its default values: `make manifests` refreshes it.
func TestPlainManifestsMatchChart(t *testing.T) {
	t.Parallel()
	want, err := deploy.RenderPlainManifests(t.Context(), ".")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range slices.Sorted(maps.Keys(want)) {
		got, err := os.ReadFile(filepath.FromSlash(p))
		if err != nil {
			t.Errorf("%v: run `make manifests`", err)
			continue
		}
		if !bytes.Equal(got, want[p]) {
			t.Errorf("deploy/%s differs from the chart's render (first difference at line %d): run `make manifests`", p, firstDiffLine(got, want[p]))
		}
	}
	for _, dir := range []string{deploy.ManifestsDir, deploy.UnconfigureDir} {
		extra, err := filepath.Glob(filepath.Join(filepath.FromSlash(dir), "*.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range extra {
			if _, ok := want[filepath.ToSlash(p)]; !ok {
				t.Errorf("deploy/%s is not rendered from the chart: run `make manifests`", p)
			}
		}
	}
}

func firstDiffLine(a, b []byte) int {
	la, lb := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	for i := range min(len(la), len(lb)) {
		if la[i] != lb[i] {
			return i + 1
		}
	}
	return min(len(la), len(lb)) + 1
}

// TestKustomizeBuildsTheChart builds the plain manifests with kustomize, as
// `kubectl apply -k` would, and compares the objects with the chart's:
// the same objects, except that kustomize makes the cluster-key Secret
// from a file instead of the chart's random key.
func TestKustomizeBuildsTheChart(t *testing.T) {
	t.Parallel()
	docs, err := deploy.Render(t.Context(), deploy.ChartDir, deploy.ReleaseName, deploy.Namespace, nil)
	if err != nil {
		t.Fatal(err)
	}
	chartObjs, err := decodeAll(docs)
	if err != nil {
		t.Fatal(err)
	}

	// The committed tree, plus the key file an operator would make.
	mem := filesys.MakeFsInMemory()
	err = filepath.WalkDir(deploy.ManifestsDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".yaml") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return mem.WriteFile("/"+filepath.ToSlash(p), b)
	})
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	keyText := base64.StdEncoding.EncodeToString(key) + "\n"
	if err := mem.WriteFile(path.Join("/", deploy.ManifestsDir, deploy.ClusterKeyFile), []byte(keyText)); err != nil {
		t.Fatal(err)
	}

	for _, dir := range []string{deploy.ManifestsDir, deploy.UnconfigureDir} {
		t.Run(dir, func(t *testing.T) {
			k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
			rm, err := k.Run(mem, "/"+dir)
			if err != nil {
				t.Fatal(err)
			}
			var built []deploy.Doc
			for _, r := range rm.Resources() {
				y, err := r.AsYAML()
				if err != nil {
					t.Fatal(err)
				}
				built = append(built, deploy.Doc{Template: "kustomize " + r.CurId().String(), YAML: string(y)})
			}
			objs, err := decodeAll(built)
			if err != nil {
				t.Fatal(err)
			}
			var want []object
			for _, o := range chartObjs {
				if o.IsHook() == (dir == deploy.UnconfigureDir) {
					want = append(want, o)
				}
			}
			if len(objs) != len(want) {
				t.Fatalf("kustomize built %d objects, the chart renders %d", len(objs), len(want))
			}
			for _, w := range want {
				wk := w.obj.GetObjectKind().GroupVersionKind().Kind
				wm := metaOf(t, w.obj)
				i := slices.IndexFunc(objs, func(o object) bool {
					m := metaOf(t, o.obj)
					return o.obj.GetObjectKind().GroupVersionKind().Kind == wk && m.GetName() == wm.GetName() && m.GetNamespace() == wm.GetNamespace()
				})
				if i < 0 {
					t.Errorf("kustomize did not build %s %s/%s", wk, wm.GetNamespace(), wm.GetName())
					continue
				}
				got := objs[i].obj
				if s, ok := w.obj.(*corev1.Secret); ok {
					gs := got.(*corev1.Secret)
					if gs.Type != s.Type || !slices.Equal(slices.Sorted(maps.Keys(gs.Data)), slices.Sorted(maps.Keys(s.Data))) {
						t.Errorf("kustomize's Secret %s has type %s and keys %v; the chart's %s and %v", gs.Name, gs.Type, slices.Collect(maps.Keys(gs.Data)), s.Type, slices.Collect(maps.Keys(s.Data)))
					}
					if string(gs.Data[deploy.ClusterKeyFile]) != keyText {
						t.Errorf("kustomize's Secret holds %q, not the key file", gs.Data[deploy.ClusterKeyFile])
					}
					continue
				}
				if !equality.Semantic.DeepEqual(got, w.obj) {
					t.Errorf("kustomize's %s %s differs from the chart's", wk, wm.GetName())
				}
			}
		})
	}
}
