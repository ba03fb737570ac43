package containerdplugin_test

import (
	"bytes"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/pelletier/go-toml/v2"

	containerdplugin "github.com/shoal-dev/shoal/containerd-plugin"
)

const mirror = "http://127.0.0.1:7500"

const block = `# BEGIN shoal mirror: written by shoal, which keeps any original file as hosts.toml.shoal-backup
[host."http://127.0.0.1:7500"]
  capabilities = ["pull", "resolve"]
# END shoal mirror
`

const header = "# containerd asks the shoal mirror first, the registry last.\n"

// otherMirrors is a hosts.toml someone else wrote, with comments, top-level
// keys, two mirrors and a sub-table.
const otherMirrors = `# Managed by the platform team.
server = "https://registry.example.com"
capabilities = ["pull", "resolve"]

# office cache, tried first until now
[host."https://cache.office:5000"]
  capabilities = ["pull", "resolve"]
  skip_verify = true

[host."https://cache.office:5000".header]
  x-custom = ["1"]

[host."https://backup.example.com"]
  capabilities = ["pull"]
`

const otherMirrorsConfigured = `# Managed by the platform team.
server = "https://registry.example.com"
capabilities = ["pull", "resolve"]

` + block + `
# office cache, tried first until now
[host."https://cache.office:5000"]
  capabilities = ["pull", "resolve"]
  skip_verify = true

[host."https://cache.office:5000".header]
  x-custom = ["1"]

[host."https://backup.example.com"]
  capabilities = ["pull"]
`

