package containerdplugin

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// Names of the files shoal manages in each registry directory of the hosts dir.
const (
	// DefaultRegistryDir is the directory containerd consults for a
	// registry that has no directory of its own.
	DefaultRegistryDir = "_default"
	// HostsFile is the file containerd reads in each registry directory.
	HostsFile = "hosts.toml"
	// BackupSuffix names the copy of the original hosts.toml that shoal
	// keeps beside it, so that Unconfigure can restore it byte for byte.
	BackupSuffix = ".shoal-backup"
)

// The lines around shoal's host table. A hosts.toml with beginMarker is one
// shoal wrote; the markers are comments, so containerd ignores them.
const (
	beginMarker = "# BEGIN shoal mirror"
	endMarker   = "# END shoal mirror"
)

// ConfigureOptions says which registries containerd should pull through shoal.
type ConfigureOptions struct {
	// HostsDir is containerd's registry config_path (its first entry when
	// it lists several), e.g. /etc/containerd/certs.d. Required.
	HostsDir string
	// Mirror is shoal's registry endpoint as containerd calls it, e.g.
	// http://127.0.0.1:7500. Required.
	Mirror string
	// Registries are the registries to mirror, each HOST[:PORT], or
	// http://HOST[:PORT] for a registry that itself speaks plain HTTP.
	// Empty means _default, which covers every registry without a
	// directory of its own.
	Registries []string
}

// Configure writes, for each registry, <HostsDir>/<host[:port]>/hosts.toml
// with a host table for the mirror placed before any other host table, since
// containerd tries hosts in file order and the server last. An existing file
// keeps all its keys and tables after shoal's and is backed up once beside
// it. Configure is idempotent. It checks every registry before writing any,
// so an invalid option or an unparseable existing file leaves the hosts dir
// untouched. It returns the paths of the files it changed.
func Configure(opts ConfigureOptions) (changed []string, err error) {
	if opts.HostsDir == "" {
		return nil, fmt.Errorf("hosts dir is empty: %w", errdefs.ErrInvalidArgument)
	}
	mirror, err := parseMirror(opts.Mirror)
	if err != nil {
		return nil, err
	}
	regs, err := parseRegistries(opts.Registries)
	if err != nil {
		return nil, err
	}
	plans := make([]hostsPlan, 0, len(regs))
	for _, reg := range regs {
		p, err := planHosts(opts.HostsDir, reg, mirror)
		if err != nil {
			return nil, err
		}
		plans = append(plans, p)
	}
	for _, p := range plans {
		ok, err := p.apply()
		if err != nil {
			return changed, err
		}
		if ok {
			changed = append(changed, p.path)
		}
	}
	return changed, nil
}

// Unconfigure undoes Configure for the given registries (empty means
// _default): it restores the backed-up original hosts.toml, or removes the
// file shoal created and its directory when that is left empty. A hosts.toml
// that shoal did not write is left alone, and a backup older than it removed.
func Unconfigure(hostsDir string, registries []string) error {
	if hostsDir == "" {
		return fmt.Errorf("hosts dir is empty: %w", errdefs.ErrInvalidArgument)
	}
	regs, err := parseRegistries(registries)
	if err != nil {
		return err
	}
	var errs []error
	for _, reg := range regs {
		errs = append(errs, unconfigure(filepath.Join(hostsDir, reg.dir)))
	}
	return errors.Join(errs...)
}

func unconfigure(dir string) error {
	path := filepath.Join(dir, HostsFile)
	backup := path + BackupSuffix
	cur, err := os.ReadFile(path)
	curExists := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	_, err = os.Lstat(backup)
	bakExists := err == nil
	switch {
	case curExists && !isShoals(cur):
		// Someone replaced shoal's file since: theirs is newer than the
		// backup, so it stays and the stale backup goes.
		if bakExists {
			return os.Remove(backup)
		}
		return nil
	case bakExists:
		// rename keeps the original's bytes and mode exactly.
		if err := os.Rename(backup, path); err != nil {
			return fmt.Errorf("restore %s: %w", path, err)
		}
		return syncDir(dir)
	case !curExists:
		return nil
	}
	if err := os.Remove(path); err != nil {
		return err
	}
	// Only succeeds when empty, so nothing of anyone else's goes with it.
	if err := os.Remove(dir); err != nil && !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
		return err
	}
	return nil
}

