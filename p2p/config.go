package p2p

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/p2p/swarm"
	"github.com/shoal-dev/shoal/store"
)

// Default ports of the two listeners.
const (
	DefaultP2PPort    = 7501
	DefaultGossipPort = 7502
)

// Protection says how the libp2p side of a keyed cluster keeps non-members
// out. Gossip is encrypted with the cluster key in both cases.
type Protection string

const (
	// ProtectGater admits only connections from peer IDs that members
	// announced through the encrypted gossip, and dials only those. A
	// stream keeps libp2p's single cipher: one stream over loopback moved
	// about 1.28 GB/s, as fast as with no key (BenchmarkStream). A
	// non-member still completes libp2p's security handshake, which proves
	// its peer ID, before it is refused. The default.
	ProtectGater Protection = "gater"
	// ProtectPSK runs libp2p as a private network keyed from the cluster
	// key: a non-member cannot even finish the handshake, at the cost of a
	// second cipher over every byte: about 0.57 GB/s in the same benchmark,
	// 0.45 times the gater's throughput.
	ProtectPSK Protection = "psk"
)

// Config holds a Node's settings. The zero value of a field means its
// default, except where a field says otherwise; DefaultConfig spells the
// defaults out. Every node of a cluster should use the same ClusterKey,
// Protection and ProvideTTL.
type Config struct {
	// NodeName names this node in the member list and in logs. It must be
	// unique in the cluster. Zero means the host name, which is unique for
	// pods of a DaemonSet and for most fleets of machines.
	NodeName string

	// Version is this node's shoal version, announced to the members for
	// their status; zero announces none.
	Version string

	// GossipAddr is the host:port memberlist listens on, TCP and UDP.
	// Zero means ":7502" (all interfaces). Port 0 picks a free port, which
	// Status reports; useful in tests only, since seeds need a known port.
	GossipAddr string

	// P2PAddr is the host:port the libp2p host listens on (TCP). Zero means
	// ":7501". Port 0 picks a free port.
	P2PAddr string

	// AdvertiseIP is the address other members should use to reach this
	// node, for both gossip and libp2p. Zero means: memberlist picks a
	// private address of this host when GossipAddr binds all interfaces, and
	// libp2p announces every address it listens on. Set it (e.g. to the pod
	// IP) when the host has several interfaces.
	AdvertiseIP string

	// Join lists seeds: host:port, an IP, or a DNS name that resolves to
	// many addresses (a Kubernetes headless Service). Names are resolved to
	// all their addresses at every attempt; a missing port means the gossip
	// port. Zero means start alone and wait to be joined. Joining is retried
	// with backoff until it succeeds, again whenever this node finds itself
	// alone, and every Timing.RejoinInterval to heal split partitions.
	Join []string

	// DataDir holds the libp2p identity key (identity.key, mode 0600),
	// created on first start. Zero means an identity that lives only as long
	// as the process: the peer ID changes at every restart, so provider
	// records under the old ID linger in the DHT until they expire.
	DataDir string

	// AllowLooseKeyPermissions lets New load an identity key that its group
	// or others may read or write, with a warning. Zero refuses it: a
	// stolen identity lets a host pass for this node (see CheckKeyFile).
	AllowLooseKeyPermissions bool

	// ClusterKey is the cluster's shared secret, at least 32 bytes (see
	// LoadClusterKey). From it are derived the memberlist keyring (AES-256
	// gossip encryption, verified both ways) and, with ProtectPSK, the libp2p
	// private-network key. Nil means an open mesh: anyone who reaches the
	// ports can join and fetch blobs. New logs that loudly and Status says so.
	ClusterKey []byte

	// Protection chooses how libp2p keeps non-members out when ClusterKey is
	// set; ignored without a key. Zero means ProtectGater.
	Protection Protection

	// MaxUploads caps the blob streams this node serves at once. Over the
	// cap a request is answered "busy" at once, so the client tries another
	// peer, unless it asks for a blob this node streams to nobody: that
	// one is served, up to twice the cap (see swarm.UploadSlot), so that
	// every blob the node holds spreads. Zero means 4. More uploads share the uplink among more
	// downloaders, each slower, and a blob relayed down a chain of such
	// nodes falls further behind at every hop; fewer push clients to other
	// sources sooner, so the copies spread over more uplinks. Measured with
	// shoal bench --real (8 nodes, 4 layers of 32 MiB, 200 Mbit/s links),
	// the slowest node took 1.9 (cold) and 2.1 (warm) times the physical
	// bound with 32, and 1.6 and 1.5 with 3, 4 or 5.
	MaxUploads int

	// MaxUploadsPerBlob caps the streams of one blob this node serves at
	// once while the blob is still arriving here; more requesters are told
	// "busy" and find the blob at the nodes already receiving it, so a new
	// blob spreads as a tree in which every node uploads about once. Zero
	// means 2. Higher feeds more nodes directly, each slower. A blob held
	// whole is capped by MaxUploads only.
	MaxUploadsPerBlob int

	// MaxUploadRate caps the blob bytes per second this node sends to
	// peers, over all its upload streams together; MaxDownloadRate caps
	// what it receives from peers. Zero means no cap. The cap counts blob
	// bytes; the wire carries under 1 % more (libp2p framing and
	// encryption, TCP/IP headers). Bursts are 20 ms worth of bytes, so
	// the cap holds over any window of a second or more. Under an upload
	// cap the connections' sockets are paced too, 1 % above it (see
	// wireMargin), so that bytes held up above a full socket do not
	// leave faster than the cap when it drains. A capped upload
	// serves each stream more slowly rather than fewer streams: with many
	// downloaders, lower MaxUploads as well, so that they sooner fetch
	// from the nodes they already fed. Gossip, DHT and image-name traffic
	// are small and not counted by the blob cap.
	MaxUploadRate   int64
	MaxDownloadRate int64

	// RescanInterval is how often Content.Walk is called to provide new
	// blobs and forget the ones that disappeared (containerd's garbage
	// collection emits no event). Zero means one minute. Shorter finds
	// missed content sooner at the cost of a walk of the content store.
	RescanInterval time.Duration

	// ProvideTTL is how long a provider record lives in the DHT; records
	// are re-announced after half of it. A blob that disappeared stays
	// advertised until its record expires (the DHT has no withdrawal), which
	// costs a client one "not found" answer. Zero means one hour. Shorter
	// expires stale records sooner and costs more announcements.
	ProvideTTL time.Duration

	// ProvideConcurrency bounds the announcements in flight during a
	// rescan. Zero means 8.
	ProvideConcurrency int

	// AvoidFor is how long a peer passed to Avoid is left out of Providers.
	// Zero means ten minutes.
	AvoidFor time.Duration

	// Puller, when set, lets a peer that asks for a blob this node does not
	// hold, naming its registry and repository (FetchThrough), have this
	// node fetch it for the cluster and stream it while it arrives. The
	// blob returned may still be arriving: its ReadAt blocks until the
	// bytes are there. Nil answers such requests "not found", and so does
	// an open mesh (no ClusterKey), where no peer is authenticated. A Puller
	// that refuses the registry returns an error wrapping
	// errdefs.ErrPermissionDenied: the peer is answered "not found" and the
	// refusal is counted and logged. One that leaves the blob to the asker
	// (resolver.ErrFetchYourself) or names the peer fetching it
	// (*resolver.FetchingAtError) has it answered so.
	Puller Puller

	// Labels are this node's labels (key=value, see CheckLabels), carried
	// in its member metadata so that a preheat can choose nodes by them.
	// Nil: none.
	Labels map[string]string

	// Preheater, when set, fills this node with a whole image at a
	// member's request (PreheatProtocolID). Nil answers such requests with
	// an error, and so does an open mesh, whose peers are not
	// authenticated.
	Preheater Preheater

	// Images answers peers asking which manifest this node holds for an
	// image name (ImageProtocolID), so tags resolve from the mesh when the
	// registry is down. Nil answers every such question "not found".
	Images ImageSource

	// ImagePeers is how many members, in rendezvous order over the image
	// name, ResolveImage asks; the tag's designated node comes first. Zero
	// means 3. The question never goes to every member, so its cost does
	// not grow with the cluster.
	ImagePeers int

	// Tags, when set, resolves tags for the peers that ask this node, the
	// tag's designated node (TagProtocolID), from the registries it
	// mirrors. Nil answers them "not found", and so does an open mesh (no
	// ClusterKey), where no peer is authenticated: the askers then ask the
	// registry themselves.
	Tags TagSource

	// OnRegistryBackoff, when set, is called when a member says that a
	// registry asked it to slow down (429, or 503 with Retry-After) and is
	// to be left alone for left; origin names the member the registry
	// answered. It is called once per back-off that is news to this node,
	// from memberlist's goroutine, so it must not block. A blob request
	// that names a registry (a peer asking this node to fetch for the
	// cluster) is answered with the back-off too, whoever heard it first.
	OnRegistryBackoff func(registry string, left time.Duration, origin string)

	// Dial, when set, opens the libp2p host's outgoing TCP connections
	// (network "tcp", address host:port). Nil dials directly. The
	// simulated benchmark passes one that shapes every connection by the
	// links of both ends.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	// Timing holds the protocol timers. Zero fields take LANTiming's values;
	// tests on loopback use LocalTiming.
	Timing Timing

	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger

	// Metrics registers the node's Prometheus collectors; nil registers
	// none. libp2p's own metrics are not exported.
	Metrics prometheus.Registerer

	// noise secures libp2p connections with Noise (ChaCha20-Poly1305)
	// alone, instead of libp2p's default of TLS 1.3 (AES-GCM where the CPU
	// has it) with Noise as a fallback. Unexported: only the stream
	// benchmark sets it, to compare the two.
	noise bool
}

