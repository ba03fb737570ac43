package resolver

import (
	"errors"
	"log/slog"
	"time"

	"github.com/shoal-dev/shoal/p2p/swarm"
)

// Config holds the resolver's optional settings. The zero value of a field
// means its default; DefaultConfig spells the defaults out.
type Config struct {
	// MissTimeout bounds how long a request waits for an upstream manifest,
	// or for a blob download to start delivering (response headers
	// received), before it is answered as a miss, so that containerd goes to the registry itself. The fetch goes
	// on in the background for later requests. Default 5s.
	MissTimeout time.Duration

	// StallTimeout is how long a running download may go without receiving a
	// byte before its source is abandoned and the download resumed elsewhere
	// from the same offset. Default 10s.
	StallTimeout time.Duration

	// ArrivalStall is how long a stream from a peer still receiving the blob
	// may go without a byte once it passed the bytes the peer held when it
	// answered: that peer's own source died, or the peer waits on this
	// node's next byte as this node waits on its own. The download then
	// asks again, from the same offset, where the ranking of the moment
	// sends it. Default 1s.
	ArrivalStall time.Duration

	// PeerStall is the least silence after which a stream from a peer that
	// holds the bytes it sends is given up for the next source; a stream
	// whose own gaps between reads are longer gets silenceGaps times its
	// usual gap, up to StallTimeout. Such a stream is also given up when
	// it falls far below the rate it had shown over PeerSlowWindow (see
	// pace.check). Default 500ms; -1 leaves peers to StallTimeout.
	PeerStall time.Duration

	// PeerSlowWindow is the span a peer stream's rate is measured over.
	// Default 1s.
	PeerSlowWindow time.Duration

	// FetchAttempts is how many times an upstream download is started or
	// resumed before it is given up. Default 3.
	FetchAttempts int

	// DesignatedPeers is how many of the peers ranked above this node for
	// a digest (the first that did not fail the download) are asked to
	// fetch it for the cluster before this node turns to the holders and
	// the registry itself. Default 2.
	DesignatedPeers int

	// BusyWait is how long a download waits for a slot on a busy peer that
	// holds the blob before it asks the registry instead, when no byte of
	// the blob has arrived. It comes out of MissTimeout, so keep it well
	// below. Default 2s.
	BusyWait time.Duration

	// BusyRetryFor is how long a download keeps asking again when every
	// source failed but a peer holding the blob was only out of upload
	// slots (errdefs.ErrResourceExhausted) or had not received the next
	// bytes yet, counted from the last byte that arrived. Once the blob's
	// size is known, it asks the registry after half of it. Default 30s.
	BusyRetryFor time.Duration

	// PeerLookupTimeout bounds the search for peers holding a blob. It
	// comes out of MissTimeout, so keep it well below. Default 1s.
	PeerLookupTimeout time.Duration

	// PrefetchBlobs is how many of an image manifest's blobs (config and
	// layers) Prefetch starts downloading at once when containerd fetches
	// the manifest. containerd asks for three blobs at a time, so without
	// it a cluster pulling a new image waits for the first layers before
	// anyone asks the registry for the rest. Default 64; -1 turns
	// prefetching off.
	PrefetchBlobs int

	// PieceSize is the size of the pieces a download of known size asks
	// peers for, several at once from different peers (PieceWorkers), when
	// the router can fetch ranges: a slow peer then costs only the pieces
	// it holds up. Default 4 MiB; -1 fetches every blob as one stream.
	PieceSize int64

	// PieceWorkers is how many pieces of one blob are fetched at once,
	// each from a different peer. Default 3.
	PieceWorkers int

	// Registries lists registries (host[:port], as containerd names them in
	// ?ns=) that a peer may ask this node to fetch from for the cluster
	// (PullFor), besides those this node's own clients named in a request:
	// the registries its containerd pulls from through it. A peer naming
	// any other is refused with an error wrapping errdefs.ErrPermissionDenied,
	// so that a member cannot make the node contact a host of its choosing
	// with the node's credentials.
	Registries []string

	// Mirrors, when set, is asked about a registry that is neither in
	// Registries nor named by a client yet: the daemon answers from
	// containerd's hosts.toml files, which may change while it runs.
	Mirrors func(registry string) bool

	// RegistryOnlyTags answers a tag from a registry's answer only: while
	// the registry cannot be reached, a tag is a miss and containerd's pull
	// fails. Zero, the default, lets a tag resolve without the registry:
	// to the image the node's containerd holds, else to the node's last
	// answer for it, else to the newest answer of the few members the mesh
	// asks (see ImageLookup). Such an answer may be stale: the tag may have
	// moved during the outage.
	RegistryOnlyTags bool

	// TagTTL is how long a registry's answer for a tag answers every
	// look-up of that tag in the cluster: the tag's designated node
	// (TagAsker) asks the registry and keeps the answer for TagTTL, and
	// the other nodes ask it. A tag moved upstream is seen at most TagTTL
	// later. Without a TagAsker router the node keeps its own answers for
	// TagTTL. Default 5s; -1 asks the registry at every look-up.
	TagTTL time.Duration

	// TagPeerTimeout bounds the wait for the tag's designated node; after
	// it, or any failure, the node asks the registry itself. Default 2s.
	TagPeerTimeout time.Duration

	// WantWait is how long this node, designated to fetch a blob that its
	// own clients do not want, waits for them to want it when the peer
	// asking leads another blob, before it leaves the blob to that peer
	// (see swarm.WaitsForWant). Default swarm.WantWait; -1 does not wait.
	WantWait time.Duration

	// Recorder, when set, is told where each download's bytes come from,
	// for the records of the node's pulls; nil records nothing.
	Recorder Recorder

	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		MissTimeout:       5 * time.Second,
		StallTimeout:      10 * time.Second,
		ArrivalStall:      time.Second,
		PeerStall:         500 * time.Millisecond,
		PeerSlowWindow:    time.Second,
		FetchAttempts:     3,
		PeerLookupTimeout: time.Second,
		BusyRetryFor:      30 * time.Second,
		BusyWait:          2 * time.Second,
		DesignatedPeers:   2,
		PrefetchBlobs:     64,
		PieceSize:         4 << 20,
		PieceWorkers:      3,
		TagTTL:            5 * time.Second,
		TagPeerTimeout:    2 * time.Second,
		WantWait:          swarm.WantWait,
	}
}