// registry is one directory of the hosts dir.
type registry struct {
	dir    string // host[:port], or DefaultRegistryDir
	server string // upstream URL for the server key; empty for _default
}

func parseRegistries(in []string) ([]registry, error) {
	if len(in) == 0 {
		in = []string{DefaultRegistryDir}
	}
	seen := map[string]bool{}
	var out []registry
	for _, s := range in {
		r, err := parseRegistry(s)
		if err != nil {
			return nil, err
		}
		if seen[r.dir] {
			continue
		}
		seen[r.dir] = true
		out = append(out, r)
	}
	return out, nil
}

func parseRegistry(s string) (registry, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == DefaultRegistryDir {
		return registry{dir: DefaultRegistryDir}, nil
	}
	bad := func(why string) error {
		return fmt.Errorf("registry %q: %s; want HOST[:PORT] or http://HOST[:PORT]: %w", s, why, errdefs.ErrInvalidArgument)
	}
	scheme, host := "https", s
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return registry{}, bad(err.Error())
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return registry{}, bad("scheme must be http or https")
		}
		if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			return registry{}, bad("only a scheme, host and port may be given")
		}
		scheme, host = u.Scheme, u.Host
	}
	if err := checkHostPort(host); err != nil {
		return registry{}, bad(err.Error())
	}
	server := scheme + "://" + host
	if host == "docker.io" && scheme == "https" {
		// docker.io has no registry of its own; containerd maps it the same way.
		server = "https://registry-1.docker.io"
	}
	return registry{dir: host, server: server}, nil
}

// checkHostPort accepts what can name a registry and be a directory name.
func checkHostPort(hp string) error {
	host := hp
	if strings.HasPrefix(hp, "[") || strings.Count(hp, ":") == 1 {
		h, port, err := net.SplitHostPort(hp)
		if err != nil {
			return err
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("bad port %q", port)
		}
		host = h
		if strings.HasPrefix(hp, "[") {
			if net.ParseIP(h) == nil {
				return fmt.Errorf("bad IPv6 address %q", h)
			}
			return nil
		}
	}
	if host == "" || host == "." || host == ".." {
		return errors.New("no host")
	}
	for _, r := range host {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
			return fmt.Errorf("bad character %q in host", r)
		}
	}
	return nil
}

func parseMirror(s string) (string, error) {
	bad := func(why string) error {
		return fmt.Errorf("mirror %q: %s; want a URL like http://127.0.0.1:7500: %w", s, why, errdefs.ErrInvalidArgument)
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", bad(err.Error())
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", bad("scheme must be http or https")
	}
	if u.Host == "" {
		return "", bad("no host")
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", bad("only a scheme, host, port and path may be given")
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	m := u.String()
	if strings.ContainsAny(m, "\"\\") {
		return "", bad("quotes and backslashes are not allowed")
	}
	return m, nil
}

// hostsPlan is what Configure will do in one registry directory.
type hostsPlan struct {
	dir, path string
	content   []byte
	mode      fs.FileMode
	unchanged bool   // the file already has content
	backup    []byte // original to save beside it, or nil
	dropStale bool   // remove a backup left from a file someone since deleted
}

func planHosts(hostsDir string, reg registry, mirror string) (hostsPlan, error) {
	p := hostsPlan{dir: filepath.Join(hostsDir, reg.dir), mode: 0o644}
	p.path = filepath.Join(p.dir, HostsFile)
	backupPath := p.path + BackupSuffix

	cur, err := os.ReadFile(p.path)
	curExists := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return p, err
	}
	bak, err := os.ReadFile(backupPath)
	bakExists := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return p, err
	}

	// base is the file as it was before shoal; nil when there was none.
	var base []byte
	switch {
	case !curExists:
		p.dropStale = bakExists
	case isShoals(cur) && bakExists:
		base = bak
		if fi, err := os.Stat(backupPath); err == nil {
			p.mode = fi.Mode().Perm()
		}
	case isShoals(cur):
		// shoal created it from nothing.
	default:
		// Someone else's file: it is the original, even if an older backup
		// exists (it was replaced since shoal last ran).
		base = cur
		if fi, err := os.Stat(p.path); err == nil {
			p.mode = fi.Mode().Perm()
		}
		if !bakExists || !bytes.Equal(bak, cur) {
			p.backup = cur
		}
	}

	p.content, err = mergeHosts(p.path, base, reg, mirror)
	if err != nil {
		return p, err
	}
	p.unchanged = curExists && bytes.Equal(cur, p.content) && !p.dropStale && p.backup == nil
	return p, nil
}

