package p2p

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p-kad-dht/records"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	lpswarm "github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/p2p/swarm"
	"github.com/shoal-dev/shoal/store"
)

// Content is what this node can serve: the daemon implements it over
// containerd's content store and its own store. Both methods may be called
// concurrently. Open must answer a blob it does not hold with an error
// wrapping errdefs.ErrNotFound. A blob still being downloaded may implement
// Arriving() bool (true until it is whole) and Have() int64 (the bytes held
// from the start without a hole): such a blob is served to up to
// MaxUploadsPerBlob peers at once (a whole one to as many as MaxUploads),
// and a ranged request without wait for bytes it does not hold yet is
// answered "not yet".
type Content interface {
	Open(ctx context.Context, dgst digest.Digest) (store.Blob, error)
	// Walk calls fn for every blob the node holds, in any order, and stops
	// at the first error fn returns.
	Walk(ctx context.Context, fn func(dgst digest.Digest, size int64) error) error
}

// Node is one member of the mesh. Create it with New, then call Run once;
// the other methods are safe for concurrent use while Run runs.
type Node struct {
	cfg     Config
	content Content
	log     *slog.Logger
	metrics *metrics

	id         peer.ID
	host       host.Host
	dht        *dht.IpfsDHT
	ml         *memberlist.Memberlist
	members    *members
	gater      *gater
	protection Protection // empty for an open mesh
	gossipAddr string     // bound host:port

	// preheats are the slots of the preheats served to members.
	preheats chan struct{}

	// upload and download cap peer traffic; nil when uncapped. wire
	// paces what the connections write into their sockets under the
	// upload cap (see wireMargin).
	upload, download, wire *bandwidth

	// uploadsMu guards the upload slots taken (swarm.UploadSlot) and the
	// streams being served, by blob (swarm.BlobUploadCap).
	uploadsMu   sync.Mutex
	uploads     int
	blobUploads swarm.BlobUploads
	// writers are the open uploads' writers, and what each writes: its
	// reader and blob (see writersLocked).
	writers map[*deadlineWriter]*upload
	// uplink measures what the uploads send (see swarm.SlowReaders).
	uplink uplink
	// readers are the first readers of the blobs held whole, for
	// swarm.PointAtReader.
	readers  *firstReaders
	stats    *stats
	adv      *advertiser
	backoffs *backoffGossip
	pins     *pinTable

	// life is cancelled when Run ends; stream handlers, which libp2p calls
	// without a context, serve under it.
	life context.Context
	stop context.CancelFunc

	started    atomic.Bool
	handlersMu sync.Mutex
	closing    bool
	handlers   sync.WaitGroup

	joinMu      sync.Mutex
	lastJoinErr string

	// lostWatches are the failed members being pinged (see watchLost).
	lostMu      sync.Mutex
	lostWatches map[peer.ID]bool

	// hints bounds the checks of peers members said went silent, and
	// checking holds the peers being checked (see receiveSilent).
	hints    chan struct{}
	hintMu   sync.Mutex
	checking map[peer.ID]bool
	// ready is set once New has built everything gossip handlers use.
	ready atomic.Bool
}

