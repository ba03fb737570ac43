package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/go-units"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	containerdplugin "github.com/shoal-dev/shoal/containerd-plugin"
	"github.com/shoal-dev/shoal/mirror"
	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/p2p/swarm"
	"github.com/shoal-dev/shoal/pulls"
	"github.com/shoal-dev/shoal/resolver"
	"github.com/shoal-dev/shoal/resolver/upstream"
	"github.com/shoal-dev/shoal/store"
)

type daemonOptions struct {
	mirrorAddr         string
	mirrorAllow        []string
	metricsAddr        string
	statusAddr         string
	registries         []string
	hostsDir           string
	dataDir            string
	storeMaxBytes      string
	defaultRegistry    string
	insecureRegistries []string
	registryAuthFile   string
	resolveTagsLocally bool
	tagTTL             time.Duration
	prefetchBlobs      int
	pieceSize          string
	pieceWorkers       int
	containerdSock     string
	containerdNS       string
	snapshotter        string
	containerdContent  string
	missTimeout        time.Duration
	stallTimeout       time.Duration
	peerStall          time.Duration
	mirrorMaxRequests  int
	logLevel           string
	logFormat          string
	pullHistory        int
	statusPage         bool
	pprof              bool

	p2p            bool
	nodeName       string
	gossipAddr     string
	p2pAddr        string
	advertiseIP    string
	join           []string
	clusterKeyFile string
	// insecureOpenMesh runs the mesh without a key, by the operator's
	// choice.
	insecureOpenMesh bool
	allowLooseKeys   bool
	protection       string
	maxUploads       int
	maxUploadMbit    float64
	maxDownMbit      float64
	rescanInterval   time.Duration
	nodeLabels       map[string]string
	preheat          []string
	preheatInterval  time.Duration

	faults faultOptions
}

func defaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/shoal"
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "shoal")
	}
	return filepath.Join(os.TempDir(), "shoal")
}