// Puller fetches a blob on behalf of a peer; see Config.Puller.
type Puller interface {
	// PullFor is asked by the peer from, as its request names it. take takes
	// an upload slot for the peer's stream; PullFor calls it once it knows
	// it will stream the blob, and not for an answer that leaves the blob
	// to the peer or names the fetcher (see swarm.TakesSlot). When take
	// says false it starts nothing and returns resolver.ErrNoSlot, which
	// the peer is answered busy. take is not safe for concurrent use.
	PullFor(ctx context.Context, dgst digest.Digest, registry, repo string, from swarm.Asker, take func() bool) (store.Blob, error)
}

// Timing holds the timers of membership, routing and transfer. A zero field
// means the LANTiming value.
type Timing struct {
	// Memberlist failure detection and dissemination (see memberlist.Config).
	ProbeInterval    time.Duration
	ProbeTimeout     time.Duration
	GossipInterval   time.Duration
	PushPullInterval time.Duration
	SuspicionMult    int
	// GossipTCPTimeout bounds a memberlist TCP exchange (join, push/pull).
	GossipTCPTimeout time.Duration
	// LeaveTimeout bounds the wait for the leave message to go out at shutdown.
	LeaveTimeout time.Duration

	// JoinBackoffMin and JoinBackoffMax bound the retry delay of joining;
	// JoinBackoffMax is also how often a joined node checks that it is not alone.
	JoinBackoffMin time.Duration
	JoinBackoffMax time.Duration
	// RejoinInterval is how often a node that has members contacts the seeds
	// anyway, to merge a partition that kept members on both sides.
	RejoinInterval time.Duration
	// LostRetryInterval is how often a node contacts the members it lost
	// without their leaving (dead, or cut off) in the last ten minutes: a
	// healed partition or a link that came back merges within it. Each
	// contact to a member still dead costs a failed connection.
	LostRetryInterval time.Duration

	// ConnectInterval is how often the node tops up its libp2p connections
	// to members, besides every membership change.
	ConnectInterval time.Duration
	// DialTimeout bounds opening a libp2p connection.
	DialTimeout time.Duration
	// RequestTimeout bounds reading a transfer request (server) and its
	// response header (client).
	RequestTimeout time.Duration
	// IdleTimeout is how long a transfer may make no progress, on either
	// side, before it is cut: a stalled reader cannot hold an upload slot.
	IdleTimeout time.Duration
	// FindTimeout bounds a Providers lookup.
	FindTimeout time.Duration
	// FindQuiet ends a Providers lookup that found a provider once no
	// member answered it for this long: the members that answer later
	// are slow, and others hold the same records.
	FindQuiet time.Duration
	// ProvideTimeout bounds one announcement.
	ProvideTimeout time.Duration
}

