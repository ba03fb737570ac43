package containerdplugin

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	burnt "github.com/BurntSushi/toml"
	"github.com/containerd/errdefs"
	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

const fuzzMirror = "http://127.0.0.1:7500"

// FuzzConfigure runs Configure on a hosts dir holding an arbitrary
// hosts.toml (or none), for an arbitrary registry and mirror option. Either
// Configure refuses with a clear error (invalid option, unparseable file,
// the mirror already listed) and leaves the dir untouched, or:
//   - the registry's directory is one element directly under the hosts dir;
//   - the file parses, with go-toml and, when it read the original, with
//     BurntSushi/toml too, to the original's values plus shoal's host;
//   - containerd 2.x's host order is shoal's mirror, then the original's;
//   - a second Configure changes nothing;
//   - Unconfigure restores the dir exactly, bytes and file mode.
func FuzzConfigure(f *testing.F) {
	for _, seed := range []struct {
		existing string
		has      bool
		reg      string
		mirror   string
	}{
		{"", false, "", fuzzMirror},
		{"", false, "docker.io", fuzzMirror},
		{"", false, "http://registry.local:5000", "https://[::1]:7500/x/"},
		{"server = \"https://registry.example.com\"\n", true, "registry.example.com", fuzzMirror},
		{"# Managed\nserver = \"https://r.example\"\n\n# office cache\n[host.\"https://cache:5000\"]\n  capabilities = [\"pull\"]\n\n[host.\"https://cache:5000\".header]\n  x = [\"1\"]\n", true, "", fuzzMirror},
		{"[host.\"" + fuzzMirror + "\"]\n", true, "", fuzzMirror},
		{"[host.\"" + fuzzMirror + "\".header]\nx=[\"1\"]\n", true, "", fuzzMirror},
		{"host.\"https://a\".capabilities = [\"pull\"]\n", true, "", fuzzMirror},
		{"[[host]]\nx=1\n", true, "", fuzzMirror},
		{"server = 'x'", true, "", fuzzMirror},
		{"not toml [", true, "", fuzzMirror},
		{"", true, "../x", fuzzMirror},
		{"", false, "http://..:80", fuzzMirror},
		{"", false, "", "http://127.0.0.1:7500/\"]\n[x]"},
		{"# BEGIN shoal mirror\n", true, "", fuzzMirror},
		{"a = 1\r\n[b]\r\nc = 2\r\n", true, "", fuzzMirror},
		{"[host.'https://a']\n[host.\"https://b\"]\n[host.'https://a'.header]\n", true, "", fuzzMirror},
	} {
		f.Add([]byte(seed.existing), seed.has, seed.reg, seed.mirror)
	}
	f.Fuzz(func(t *testing.T, existing []byte, has bool, reg, mirrorOpt string) {
		hostsDir := t.TempDir()
		r, regErr := parseRegistry(reg)
		if regErr == nil {
			if r.dir == "" || r.dir == "." || r.dir == ".." || filepath.Base(r.dir) != r.dir || strings.ContainsAny(r.dir, "/\\\x00") {
				t.Fatalf("registry %q maps to directory %q", reg, r.dir)
			}
			if has {
				dir := filepath.Join(hostsDir, r.dir)
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, HostsFile), existing, 0o640); err != nil {
					t.Fatal(err)
				}
			}
		}
		before := snapshot(t, hostsDir)
		opts := ConfigureOptions{HostsDir: hostsDir, Mirror: mirrorOpt}
		if reg != "" {
			opts.Registries = []string{reg}
		}
		_, err := Configure(opts)
		if err != nil {
			if errdefs.IsInternal(err) || !(errdefs.IsInvalidArgument(err) || errdefs.IsFailedPrecondition(err) || errdefs.IsAlreadyExists(err)) {
				t.Fatalf("Configure: %v", err)
			}
			if after := snapshot(t, hostsDir); !reflect.DeepEqual(after, before) {
				t.Fatalf("a refused Configure changed the hosts dir: %v", err)
			}
			return
		}
		if regErr != nil {
			t.Fatalf("Configure accepted registry %q that parseRegistry refuses: %v", reg, regErr)
		}
		mirror, err := parseMirror(mirrorOpt)
		if err != nil {
			t.Fatalf("Configure accepted mirror %q that parseMirror refuses: %v", mirrorOpt, err)
		}
		got, err := os.ReadFile(filepath.Join(hostsDir, r.dir, HostsFile))
		if err != nil {
			t.Fatal(err)
		}
		var orig []byte // the original's content; nil when there was none
		if has && !isShoals(existing) {
			orig = existing
		}
		checkMerged(t, orig, got, r, mirror)

		configured := snapshot(t, hostsDir)
		if changed, err := Configure(opts); err != nil || len(changed) != 0 {
			t.Fatalf("second Configure: changed %v, %v", changed, err)
		}
		if again := snapshot(t, hostsDir); !reflect.DeepEqual(again, configured) {
			t.Fatal("second Configure changed the hosts dir")
		}
		if err := Unconfigure(hostsDir, opts.Registries); err != nil {
			t.Fatalf("Unconfigure: %v", err)
		}
		after := snapshot(t, hostsDir)
		if has && orig == nil {
			// A file with shoal's marker is shoal's: Unconfigure removes it.
			if _, ok := after[filepath.Join(r.dir, HostsFile)]; ok {
				t.Fatalf("Unconfigure left shoal's file")
			}
			return
		}
		if !reflect.DeepEqual(after, before) {
			t.Fatalf("Unconfigure left %v, want %v", after, before)
		}
	})
}