// readTree returns every file under dir by slash path, and a marker for
// every directory.
func readTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			out[rel+"/"] = ""
			return nil
		}
		b, err := os.ReadFile(p)
		out[rel] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for rel, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestConfigure(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		registries []string
		before     map[string]string
		want       map[string]string // the whole tree after Configure
		changed    []string
	}{
		{
			name:       "fresh dir, docker.io maps to registry-1",
			registries: []string{"docker.io"},
			want: map[string]string{
				"docker.io/":           "",
				"docker.io/hosts.toml": header + "server = \"https://registry-1.docker.io\"\n\n" + block,
			},
			changed: []string{"docker.io/hosts.toml"},
		},
		{
			name: "no registries means _default, without server",
			want: map[string]string{
				"_default/":           "",
				"_default/hosts.toml": header + "\n" + block,
			},
			changed: []string{"_default/hosts.toml"},
		},
		{
			name:       "http scheme is kept for a plain-HTTP registry",
			registries: []string{"http://127.0.0.1:5000"},
			want: map[string]string{
				"127.0.0.1:5000/":           "",
				"127.0.0.1:5000/hosts.toml": header + "server = \"http://127.0.0.1:5000\"\n\n" + block,
			},
			changed: []string{"127.0.0.1:5000/hosts.toml"},
		},
		{
			name:       "host and port without scheme is https; duplicates collapse",
			registries: []string{"registry.local:5000", "ghcr.io", "registry.local:5000"},
			want: map[string]string{
				"registry.local:5000/":           "",
				"registry.local:5000/hosts.toml": header + "server = \"https://registry.local:5000\"\n\n" + block,
				"ghcr.io/":                       "",
				"ghcr.io/hosts.toml":             header + "server = \"https://ghcr.io\"\n\n" + block,
			},
			changed: []string{"registry.local:5000/hosts.toml", "ghcr.io/hosts.toml"},
		},
		{
			name:       "existing file with other mirrors: shoal's host goes first, the rest is kept",
			registries: []string{"registry.example.com"},
			before:     map[string]string{"registry.example.com/hosts.toml": otherMirrors, "registry.example.com/ca.crt": "cert"},
			want: map[string]string{
				"registry.example.com/":                        "",
				"registry.example.com/ca.crt":                  "cert",
				"registry.example.com/hosts.toml":              otherMirrorsConfigured,
				"registry.example.com/hosts.toml.shoal-backup": otherMirrors,
			},
			changed: []string{"registry.example.com/hosts.toml"},
		},
		{
			name:       "existing file without tables: shoal's host is appended",
			registries: []string{"quay.io"},
			before:     map[string]string{"quay.io/hosts.toml": `server = "https://quay.io"`},
			want: map[string]string{
				"quay.io/":                        "",
				"quay.io/hosts.toml":              "server = \"https://quay.io\"\n\n" + block,
				"quay.io/hosts.toml.shoal-backup": `server = "https://quay.io"`,
			},
			changed: []string{"quay.io/hosts.toml"},
		},
		{
			name:       "existing file that starts with a table",
			registries: []string{"_default"},
			before:     map[string]string{"_default/hosts.toml": "[host.\"https://m.example.com\"]\n"},
			want: map[string]string{
				"_default/":                        "",
				"_default/hosts.toml":              block + "\n[host.\"https://m.example.com\"]\n",
				"_default/hosts.toml.shoal-backup": "[host.\"https://m.example.com\"]\n",
			},
			changed: []string{"_default/hosts.toml"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			writeTree(t, dir, tc.before)
			opts := containerdplugin.ConfigureOptions{HostsDir: dir, Mirror: mirror, Registries: tc.registries}
			changed, err := containerdplugin.Configure(opts)
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, c := range tc.changed {
				want = append(want, filepath.Join(dir, filepath.FromSlash(c)))
			}
			if !slices.Equal(changed, want) {
				t.Errorf("changed = %q, want %q", changed, want)
			}
			got := readTree(t, dir)
			if !maps.Equal(got, tc.want) {
				for k := range tc.want {
					if got[k] != tc.want[k] {
						t.Errorf("%s:\n%s\nwant:\n%s", k, got[k], tc.want[k])
					}
				}
				t.Fatalf("tree = %q, want %q", slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(tc.want)))
			}
			for rel, content := range got {
				if strings.HasSuffix(rel, "hosts.toml") {
					checkHostsOrder(t, rel, content)
				}
			}

			// Idempotent: nothing changes, the backup stays the original.
			changed, err = containerdplugin.Configure(opts)
			if err != nil {
				t.Fatal(err)
			}
			if len(changed) != 0 {
				t.Errorf("second Configure changed %q", changed)
			}
			if again := readTree(t, dir); !maps.Equal(again, got) {
				t.Errorf("second Configure changed the tree:\n%q\nwant\n%q", again, got)
			}

			// Unconfigure restores what was there, byte for byte.
			if err := containerdplugin.Unconfigure(dir, tc.registries); err != nil {
				t.Fatal(err)
			}
			ref := t.TempDir()
			writeTree(t, ref, tc.before)
			before := readTree(t, ref)
			if after := readTree(t, dir); !maps.Equal(after, before) {
				t.Errorf("after Unconfigure: %q, want %q", after, before)
			}
		})
	}
}

// checkHostsOrder parses a hosts.toml as containerd does and checks that the
// mirror is the first host.
func checkHostsOrder(t *testing.T, name, content string) {
	t.Helper()
	var v struct {
		Server string                    `toml:"server"`
		Host   map[string]map[string]any `toml:"host"`
	}
	if err := toml.Unmarshal([]byte(content), &v); err != nil {
		t.Errorf("%s does not parse: %v", name, err)
		return
	}
	if caps := v.Host[mirror]["capabilities"]; !slices.Equal(caps.([]any), []any{"pull", "resolve"}) {
		t.Errorf("%s: mirror capabilities %v", name, caps)
	}
	first := strings.Index(content, "[host.")
	if first < 0 || !strings.HasPrefix(content[first:], `[host."`+mirror+`"]`) {
		t.Errorf("%s: the mirror is not the first host:\n%s", name, content)
	}
}