// New checks cfg, loads or creates the node's identity, and binds the
// gossip and libp2p listeners, so that a port in use fails here. Nothing is
// announced and no member is contacted until Run. A Node must be Run: Run
// releases everything New opened, even when its context is already done.
func New(cfg Config, content Content) (*Node, error) {
	if content == nil {
		return nil, errors.New("p2p: nil content")
	}
	if err := cfg.fill(); err != nil {
		return nil, fmt.Errorf("p2p: config: %w", err)
	}
	if cfg.NodeName == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return nil, fmt.Errorf("p2p: no node name and no host name: %v", err)
		}
		cfg.NodeName = h
	}
	logger := cfg.Logger.With("component", "p2p")
	key, err := loadIdentity(cfg.DataDir, cfg.AllowLooseKeyPermissions, logger)
	if err != nil {
		return nil, fmt.Errorf("p2p: %w", err)
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("p2p: identity: %w", err)
	}

	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("p2p: metrics: %w", err)
	}
	n := &Node{
		cfg:         cfg,
		content:     content,
		log:         logger,
		metrics:     m,
		id:          id,
		members:     newMembers(id, logger),
		preheats:    make(chan struct{}, MaxPreheatsServed),
		lostWatches: make(map[peer.ID]bool),
		hints:       make(chan struct{}, maxHintChecks),
		checking:    make(map[peer.ID]bool),
		upload:      newBandwidth(cfg.MaxUploadRate, realClock{}),
		download:    newBandwidth(cfg.MaxDownloadRate, realClock{}),
		wire:        wireCap(cfg.MaxUploadRate, realClock{}),
		stats:       newStats(),
		readers:     newFirstReaders(),
		adv:         newAdvertiser(),
	}
	n.backoffs = &backoffGossip{
		queue: &memberlist.TransmitLimitedQueue{
			NumNodes:       func() int { return n.members.livePeerCount() + 1 },
			RetransmitMult: 3,
		},
		heard: cfg.OnRegistryBackoff,
		until: make(map[string]time.Time),
	}
	n.pins = newPinTable(cfg.DataDir)
	if err := n.pins.load(time.Now()); err != nil {
		logger.Warn("pin table of the last run not read", "err", err)
	}
	n.members.also = n.pins.change
	n.life, n.stop = context.WithCancel(context.Background())
	if cfg.ClusterKey != nil {
		n.protection = cfg.Protection
	}
	n.gater = &gater{m: n.members, strict: n.protection == ProtectGater}

	ok := false
	defer func() {
		if !ok {
			n.closeAll()
		}
	}()

	if n.host, err = newHost(cfg, key, n.protection, n.gater, n.wire); err != nil {
		return nil, err
	}

	meta, err := encodeMetaVersion(id, n.cfg.Version, n.cfg.Labels, orderAddrs(n.host.Addrs()), memberlist.MetaMaxSize)
	if err != nil {
		return nil, fmt.Errorf("p2p: %w", err)
	}
	mc, err := n.memberlistConfig(meta)
	if err != nil {
		return nil, err
	}
	n.ml, err = memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("p2p: memberlist: %w", err)
	}
	local := n.ml.LocalNode()
	n.gossipAddr = net.JoinHostPort(local.Addr.String(), strconv.Itoa(int(local.Port)))

	if n.dht, err = newDHT(n.host, cfg.ProvideTTL, n.bootstrapPeers, n.stats.isSilent); err != nil {
		return nil, err
	}
	n.ready.Store(true)
	ok = true
	return n, nil
}

// newHost builds the node's libp2p host: TCP only, listening on
// cfg.P2PAddr, admitting the peers gater admits, secured and multiplexed as
// wireOptions says (its connections' writes paced by wire), and behind a
// private-network PSK with ProtectPSK.
func newHost(cfg Config, key crypto.PrivKey, protection Protection, g *gater, up *bandwidth) (host.Host, error) {
	listen, err := listenMultiaddr(cfg.P2PAddr)
	if err != nil {
		return nil, fmt.Errorf("p2p: p2p address: %w", err)
	}
	opts := []libp2p.Option{
		libp2p.Identity(key),
		libp2p.ListenAddrs(listen),
		// TCP only: the private-network PSK works over TCP alone, and one
		// transport keeps the protections comparable. No port reuse: it
		// serves NAT hole punching, which a cluster does not need, and two
		// members that dial each other at once from their listen ports
		// collide on one TCP 4-tuple and both fail.
		libp2p.Transport(tcp.NewTCPTransport, tcpOptions(cfg)...),
		libp2p.DisableRelay(),
		libp2p.DisableMetrics(),
		libp2p.ConnectionGater(g),
		// The same bound for every address: libp2p's own for private and
		// loopback ones (5 s) would cut a slower one short.
		libp2p.WithDialTimeout(cfg.Timing.DialTimeout),
		libp2p.SwarmOpts(lpswarm.WithDialTimeoutLocal(cfg.Timing.DialTimeout)),
	}
	rm, err := resourceManager()
	if err != nil {
		return nil, fmt.Errorf("p2p: resource manager: %w", err)
	}
	opts = append(opts, libp2p.ResourceManager(rm))
	if protection == ProtectPSK {
		opts = append(opts, libp2p.PrivateNetwork(deriveKey(cfg.ClusterKey, infoPSK)))
	}
	opts = append(opts, wireOptions(cfg, up)...)
	if cfg.AdvertiseIP != "" {
		adv := net.ParseIP(cfg.AdvertiseIP)
		opts = append(opts, libp2p.AddrsFactory(func(addrs []ma.Multiaddr) []ma.Multiaddr {
			return advertiseAddrs(addrs, adv)
		}))
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		_ = rm.Close()
		return nil, fmt.Errorf("p2p: libp2p host: %w", err)
	}
	return h, nil
}

