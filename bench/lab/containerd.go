package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Flavor selects a containerd major line; the two differ in config schema,
// CRI plugin layout and in where `ctr images pull` fetches from.
type Flavor string

const (
	// Flavor16 is Debian's containerd 1.6 with config version 2.
	Flavor16 Flavor = "1.6"
	// Flavor2 is containerd 2.x built from the Go module, config version 3.
	Flavor2 Flavor = "2"
)

// CRINamespace is the containerd namespace the CRI plugin keeps images in.
const CRINamespace = "k8s.io"

// ContainerdConfig says how to run a containerd daemon. Only Flavor is
// required; every path is derived from one new temp dir.
type ContainerdConfig struct {
	// Flavor is Flavor16 or Flavor2.
	Flavor Flavor
	// Binary and Ctr are the daemon and its client. Empty means
	// /usr/bin/containerd and /usr/bin/ctr for Flavor16, and containerd and
	// ctr in GOBIN (or GOPATH/bin, or ~/go/bin) for Flavor2.
	Binary, Ctr string
	// Netns runs the daemon, and ctr, inside this network namespace.
	Netns string
	// Dir is where the daemon's temp dir is created; "" is os.TempDir().
	// Unix socket paths are limited to 108 bytes, so keep it short.
	Dir string
	// Snapshotter for CRI, ctr pulls and unpacking. Empty probes the temp
	// dir: "overlayfs" where an overlay mount works there, else "native".
	Snapshotter string
	// LogLevel is containerd's log level; "" is "info".
	LogLevel string
	// Kubelet, when set, readies CRI for a kubelet (Flavor2 only). The
	// daemon then also stays in the caller's mount namespace (see
	// ProcessConfig.SharedMounts), so that a kubelet started the same way
	// in the same Netns sees the daemon's mounts and the daemon sees the
	// kubelet's volumes.
	Kubelet *KubeletCRI
	// Mountns runs the daemon in this mount namespace (Flavor2 only) with
	// its files also at the standard paths there, bound by StartContainerd:
	// the temp dir at /run/containerd (so the socket is
	// /run/containerd/containerd.sock and the shims' sockets and runc's
	// state stay per daemon), Root at /var/lib/containerd, and a dir with
	// config.toml and certs.d (the config's config_path) at
	// /etc/containerd. Those three mount points must exist. A pod that
	// mounts the standard paths from the host, as shoal's chart does,
	// then finds this daemon's. The caller's paths (Socket, HostsDir, …)
	// keep working.
	Mountns *Mountns
	// Logger receives lifecycle events; nil discards them.
	Logger *slog.Logger
}

// KubeletCRI is what a kubelet needs from containerd's CRI beyond pulls.
type KubeletCRI struct {
	// SandboxImage is the pod sandbox ("pause") image, pinned so that
	// image garbage collection keeps it; required, as the default
	// registry.k8s.io/pause cannot be fetched in the lab.
	SandboxImage string
	// CNIConfDir holds the CNI network configs. "" is <Dir()>/net.d, which
	// WriteCNIBridge can fill. CRI reports the network not ready, and the
	// kubelet its Node NotReady, until a config is there, even when every
	// pod uses the host network.
	CNIConfDir string
	// CNIBinDirs hold the CNI plugins; nil is Debian's /usr/lib/cni.
	CNIBinDirs []string
}

// Containerd is a running containerd with its own root, state and socket and
// the CRI plugin on, configured to read registry hosts from HostsDir.
type Containerd struct {
	cfg  ContainerdConfig
	log  *slog.Logger
	dir  string
	proc *process
	conn *grpc.ClientConn

	mu     sync.Mutex
	closed bool
}