// LANTiming is for nodes of one data centre.
func LANTiming() Timing {
	return Timing{
		ProbeInterval:     time.Second,
		ProbeTimeout:      500 * time.Millisecond,
		GossipInterval:    200 * time.Millisecond,
		PushPullInterval:  30 * time.Second,
		SuspicionMult:     4,
		GossipTCPTimeout:  10 * time.Second,
		LeaveTimeout:      5 * time.Second,
		JoinBackoffMin:    time.Second,
		JoinBackoffMax:    30 * time.Second,
		RejoinInterval:    5 * time.Minute,
		LostRetryInterval: 10 * time.Second,
		ConnectInterval:   10 * time.Second,
		DialTimeout:       5 * time.Second,
		RequestTimeout:    5 * time.Second,
		IdleTimeout:       30 * time.Second,
		FindTimeout:       3 * time.Second,
		FindQuiet:         200 * time.Millisecond,
		ProvideTimeout:    30 * time.Second,
	}
}

// LocalTiming is for many nodes in one process or on one host (tests): fast
// gossip and retries, and timeouts that still tolerate a loaded machine.
func LocalTiming() Timing {
	return Timing{
		ProbeInterval:     time.Second,
		ProbeTimeout:      500 * time.Millisecond,
		GossipInterval:    50 * time.Millisecond,
		PushPullInterval:  5 * time.Second,
		SuspicionMult:     4,
		GossipTCPTimeout:  2 * time.Second,
		LeaveTimeout:      2 * time.Second,
		JoinBackoffMin:    100 * time.Millisecond,
		JoinBackoffMax:    time.Second,
		RejoinInterval:    10 * time.Second,
		LostRetryInterval: time.Second,
		ConnectInterval:   500 * time.Millisecond,
		DialTimeout:       10 * time.Second,
		RequestTimeout:    10 * time.Second,
		IdleTimeout:       5 * time.Second,
		FindTimeout:       5 * time.Second,
		FindQuiet:         200 * time.Millisecond,
		ProvideTimeout:    10 * time.Second,
	}
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		GossipAddr:         net.JoinHostPort("", strconv.Itoa(DefaultGossipPort)),
		P2PAddr:            net.JoinHostPort("", strconv.Itoa(DefaultP2PPort)),
		Protection:         ProtectGater,
		MaxUploads:         4,
		MaxUploadsPerBlob:  2,
		RescanInterval:     time.Minute,
		ProvideTTL:         time.Hour,
		ProvideConcurrency: 8,
		AvoidFor:           10 * time.Minute,
		ImagePeers:         3,
		Timing:             LANTiming(),
	}
}

