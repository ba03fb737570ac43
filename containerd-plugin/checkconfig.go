package containerdplugin

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// DefaultHostsDir is where hosts.toml files go when containerd's config
// names no directory; it is the first entry of containerd 2.x's default.
const DefaultHostsDir = "/etc/containerd/certs.d"

// v2DefaultConfigPath is the config_path containerd 2.x uses on Linux when
// the config sets neither config_path nor registry mirrors.
const v2DefaultConfigPath = "/etc/containerd/certs.d:/etc/docker/certs.d"

// Report is what CheckConfig found in containerd's config.toml.
type Report struct {
	// Path is the file read.
	Path string
	// Version is the config schema version: 1 or 2 for containerd 1.x
	// (2.x migrates them on load), 3 for containerd 2.0 to 2.3, 4 for 2.4
	// on (which moved server settings, not CRI's, into plugins).
	Version int
	// ConfigPath is CRI's registry config_path as the file sets it; empty
	// when unset.
	ConfigPath string
	// HostsDir is where containerd's CRI looks for <registry>/hosts.toml:
	// the first entry of ConfigPath, or of containerd 2.x's default for a
	// version 3 file that sets neither config_path nor mirrors. Empty when
	// CRI reads no hosts.toml, and Fix then says what to add.
	HostsDir string
	// Fix holds the exact lines to add to the file so CRI reads hosts.toml
	// from DefaultHostsDir; empty when nothing needs adding. When FixTable
	// is set, the table already exists and Fix is the line to add under it.
	Fix string
	// FixTable is the header of an existing table Fix belongs under.
	FixTable string
	// DiscardUnpackedLayers reports discard_unpacked_layers = true: CRI
	// lets GC delete layers once unpacked, so this node has none to share.
	DiscardUnpackedLayers bool
	// Warnings are other findings worth logging, in plain sentences.
	Warnings []string
}

// criKeys are where a config version keeps the settings CheckConfig reads.
type criKeys struct {
	registry []string // path of the registry table
	discard  []string // path of discard_unpacked_layers
	plugins  []string // plugin IDs that disable CRI image pulls when disabled
}

func keysFor(version int) criKeys {
	switch version {
	case 1:
		return criKeys{
			registry: []string{"plugins", "cri", "registry"},
			discard:  []string{"plugins", "cri", "containerd", "discard_unpacked_layers"},
			plugins:  []string{"cri", "io.containerd.grpc.v1.cri"},
		}
	case 2:
		return criKeys{
			registry: []string{"plugins", "io.containerd.grpc.v1.cri", "registry"},
			discard:  []string{"plugins", "io.containerd.grpc.v1.cri", "containerd", "discard_unpacked_layers"},
			plugins:  []string{"io.containerd.grpc.v1.cri"},
		}
	default: // 3 and 4 keep CRI's image settings in the same place
		return criKeys{
			registry: []string{"plugins", "io.containerd.cri.v1.images", "registry"},
			discard:  []string{"plugins", "io.containerd.cri.v1.images", "discard_unpacked_layers"},
			plugins:  []string{"io.containerd.cri.v1.images", "io.containerd.grpc.v1.cri"},
		}
	}
}

