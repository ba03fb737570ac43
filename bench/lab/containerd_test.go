package lab

import (
	"cmp"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

func TestContainerdPullFromRegistry(t *testing.T) {
	t.Parallel()
	cases := []struct {
		flavor      Flavor
		snapshotter string // "" probes
	}{
		{Flavor16, ""}, {Flavor2, ""}, {Flavor16, "native"}, {Flavor2, "native"},
	}
	for _, tc := range cases {
		flavor := tc.flavor
		t.Run(string(flavor)+"/"+cmp.Or(tc.snapshotter, "probed"), func(t *testing.T) {
			t.Parallel()
			requireRoot(t, DefaultRegistryBinary)
			ctx := t.Context()
			log := testLogger(t)
			reg, err := StartRegistry(ctx, RegistryConfig{Logger: log})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { closeOrError(t, reg.Close) })
			im, err := PushImage(ctx, reg.Addr(), "lab/pull", "v1", 3, 4<<20)
			if err != nil {
				t.Fatal(err)
			}
			c, err := StartContainerd(ctx, ContainerdConfig{Flavor: flavor, Snapshotter: tc.snapshotter, Logger: log})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { closeOrError(t, c.Close) })
			if err := c.WriteHosts(reg.Addr(), Hosts{Server: "http://" + reg.Addr()}); err != nil {
				t.Fatal(err)
			}

			pulls := []struct {
				name string
				pull func() error
			}{
				{"ctr", func() error { return c.CtrPull(ctx, im.Ref) }},
				{"cri", func() error { return c.CRIPull(ctx, im.Ref) }},
			}
			for i, p := range pulls {
				start := time.Now()
				if err := p.pull(); err != nil {
					t.Fatalf("%s pull: %v\n%s", p.name, err, tail(c.LogPath(), 20))
				}
				t.Logf("%s pull of %d bytes into %s took %v", p.name, im.Size, c.Snapshotter(), time.Since(start))
				if n, err := c.Ctr(ctx, "snapshots", "--snapshotter", c.Snapshotter(), "ls"); err != nil || strings.Count(string(n), "\n") < len(im.Layers)+1 {
					t.Errorf("%s pull: %s snapshots (%v):\n%s", p.name, c.Snapshotter(), err, n)
				}
				ok, err := c.HasImage(ctx, im.Ref)
				if err != nil || !ok {
					t.Fatalf("%s pull: image present %v, %v", p.name, ok, err)
				}
				have, err := c.ContentDigests(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for _, d := range append(im.Blobs(), im.Digest) {
					if !slices.Contains(have, d) {
						t.Errorf("%s pull: content store lacks %s", p.name, d)
					}
				}
				gets, err := reg.BlobGets()
				if err != nil {
					t.Fatal(err)
				}
				for _, d := range im.Blobs() {
					if gets[d] != i+1 {
						t.Errorf("after %s pull: %d GETs of %s, want %d", p.name, gets[d], d, i+1)
					}
				}
				if err := c.RemoveImage(ctx, im.Ref); err != nil {
					t.Fatal(err)
				}
				have, err = c.ContentDigests(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for _, d := range im.Layers {
					if slices.Contains(have, d) {
						t.Errorf("after remove: content store still has %s", d)
					}
				}
			}
			if b, err := os.ReadFile(c.LogPath()); err != nil || strings.Contains(string(b), "hosts.toml") {
				t.Errorf("daemon log mentions hosts.toml (%v):\n%s", err, grepLog(c.LogPath()))
			}
			reqs, err := reg.Requests()
			if err != nil {
				t.Fatal(err)
			}
			for _, q := range reqs {
				if q.UserAgent != "go-containerregistry" {
					t.Logf("registry saw %s %s %d %dB ua=%q", q.Method, q.URI, q.Status, q.BytesWritten, q.UserAgent)
				}
			}
		})
	}
}

func closeOrError(t *testing.T, close func() error) {
	t.Helper()
	if err := close(); err != nil {
		t.Error(err)
	}
}

func grepLog(p string) string {
	b, _ := os.ReadFile(p)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "level=warn") || strings.Contains(l, "level=error") || strings.Contains(l, "snapshotter") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestConfigTOMLForKubelet(t *testing.T) {
	t.Parallel()
	c := &Containerd{dir: "/tmp/x", cfg: ContainerdConfig{
		Flavor: Flavor2, Snapshotter: "overlayfs", LogLevel: "info",
		Kubelet: &KubeletCRI{SandboxImage: "10.0.0.2:5000/lab/labpod:v1", CNIConfDir: "/tmp/x/net.d", CNIBinDirs: []string{"/usr/lib/cni"}},
	}}
	var got map[string]any
	if _, err := toml.Decode(c.configTOML(), &got); err != nil {
		t.Fatalf("config does not parse: %v\n%s", err, c.configTOML())
	}
	plugins := got["plugins"].(map[string]any)
	images := plugins["io.containerd.cri.v1.images"].(map[string]any)
	if s := images["pinned_images"].(map[string]any)["sandbox"]; s != "10.0.0.2:5000/lab/labpod:v1" {
		t.Errorf("pinned sandbox image = %v", s)
	}
	rt := plugins["io.containerd.cri.v1.runtime"].(map[string]any)
	if rt["restrict_oom_score_adj"] != true {
		t.Errorf("restrict_oom_score_adj = %v, want true", rt["restrict_oom_score_adj"])
	}
	cni := rt["cni"].(map[string]any)
	if cni["conf_dir"] != "/tmp/x/net.d" || len(cni["bin_dirs"].([]any)) != 1 {
		t.Errorf("cni = %v", cni)
	}

	c.cfg.Kubelet = nil
	if strings.Contains(c.configTOML(), "io.containerd.cri.v1.runtime") {
		t.Errorf("runtime settings without Kubelet:\n%s", c.configTOML())
	}
}
