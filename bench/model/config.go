package model

import (
	"errors"
	"time"

	"github.com/shoal-dev/shoal/p2p/swarm"
)

// Config describes a model run. Rates are in bytes per second.
type Config struct {
	// Nodes is how many nodes pull the image.
	Nodes int
	// Layers and LayerSize make the image: S = Layers × LayerSize.
	Layers    int
	LayerSize int64
	// Up and Down are each node's link capacities; RegistryUp is the
	// registry's upload. Each must be positive.
	Up, Down, RegistryUp float64
	// Goodput is the share of every link's rate that carries a blob's
	// bytes, the rest going to the frames' and the protocols' headers;
	// zero means 1. The bound T* counts the whole rate.
	Goodput float64
	// RTT is what each connection costs before its first byte arrives.
	RTT time.Duration
	// Seed names the nodes, so each seed gives another ranking, and
	// orders the holders a look-up returns. The same seed gives the same
	// run.
	Seed uint64
	// MaxUploads and MaxUploadsPerBlob cap each node's upload streams, as
	// p2p.Config does; zero means 4 and 2, p2p's defaults.
	MaxUploads, MaxUploadsPerBlob int
	// DesignatedPeers is how many designated peers a download asks before
	// the holders; zero means 2, the resolver's default.
	DesignatedPeers int
	// Holders caps the holders a look-up returns; zero means 4, the
	// p2p.Router's default.
	Holders int
	// Done, when closed, ends a run early with ErrStopped (a nil channel
	// never does).
	Done <-chan struct{}
	// Limits are the download rules' times; zero fields take the
	// resolver's defaults (BusyWait 2 s, BusyRetryFor 30 s, 10 s).
	Limits swarm.Limits
	// Prefetch: once a node's manifest arrived, its shoal downloads every
	// blob the manifest names at once, as the resolver's Prefetch does;
	// containerd still asks for Concurrent of them at a time, and takes a
	// blob its shoal holds at once.
	Prefetch bool
	// Spread, when positive, starts each node's pull at a time drawn
	// from the seed within Spread of the scenario's start, as ctr's own
	// start-up spreads the real mode's pulls: a designated node asked
	// for a blob before its own pull began leaves it to the asker (see
	// swarm.Coordinate).
	Spread time.Duration
	// Manifest is how long a node's pull takes before it asks for any
	// blob: containerd resolves the tag and fetches the manifest first (a
	// round trip and the manifest's bytes). Zero: the blobs are asked for
	// at the pull's start.
	Manifest time.Duration
	// Concurrent is how many blobs a node's pull downloads at once,
	// containerd's max_concurrent_downloads (3 by default): the blobs are
	// asked for in the manifest's layer order, each waiting for a free
	// slot. A node asked by a peer to fetch a blob for the cluster starts
	// it at once whatever its own pull's slots, as the daemon does (see
	// swarm.Coordinate). Zero: every blob at once.
	Concurrent int
	// UnpackPerByte is the seconds containerd takes to unpack a byte of a
	// layer. Layers are unpacked in order, one at a time, each once it is
	// downloaded and the one before it is unpacked; a node's pull ends when
	// its last layer is unpacked. Unpacking takes no link. Zero: no unpack
	// time, a pull ends with its last download.
	UnpackPerByte float64
	// Detect is how long after a member dies the others leave it out of
	// the designated rankings and of the look-ups' answers; until then
	// they ask it and fail. Zero means DetectAfter(Nodes), memberlist's
	// time with the daemon's LAN timing.
	Detect time.Duration
	// Step, when positive, moves the run on in steps of this much virtual
	// time, each step's rates approximately max-min fair (waterShare), an
	// event that falls within a step taken at its end, and a stream's
	// last byte placed within its step by its rate. Zero runs event by
	// event with exact rates (share): exact, but it grows about with the
	// square of the streams, where steps grow with the streams times the
	// steps. A step of T*/500 keeps makespan/T* within about 1%.
	Step time.Duration
}

func (c *Config) defaults() error {
	if c.Nodes < 1 || c.Layers < 1 || c.LayerSize < 1 {
		return errors.New("model: nodes, layers and layer size must be positive")
	}
	if c.Up <= 0 || c.Down <= 0 || c.RegistryUp <= 0 {
		return errors.New("model: link capacities must be positive")
	}
	if c.RTT < 0 || c.Step < 0 || c.Manifest < 0 || c.Spread < 0 || c.Concurrent < 0 || c.UnpackPerByte < 0 || c.Detect < 0 {
		return errors.New("model: the round trip, the step, the manifest's time, the downloads at once, the unpack time and the detection time must not be negative")
	}
	if c.Goodput < 0 || c.Goodput > 1 {
		return errors.New("model: the goodput is a share of the link, from 0 to 1")
	}
	if c.Goodput == 0 {
		c.Goodput = 1
	}
	if c.Detect == 0 {
		c.Detect = DetectAfter(c.Nodes)
	}
	setDefault(&c.MaxUploads, 4)
	setDefault(&c.MaxUploadsPerBlob, 2)
	setDefault(&c.DesignatedPeers, 2)
	setDefault(&c.Holders, 4)
	if c.Limits.BusyWait == 0 {
		c.Limits.BusyWait = 2 * time.Second
	}
	if c.Limits.BusyRetryFor == 0 {
		c.Limits.BusyRetryFor = 30 * time.Second
	}
	if c.Limits.Unreachable == 0 {
		c.Limits.Unreachable = swarm.RegistryFailedFor
	}
	return nil
}

func setDefault(v *int, d int) {
	if *v == 0 {
		*v = d
	}
}