// CheckConfig reads containerd's config.toml and reports whether CRI reads
// hosts.toml files (registry config_path) and whether it discards unpacked
// layers. A missing file gives an error wrapping fs.ErrNotExist: containerd
// then runs on its defaults, which for 1.x read no hosts.toml in CRI.
func CheckConfig(path string) (Report, error) {
	r := Report{Path: path}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return r, fmt.Errorf("containerd config %s: no such file; containerd 1.x then ignores hosts.toml for CRI pulls, 2.x reads %s: %w: %w",
			path, v2DefaultConfigPath, err, errdefs.ErrNotFound)
	}
	if err != nil {
		return r, fmt.Errorf("containerd config: %w", err)
	}
	var doc map[string]any
	if err := toml.Unmarshal(b, &doc); err != nil {
		return r, fmt.Errorf("containerd config %s is not valid TOML: %w: %w", path, err, errdefs.ErrInvalidArgument)
	}

	r.Version = 1 // containerd's meaning of a file without version
	if v, ok := doc["version"]; ok {
		n, ok := v.(int64)
		if !ok || n < 1 || n > 4 {
			return r, fmt.Errorf("containerd config %s: version %v is not one of 1 to 4: %w", path, v, errdefs.ErrNotImplemented)
		}
		r.Version = int(n)
	}
	keys := keysFor(r.Version)

	if d, ok := lookup(doc, keys.discard).(bool); ok && d {
		r.DiscardUnpackedLayers = true
		r.Warnings = append(r.Warnings, fmt.Sprintf("%s = true: containerd deletes layers once unpacked, so this node has no layers to share", dotted(keys.discard)))
	}
	if disabled, ok := doc["disabled_plugins"].([]any); ok {
		for _, p := range disabled {
			if s, _ := p.(string); slices.Contains(keys.plugins, s) {
				r.Warnings = append(r.Warnings, fmt.Sprintf("plugin %s is disabled: kubelet cannot pull through containerd here", s))
			}
		}
	}
	if imports, ok := doc["imports"].([]any); ok && len(imports) > 0 {
		r.Warnings = append(r.Warnings, fmt.Sprintf("the config imports %v; settings there were not checked", imports))
	}

	reg, _ := lookup(doc, keys.registry).(map[string]any)
	mirrors, _ := reg["mirrors"].(map[string]any)
	if cp, ok := reg["config_path"].(string); ok && cp != "" {
		r.ConfigPath = cp
		r.HostsDir = firstDir(cp)
		return r, nil
	}
	if len(mirrors) > 0 {
		r.Warnings = append(r.Warnings, fmt.Sprintf("%s.mirrors is set; containerd refuses it together with config_path: move those mirrors into hosts.toml files and delete it", dotted(keys.registry)))
	} else if r.Version >= 3 {
		r.HostsDir = firstDir(v2DefaultConfigPath)
		return r, nil
	}
	line := fmt.Sprintf("config_path = %q", DefaultHostsDir)
	header := tableHeader(keys.registry)
	if cp, ok := reg["config_path"]; ok {
		// Adding the line again would be a duplicate key.
		r.Warnings = append(r.Warnings, fmt.Sprintf("%s.config_path is %#v: set it to %q", dotted(keys.registry), cp, DefaultHostsDir))
		return r, nil
	}
	if hasTable(b, keys.registry) {
		r.Fix, r.FixTable = line, header
		return r, nil
	}
	// A new table at the end is valid TOML unless the file already
	// defines the registry (or a table on its path) some other way: with
	// dotted keys, inline, or as a value.
	fix := header + "\n  " + line
	fixed := append(append(bytes.Clone(b), '\n'), fix+"\n"...)
	var check map[string]any
	if err := toml.Unmarshal(fixed, &check); err != nil {
		r.Warnings = append(r.Warnings, fmt.Sprintf("%s is defined without a table header of its own: add %s to it", dotted(keys.registry), line))
		return r, nil
	}
	r.Fix = fix
	return r, nil
}

func lookup(doc map[string]any, path []string) any {
	var cur any = doc
	for _, k := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	return cur
}

func firstDir(configPath string) string {
	first, _, _ := strings.Cut(configPath, ":")
	return first
}

// tableHeader writes a table header the way containerd's docs do.
func tableHeader(path []string) string {
	return "[" + dotted(path) + "]"
}

func dotted(path []string) string {
	parts := make([]string, len(path))
	for i, k := range path {
		if strings.ContainsAny(k, ".\" ") {
			k = fmt.Sprintf("%q", k)
		}
		parts[i] = k
	}
	return strings.Join(parts, ".")
}

// hasTable reports whether the document defines the table with a header of
// its own, so that adding the header again would be a duplicate.
func hasTable(b []byte, path []string) bool {
	p := unstable.Parser{}
	p.Reset(b)
	for p.NextExpression() {
		e := p.Expression()
		if e.Kind != unstable.Table {
			continue
		}
		var parts []string
		for it := e.Key(); it.Next(); {
			parts = append(parts, string(it.Node().Data))
		}
		if slices.Equal(parts, path) {
			return true
		}
	}
	return false
}