// StartContainerd writes a config into a new temp dir, starts the daemon and
// waits until CRI answers Version and ImageFsInfo.
func StartContainerd(ctx context.Context, cfg ContainerdConfig) (*Containerd, error) {
	switch cfg.Flavor {
	case Flavor16:
		if cfg.Binary == "" {
			cfg.Binary = "/usr/bin/containerd"
		}
		if cfg.Ctr == "" {
			cfg.Ctr = "/usr/bin/ctr"
		}
	case Flavor2:
		if cfg.Binary == "" {
			cfg.Binary = filepath.Join(GoBin(), "containerd")
		}
		if cfg.Ctr == "" {
			cfg.Ctr = filepath.Join(GoBin(), "ctr")
		}
	default:
		return nil, fmt.Errorf("containerd: unknown flavor %q", cfg.Flavor)
	}
	for _, b := range []string{cfg.Binary, cfg.Ctr} {
		if _, err := os.Stat(b); err != nil {
			return nil, fmt.Errorf("containerd %s: %w", cfg.Flavor, err)
		}
	}
	if cfg.LogLevel == "" {
		cfg.LogLevel = "info"
	}
	if cfg.Mountns != nil && cfg.Flavor != Flavor2 {
		return nil, fmt.Errorf("containerd %s: Mountns needs Flavor2", cfg.Flavor)
	}
	if cfg.Kubelet != nil {
		if cfg.Flavor != Flavor2 {
			return nil, fmt.Errorf("containerd %s: Kubelet needs Flavor2", cfg.Flavor)
		}
		if cfg.Kubelet.SandboxImage == "" {
			return nil, errors.New("containerd: Kubelet.SandboxImage is required")
		}
		k := *cfg.Kubelet
		if k.CNIBinDirs == nil {
			k.CNIBinDirs = []string{"/usr/lib/cni"}
		}
		cfg.Kubelet = &k
	}
	dir, err := os.MkdirTemp(cfg.Dir, "lab-ctrd-")
	if err != nil {
		return nil, err
	}
	if cfg.Kubelet != nil && cfg.Kubelet.CNIConfDir == "" {
		cfg.Kubelet.CNIConfDir = filepath.Join(dir, "net.d")
	}
	c := &Containerd{cfg: cfg, dir: dir}
	// sun_path holds 108 bytes; containerd fails late and obscurely past it.
	if len(c.Socket()+".ttrpc") >= 108 {
		return nil, errors.Join(fmt.Errorf("containerd: socket path %s too long for a unix socket; use a shorter Dir", c.Socket()), os.RemoveAll(dir))
	}
	c.log = logger(cfg.Logger).With("component", "containerd", "flavor", string(cfg.Flavor))
	if err := os.MkdirAll(c.HostsDir(), 0o755); err != nil {
		return nil, errors.Join(err, os.RemoveAll(dir))
	}
	if cfg.Mountns != nil {
		if err := os.MkdirAll(c.Root(), 0o711); err != nil {
			return nil, errors.Join(err, os.RemoveAll(dir))
		}
		for _, b := range []struct{ src, dst string }{
			{dir, StandardStateDir}, {c.Root(), StandardRoot}, {filepath.Dir(c.ConfigPath()), StandardConfigDir},
		} {
			if err := cfg.Mountns.Bind(ctx, b.src, b.dst); err != nil {
				return nil, errors.Join(err, os.RemoveAll(dir))
			}
		}
	}
	if c.cfg.Snapshotter == "" {
		c.cfg.Snapshotter = ProbeSnapshotter(dir)
	}
	if err := os.WriteFile(c.ConfigPath(), []byte(c.configTOML()), 0o644); err != nil {
		return nil, errors.Join(err, os.RemoveAll(dir))
	}
	c.proc = &process{
		name:    "containerd-" + string(cfg.Flavor),
		log:     c.log,
		argv:    []string{cfg.Binary, "--config", c.ConfigPath()},
		netns:   cfg.Netns,
		netOnly: cfg.Kubelet != nil,
		mountns: mountnsPath(cfg.Mountns),
		dir:     dir,
		stdout:  c.LogPath(),
		stderr:  c.LogPath(),
	}
	if cfg.Flavor == Flavor2 {
		// The daemon finds its runc shim on PATH; Debian's 1.6 shim, in
		// /usr/bin, does not speak to a 2.x daemon, so the shim built
		// beside the 2.x binary comes first.
		c.proc.env = []string{"PATH=" + filepath.Dir(cfg.Binary) + string(os.PathListSeparator) + os.Getenv("PATH")}
	}
	// A unix socket reaches across network namespaces, so the CRI client
	// needs no netns dialer.
	c.conn, err = grpc.NewClient("unix://"+c.Socket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, errors.Join(err, os.RemoveAll(dir))
	}
	if err := c.Start(ctx); err != nil {
		return nil, errors.Join(err, c.Close())
	}
	return c, nil
}

