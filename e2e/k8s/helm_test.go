package k8s_test

import (
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/shoal-dev/shoal/bench/lab/kube"
	"github.com/shoal-dev/shoal/deploy"
)

// restGetter hands Helm the cluster's admin config, whose transport dials
// from inside the lab network; a kubeconfig file could not carry that.
type restGetter struct {
	cfg       *rest.Config
	namespace string
}

func (g restGetter) ToRESTConfig() (*rest.Config, error) { return rest.CopyConfig(g.cfg), nil }

func (g restGetter) ToDiscoveryClient() (discovery.CachedDiscoveryInterface, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(rest.CopyConfig(g.cfg))
	if err != nil {
		return nil, err
	}
	return memory.NewMemCacheClient(dc), nil
}

func (g restGetter) ToRESTMapper() (meta.RESTMapper, error) {
	dc, err := g.ToDiscoveryClient()
	if err != nil {
		return nil, err
	}
	return restmapper.NewDeferredDiscoveryRESTMapper(dc), nil
}

// ToRawKubeConfigLoader only names the namespace: every client Helm makes
// comes from ToRESTConfig.
func (g restGetter) ToRawKubeConfigLoader() clientcmd.ClientConfig {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["lab"] = &clientcmdapi.Cluster{Server: g.cfg.Host}
	cfg.Contexts["lab"] = &clientcmdapi.Context{Cluster: "lab", Namespace: g.namespace}
	cfg.CurrentContext = "lab"
	return clientcmd.NewDefaultClientConfig(*cfg, &clientcmd.ConfigOverrides{Context: clientcmdapi.Context{Namespace: g.namespace}})
}

// helmConfig is Helm's action configuration for the release's namespace
// on c, keeping releases in Secrets as the helm command does.
func helmConfig(t *testing.T, c *kube.Cluster) *action.Configuration {
	t.Helper()
	cfg := new(action.Configuration)
	getter := restGetter{cfg: c.RESTConfig(), namespace: deploy.Namespace}
	if err := cfg.Init(getter, deploy.Namespace, "secret", func(string, ...any) {}); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// installChart installs deploy/helm/shoal as release shoal in namespace
// shoal, which must exist, without waiting: the test waits for the pods
// itself, to say what each is doing if they do not come up.
func installChart(t *testing.T, cfg *action.Configuration, values map[string]any) {
	t.Helper()
	in := action.NewInstall(cfg)
	in.ReleaseName = deploy.ReleaseName
	in.Namespace = deploy.Namespace
	in.Timeout = 2 * time.Minute
	rel, err := in.RunWithContext(t.Context(), loadChart(t), values)
	if err != nil {
		t.Fatalf("helm install: %v", err)
	}
	t.Logf("helm install: release %s revision %d, status %s, chart %s", rel.Name, rel.Version, rel.Info.Status, rel.Chart.Metadata.Version)
}

// loadChart loads deploy/helm/shoal from this checkout.
func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	chrt, err := loader.Load(repoRoot + "/deploy/" + deploy.ChartDir)
	if err != nil {
		t.Fatal(err)
	}
	return chrt
}