func (c *Config) fill() error {
	d := DefaultConfig()
	if c.MissTimeout == 0 {
		c.MissTimeout = d.MissTimeout
	}
	if c.StallTimeout == 0 {
		c.StallTimeout = d.StallTimeout
	}
	if c.ArrivalStall == 0 {
		c.ArrivalStall = d.ArrivalStall
	}
	if c.PeerStall == 0 {
		c.PeerStall = d.PeerStall
	}
	if c.PeerSlowWindow == 0 {
		c.PeerSlowWindow = d.PeerSlowWindow
	}
	if c.DesignatedPeers == 0 {
		c.DesignatedPeers = d.DesignatedPeers
	}
	if c.BusyWait == 0 {
		c.BusyWait = d.BusyWait
	}
	if c.BusyRetryFor == 0 {
		c.BusyRetryFor = d.BusyRetryFor
	}
	if c.PeerLookupTimeout == 0 {
		c.PeerLookupTimeout = d.PeerLookupTimeout
	}
	if c.FetchAttempts == 0 {
		c.FetchAttempts = d.FetchAttempts
	}
	if c.PrefetchBlobs == 0 {
		c.PrefetchBlobs = d.PrefetchBlobs
	}
	if c.PieceSize == 0 {
		c.PieceSize = d.PieceSize
	}
	if c.PieceWorkers == 0 {
		c.PieceWorkers = d.PieceWorkers
	}
	if c.TagTTL == 0 {
		c.TagTTL = d.TagTTL
	}
	if c.WantWait == 0 {
		c.WantWait = d.WantWait
	}
	if c.TagPeerTimeout == 0 {
		c.TagPeerTimeout = d.TagPeerTimeout
	}
	if c.TagTTL < -1 || c.TagPeerTimeout < 0 {
		return errors.New("resolver: TagTTL must be -1 (off) or more, TagPeerTimeout 0 or more")
	}
	if c.PieceSize < -1 || c.PieceWorkers < 0 {
		return errors.New("resolver: PieceSize must be -1 (off) or more, PieceWorkers 0 or more")
	}
	if c.PrefetchBlobs < -1 {
		return errors.New("resolver: PrefetchBlobs must be -1 (off) or more")
	}
	if c.WantWait < -1 {
		return errors.New("resolver: WantWait must be -1 (off) or more")
	}
	if c.PeerStall < -1 || c.PeerSlowWindow < 0 {
		return errors.New("resolver: PeerStall must be -1 (off) or more, PeerSlowWindow 0 or more")
	}
	if c.MissTimeout < 0 || c.StallTimeout < 0 || c.ArrivalStall < 0 || c.FetchAttempts < 0 {
		return errors.New("resolver: timeouts and attempts must not be negative")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}