// configTOML renders the daemon's config. NRI is off because its socket
// (/var/run/nri/nri.sock) is machine-wide and would collide between
// daemons; the opt plugin's directory moves under the temp dir for the
// same reason. CRI's stream server takes a free port.
func (c *Containerd) configTOML() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	version := 2
	if c.cfg.Flavor == Flavor2 {
		version = 3
	}
	w("version = %d", version)
	w("root = %q", c.Root())
	w("state = %q", c.State())
	w("[grpc]\n  address = %q", c.Socket())
	w("[ttrpc]\n  address = %q", c.Socket()+".ttrpc")
	w("[debug]\n  level = %q", c.cfg.LogLevel)
	w("[metrics]\n  address = \"\"")
	w("[plugins.\"io.containerd.internal.v1.opt\"]\n  path = %q", filepath.Join(c.dir, "opt"))
	w("[plugins.\"io.containerd.grpc.v1.cri\"]")
	w("  stream_server_address = \"127.0.0.1\"\n  stream_server_port = \"0\"")
	switch c.cfg.Flavor {
	case Flavor16:
		w("  [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n    snapshotter = %q", c.cfg.Snapshotter)
		w("  [plugins.\"io.containerd.grpc.v1.cri\".registry]\n    config_path = %q", c.HostsDir())
	case Flavor2:
		w("[plugins.\"io.containerd.nri.v1.nri\"]\n  disable = true")
		w("[plugins.\"io.containerd.cri.v1.images\"]\n  snapshotter = %q", c.cfg.Snapshotter)
		w("  [plugins.\"io.containerd.cri.v1.images\".registry]\n    config_path = %q", c.daemonHostsDir())
		// CRI and ctr pulls go through the transfer service, which unpacks
		// only for the (platform, snapshotter) pairs listed here; the
		// default lists overlayfs alone.
		w("[plugins.\"io.containerd.transfer.v1.local\"]")
		w("  [[plugins.\"io.containerd.transfer.v1.local\".unpack_config]]")
		w("    platform = \"linux/%s\"\n    snapshotter = %q\n    differ = \"walking\"", runtime.GOARCH, c.cfg.Snapshotter)
		if k := c.cfg.Kubelet; k != nil {
			w("[plugins.\"io.containerd.cri.v1.images\".pinned_images]\n  sandbox = %q", k.SandboxImage)
			// runc sets the container's oom_score_adj below the shim's
			// unless restricted, which needs CAP_SYS_RESOURCE; without it
			// runc fails "can't get final child's PID from pipe: EOF".
			w("[plugins.\"io.containerd.cri.v1.runtime\"]\n  restrict_oom_score_adj = true")
			w("  [plugins.\"io.containerd.cri.v1.runtime\".cni]")
			w("    conf_dir = %q", k.CNIConfDir)
			w("    bin_dirs = [%s]", quoteList(k.CNIBinDirs))
		}
	}
	return b.String()
}

func quoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

// CNIConfDir is where CRI reads CNI network configs; "" unless Kubelet is set.
func (c *Containerd) CNIConfDir() string {
	if c.cfg.Kubelet == nil {
		return ""
	}
	return c.cfg.Kubelet.CNIConfDir
}