func TestConfigureRefusesAndWritesNothing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		mirror     string
		registries []string
		before     map[string]string
		is         func(error) bool
		mention    string
	}{
		{
			name:       "unparseable existing file",
			mirror:     mirror,
			registries: []string{"ghcr.io", "broken.example.com"},
			before:     map[string]string{"broken.example.com/hosts.toml": "server = \"https://x\"\n[host.\"a\"\n"},
			is:         errdefs.IsFailedPrecondition,
			mention:    "broken.example.com/hosts.toml is not valid TOML",
		},
		{
			name:       "existing file already names the mirror",
			mirror:     mirror,
			registries: []string{"ghcr.io"},
			before:     map[string]string{"ghcr.io/hosts.toml": "[host.\"http://127.0.0.1:7500\"]\n  capabilities = [\"pull\"]\n"},
			is:         errdefs.IsAlreadyExists,
			mention:    "already has",
		},
		{name: "mirror without scheme", mirror: "127.0.0.1:7500", is: errdefs.IsInvalidArgument, mention: "mirror"},
		{name: "mirror with another scheme", mirror: "ftp://127.0.0.1:7500", is: errdefs.IsInvalidArgument, mention: "http or https"},
		{name: "registry with a path", mirror: mirror, registries: []string{"ghcr.io/foo"}, is: errdefs.IsInvalidArgument, mention: "ghcr.io/foo"},
		{name: "registry URL with a path", mirror: mirror, registries: []string{"http://ghcr.io/foo"}, is: errdefs.IsInvalidArgument, mention: "http://ghcr.io/foo"},
		{name: "registry with a bad port", mirror: mirror, registries: []string{"ghcr.io:99999"}, is: errdefs.IsInvalidArgument, mention: "port"},
		{name: "registry that climbs out", mirror: mirror, registries: []string{".."}, is: errdefs.IsInvalidArgument, mention: ".."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			writeTree(t, dir, tc.before)
			before := readTree(t, dir)
			changed, err := containerdplugin.Configure(containerdplugin.ConfigureOptions{HostsDir: dir, Mirror: tc.mirror, Registries: tc.registries})
			if err == nil || !tc.is(err) || !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("err = %v, want one mentioning %q of the right kind", err, tc.mention)
			}
			if len(changed) != 0 {
				t.Errorf("changed = %q", changed)
			}
			if after := readTree(t, dir); !maps.Equal(after, before) {
				t.Errorf("tree changed: %q, want %q", after, before)
			}
		})
	}
}