func (p hostsPlan) apply() (bool, error) {
	if p.unchanged {
		return false, nil
	}
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return false, err
	}
	backupPath := p.path + BackupSuffix
	if p.dropStale {
		if err := os.Remove(backupPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return false, err
		}
	}
	// The backup goes first: a crash between the two writes must not leave
	// shoal's file without the original beside it.
	if p.backup != nil {
		if err := writeAtomic(backupPath, p.backup, p.mode); err != nil {
			return false, err
		}
	}
	if err := writeAtomic(p.path, p.content, p.mode); err != nil {
		return false, err
	}
	return true, nil
}

func isShoals(b []byte) bool {
	for line := range bytes.Lines(b) {
		if bytes.HasPrefix(bytes.TrimSpace(line), []byte(beginMarker)) {
			return true
		}
	}
	return false
}

// mirrorBlock is shoal's host table, between its markers.
func mirrorBlock(mirror string) string {
	return beginMarker + ": written by shoal, which keeps any original file as " + HostsFile + BackupSuffix + "\n" +
		"[host.\"" + mirror + "\"]\n" +
		"  capabilities = [\"pull\", \"resolve\"]\n" +
		endMarker + "\n"
}

// mergeHosts returns base with shoal's host table inserted before the first
// table, or a new file when base is nil.
func mergeHosts(path string, base []byte, reg registry, mirror string) ([]byte, error) {
	var out []byte
	if base == nil {
		var b strings.Builder
		b.WriteString("# containerd asks the shoal mirror first, the registry last.\n")
		if reg.server != "" {
			b.WriteString("server = \"" + reg.server + "\"\n")
		}
		b.WriteString("\n")
		b.WriteString(mirrorBlock(mirror))
		out = []byte(b.String())
	} else {
		_, firstTable, err := scanHosts(base)
		if err != nil {
			return nil, fmt.Errorf("%s is not valid TOML, so shoal left it unchanged; fix or remove it: %w: %w",
				path, err, errdefs.ErrFailedPrecondition)
		}
		if err := checkHostForm(base); err != nil {
			return nil, fmt.Errorf("%s: %w, so shoal cannot put its mirror first and left it unchanged; write each host as a [host.\"URL\"] table: %w",
				path, err, errdefs.ErrFailedPrecondition)
		}
		var doc map[string]any
		if err := toml.Unmarshal(base, &doc); err != nil {
			return nil, fmt.Errorf("%s is not valid TOML, so shoal left it unchanged; fix or remove it: %w: %w",
				path, err, errdefs.ErrFailedPrecondition)
		}
		if hosts, ok := doc["host"].(map[string]any); ok && hosts[mirror] != nil {
			return nil, fmt.Errorf("%s already has host %q, which shoal did not write; remove it or use another mirror address: %w",
				path, mirror, errdefs.ErrAlreadyExists)
		}
		var b bytes.Buffer
		head, tail := base, []byte(nil)
		if firstTable >= 0 {
			head, tail = base[:firstTable], base[firstTable:]
		}
		b.Write(head)
		if len(head) > 0 && !bytes.HasSuffix(head, []byte("\n")) {
			b.WriteString("\n")
		}
		if len(head) > 0 && !bytes.HasSuffix(head, []byte("\n\n")) {
			b.WriteString("\n")
		}
		b.WriteString(mirrorBlock(mirror))
		if len(tail) > 0 {
			b.WriteString("\n")
			b.Write(tail)
		}
		out = b.Bytes()
	}
	// Check what containerd will see: valid TOML, shoal's host first.
	hosts, _, err := scanHosts(out)
	if err != nil {
		return nil, fmt.Errorf("%s: shoal's result does not parse: %w: %w", path, err, errdefs.ErrInternal)
	}
	if len(hosts) == 0 || hosts[0] != mirror {
		return nil, fmt.Errorf("%s: shoal's host is not first in %q: %w", path, hosts, errdefs.ErrInternal)
	}
	return out, nil
}

