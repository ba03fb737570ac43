package swarm

import "time"

// Asked is what a designated node knows when a peer asks it to fetch a
// blob for the cluster that it neither holds nor is downloading.
type Asked struct {
	// Wanted: this node's own clients asked for the blob's repository
	// lately (see WantedFor), so it will need the blob itself.
	Wanted bool
	// Fetcher is the peer this node last left the blob to, at Told; empty
	// when none.
	Fetcher string
	Told    time.Time
	// Asker is the peer asking now.
	Asker string
	// AskerLeads: the asker said it fetches another blob from the
	// registry for the cluster now, or waits for a designated peer's
	// answer that may leave it one (see WaitsForWant).
	AskerLeads bool
}

// Answer is a designated node's answer to a peer that asks it to fetch a
// blob (see Coordinate).
type Answer int

const (
	// FetchForCluster: start the download and stream it to the asker as
	// it arrives.
	FetchForCluster Answer = iota
	// FetchYourself: the asker fetches the blob itself; nobody else does
	// through this node.
	FetchYourself
	// ReadFromFetcher: the asker reads the blob from Asked.Fetcher, which
	// is fetching it.
	ReadFromFetcher
)

func (a Answer) String() string {
	switch a {
	case FetchForCluster:
		return "fetch for the cluster"
	case FetchYourself:
		return "fetch it yourself"
	case ReadFromFetcher:
		return "read from the fetcher"
	}
	return "unknown"
}

// How long a node counts as wanting a repository after its own clients
// last asked for it, and how long a designated node points askers at the
// peer it left a blob to.
const (
	WantedFor = time.Minute
	LeftFor   = time.Minute
)

// WantWait is how long a designated node that does not want a blob waits
// for its own clients to want it, when the asker already leads another
// blob (see WaitsForWant). The pulls of one scale-out start within tens to
// hundreds of milliseconds of one another.
const WantWait = 300 * time.Millisecond

// WaitsForWant is the rule for when a designated node that would leave a
// blob to the asker (FetchYourself) first waits, up to WantWait, for its
// own clients to want the blob, and then answers again: when the asker
// said it already fetches another blob from the registry for the cluster,
// or waits for an answer that may leave it one (a pull's first questions
// go out together, and the first of them says nothing). Without the wait, the node whose pull starts first is left every layer
// that the others do not want yet, a few milliseconds before they do,
// and leads them all: the others then take the whole image through that
// node's uplink, where each layer would have had its own leader. A lone
// pull pays nothing for its first layer, and its later ones wait while the
// first fills its link. An asker the blob was left to already, asking
// again, waited once and is not held again.
func WaitsForWant(a Asked, now time.Time) bool {
	return a.AskerLeads && a.Fetcher != a.Asker && Coordinate(a, now) == FetchYourself
}

// LeadWorthy is the least size of a blob whose first copy keeps a node's
// links busy: one that ranks first for a smaller one, an image's config,
// does not count as leading (see WillLead).
const LeadWorthy = 1 << 20

// Unfetched is what a node that asks a designated peer for one blob knows
// of another blob of the same image.
type Unfetched struct {
	// First: this node ranks first for it (Spread).
	First bool
	// Size is its size from the manifest; 0 when unknown.
	Size int64
	// Held: this node or its containerd holds it.
	Held bool
	// Tried: a download of it here tried a source already, and says for
	// itself whether it leads. A download the prefetch started, still
	// looking up the blob's holders, has not.
	Tried bool
}

// WillLead is the rule for when a node that asks a designated peer for a
// blob says it leads another (see WaitsForWant) though it fetches none from
// the registry yet: it ranks first for another blob of the image, of at
// least LeadWorthy bytes, that it does not hold and whose download has not
// tried a source yet: its download will fetch that blob for the cluster.
// Prefetch starts an image's blobs together, and a question about a blob
// designated elsewhere often goes out while the download of the node's own
// blob still looks up its holders. Said without the word, the blob is
// left to this node when the designated peer's own pull starts tens of
// milliseconds later: this node then fetches two layers and serves both
// first copies through its uplink, and the designated peer fetches none.
func WillLead(b Unfetched) bool {
	return b.First && b.Size >= LeadWorthy && !b.Held && !b.Tried
}