// checkMerged checks the file Configure wrote against the original.
func checkMerged(t *testing.T, orig, got []byte, r registry, mirror string) {
	t.Helper()
	shoals := map[string]any{"capabilities": []any{"pull", "resolve"}}

	var want, have map[string]any
	if orig != nil {
		if err := toml.Unmarshal(orig, &want); err != nil {
			t.Fatalf("Configure accepted a file go-toml refuses: %v", err)
		}
	} else {
		want = map[string]any{}
		if r.server != "" {
			want["server"] = r.server
		}
	}
	if err := toml.Unmarshal(got, &have); err != nil {
		t.Fatalf("result does not parse: %v\n%s", err, got)
	}
	if !reflect.DeepEqual(have, withHost(want, mirror, shoals)) {
		t.Fatalf("result holds %v, want the original's %v and shoal's host\n%s", have, want, got)
	}

	// A second, independent parser must agree wherever it read the original.
	var bwant, bhave map[string]any
	if orig == nil || burnt.Unmarshal(orig, &bwant) == nil {
		if orig == nil {
			bwant = map[string]any{}
			if r.server != "" {
				bwant["server"] = r.server
			}
		}
		if err := burnt.Unmarshal(got, &bhave); err != nil {
			t.Fatalf("BurntSushi/toml read the original but not the result: %v\n%s", err, got)
		}
		if !reflect.DeepEqual(bhave, withHost(bwant, mirror, shoals)) {
			t.Fatalf("BurntSushi/toml: result holds %v, want %v and shoal's host\n%s", bhave, bwant, got)
		}
	}

	hosts := containerdHosts(got)
	var wantHosts []string
	if orig != nil {
		wantHosts = containerdHosts(orig)
	}
	if len(hosts) == 0 || hosts[0] != mirror || !slices.Equal(hosts[1:], wantHosts) {
		t.Fatalf("containerd tries %q, want %q then %q\n%s", hosts, mirror, wantHosts, got)
	}
}

// withHost returns a copy of doc with host[name] = table added.
func withHost(doc map[string]any, name string, table map[string]any) map[string]any {
	out := make(map[string]any, len(doc)+1)
	for k, v := range doc {
		out[k] = v
	}
	hosts := map[string]any{}
	if old, ok := out["host"].(map[string]any); ok {
		for k, v := range old {
			hosts[k] = v
		}
	}
	hosts[name] = table
	out["host"] = hosts
	return out
}

// containerdHosts lists hosts in the order containerd 2.x tries them: its
// getSortedHosts (core/remotes/docker/config/hosts.go, Apache-2.0),
// which also counts a [host.X.sub] table that is not next to [host.X].
func containerdHosts(b []byte) []string {
	var hosts []string
	p := unstable.Parser{}
	p.Reset(b)
	var host string
	for p.NextExpression() {
		e := p.Expression()
		if e.Kind != unstable.Table {
			continue
		}
		var parts []string
		for it := e.Key(); it.Next(); {
			parts = append(parts, string(it.Node().Data))
		}
		if len(parts) < 2 || parts[0] != "host" || parts[1] == host {
			continue
		}
		host = parts[1]
		hosts = append(hosts, host)
	}
	return hosts
}

type fileState struct {
	content string
	mode    fs.FileMode
}