// scanHosts validates a hosts.toml and returns its host URLs in the order
// containerd tries them, and the offset where the first table (together with
// the comment lines right above it) begins, or -1 when there is none.
func scanHosts(b []byte) (hosts []string, firstTable int, err error) {
	var v map[string]any
	if err := toml.Unmarshal(b, &v); err != nil {
		return nil, -1, err
	}
	firstTable = -1
	err = eachTable(b, func(kind unstable.Kind, key []string, off int) {
		if firstTable < 0 {
			firstTable = tableStart(b, off)
		}
		if kind == unstable.Table && len(key) == 2 && key[0] == "host" {
			hosts = append(hosts, key[1])
		}
	})
	if err != nil {
		return nil, -1, err
	}
	return hosts, firstTable, nil
}

// eachTable calls f with the kind, key parts and offset of every table
// header ([a.b] or [[a.b]]) of a hosts.toml, in file order.
func eachTable(b []byte, f func(kind unstable.Kind, key []string, off int)) error {
	p := unstable.Parser{}
	p.Reset(b)
	for p.NextExpression() {
		e := p.Expression()
		if e.Kind != unstable.Table && e.Kind != unstable.ArrayTable {
			continue
		}
		var key []string
		off := -1
		for it := e.Key(); it.Next(); {
			if off < 0 {
				off = int(it.Node().Raw.Offset)
			}
			key = append(key, string(it.Node().Data))
		}
		f(e.Kind, key, off)
	}
	return p.Error()
}

// checkHostForm refuses host entries shoal's table cannot go before: host
// defined by top-level keys (host = {...}, host."URL".key = ...), which
// containerd 1.x orders by line and a table cannot precede, or as an array
// of tables, which containerd cannot read at all.
func checkHostForm(b []byte) error {
	p := unstable.Parser{}
	p.Reset(b)
	inTable := false
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table:
			inTable = true
			continue
		case unstable.ArrayTable:
			inTable = true
		case unstable.KeyValue:
			if inTable {
				continue
			}
		default:
			continue
		}
		it := e.Key()
		if it.Next() && string(it.Node().Data) == "host" {
			if e.Kind == unstable.ArrayTable {
				return errors.New("host is an array of tables")
			}
			return errors.New("host is set by a top-level key")
		}
	}
	return p.Error()
}

// tableStart moves from a table's first key back to the start of its header
// line, then up over the comment lines directly above it, which describe it.
func tableStart(b []byte, keyOff int) int {
	start := bytes.LastIndexByte(b[:keyOff], '\n') + 1
	for start > 0 {
		prev := bytes.LastIndexByte(b[:start-1], '\n') + 1
		if !bytes.HasPrefix(bytes.TrimSpace(b[prev:start-1]), []byte("#")) {
			break
		}
		start = prev
	}
	return start
}

// writeAtomic replaces path with data so that readers see the old file or
// the new one, never a part.
func writeAtomic(path string, data []byte, mode fs.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// MirroredRegistries lists the registries (host[:port]) whose hosts.toml in
// hostsDir has shoal's host table, as Configure writes it: the registries
// containerd pulls through shoal by name. _default, which names no
// registry, is not listed. A missing hostsDir lists none.
func MirroredRegistries(hostsDir string) ([]string, error) {
	entries, err := os.ReadDir(hostsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("hosts dir: %w", err)
	}
	var out []string
	for _, e := range entries {
		if !e.IsDir() || e.Name() == DefaultRegistryDir || checkHostPort(e.Name()) != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(hostsDir, e.Name(), HostsFile))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("hosts dir: %w", err)
		}
		if isShoals(b) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}