func TestConfigureKeepsMode(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "ghcr.io", "hosts.toml")
	writeTree(t, dir, map[string]string{"ghcr.io/hosts.toml": otherMirrors})
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := containerdplugin.Configure(containerdplugin.ConfigureOptions{HostsDir: dir, Mirror: mirror, Registries: []string{"ghcr.io"}}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + containerdplugin.BackupSuffix} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, %v; want 0600", p, fi.Mode().Perm(), err)
		}
	}
	if err := containerdplugin.Unconfigure(dir, []string{"ghcr.io"}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("restored mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
}

// A file replaced after Configure is the new original: Configure backs it
// up instead and Unconfigure restores it.
func TestConfigureAfterFileReplaced(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	opts := containerdplugin.ConfigureOptions{HostsDir: dir, Mirror: mirror, Registries: []string{"ghcr.io"}}
	writeTree(t, dir, map[string]string{"ghcr.io/hosts.toml": "server = \"https://old\"\n"})
	if _, err := containerdplugin.Configure(opts); err != nil {
		t.Fatal(err)
	}
	writeTree(t, dir, map[string]string{"ghcr.io/hosts.toml": otherMirrors})
	changed, err := containerdplugin.Configure(opts)
	if err != nil || len(changed) != 1 {
		t.Fatalf("Configure = %q, %v", changed, err)
	}
	got := readTree(t, dir)
	if got["ghcr.io/hosts.toml"] != otherMirrorsConfigured || got["ghcr.io/hosts.toml.shoal-backup"] != otherMirrors {
		t.Errorf("tree %q", got)
	}
	if err := containerdplugin.Unconfigure(dir, opts.Registries); err != nil {
		t.Fatal(err)
	}
	if got := readTree(t, dir); got["ghcr.io/hosts.toml"] != otherMirrors || len(got) != 2 {
		t.Errorf("after Unconfigure: %q", got)
	}
}

func TestUnconfigureLeavesOthersAlone(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	files := map[string]string{
		"ghcr.io/hosts.toml":              otherMirrors, // not shoal's
		"ghcr.io/hosts.toml.shoal-backup": "older",      // so this is stale
		"_default/ca.crt":                 "cert",       // a directory with something else in it
		"_default/hosts.toml":             header + "\n" + block,
	}
	writeTree(t, dir, files)
	if err := containerdplugin.Unconfigure(dir, []string{"ghcr.io", "_default", "absent.example.com"}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"ghcr.io/": "", "ghcr.io/hosts.toml": otherMirrors, "_default/": "", "_default/ca.crt": "cert"}
	if got := readTree(t, dir); !maps.Equal(got, want) {
		t.Errorf("tree %q, want %q", got, want)
	}
}

func TestConfigureWritesNoTempFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"ghcr.io/hosts.toml": otherMirrors})
	if _, err := containerdplugin.Configure(containerdplugin.ConfigureOptions{HostsDir: dir, Mirror: mirror, Registries: []string{"ghcr.io", "docker.io"}}); err != nil {
		t.Fatal(err)
	}
	for rel := range readTree(t, dir) {
		if strings.Contains(rel, ".tmp-") {
			t.Errorf("left %s behind", rel)
		}
	}
	if !bytes.Contains([]byte(readTree(t, dir)["docker.io/hosts.toml"]), []byte("registry-1.docker.io")) {
		t.Error("docker.io not configured")
	}
}

// A new mirror address replaces shoal's table instead of adding a second.
func TestConfigureNewMirror(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"ghcr.io/hosts.toml": otherMirrors})
	for _, m := range []string{mirror, "http://127.0.0.1:7600/"} {
		if _, err := containerdplugin.Configure(containerdplugin.ConfigureOptions{HostsDir: dir, Mirror: m, Registries: []string{"ghcr.io"}}); err != nil {
			t.Fatal(err)
		}
	}
	got := readTree(t, dir)
	want := strings.ReplaceAll(otherMirrorsConfigured, "127.0.0.1:7500", "127.0.0.1:7600")
	if got["ghcr.io/hosts.toml"] != want || got["ghcr.io/hosts.toml.shoal-backup"] != otherMirrors {
		t.Errorf("hosts.toml:\n%s\nwant:\n%s", got["ghcr.io/hosts.toml"], want)
	}
}

// TestMirroredRegistries: the registries whose hosts.toml shoal configured,
// which peers may ask the node to fetch from; _default and files shoal did
// not write are not among them.
func TestMirroredRegistries(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"quay.io/hosts.toml":         otherMirrors, // not shoal's
		"notes/README":               "not a registry",
		"registry.local:5000/x.toml": "no hosts.toml here",
	})
	if _, err := containerdplugin.Configure(containerdplugin.ConfigureOptions{HostsDir: dir, Mirror: mirror, Registries: []string{"ghcr.io", "docker.io", "registry.local:5000", "_default"}}); err != nil {
		t.Fatal(err)
	}
	got, err := containerdplugin.MirroredRegistries(dir)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if want := []string{"docker.io", "ghcr.io", "registry.local:5000"}; !slices.Equal(got, want) {
		t.Fatalf("mirrored %v, want %v", got, want)
	}
	if got, err := containerdplugin.MirroredRegistries(filepath.Join(dir, "none")); err != nil || len(got) != 0 {
		t.Fatalf("a missing hosts dir: %v, %v", got, err)
	}
}