// fill replaces zero fields by their defaults and checks the result.
func (c *Config) fill() error {
	d := DefaultConfig()
	setDefault(&c.GossipAddr, d.GossipAddr)
	setDefault(&c.P2PAddr, d.P2PAddr)
	setDefault(&c.Protection, d.Protection)
	setDefault(&c.MaxUploads, d.MaxUploads)
	setDefault(&c.MaxUploadsPerBlob, d.MaxUploadsPerBlob)
	setDefault(&c.RescanInterval, d.RescanInterval)
	setDefault(&c.ProvideTTL, d.ProvideTTL)
	setDefault(&c.ProvideConcurrency, d.ProvideConcurrency)
	setDefault(&c.AvoidFor, d.AvoidFor)
	setDefault(&c.ImagePeers, d.ImagePeers)
	c.Timing.fill(d.Timing)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}

	var errs []error
	if err := CheckLabels(c.Labels); err != nil {
		errs = append(errs, fmt.Errorf("labels: %w", err))
	}
	if _, _, err := splitAddr(c.GossipAddr); err != nil {
		errs = append(errs, fmt.Errorf("gossip address: %w", err))
	}
	if _, _, err := splitAddr(c.P2PAddr); err != nil {
		errs = append(errs, fmt.Errorf("p2p address: %w", err))
	}
	if c.AdvertiseIP != "" && net.ParseIP(c.AdvertiseIP) == nil {
		errs = append(errs, fmt.Errorf("advertise IP %q is not an IP address", c.AdvertiseIP))
	}
	if c.ClusterKey != nil && len(c.ClusterKey) < ClusterKeySize {
		errs = append(errs, fmt.Errorf("cluster key has %d bytes, want at least %d", len(c.ClusterKey), ClusterKeySize))
	}
	if c.Protection != ProtectGater && c.Protection != ProtectPSK {
		errs = append(errs, fmt.Errorf("protection %q: want %q or %q", c.Protection, ProtectGater, ProtectPSK))
	}
	if c.MaxUploads < 0 || c.MaxUploadsPerBlob < 0 || c.ProvideConcurrency < 0 || c.ImagePeers < 0 {
		errs = append(errs, errors.New("max uploads and provide concurrency must not be negative"))
	}
	if c.MaxUploadRate < 0 || c.MaxDownloadRate < 0 {
		errs = append(errs, errors.New("upload and download rates must not be negative (zero means no cap)"))
	}
	if c.RescanInterval < 0 || c.ProvideTTL < 0 || c.AvoidFor < 0 {
		errs = append(errs, errors.New("rescan interval, provide TTL and avoid duration must not be negative"))
	}
	if err := c.Timing.check(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (t *Timing) fill(d Timing) {
	setDefault(&t.ProbeInterval, d.ProbeInterval)
	setDefault(&t.ProbeTimeout, d.ProbeTimeout)
	setDefault(&t.GossipInterval, d.GossipInterval)
	setDefault(&t.PushPullInterval, d.PushPullInterval)
	setDefault(&t.SuspicionMult, d.SuspicionMult)
	setDefault(&t.GossipTCPTimeout, d.GossipTCPTimeout)
	setDefault(&t.LeaveTimeout, d.LeaveTimeout)
	setDefault(&t.JoinBackoffMin, d.JoinBackoffMin)
	setDefault(&t.JoinBackoffMax, d.JoinBackoffMax)
	setDefault(&t.RejoinInterval, d.RejoinInterval)
	setDefault(&t.LostRetryInterval, d.LostRetryInterval)
	setDefault(&t.ConnectInterval, d.ConnectInterval)
	setDefault(&t.DialTimeout, d.DialTimeout)
	setDefault(&t.RequestTimeout, d.RequestTimeout)
	setDefault(&t.IdleTimeout, d.IdleTimeout)
	setDefault(&t.FindTimeout, d.FindTimeout)
	setDefault(&t.FindQuiet, d.FindQuiet)
	setDefault(&t.ProvideTimeout, d.ProvideTimeout)
}

func (t *Timing) check() error {
	for _, d := range []time.Duration{
		t.ProbeInterval, t.ProbeTimeout, t.GossipInterval, t.PushPullInterval,
		t.GossipTCPTimeout, t.LeaveTimeout, t.JoinBackoffMin, t.JoinBackoffMax,
		t.RejoinInterval, t.LostRetryInterval, t.ConnectInterval, t.DialTimeout, t.RequestTimeout,
		t.IdleTimeout, t.FindTimeout, t.FindQuiet, t.ProvideTimeout,
	} {
		if d < 0 {
			return errors.New("timing: durations must not be negative")
		}
	}
	if t.SuspicionMult < 0 {
		return errors.New("timing: suspicion multiplier must not be negative")
	}
	if t.JoinBackoffMin > t.JoinBackoffMax {
		return errors.New("timing: join backoff minimum exceeds its maximum")
	}
	return nil
}

func setDefault[T comparable](v *T, d T) {
	var zero T
	if *v == zero {
		*v = d
	}
}

// splitAddr parses host:port; an empty host means all interfaces.
func splitAddr(addr string) (net.IP, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, 0, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, 0, fmt.Errorf("port %q: %w", portStr, err)
	}
	if host == "" {
		return net.IPv4zero, int(port), nil
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return nil, 0, fmt.Errorf("host %q is not an IP address", host)
	}
	return ip, int(port), nil
}