// Coordinate is the rule for what a designated node does when asked to
// fetch a blob it neither holds nor is downloading. A node that wants the
// blob itself fetches it for the cluster, as the designated fetcher: the
// copy it keeps is one it needs, and an image's layers start from as many
// nodes as it has layers (see Spread). A node that does not want it
// coordinates rather than relays: the first asker fetches the blob itself,
// and those who ask while it does are pointed at it. So a lone pull costs
// one round trip over a direct one and leaves nothing on nodes that never
// run the image, and concurrent pulls still make the registry send one
// copy.
//
// Once a blob is left to a fetcher, askers are pointed at it even after
// this node comes to want the blob: its own download reads from the
// fetcher too (see the resolver's sources), and a second download here,
// for the asker, would be a second fetcher racing the first one to the
// registry.
func Coordinate(a Asked, now time.Time) Answer {
	switch {
	case a.Asker == "":
		// An asker this node cannot name cannot be pointed at.
		return FetchForCluster
	case a.Fetcher != "" && a.Fetcher != a.Asker && now.Sub(a.Told) < LeftFor:
		return ReadFromFetcher
	case a.Wanted:
		return FetchForCluster
	}
	return FetchYourself
}

// TakesSlot is the rule for when a designated node asked to fetch a blob
// takes one of its upload slots: only for an answer that streams the blob
// to the asker, fetching it for the cluster. It coordinates first and
// looks for a free slot after: a node whose slots are all taken still
// leaves the blob to the asker or points it at the fetcher, where a busy
// answer would have the asker wait for a fetch that never starts (see
// Download.Skip) and then fetch the blob itself, as would every other
// asker.
func TakesSlot(a Answer) bool { return a == FetchForCluster }

// Holding is what a designated node that holds a blob whole knows when a
// peer asks it for the blob from its first byte, as the node that fetches
// it for the cluster.
type Holding struct {
	// Reader is the first peer this node streamed the blob to from its
	// first byte, at Since; empty when none.
	Reader string
	Since  time.Time
	// Led: this node streamed the blob to a peer while it was still
	// arriving, within LeftFor. It fetched the blob for a cold start,
	// and its readers already spread it among themselves.
	Led bool
	// Asker is the peer asking now.
	Asker string
}

// PointAtReader is the rule for a designated node that holds a blob
// whole, when a peer asks it for the blob from the first byte: the first
// such asker is streamed the blob, and the next, within LeftFor, are
// pointed at that one (ReadFromFetcher), which they then read it from as
// it arrives there. The node so sends the blob once where it would send
// it once per reader. In a warm start one node holds the image and is the
// designated node of one of its layers: every other node read that layer
// from it, while the layers designated elsewhere left it once each (their
// designated nodes read them and the rest read from those).
//
// Not after the node streamed the blob while it was still arriving (Led):
// it fetched the blob for a cold start, whose readers are many and take
// it from one another already, and a late one pointed at another reader
// would queue behind that reader's own stream instead of taking a free
// slot here. An asker resuming mid-blob is streamed what it lacks (the
// caller asks the rule only for a first byte), and so is the reader itself
// asking again.
func PointAtReader(h Holding, now time.Time) bool {
	return h.Asker != "" && !h.Led && h.Reader != "" && h.Reader != h.Asker && now.Sub(h.Since) < LeftFor
}

// NewReader says whether a holder that streams a blob from its first byte
// to h.Asker, as PointAtReader allowed, records the asker as the blob's
// first reader: when none is recorded, or the one recorded was streamed
// the blob LeftFor ago or more.
func NewReader(h Holding, now time.Time) bool {
	return h.Reader == "" || now.Sub(h.Since) >= LeftFor
}

// Asker is the peer that asks a node to fetch a blob for the cluster, as
// its request names it.
type Asker struct {
	// Peer is its ID, as a string; empty when the request came from no
	// peer this node can name.
	Peer string
	// Leads: it said it fetches another blob from the registry for the
	// cluster now, or may be left one (see WaitsForWant).
	Leads bool
}