// newDHT starts the node's Kademlia DHT on h: a server under DHTPrefix that
// keeps provider records only, for ttl. A peer left out (silent: see
// Node.Silent) is neither added to its routing table nor asked in a
// look-up.
func newDHT(h host.Host, ttl time.Duration, bootstrap func() []peer.AddrInfo, leftOut func(peer.ID) bool) (*dht.IpfsDHT, error) {
	d, err := dht.New(h,
		dht.Mode(dht.ModeServer),
		dht.ProtocolPrefix(DHTPrefix),
		dht.DisableValues(),
		dht.BootstrapPeersFunc(bootstrap),
		dht.RoutingTableFilter(func(_ any, p peer.ID) bool { return !leftOut(p) }),
		dht.QueryFilter(func(_ any, ai peer.AddrInfo) bool { return !leftOut(ai.ID) }),
		dht.ProviderManagerOpts(
			records.ProvideValidity(ttl),
			records.ProviderAddrTTL(ttl),
			records.CleanupInterval(min(ttl/2, time.Hour)),
		),
	)
	if err != nil {
		return nil, fmt.Errorf("p2p: dht: %w", err)
	}
	return d, nil
}

func (n *Node) memberlistConfig(meta []byte) (*memberlist.Config, error) {
	c, t := n.cfg, n.cfg.Timing
	ip, port, err := splitAddr(c.GossipAddr)
	if err != nil {
		return nil, fmt.Errorf("p2p: gossip address: %w", err)
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = c.NodeName
	mc.BindAddr = ip.String()
	mc.BindPort = port
	mc.AdvertisePort = port
	if c.AdvertiseIP != "" {
		mc.AdvertiseAddr = c.AdvertiseIP
	}
	// The label keeps shoal apart from any other memberlist cluster on the
	// same network, and is authenticated when the gossip is encrypted.
	mc.Label = "shoal"
	mc.ProbeInterval = t.ProbeInterval
	mc.ProbeTimeout = t.ProbeTimeout
	mc.GossipInterval = t.GossipInterval
	mc.PushPullInterval = t.PushPullInterval
	mc.SuspicionMult = t.SuspicionMult
	mc.TCPTimeout = t.GossipTCPTimeout
	mc.GossipToTheDeadTime = t.PushPullInterval
	// A node restarted under the same name at a new address may take its
	// name back this long after it was declared dead.
	mc.DeadNodeReclaimTime = 30 * time.Second
	mc.Delegate = gossipDelegate{meta: meta, n: n}
	mc.Events = eventDelegate{m: n.members, selfName: c.NodeName}
	mc.Logger = log.New(memberlistLog{n.log.With("component", "memberlist")}, "", 0)
	if c.ClusterKey != nil {
		kr, err := memberlist.NewKeyring(nil, deriveKey(c.ClusterKey, infoGossip))
		if err != nil {
			return nil, fmt.Errorf("p2p: keyring: %w", err)
		}
		mc.Keyring = kr
		mc.GossipVerifyIncoming = true
		mc.GossipVerifyOutgoing = true
	}
	return mc, nil
}

// Run joins the cluster, announces the node's content, serves blobs and
// keeps connections to members, until ctx ends. Then it leaves the cluster
// gracefully, stops serving and releases everything New opened; it returns
// once every goroutine it started has ended.
func (n *Node) Run(ctx context.Context) error {
	if !n.started.CompareAndSwap(false, true) {
		return errors.New("p2p: Run called twice")
	}
	n.host.SetStreamHandler(ProtocolID, n.handleStream)
	n.host.SetStreamHandler(ProtocolV12, n.handleStream)
	n.host.SetStreamHandler(ProtocolV11, n.handleStream)
	n.host.SetStreamHandler(ImageProtocolID, n.handleImage)
	n.host.SetStreamHandler(TagProtocolID, n.handleTag)
	n.host.SetStreamHandler(PreheatProtocolID, n.handlePreheat)
	n.log.Info("mesh node running", "peer", n.id, "name", n.cfg.NodeName,
		"gossip", n.gossipAddr, "addrs", n.host.Addrs(), "protection", n.protectionName())
	var wg sync.WaitGroup
	if n.protection == "" {
		n.metrics.openMesh.Set(1)
		wg.Go(func() { n.warnOpen(ctx) })
	}
	wg.Go(func() { n.joinLoop(ctx) })
	wg.Go(func() { n.recoverLoop(ctx) })
	wg.Go(func() { n.connectLoop(ctx) })
	wg.Go(func() { n.advertiseLoop(ctx) })
	wg.Wait()
	return n.shutdown()
}

func (n *Node) shutdown() error {
	n.host.RemoveStreamHandler(ProtocolID)
	n.host.RemoveStreamHandler(ProtocolV12)
	n.host.RemoveStreamHandler(ProtocolV11)
	n.host.RemoveStreamHandler(ImageProtocolID)
	n.host.RemoveStreamHandler(TagProtocolID)
	if err := n.ml.Leave(n.cfg.Timing.LeaveTimeout); err != nil {
		n.log.Warn("leaving the cluster", "error", err)
	}
	err := n.closeAll()
	n.log.Info("mesh node stopped", "peer", n.id)
	return err
}

// closeAll releases what New opened, in reverse order, and waits for the
// stream handlers.
func (n *Node) closeAll() error {
	n.handlersMu.Lock()
	n.closing = true
	n.handlersMu.Unlock()
	n.stop()
	var errs []error
	if n.ml != nil {
		if err := n.ml.Shutdown(); err != nil {
			errs = append(errs, fmt.Errorf("memberlist: %w", err))
		}
	}
	if n.dht != nil {
		if err := n.dht.Close(); err != nil {
			errs = append(errs, fmt.Errorf("dht: %w", err))
		}
	}
	if n.host != nil {
		if err := n.host.Close(); err != nil {
			errs = append(errs, fmt.Errorf("libp2p host: %w", err))
		}
	}
	n.handlers.Wait()
	return errors.Join(errs...)
}

// enterHandler registers a running stream handler, unless the node is
// closing.
func (n *Node) enterHandler() bool {
	n.handlersMu.Lock()
	defer n.handlersMu.Unlock()
	if n.closing {
		return false
	}
	n.handlers.Add(1)
	return true
}

// ID is this node's libp2p peer ID.
func (n *Node) ID() peer.ID { return n.id }

func (n *Node) protectionName() string {
	if n.protection == "" {
		return "none (open mesh)"
	}
	return string(n.protection)
}

// bootstrapPeers feeds the DHT members to connect to when its routing table
// runs empty.
func (n *Node) bootstrapPeers() []peer.AddrInfo {
	return n.members.livePeers()
}

// memberlistLog routes memberlist's log lines, which carry their level as a
// "[LEVEL]" prefix, to slog.
type memberlistLog struct{ log *slog.Logger }

func (w memberlistLog) Write(p []byte) (int, error) {
	line := string(p)
	level := slog.LevelInfo
	for _, l := range []struct {
		prefix string
		level  slog.Level
	}{{"[DEBUG] ", slog.LevelDebug}, {"[INFO] ", slog.LevelInfo}, {"[WARN] ", slog.LevelWarn}, {"[ERR] ", slog.LevelError}, {"[ERROR] ", slog.LevelError}} {
		if len(line) >= len(l.prefix) && line[:len(l.prefix)] == l.prefix {
			line, level = line[len(l.prefix):], l.level
			break
		}
	}
	for len(line) > 0 && (line[len(line)-1] == '\n' || line[len(line)-1] == '\r') {
		line = line[:len(line)-1]
	}
	w.log.Log(context.Background(), level, line)
	return len(p), nil
}

var _ io.Writer = memberlistLog{}

// listenMultiaddr turns host:port into a TCP multiaddr; an empty host means
// all IPv4 interfaces.
func listenMultiaddr(addr string) (ma.Multiaddr, error) {
	ip, port, err := splitAddr(addr)
	if err != nil {
		return nil, err
	}
	return manet.FromNetAddr(&net.TCPAddr{IP: ip, Port: port})
}

// advertiseAddrs replaces the listen addresses by the advertised IP on the
// same ports.
func advertiseAddrs(addrs []ma.Multiaddr, ip net.IP) []ma.Multiaddr {
	var out []ma.Multiaddr
	seen := map[string]bool{}
	for _, a := range addrs {
		port, err := a.ValueForProtocol(ma.P_TCP)
		if err != nil {
			continue
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			continue
		}
		m, err := manet.FromNetAddr(&net.TCPAddr{IP: ip, Port: p})
		if err != nil || seen[m.String()] {
			continue
		}
		seen[m.String()] = true
		out = append(out, m)
	}
	return out
}

// orderAddrs puts routable addresses before loopback ones, so those survive
// the metadata size limit, and drops loopback when there is anything else.
func orderAddrs(addrs []ma.Multiaddr) []ma.Multiaddr {
	var outer, loop []ma.Multiaddr
	for _, a := range addrs {
		if manet.IsIPLoopback(a) {
			loop = append(loop, a)
		} else {
			outer = append(outer, a)
		}
	}
	if len(outer) > 0 {
		return outer
	}
	return slices.Clone(loop)
}

// tcpOptions configures libp2p's TCP transport: no port reuse, and the
// configured dialer, if any.
func tcpOptions(cfg Config) []any {
	opts := []any{tcp.DisableReuseport()}
	if cfg.Dial != nil {
		d := dialFunc(cfg.Dial)
		opts = append(opts, tcp.WithDialerForAddr(func(ma.Multiaddr) (tcp.ContextDialer, error) { return d, nil }))
	}
	return opts
}

// dialFunc adapts a function to tcp.ContextDialer.
type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

func (f dialFunc) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return f(ctx, network, addr)
}

// openMeshWarnEvery is how often an open mesh says so in the log.
const openMeshWarnEvery = time.Hour

// warnOpen says, at start and every hour until ctx ends, that the mesh is
// open: an operator who opted in should not forget it.
func (n *Node) warnOpen(ctx context.Context) {
	t := time.NewTicker(openMeshWarnEvery)
	defer t.Stop()
	for {
		n.log.Warn("MESH IS OPEN: no cluster key, so anyone who can reach the gossip and p2p ports can join the cluster and fetch every blob it holds; make a key with shoal keygen and pass it with --cluster-key-file",
			"gossip", n.gossipAddr, "addrs", n.host.Addrs())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