func newDaemonCommand() *cobra.Command {
	o := daemonOptions{}
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Run the node's mirror for containerd",
		Long: `Run shoal on this node. It serves the OCI pull API on --mirror-addr for
containerd (see 'shoal configure containerd'), reading blobs from the node's
containerd content store and from its own store under --data-dir, and
fetching what neither has from the upstream registry named by each request's
?ns= parameter, once however many pulls ask at the same time.

It follows containerd's image and content events, so the blobs of an image
containerd records, however it was pulled, are offered to the other nodes at
once; --rescan-interval walks the content for what no event tells.

Without a reachable containerd socket it runs on its own store alone, and
says so in its log. Anything shoal cannot serve is answered 404 within
--miss-timeout so containerd falls back to the registry itself.

Metrics, /healthz and /readyz are served on --metrics-addr, and /status
(what 'shoal status' shows), /pulls (what 'shoal explain' shows) and the
status page on --status-addr, loopback by default.

The mesh needs a cluster key (shoal keygen; --cluster-key-file): without one
the daemon refuses to start unless --insecure-open-mesh or --p2p=false says
otherwise. A peer may have this node fetch a blob for the cluster only in a
keyed mesh, and only from a registry this node mirrors (--registries).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(cmd.ErrOrStderr(), o.logLevel, o.logFormat)
			if err != nil {
				return err
			}
			return runDaemon(cmd.Context(), o, log)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.mirrorAddr, "mirror-addr", "127.0.0.1:7500", "address of the OCI mirror containerd pulls through: loopback, unless --mirror-allow opens it to other nodes (listen on :PORT then)")
	f.StringSliceVar(&o.mirrorAllow, "mirror-allow", nil, "client networks (CIDR, repeatable) the mirror answers besides loopback; others get 403 (default none: this node's containerd only)")
	f.StringVar(&o.metricsAddr, "metrics-addr", ":7503", "address of /metrics, /healthz and /readyz (Prometheus and probes); empty disables them")
	f.StringVar(&o.statusAddr, "status-addr", "127.0.0.1:7504", "address of /status (members, peer IDs, paths; what 'shoal status' reads); anyone who reaches it can read it, so keep it on loopback; empty disables it")
	f.IntVar(&o.pullHistory, "pull-history", 50, "pulls whose records (each blob's sources, bytes and fallbacks) the daemon keeps for 'shoal explain' and the status page; 0 keeps none")
	f.BoolVar(&o.statusPage, "status-page", true, "serve the status page at / on --status-addr (it polls /live only while a browser shows it)")
	f.BoolVar(&o.pprof, "pprof", false, "serve Go's profiles (CPU, heap, goroutines) at /debug/pprof/ on --status-addr, to find where the daemon spends its CPU: 'go tool pprof http://127.0.0.1:7504/debug/pprof/profile?seconds=20' (default off)")
	f.StringSliceVar(&o.registries, "registries", nil, "registries (host[:port], repeatable) peers may ask this node to fetch from for the cluster, besides --default-registry, those hosts.toml in --hosts-dir sends to shoal, and those this node's containerd pulls through it (default none)")
	f.StringVar(&o.hostsDir, "hosts-dir", "/etc/containerd/certs.d", "containerd's hosts.toml directory: shoal fetches each registry through the hosts its hosts.toml lists after shoal's (with their ca, client and skip_verify), and registries whose hosts.toml names shoal (shoal configure) are mirrored for peers too; empty skips it")
	f.StringVar(&o.dataDir, "data-dir", defaultDataDir(), "directory of shoal's own blob store and its ingest files (/var/lib/shoal as root)")
	f.StringVar(&o.storeMaxBytes, "store-max-bytes", "10GiB", "cap on shoal's own store, least recently used blobs evicted first; the pinned blobs the node holds count and are never evicted (shoal pin); 0 for no cap")
	f.StringVar(&o.defaultRegistry, "default-registry", "docker.io", "upstream for requests without ?ns= (Docker Engine registry-mirrors)")
	f.StringSliceVar(&o.insecureRegistries, "insecure-registry", nil, "registry host[:port] reached over plain HTTP, repeatable (default none: HTTPS only)")
	f.StringVar(&o.registryAuthFile, "registry-auth-file", "", "docker config.json with credentials for upstream registries; empty means anonymous")
	f.IntVar(&o.prefetchBlobs, "prefetch", 64, "when containerd fetches an image manifest, start fetching up to this many of its layers at once instead of three at a time as containerd asks (0 turns it off)")
	f.BoolVar(&o.resolveTagsLocally, "resolve-tags-locally", true, "when the registry is unreachable, resolve a tag to the image the node's containerd holds, else to the node's last answer for it, else to the newest answer of a few members (the tag may have moved meanwhile); --resolve-tags-locally=false makes such a tag a miss")
	f.DurationVar(&o.tagTTL, "tag-ttl", 5*time.Second, "a registry's answer for a tag answers the whole cluster's look-ups of that tag for this long: the tag's designated node asks the registry, the others ask it; a tag moved upstream is seen at most this much later (0 asks the registry at every look-up)")
	f.StringVar(&o.containerdSock, "containerd-sock", "/run/containerd/containerd.sock", "containerd's gRPC socket; empty to run without containerd")
	f.StringVar(&o.containerdNS, "containerd-namespace", "k8s.io", "containerd namespace whose images answer tag look-ups (k8s.io for CRI)")
	f.StringVar(&o.snapshotter, "containerd-snapshotter", "", "snapshotter 'shoal preheat --into-containerd' unpacks images for (default containerd's: overlayfs, or the namespace's default)")
	f.StringVar(&o.containerdContent, "containerd-content-dir", "", "containerd's content directory (e.g. /var/lib/containerd/io.containerd.content.v1.content) for direct reads; empty reads through the socket")
	f.DurationVar(&o.missTimeout, "miss-timeout", 5*time.Second, "longest a request waits for an upstream source to start answering before shoal answers 404")
	f.StringVar(&o.pieceSize, "piece-size", "4MiB", "helpers beside a download's stream from one peer fetch the blob's last missing pieces of this size from other peers that hold them; 0 turns the helpers off")
	f.IntVar(&o.pieceWorkers, "piece-workers", 3, "pieces of one blob the helpers fetch at once, each from a different peer; 0 turns them off")
	f.DurationVar(&o.stallTimeout, "stall-timeout", 10*time.Second, "a download receiving no byte for this long is abandoned and resumed from the same offset")
	f.DurationVar(&o.peerStall, "peer-stall", 500*time.Millisecond, "a peer's stream of bytes it holds is given up for the next source after a read waited this long (longer for a stream whose reads usually wait longer, up to --stall-timeout), and any peer's stream when it falls below a fifth of the rate it had shown; 0 leaves peers to --stall-timeout")
	f.IntVar(&o.mirrorMaxRequests, "mirror-max-requests", 256, "requests from containerd served at once; more are answered 503 at once, so containerd asks the registry instead")
	f.BoolVar(&o.p2p, "p2p", true, "share blobs with the other nodes' shoal daemons; --p2p=false makes shoal a plain pull-through cache")
	f.StringVar(&o.nodeName, "node-name", "", "this node's unique name in the mesh (default the host name)")
	f.StringVar(&o.gossipAddr, "gossip-addr", ":7502", "address of the membership gossip (TCP and UDP)")
	f.StringVar(&o.p2pAddr, "p2p-addr", ":7501", "address of the libp2p host that serves and fetches blobs")
	f.StringVar(&o.advertiseIP, "advertise-ip", "", "IP the other nodes reach this one at (default picked from the host's private addresses)")
	f.StringSliceVar(&o.join, "join", nil, "seeds to join: host[:port], IPs, or a DNS name resolving to many (a headless Service), repeatable (default none: wait to be joined)")
	f.StringVar(&o.clusterKeyFile, "cluster-key-file", "", "the cluster's shared key (shoal keygen), mode 0600; encrypts gossip and admits only members; required with --p2p unless --insecure-open-mesh (default none)")
	f.BoolVar(&o.insecureOpenMesh, "insecure-open-mesh", false, "run the mesh without a cluster key: anyone who reaches the p2p and gossip ports can join and fetch every blob; no node fetches for a peer; warned at start and hourly (default off: a key is required)")
	f.BoolVar(&o.allowLooseKeys, "allow-loose-key-permissions", false, "load a cluster or identity key that group or others can read or write, with a warning (default off: refuse to start)")
	f.StringVar(&o.protection, "p2p-protection", "gater", "with a cluster key, how libp2p keeps non-members out: gater (admit member peer IDs only) or psk (private network; a second cipher, under half the throughput)")
	f.IntVar(&o.maxUploads, "max-uploads", 4, "blob streams this node serves to peers at once; more are told to try another peer, except for a blob it streams to nobody (up to twice this)")
	f.Float64Var(&o.maxUploadMbit, "max-upload-mbit", 0, "cap on blob bytes sent to peers in Mbit/s, all streams together; the peer connections' sockets are paced 1% above it, so bytes held up never leave faster (default 0: no cap)")
	f.Float64Var(&o.maxDownMbit, "max-download-mbit", 0, "cap on blob bytes received from peers in Mbit/s, all streams together; registry downloads are not capped (default 0: no cap)")
	f.DurationVar(&o.rescanInterval, "rescan-interval", 10*time.Minute, "how often the node's content is walked to advertise what no containerd event announces (content stored outside an image record, what containerd did while shoal was away) and to forget what garbage collection removed, which publishes no event; images containerd records are advertised at once from its events, so this is a safety net")
	f.StringToStringVar(&o.nodeLabels, "node-labels", nil, "this node's labels (key=value, comma separated), which 'shoal preheat --selector' chooses nodes by (zone=... also spreads the copies of pinned images over zones); 192 bytes at most (default none)")
	f.StringSliceVar(&o.preheat, "preheat", nil, "images (repeatable) this node keeps preheated: it fills itself with each at start and every --preheat-interval, through the mesh (default none)")
	f.DurationVar(&o.preheatInterval, "preheat-interval", 10*time.Minute, "how often the --preheat images are resolved again and the node checked to hold them")
	addFaultFlags(f, &o.faults)
	f.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	return cmd
}

func newLogger(w interface{ Write([]byte) (int, error) }, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

func parseBytes(flag, v string) (int64, error) {
	if v == "0" || v == "" {
		return 0, nil
	}
	n, err := units.RAMInBytes(v)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("--%s %q: want a size such as 512MiB or 20GiB", flag, v)
	}
	return n, nil
}

// settings are the daemon's options parsed and checked, before anything
// binds or starts.
type settings struct {
	maxBytes    int64
	pieceSize   int64 // the resolver's: -1 is off
	mirrorAllow []netip.Prefix
	clusterKey  []byte // nil: no mesh, or an open one
}

// checkOptions parses and checks the options, so that a mistake is one
// line on the terminal and nothing has started.
func checkOptions(o daemonOptions, log *slog.Logger) (settings, error) {
	var st settings
	var err error
	if st.maxBytes, err = parseBytes("store-max-bytes", o.storeMaxBytes); err != nil {
		return st, err
	}
	if o.prefetchBlobs < 0 {
		return st, fmt.Errorf("--prefetch %d: want 0 (off) or a number of layers", o.prefetchBlobs)
	}
	if st.pieceSize, err = parseBytes("piece-size", o.pieceSize); err != nil {
		return st, err
	}
	if st.pieceSize != 0 && st.pieceSize < 64<<10 {
		return st, fmt.Errorf("--piece-size %s: want 0 (off) or at least 64KiB", o.pieceSize)
	}
	if o.pieceWorkers < 0 {
		return st, fmt.Errorf("--piece-workers %d: want 0 (off) or more", o.pieceWorkers)
	}
	if st.pieceSize == 0 || o.pieceWorkers == 0 {
		st.pieceSize = -1
	}
	if o.pullHistory < 0 {
		return st, fmt.Errorf("--pull-history %d: want 0 (off) or a number of pulls", o.pullHistory)
	}
	if o.preheatInterval <= 0 {
		return st, fmt.Errorf("--preheat-interval %s: want a positive duration", o.preheatInterval)
	}
	if err := p2p.CheckLabels(o.nodeLabels); err != nil {
		return st, fmt.Errorf("--node-labels: %w", err)
	}
	if o.mirrorMaxRequests < 1 {
		return st, fmt.Errorf("--mirror-max-requests %d: want at least 1", o.mirrorMaxRequests)
	}
	for _, c := range o.mirrorAllow {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return st, fmt.Errorf("--mirror-allow %q: want a network such as 10.0.0.0/8", c)
		}
		st.mirrorAllow = append(st.mirrorAllow, p.Masked())
	}
	if o.p2p {
		if st.clusterKey, err = meshKey(o, log); err != nil {
			return st, err
		}
	}
	return st, nil
}

// meshKey loads the cluster key, which the mesh needs unless the operator
// opted in to an open one.
func meshKey(o daemonOptions, log *slog.Logger) ([]byte, error) {
	if o.clusterKeyFile == "" {
		if !o.insecureOpenMesh {
			return nil, errors.New("no --cluster-key-file: make a key with `shoal keygen --out /etc/shoal/cluster.key`, give every node a copy and pass it with --cluster-key-file; or run --insecure-open-mesh (anyone who reaches the p2p and gossip ports can join and fetch), or --p2p=false")
		}
		return nil, nil
	}
	if o.insecureOpenMesh {
		return nil, errors.New("--insecure-open-mesh with --cluster-key-file: choose one")
	}
	if err := p2p.CheckKeyFile(o.clusterKeyFile); err != nil {
		if !o.allowLooseKeys || !errors.Is(err, p2p.ErrLooseKey) {
			return nil, fmt.Errorf("--cluster-key-file: %w", err)
		}
		log.Warn("the cluster key is open to group or others (--allow-loose-key-permissions)", "err", err)
	}
	key, err := p2p.LoadClusterKey(o.clusterKeyFile)
	if err != nil {
		return nil, fmt.Errorf("--cluster-key-file: %w", err)
	}
	return key, nil
}

// daemonListeners are the daemon's TCP listeners for HTTP; the mesh binds
// its own. nil: that listener is off.
type daemonListeners struct {
	mirror, metrics, status net.Listener
}

// bind binds the HTTP ports first: a wrong address is the likeliest
// mistake, and nothing else should start when it is made.
func bind(o daemonOptions) (daemonListeners, error) {
	var l daemonListeners
	var err error
	if l.mirror, err = net.Listen("tcp", o.mirrorAddr); err != nil {
		return l, fmt.Errorf("--mirror-addr: %w", err)
	}
	if o.metricsAddr != "" {
		if l.metrics, err = net.Listen("tcp", o.metricsAddr); err != nil {
			l.close()
			return l, fmt.Errorf("--metrics-addr: %w", err)
		}
	}
	if o.statusAddr != "" {
		if l.status, err = net.Listen("tcp", o.statusAddr); err != nil {
			l.close()
			return l, fmt.Errorf("--status-addr: %w", err)
		}
	}
	return l, nil
}

func (l daemonListeners) close() {
	for _, ln := range []net.Listener{l.mirror, l.metrics, l.status} {
		if ln != nil {
			ln.Close()
		}
	}
}

// hostsRegistries answers, from the hosts.toml files in a directory,
// whether containerd pulls a registry through shoal. The files may be
// written after the daemon starts (shoal configure runs beside it), so it
// reads them again when its answer is older than hostsRecheck.
type hostsRegistries struct {
	dir string
	log *slog.Logger

	mu   sync.Mutex
	at   time.Time
	regs map[string]bool
}

const hostsRecheck = 5 * time.Second

func (h *hostsRegistries) mirrors(registry string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if time.Since(h.at) > hostsRecheck {
		h.at = time.Now()
		found, err := containerdplugin.MirroredRegistries(h.dir)
		if err != nil {
			h.log.Warn("cannot list the registries containerd pulls through shoal", "hosts_dir", h.dir, "err", err)
		}
		h.regs = make(map[string]bool, len(found))
		for _, r := range found {
			h.regs[r] = true
		}
	}
	return h.regs[registry]
}

// runDaemon runs the daemon until ctx ends: it binds its ports, makes its
// parts (store, registry client, containerd connection, mesh, resolver,
// mirror, preheater, pin keeper), then serves until ctx ends or a part
// fails.
func runDaemon(ctx context.Context, o daemonOptions, log *slog.Logger) error {
	var ready atomic.Bool
	set, err := checkOptions(o, log)
	if err != nil {
		return err
	}
	// Third-party libraries (libp2p) log through the default logger.
	slog.SetDefault(log)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	lns, err := bind(o)
	if err != nil {
		return err
	}
	defer func() {
		if !ready.Load() {
			lns.close()
		}
	}()
	st, err := store.NewFS(o.dataDir, store.Config{MaxBytes: set.maxBytes, Logger: log.With("component", "store")})
	if err != nil {
		return err
	}
	up, err := newUpstream(o, lns.mirror.Addr().String(), log)
	if err != nil {
		return err
	}
	ctrd := connectContainerd(ctx, o, log.With("component", "containerd"))
	defer ctrd.close()

	var late lateParts
	m, err := newMesh(o, set, st, &ctrd.sources, &late, log, reg)
	if err != nil {
		return err
	}
	defer func() {
		if m.node != nil && !ready.Load() {
			// Started nothing yet: Run with an ended context closes it.
			cctx, cancel := context.WithCancel(context.Background())
			cancel()
			_ = m.node.Run(cctx)
		}
	}()
	res, records, err := newResolver(o, set, st, up, ctrd.sources, log, reg)
	if err != nil {
		return err
	}
	late.res.Store(res)
	watcher, err := watchContainerd(ctrd.client, m.node, log.With("component", "containerd-events"), reg)
	if err != nil {
		return err
	}
	if m.local != nil {
		m.local.inflight = res.InFlight
	}
	h, err := mirror.New(res, mirror.Config{
		DefaultRegistry: o.defaultRegistry,
		MaxRequests:     o.mirrorMaxRequests,
		Allow:           set.mirrorAllow,
		Logger:          log.With("component", "mirror"),
		Metrics:         reg,
	})
	if err != nil {
		return err
	}
	ph := &preheater{res: res, node: m.node, name: o.nodeName, log: log.With("component", "preheat"), ctrd: importer(o, lns.mirror.Addr().String(), log)}
	late.preheat.Store(ph)
	var pins *pinKeeper
	if m.node != nil {
		pins = newPinKeeper(res, m.node, st, log.With("component", "pins"), reg)
	}
	servers := httpServers(lns, h.Server(), opsHandler(reg, &ready), statusViews{
		status: statusFunc(o, lns.mirror.Addr().String(), st, ctrd, up, m.node, log), pulls: records, page: o.statusPage, pprof: o.pprof,
		metrics: reg, backoffs: res.Backoffs, maxStore: set.maxBytes, preheat: ph.serveHTTP, pins: pins})

	jobs := []func(context.Context) error{res.Run, func(ctx context.Context) error { return ph.keep(ctx, o.preheat, o.preheatInterval) }}
	if m.node != nil {
		jobs = append(jobs, m.node.Run, pins.Run)
	}
	if watcher != nil {
		jobs = append(jobs, watcher.Run)
	}
	ready.Store(true)
	log.Info("shoal daemon started", "version", version, "mirror", lns.mirror.Addr().String(), "metrics", o.metricsAddr, "status", o.statusAddr, "data_dir", o.dataDir)
	err = serve(ctx, jobs, servers)
	log.Info("shoal daemon stopped")
	return err
}

// statusFunc says how the daemon stands, for shoal status and the status
// page.
func statusFunc(o daemonOptions, mirrorAddr string, st *store.FS, ctrd ctrdConn, up *upstream.Client, node *p2p.Node, log *slog.Logger) func() daemonStatus {
	return func() daemonStatus {
		blobs, bytes := st.Usage()
		ds := daemonStatus{Version: version, Mirror: mirrorAddr, StoreBlobs: blobs, StoreBytes: bytes, Containerd: ctrd.status(),
			Upstream: up.Status(statusRegistries(o, log))}
		if node != nil {
			ms := node.Status()
			ds.Mesh = &ms
		}
		return ds
	}
}

// httpServers are the daemon's HTTP servers by listener: the mirror, and
// the metrics (ops) and status endpoints where they are bound.
func httpServers(lns daemonListeners, mirror *http.Server, ops http.Handler, views statusViews) map[net.Listener]*http.Server {
	servers := map[net.Listener]*http.Server{lns.mirror: mirror}
	if lns.metrics != nil {
		servers[lns.metrics] = smallServer(ops)
	}
	if lns.status != nil {
		servers[lns.status] = smallServer(statusHandler(views))
	}
	return servers
}

// newUpstream is the registry client, each registry reached through the
// hosts its hosts.toml lists after shoal's mirror (at mirrorAddr).
func newUpstream(o daemonOptions, mirrorAddr string, log *slog.Logger) (*upstream.Client, error) {
	chains, err := upstreamHosts(o, mirrorAddr, log.With("component", "hosts"))
	if err != nil {
		return nil, err
	}
	return upstream.New(upstream.Config{
		Hosts:     chains,
		Insecure:  o.insecureRegistries,
		AuthFile:  o.registryAuthFile,
		UserAgent: "shoal/" + version,
		Logger:    log.With("component", "upstream"),
	})
}

// lateParts are the daemon's parts that the mesh serves members through
// but that are made after it: the resolver needs the mesh as its router,
// and the preheater the resolver. Members may ask before they are made.
type lateParts struct {
	res     atomic.Pointer[resolver.Resolver]
	preheat atomic.Pointer[preheater]
}

// errStarting answers a member that asks for a blob before the daemon has
// made its resolver.
var errStarting = errors.New("the daemon is starting")

// meshParts are the mesh node, and what it serves peers from this node's
// own content; both nil without the mesh (--p2p=false).
type meshParts struct {
	node  *p2p.Node
	local *localContent
}

// newMesh makes the mesh node (not running yet) and points src at it:
// src.Router asks the mesh for providers, and src.Images answers for the
// images the node keeps pinned.
func newMesh(o daemonOptions, set settings, st store.Store, src *resolver.Sources, late *lateParts, log *slog.Logger, reg prometheus.Registerer) (meshParts, error) {
	if !o.p2p {
		log.Info("peer-to-peer sharing disabled (--p2p=false): shoal is a pull-through cache for this node only")
		return meshParts{}, nil
	}
	content := &localContent{st: st}
	if w, ok := src.Local.(walker); ok {
		content.ctrd = w
	}
	served := o.faults.content(content, log)
	ctrdImages, _ := src.Images.(p2p.ImageSource)
	images := meshImages{ctrd: ctrdImages, last: &late.res}
	puller := pullerFunc(func(ctx context.Context, dgst digest.Digest, registry, repo string, from swarm.Asker, take func() bool) (store.Blob, error) {
		res := late.res.Load()
		if res == nil {
			return nil, errStarting
		}
		b, err := res.PullFor(ctx, dgst, registry, repo, from, take)
		if err != nil {
			return nil, err
		}
		return o.faults.blob(b), nil
	})
	backoff := func(registry string, left time.Duration, origin string) {
		if r := late.res.Load(); r != nil {
			r.NoteBackoff(registry, left, origin)
		}
	}
	node, err := newMeshNode(o, set.clusterKey, served, images, tagSource{&late.res}, forMembers(late.preheat.Load), puller, backoff, log, reg)
	if err != nil {
		return meshParts{}, err
	}
	src.Router = node.Router()
	src.Images = pinnedImages{next: src.Images, node: node}
	return meshParts{node: node, local: content}, nil
}

// newResolver is the resolver over the store, the registry client and
// src, and the log of pulls it records for shoal explain and the status
// page (nil with --pull-history 0).
func newResolver(o daemonOptions, set settings, st store.Store, up *upstream.Client, src resolver.Sources, log *slog.Logger, reg prometheus.Registerer) (*resolver.Resolver, *pulls.Log, error) {
	var records *pulls.Log
	var recorder resolver.Recorder // a nil *pulls.Log would not be a nil Recorder
	if o.pullHistory > 0 {
		records = pulls.New(o.pullHistory)
		recorder = records
	}
	res, err := resolver.New(st, up, src, resolver.Config{
		Recorder:         recorder,
		MissTimeout:      o.missTimeout,
		StallTimeout:     o.stallTimeout,
		PeerStall:        peerStallSetting(o.peerStall),
		RegistryOnlyTags: !o.resolveTagsLocally,
		TagTTL:           tagTTLSetting(o.tagTTL),
		PrefetchBlobs:    prefetchSetting(o.prefetchBlobs),
		PieceSize:        set.pieceSize,
		PieceWorkers:     o.pieceWorkers,
		Registries:       append([]string{o.defaultRegistry}, o.registries...),
		Mirrors:          mirrorsFunc(o, log),
		Logger:           log.With("component", "resolver"),
	}, reg)
	return res, records, err
}

// serve runs jobs and servers until ctx ends or one of them fails, then
// shuts the servers down, giving their requests 10 s to finish.
func serve(ctx context.Context, jobs []func(context.Context) error, servers map[net.Listener]*http.Server) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, job := range jobs {
		g.Go(func() error { return job(gctx) })
	}
	for ln, srv := range servers {
		g.Go(func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return srv.Shutdown(sctx)
		})
	}
	return g.Wait()
}

// statusRegistries are the registries whose upstream chain status shows
// even before any pull: the default, --registries, and those the hosts
// dir sends through shoal.
func statusRegistries(o daemonOptions, log *slog.Logger) []string {
	regs := append([]string{o.defaultRegistry}, o.registries...)
	if o.hostsDir != "" {
		found, err := containerdplugin.MirroredRegistries(o.hostsDir)
		if err != nil {
			log.Debug("cannot list the registries containerd pulls through shoal", "hosts_dir", o.hostsDir, "err", err)
		}
		regs = append(regs, found...)
	}
	return regs
}

// mirrorsFunc reads the hosts dir for the registries peers may ask this
// node to fetch from, besides --default-registry and --registries; nil
// without --hosts-dir.
func mirrorsFunc(o daemonOptions, log *slog.Logger) func(string) bool {
	if o.hostsDir == "" {
		return nil
	}
	h := &hostsRegistries{dir: o.hostsDir, log: log.With("component", "hosts")}
	return h.mirrors
}

// smallServer serves answers that are small, so that a whole exchange may
// be bounded, unlike the mirror's.
func smallServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		WriteTimeout:      time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    mirror.MaxHeaderBytes,
	}
}

// statusHandler serves /status: what the node knows of itself and its
// members, for `shoal status`; /pulls, the records of its last pulls, for
// `shoal explain`; and the status page. They name member addresses, peer
// IDs and the containerd socket, so they listen on loopback by default
// (--status-addr).
func statusHandler(v statusViews) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v.status())
	})
	v.handle(mux)
	return mux
}

// opsHandler serves metrics and probes, on --metrics-addr: nothing there
// names a member, a peer or a path.
func opsHandler(reg *prometheus.Registry, ready *atomic.Bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// walker is the part of the containerd client the mesh advertises from.
type walker interface {
	Open(ctx context.Context, dgst digest.Digest) (store.Blob, error)
	Walk(ctx context.Context, fn func(dgst digest.Digest, size int64) error) error
}

// pullerFunc adapts a function to p2p.Puller.
type pullerFunc func(ctx context.Context, dgst digest.Digest, registry, repo string, from swarm.Asker, take func() bool) (store.Blob, error)

func (f pullerFunc) PullFor(ctx context.Context, dgst digest.Digest, registry, repo string, from swarm.Asker, take func() bool) (store.Blob, error) {
	return f(ctx, dgst, registry, repo, from, take)
}

func newMeshNode(o daemonOptions, key []byte, content p2p.Content, images p2p.ImageSource, tags p2p.TagSource, preheater p2p.Preheater, puller p2p.Puller, backoff func(string, time.Duration, string), log *slog.Logger, reg prometheus.Registerer) (*p2p.Node, error) {
	cfg := p2p.DefaultConfig()
	cfg.NodeName = o.nodeName
	cfg.Version = version
	cfg.GossipAddr = o.gossipAddr
	cfg.P2PAddr = o.p2pAddr
	cfg.AdvertiseIP = o.advertiseIP
	cfg.Join = o.join
	cfg.DataDir = o.dataDir
	cfg.MaxUploads = o.maxUploads
	cfg.RescanInterval = o.rescanInterval
	for _, r := range []struct {
		flag string
		mbit float64
		to   *int64
	}{{"max-upload-mbit", o.maxUploadMbit, &cfg.MaxUploadRate}, {"max-download-mbit", o.maxDownMbit, &cfg.MaxDownloadRate}} {
		if r.mbit < 0 || math.IsNaN(r.mbit) || math.IsInf(r.mbit, 0) {
			return nil, fmt.Errorf("--%s %v: want 0 (no cap) or a positive rate in Mbit/s", r.flag, r.mbit)
		}
		*r.to = int64(r.mbit * 1e6 / 8)
		if r.mbit > 0 && *r.to < 1 {
			*r.to = 1
		}
	}
	cfg.Protection = p2p.Protection(o.protection)
	cfg.Logger = log
	cfg.Metrics = reg
	cfg.Images = images
	cfg.Tags = tags
	cfg.Puller = puller
	cfg.Preheater = preheater
	cfg.Labels = o.nodeLabels
	cfg.OnRegistryBackoff = backoff
	if o.protection != string(p2p.ProtectGater) && o.protection != string(p2p.ProtectPSK) {
		return nil, fmt.Errorf("--p2p-protection %q: want gater or psk", o.protection)
	}
	cfg.ClusterKey = key
	cfg.AllowLooseKeyPermissions = o.allowLooseKeys
	n, err := p2p.New(cfg, content)
	if err != nil {
		return nil, fmt.Errorf("mesh: %w", err)
	}
	return n, nil
}

// prefetchSetting maps --prefetch (0 = off) onto resolver.Config's
// PrefetchBlobs (0 = default, -1 = off).
func prefetchSetting(n int) int {
	if n <= 0 {
		return -1
	}
	return n
}

// tagTTLSetting maps --tag-ttl (0 = off) onto resolver.Config's TagTTL
// (0 = default, -1 = off).
func tagTTLSetting(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}

// tagSource answers peers' tag questions with the resolver once it is
// made: members may ask before.
type tagSource struct {
	res *atomic.Pointer[resolver.Resolver]
}

func (t tagSource) TagFor(ctx context.Context, req resolver.ManifestRequest) (resolver.TagAnswer, error) {
	r := t.res.Load()
	if r == nil {
		return resolver.TagAnswer{}, fmt.Errorf("starting: %w", errdefs.ErrUnavailable)
	}
	return r.TagFor(ctx, req)
}

// meshImages answers the members' image questions from the node's
// containerd, else from the node's last answer for the tag: the tag's
// designated node knows it even when its containerd never pulled the
// image.
type meshImages struct {
	ctrd p2p.ImageSource // nil without containerd
	last *atomic.Pointer[resolver.Resolver]
}

func (m meshImages) ResolveImage(ctx context.Context, name string) (ocispec.Descriptor, error) {
	if m.ctrd != nil {
		if d, err := m.ctrd.ResolveImage(ctx, name); err == nil {
			return d, nil
		}
	}
	if r := m.last.Load(); r != nil {
		return r.LastTag(ctx, name)
	}
	return ocispec.Descriptor{}, fmt.Errorf("image %s: %w", name, errdefs.ErrNotFound)
}

// peerStallSetting maps --peer-stall to resolver.Config.PeerStall, whose
// zero means the default: 0 on the command line turns the rule off.
func peerStallSetting(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}