// snapshot records every file and directory under dir, with modes.
func snapshot(t *testing.T, dir string) map[string]fileState {
	t.Helper()
	out := map[string]fileState{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fileState{mode: fi.Mode()}
		if !d.IsDir() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			st.content = string(b)
		}
		rel, _ := filepath.Rel(dir, p)
		out[rel] = st
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// FuzzCheckConfig reads an arbitrary containerd config.toml: CheckConfig
// either refuses it with a clear error or reports it; a report without a
// hosts dir carries a fix or says in a warning what to change, and the fix
// it proposes, applied as told, gives a valid file that CRI reads
// hosts.toml from DefaultHostsDir with, and that needs no fix.
func FuzzCheckConfig(f *testing.F) {
	for _, s := range []string{
		"",
		"version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d:/x\"\n",
		"version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n",
		"version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"docker.io\"]\n  endpoint = [\"https://x\"]\n",
		"version = 3\n",
		"version = 3\n[plugins.'io.containerd.cri.v1.images'.registry]\nconfig_path = ''\n",
		"version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  registry.mirrors = {}\n",
		"version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry] # the registry\n",
		"version = 1\n[plugins.cri.containerd]\ndiscard_unpacked_layers = true\n",
		"version = 5\n",
		"version = \"2\"\n",
		"disabled_plugins = [\"cri\", 1]\nimports = [\"/x.toml\"]\n",
		"[plugins]\ncri = 1\n",
		"x = [",
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(dir, "config.toml")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		r, err := CheckConfig(path)
		if err != nil {
			if !errdefs.IsInvalidArgument(err) && !errdefs.IsNotImplemented(err) {
				t.Fatalf("CheckConfig: %v", err)
			}
			return
		}
		if r.Version < 1 || r.Version > 4 {
			t.Fatalf("version %d", r.Version)
		}
		if r.ConfigPath != "" && r.HostsDir != firstDir(r.ConfigPath) {
			t.Fatalf("config_path %q gives hosts dir %q", r.ConfigPath, r.HostsDir)
		}
		if r.Fix == "" {
			if r.HostsDir == "" && !hasMirrors(t, b, r.Version) && !slices.ContainsFunc(r.Warnings, func(w string) bool { return strings.Contains(w, "config_path") }) {
				t.Fatalf("no hosts dir and no fix: %+v", r)
			}
			return
		}
		if r.HostsDir != "" {
			t.Fatalf("a fix for a config that has hosts dir %q", r.HostsDir)
		}
		fixed := applyFix(t, b, r)
		if err := os.WriteFile(path, fixed, 0o600); err != nil {
			t.Fatal(err)
		}
		r2, err := CheckConfig(path)
		if err != nil {
			t.Fatalf("the fix %q %q breaks the file: %v\n%s", r.FixTable, r.Fix, err, fixed)
		}
		if r2.HostsDir != DefaultHostsDir || r2.Fix != "" || r2.Version != r.Version {
			t.Fatalf("after the fix %q %q: %+v\n%s", r.FixTable, r.Fix, r2, fixed)
		}
	})
}

// hasMirrors reports whether the config's CRI registry sets mirrors, the one
// case where CheckConfig proposes no fix for a config without config_path.
func hasMirrors(t *testing.T, b []byte, version int) bool {
	t.Helper()
	var doc map[string]any
	if err := toml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	reg, _ := lookup(doc, keysFor(version).registry).(map[string]any)
	m, _ := reg["mirrors"].(map[string]any)
	return len(m) > 0
}

// applyFix does what a Report tells the user: add Fix under the header
// line of FixTable, or append Fix at the end of the file.
func applyFix(t *testing.T, b []byte, r Report) []byte {
	t.Helper()
	if r.FixTable == "" {
		out := bytes.Clone(b)
		if len(out) > 0 && !bytes.HasSuffix(out, []byte("\n")) {
			out = append(out, '\n')
		}
		return append(out, r.Fix+"\n"...)
	}
	path := keysFor(r.Version).registry
	p := unstable.Parser{}
	p.Reset(b)
	for p.NextExpression() {
		e := p.Expression()
		if e.Kind != unstable.Table {
			continue
		}
		var parts []string
		off := -1
		for it := e.Key(); it.Next(); {
			parts = append(parts, string(it.Node().Data))
			off = int(it.Node().Raw.Offset)
		}
		if !slices.Equal(parts, path) {
			continue
		}
		eol := bytes.IndexByte(b[off:], '\n')
		if eol < 0 {
			return append(append(bytes.Clone(b), '\n'), r.Fix+"\n"...)
		}
		at := off + eol + 1
		return slices.Concat(b[:at], []byte(r.Fix+"\n"), b[at:])
	}
	t.Fatalf("FixTable %q not found", r.FixTable)
	return nil
}