// WriteCNIBridge writes a CNI config into CNIConfDir: a bridge "cni0" in
// the daemon's namespace with addresses from subnet (host-local IPAM, its
// state under the daemon's dir rather than the machine-wide
// /var/lib/cni), no masquerading. Pods on one node reach each other and
// the node; hostNetwork pods do not use it, but CRI calls the network
// ready only once a config exists.
func (c *Containerd) WriteCNIBridge(name, subnet string) error {
	dir := c.CNIConfDir()
	if dir == "" {
		return errors.New("containerd: CNI needs ContainerdConfig.Kubelet")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	conf := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": %q,
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "dataDir": %q,
        "ranges": [[{"subnet": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
`, name, filepath.Join(c.dir, "cni-ipam"), subnet)
	tmp := filepath.Join(dir, ".10-lab.conflist.tmp")
	if err := os.WriteFile(tmp, []byte(conf), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, "10-lab.conflist"))
}

// Dir is the daemon's temp dir.
func (c *Containerd) Dir() string { return c.dir }

// Root is containerd's persistent root.
func (c *Containerd) Root() string { return filepath.Join(c.dir, "root") }

// State is containerd's state dir.
func (c *Containerd) State() string { return filepath.Join(c.dir, "state") }

// Socket is the absolute path of the gRPC socket.
func (c *Containerd) Socket() string { return filepath.Join(c.dir, "containerd.sock") }

// ContentDir is the content store's directory: blobs/sha256/<hex> holds
// every committed blob, ingest/ the ones being written.
func (c *Containerd) ContentDir() string {
	return filepath.Join(c.Root(), "io.containerd.content.v1.content")
}

// HostsDir is the registry hosts directory (config_path):
// <HostsDir>/<host[:port]>/hosts.toml, re-read on every pull.
func (c *Containerd) HostsDir() string { return filepath.Join(c.configDir(), "certs.d") }

// daemonHostsDir is HostsDir as the daemon names it in its config.
func (c *Containerd) daemonHostsDir() string {
	if c.cfg.Mountns != nil {
		return filepath.Join(StandardConfigDir, "certs.d")
	}
	return c.HostsDir()
}

// configDir holds config.toml and certs.d: the temp dir, or with a
// Mountns its etc/, which is bound at StandardConfigDir.
func (c *Containerd) configDir() string {
	if c.cfg.Mountns != nil {
		return filepath.Join(c.dir, "etc")
	}
	return c.dir
}

// The standard paths a ContainerdConfig.Mountns daemon's files are bound at.
const (
	StandardStateDir  = "/run/containerd"
	StandardRoot      = "/var/lib/containerd"
	StandardConfigDir = "/etc/containerd"
)

func mountnsPath(m *Mountns) string {
	if m == nil {
		return ""
	}
	return m.Path()
}

// ConfigPath is the daemon's config file.
func (c *Containerd) ConfigPath() string { return filepath.Join(c.configDir(), "config.toml") }

// LogPath is the daemon's log.
func (c *Containerd) LogPath() string { return filepath.Join(c.dir, "containerd.log") }

// Flavor is the daemon's flavor.
func (c *Containerd) Flavor() Flavor { return c.cfg.Flavor }

// Snapshotter is the snapshotter CRI and CtrPull unpack into.
func (c *Containerd) Snapshotter() string { return c.cfg.Snapshotter }

// Pid is the daemon's process id, or 0 before the first start.
func (c *Containerd) Pid() int { return c.proc.pid() }

// ImageService is the CRI image API.
func (c *Containerd) ImageService() runtimeapi.ImageServiceClient {
	return runtimeapi.NewImageServiceClient(c.conn)
}

// RuntimeService is the CRI runtime API.
func (c *Containerd) RuntimeService() runtimeapi.RuntimeServiceClient {
	return runtimeapi.NewRuntimeServiceClient(c.conn)
}

// Start (re)starts the daemon on the same root and waits for CRI.
func (c *Containerd) Start(ctx context.Context) error {
	if err := c.proc.start(); err != nil {
		return err
	}
	if err := c.waitReady(ctx); err != nil {
		c.proc.stop(0)
		return fmt.Errorf("containerd %s: %w (log: %s)", c.cfg.Flavor, err, tail(c.LogPath(), 8))
	}
	c.log.Info("containerd ready", "socket", c.Socket(), "snapshotter", c.cfg.Snapshotter, "netns", c.cfg.Netns)
	return nil
}

// waitReady polls CRI: Version answers once the CRI service is registered,
// ImageFsInfo once its image service has its snapshotter.
func (c *Containerd) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()
	exited := c.proc.exited()
	var last error
	for {
		last = c.criReady(ctx)
		if last == nil {
			return nil
		}
		select {
		case <-exited:
			return c.proc.exitErr()
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *Containerd) criReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	v, err := c.RuntimeService().Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil {
		return err
	}
	if _, err := c.ImageService().ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{}); err != nil {
		return err
	}
	c.log.Debug("cri up", "runtime", v.RuntimeName, "version", v.RuntimeVersion, "cri", v.RuntimeApiVersion)
	return nil
}

// Stop ends the daemon gracefully and keeps its root, so Start can bring it
// back with its content.
func (c *Containerd) Stop() { c.proc.stop(stopGrace) }

// Kill ends the daemon's process group with SIGKILL, as a crash would, and
// keeps its root.
func (c *Containerd) Kill() { c.proc.stop(0) }

// Close stops the daemon, closes the CRI connection and removes the temp
// dir, unmounting whatever the daemon left mounted under it. Idempotent.
func (c *Containerd) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	var errs []error
	if c.proc != nil {
		c.proc.stop(stopGrace)
	}
	if c.conn != nil {
		errs = append(errs, c.conn.Close())
	}
	errs = append(errs, unmountUnder(c.dir), os.RemoveAll(c.dir))
	return errors.Join(errs...)
}

// WriteHosts writes <HostsDir>/<registry>/hosts.toml. registry is the
// host[:port] images are named with (or "_default").
func (c *Containerd) WriteHosts(registry string, h Hosts) error {
	d := filepath.Join(c.HostsDir(), registry)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return err
	}
	tmp := filepath.Join(d, ".hosts.toml.tmp")
	if err := os.WriteFile(tmp, []byte(h.TOML()), 0o644); err != nil {
		return err
	}
	// A rename, so a pull that re-reads the file never sees half of it.
	return os.Rename(tmp, filepath.Join(d, "hosts.toml"))
}

// Hosts is the content of one hosts.toml.
type Hosts struct {
	// Server is the upstream registry URL, tried last, e.g. "http://127.0.0.1:5000".
	Server string
	// Mirrors are tried first, in order, for pull and resolve.
	Mirrors []string
}

// TOML renders the file.
func (h Hosts) TOML() string {
	var b strings.Builder
	if h.Server != "" {
		fmt.Fprintf(&b, "server = %q\n", h.Server)
	}
	if len(h.Mirrors) == 0 {
		// containerd 1.6 and 1.7 reject a file without a host tree
		// ("failed to decode hosts.toml: invalid `host` tree",
		// containerd#10027), log it and fall back to the default host,
		// which only loopback registries survive. An empty table avoids it.
		b.WriteString("\n[host]\n")
	}
	for _, m := range h.Mirrors {
		fmt.Fprintf(&b, "\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", m)
	}
	return b.String()
}

// Ctr runs the flavor's ctr against this daemon, in the daemon's netns,
// in the CRI namespace: `ctr --address SOCKET -n k8s.io ARGS...`.
func (c *Containerd) Ctr(ctx context.Context, args ...string) ([]byte, error) {
	out, _, err := c.ctr(ctx, args...)
	return out, err
}

func (c *Containerd) ctr(ctx context.Context, args ...string) (stdout []byte, stderr string, err error) {
	argv := append([]string{c.cfg.Ctr, "--address", c.Socket(), "--namespace", CRINamespace}, args...)
	if c.cfg.Netns != "" {
		argv = append([]string{ipPath(), "netns", "exec", c.cfg.Netns}, argv...)
	}
	return run2(ctx, c.log, argv...)
}

// CtrPull pulls ref with `ctr images pull --hosts-dir HostsDir`, unpacking
// into the daemon's snapshotter. With 1.6 the ctr process fetches the
// blobs itself; with 2.x ctr hands the pull, hosts dir path included, to
// the daemon's transfer service, and the daemon fetches.
func (c *Containerd) CtrPull(ctx context.Context, ref string) error {
	_, stderr, err := c.ctr(ctx, "images", "pull", "--hosts-dir", c.HostsDir(), "--snapshotter", c.cfg.Snapshotter, ref)
	if err != nil {
		return fmt.Errorf("ctr pull %s: %w", ref, err)
	}
	// ctr 1.6 logs a hosts.toml it cannot read and pulls from the default
	// host instead; that is not the pull the caller asked for.
	if i := strings.Index(stderr, "failed to decode hosts.toml"); i >= 0 {
		return fmt.Errorf("ctr pull %s: ignored hosts dir: %s", ref, strings.TrimSpace(stderr[i:]))
	}
	return nil
}

// CRIPull pulls ref through the CRI ImageService, as the kubelet does.
func (c *Containerd) CRIPull(ctx context.Context, ref string) error {
	_, err := c.ImageService().PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err != nil {
		return fmt.Errorf("cri pull %s: %w", ref, err)
	}
	return nil
}

// CtrImage is one row of `ctr images ls`.
type CtrImage struct {
	Ref    string
	Digest digest.Digest
}

// Images lists the images in the CRI namespace.
func (c *Containerd) Images(ctx context.Context) ([]CtrImage, error) {
	out, err := c.Ctr(ctx, "images", "ls")
	if err != nil {
		return nil, err
	}
	var ims []CtrImage
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		// REF TYPE DIGEST SIZE PLATFORMS LABELS
		f := strings.Fields(sc.Text())
		if len(f) < 3 || f[0] == "REF" {
			continue
		}
		d, err := digest.Parse(f[2])
		if err != nil {
			return nil, fmt.Errorf("ctr images ls: %q: %w", sc.Text(), err)
		}
		ims = append(ims, CtrImage{Ref: f[0], Digest: d})
	}
	return ims, sc.Err()
}

// HasImage says whether an image named ref is in the CRI namespace with all
// of its content (`ctr images check` reports it complete).
func (c *Containerd) HasImage(ctx context.Context, ref string) (bool, error) {
	out, err := c.Ctr(ctx, "images", "check", "name=="+ref)
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		// REF TYPE DIGEST STATUS SIZE UNPACKED
		if len(f) >= 4 && f[0] == ref {
			return strings.HasPrefix(f[3], "complete"), nil
		}
	}
	return false, nil
}

// RemoveImage removes every name that points at ref's manifest (CRI keeps
// the tag, the repo@digest and the image-id names) and waits for garbage
// collection, so the image's blobs leave the content store unless another
// image shares them.
func (c *Containerd) RemoveImage(ctx context.Context, ref string) error {
	ims, err := c.Images(ctx)
	if err != nil {
		return err
	}
	var target digest.Digest
	for _, im := range ims {
		if im.Ref == ref {
			target = im.Digest
		}
	}
	if target == "" {
		return fmt.Errorf("remove image %s: not found", ref)
	}
	args := []string{"images", "rm", "--sync"}
	for _, im := range ims {
		if im.Digest == target {
			args = append(args, im.Ref)
		}
	}
	_, err = c.Ctr(ctx, args...)
	return err
}

// ContentDigests lists the committed blobs in the CRI namespace.
func (c *Containerd) ContentDigests(ctx context.Context) ([]digest.Digest, error) {
	out, err := c.Ctr(ctx, "content", "ls", "--quiet")
	if err != nil {
		return nil, err
	}
	var ds []digest.Digest
	for _, line := range strings.Fields(string(out)) {
		d, err := digest.Parse(line)
		if err != nil {
			return nil, fmt.Errorf("ctr content ls: %q: %w", line, err)
		}
		ds = append(ds, d)
	}
	return ds, nil
}

// ProbeSnapshotter returns "overlayfs" if an overlay mount works in dir
// (which must be on the filesystem the daemon's root will be on), else
// "native", which works everywhere by copying.
func ProbeSnapshotter(dir string) string {
	p, err := os.MkdirTemp(dir, "overlay-probe-")
	if err != nil {
		return "native"
	}
	defer os.RemoveAll(p)
	for _, d := range []string{"lower", "upper", "work", "merged"} {
		if err := os.Mkdir(filepath.Join(p, d), 0o755); err != nil {
			return "native"
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", filepath.Join(p, "lower"), filepath.Join(p, "upper"), filepath.Join(p, "work"))
	if err := unix.Mount("overlay", filepath.Join(p, "merged"), "overlay", 0, opts); err != nil {
		return "native"
	}
	if err := unix.Unmount(filepath.Join(p, "merged"), unix.MNT_DETACH); err != nil {
		return "native"
	}
	return "overlayfs"
}

// UnmountUnder detaches every mount below dir in the caller's mount
// namespace, deepest first: what a daemon killed mid-unpack, or a kubelet's
// volumes, leave behind.
func UnmountUnder(dir string) error { return unmountUnder(dir) }

// unmountUnder detaches every mount below dir in this mount namespace,
// deepest first; a daemon killed mid-unpack can leave one behind.
func unmountUnder(dir string) error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var mounts []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			mounts = append(mounts, f[4])
		}
	}
	var errs []error
	for i := len(mounts) - 1; i >= 0; i-- {
		if err := unix.Unmount(mounts[i], unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mounts[i], err))
		}
	}
	return errors.Join(errs...)
}

// GoBin is where `go install` puts binaries, as .ci/install-deps.sh does:
// GOBIN, else the first GOPATH entry's bin (from the environment, else from
// `go env`), else ~/go/bin.
func GoBin() string {
	if b := os.Getenv("GOBIN"); b != "" {
		return b
	}
	p := os.Getenv("GOPATH")
	if p == "" {
		if out, err := exec.Command("go", "env", "GOBIN", "GOPATH").Output(); err == nil {
			lines := strings.Split(string(out), "\n")
			if len(lines) >= 2 && strings.TrimSpace(lines[0]) != "" {
				return strings.TrimSpace(lines[0])
			}
			if len(lines) >= 2 {
				p = strings.TrimSpace(lines[1])
			}
		}
	}
	if p != "" {
		return filepath.Join(filepath.SplitList(p)[0], "bin")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "/root/go/bin"
	}
	return filepath.Join(home, "go", "bin")
}
