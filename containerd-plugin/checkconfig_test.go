package containerdplugin_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	containerdplugin "github.com/shoal-dev/shoal/containerd-plugin"
)

func TestCheckConfig(t *testing.T) {
	t.Parallel()
	const v2Fix = "[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\""
	const v3Fix = "[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = \"/etc/containerd/certs.d\""
	for _, tc := range []struct {
		name     string
		config   string
		want     containerdplugin.Report // Path is filled in
		warnings []string                // substrings, one per warning
	}{
		{
			name: "v2 with config_path",
			config: `version = 2
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d:/etc/docker/certs.d"
`,
			want: containerdplugin.Report{Version: 2, ConfigPath: "/etc/containerd/certs.d:/etc/docker/certs.d", HostsDir: "/etc/containerd/certs.d"},
		},
		{
			name:   "v2 without registry table",
			config: "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"registry.k8s.io/pause:3.9\"\n",
			want:   containerdplugin.Report{Version: 2, Fix: v2Fix},
		},
		{
			name: "v2 with a registry table but no config_path",
			config: `version = 2
[plugins."io.containerd.grpc.v1.cri".registry]
  [plugins."io.containerd.grpc.v1.cri".registry.headers]
    X-Meta = ["a"]
`,
			want: containerdplugin.Report{Version: 2, Fix: `config_path = "/etc/containerd/certs.d"`, FixTable: `[plugins."io.containerd.grpc.v1.cri".registry]`},
		},
		{
			name: "v2 with deprecated mirrors",
			config: `version = 2
[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
  endpoint = ["https://mirror.example.com"]
`,
			want:     containerdplugin.Report{Version: 2, Fix: v2Fix},
			warnings: []string{"mirrors is set"},
		},
		{
			name: "v2 discards unpacked layers",
			config: `version = 2
[plugins."io.containerd.grpc.v1.cri".containerd]
  discard_unpacked_layers = true
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d"
`,
			want:     containerdplugin.Report{Version: 2, ConfigPath: "/etc/containerd/certs.d", HostsDir: "/etc/containerd/certs.d", DiscardUnpackedLayers: true},
			warnings: []string{"discard_unpacked_layers = true"},
		},
		{
			name: "v3 with config_path",
			config: `version = 3
[plugins."io.containerd.cri.v1.images".registry]
  config_path = "/var/lib/rancher/certs.d"
`,
			want: containerdplugin.Report{Version: 3, ConfigPath: "/var/lib/rancher/certs.d", HostsDir: "/var/lib/rancher/certs.d"},
		},
		{
			name: "v4 (containerd 2.4) keeps CRI's keys where v3 has them",
			config: `version = 4
[plugins."io.containerd.cri.v1.images".registry]
  config_path = "/etc/containerd/certs.d"
`,
			want: containerdplugin.Report{Version: 4, ConfigPath: "/etc/containerd/certs.d", HostsDir: "/etc/containerd/certs.d"},
		},
		{
			name:   "v3 without config_path uses containerd 2's default",
			config: "version = 3\n",
			want:   containerdplugin.Report{Version: 3, HostsDir: "/etc/containerd/certs.d"},
		},
		{
			name: "v3 with mirrors has no default",
			config: `version = 3
[plugins."io.containerd.cri.v1.images".registry.mirrors."docker.io"]
  endpoint = ["https://mirror.example.com"]
`,
			want:     containerdplugin.Report{Version: 3, Fix: v3Fix},
			warnings: []string{"mirrors is set"},
		},
		{
			name: "v3 discards unpacked layers",
			config: `version = 3
[plugins."io.containerd.cri.v1.images"]
  discard_unpacked_layers = true
`,
			want:     containerdplugin.Report{Version: 3, HostsDir: "/etc/containerd/certs.d", DiscardUnpackedLayers: true},
			warnings: []string{"no layers to share"},
		},
		{
			name: "v3 key in a v2 file does not count",
			config: `version = 2
[plugins."io.containerd.cri.v1.images".registry]
  config_path = "/etc/containerd/certs.d"
`,
			want: containerdplugin.Report{Version: 2, Fix: v2Fix},
		},
		{
			name:   "no version is v1",
			config: "[plugins.cri.containerd]\n  discard_unpacked_layers = true\n",
			want:   containerdplugin.Report{Version: 1, Fix: "[plugins.cri.registry]\n  config_path = \"/etc/containerd/certs.d\"", DiscardUnpackedLayers: true},
			warnings: []string{
				"discard_unpacked_layers",
			},
		},
		{
			name:     "CRI disabled, imports",
			config:   "version = 2\nimports = [\"/etc/containerd/conf.d/*.toml\"]\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n",
			want:     containerdplugin.Report{Version: 2, Fix: v2Fix},
			warnings: []string{"plugin io.containerd.grpc.v1.cri is disabled", "imports"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "config.toml")
			if err := os.WriteFile(path, []byte(tc.config), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := containerdplugin.CheckConfig(path)
			if err != nil {
				t.Fatal(err)
			}
			tc.want.Path = path
			warnings := got.Warnings
			got.Warnings, tc.want.Warnings = nil, nil
			if !reportEqual(got, tc.want) {
				t.Errorf("CheckConfig =\n%+v\nwant\n%+v", got, tc.want)
			}
			if len(warnings) != len(tc.warnings) {
				t.Errorf("warnings %q, want ones mentioning %q", warnings, tc.warnings)
			}
			for i := range min(len(warnings), len(tc.warnings)) {
				if !strings.Contains(warnings[i], tc.warnings[i]) {
					t.Errorf("warning %q does not mention %q", warnings[i], tc.warnings[i])
				}
			}

			// Adding the Fix as told makes CRI read hosts.toml from the default dir.
			if got.Fix == "" || len(tc.warnings) > 0 && strings.Contains(tc.warnings[0], "mirrors") {
				return
			}
			fixed := tc.config + "\n" + got.Fix + "\n"
			if got.FixTable != "" {
				fixed = strings.Replace(tc.config, got.FixTable+"\n", got.FixTable+"\n  "+got.Fix+"\n", 1)
			}
			if err := os.WriteFile(path, []byte(fixed), 0o644); err != nil {
				t.Fatal(err)
			}
			again, err := containerdplugin.CheckConfig(path)
			if err != nil {
				t.Fatalf("after the fix: %v\n%s", err, fixed)
			}
			if again.HostsDir != containerdplugin.DefaultHostsDir || again.Fix != "" {
				t.Errorf("after the fix: %+v\n%s", again, fixed)
			}
		})
	}
}

func reportEqual(a, b containerdplugin.Report) bool {
	return a.Path == b.Path && a.Version == b.Version && a.ConfigPath == b.ConfigPath && a.HostsDir == b.HostsDir &&
		a.Fix == b.Fix && a.FixTable == b.FixTable && a.DiscardUnpackedLayers == b.DiscardUnpackedLayers &&
		slices.Equal(a.Warnings, b.Warnings)
}

func TestCheckConfigErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := containerdplugin.CheckConfig(filepath.Join(dir, "absent.toml")); !errors.Is(err, fs.ErrNotExist) || !errdefs.IsNotFound(err) {
		t.Errorf("missing file: %v, want ErrNotExist and NotFound", err)
	}
	for name, content := range map[string]string{
		"bad.toml":    "version = 2\n[plugins\n",
		"future.toml": "version = 5\n",
		"string.toml": "version = \"2\"\n",
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := containerdplugin.CheckConfig(path); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: err = %v, want one naming the file", name, err)
		}
	}
}
