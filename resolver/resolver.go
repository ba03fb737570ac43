package resolver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/p2p/swarm"
	"github.com/shoal-dev/shoal/store"
)

// Resolver answers manifest and blob requests from the best source it has.
// Its methods are safe for concurrent use. Downloads it starts outlive the
// request that started them (other clients may be reading them) and end when
// Close is called or Run's context ends.
type Resolver struct {
	cfg      Config
	store    store.Store
	upstream Upstream
	local    Local
	images   ImageLookup
	router   Router
	m        *metrics
	rec      Recorder // never nil

	ctx    context.Context // parent of every download
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// closing is set, under lifeMu, once Close has begun: no download
	// starts after it (see start).
	lifeMu  sync.Mutex
	closing bool

	mu      sync.Mutex
	flights map[digest.Digest]*flight
	types   map[digest.Digest]string // media types of manifests seen
	// groups maps a blob to the blobs of the image manifest it was last
	// prefetched from, the largest first (see Designator).
	groups map[digest.Digest][]digest.Digest
	// sizes holds the size a manifest gave each blob it named (see
	// knownSize).
	sizes map[digest.Digest]int64
	// misses holds the blobs whose last download failed in a way that
	// asking again at once would repeat (see swarm.Download.MissFor): they
	// are misses until then, so containerd fetches them from the registry
	// itself.
	misses map[digest.Digest]miss
	// coordMu guards wanted, the repositories this node's own clients
	// asked for lately, wantedNow, closed and replaced whenever they ask
	// (see waitForWant), and leftTo, the peers that were left blobs to
	// fetch themselves (see coordinate).
	coordMu   sync.Mutex
	wanted    map[string]time.Time
	wantedNow chan struct{}
	leftTo    map[digest.Digest]leftTo
	// pace is the node's receiving rate over the peer streams it judges.
	pace *nodePace
	// lastByte is when, in Unix nanoseconds, the node last received bytes
	// of any blob (see lastByteAt).
	lastByte atomic.Int64
	// backoffs holds the registries that asked to slow down.
	backoffs *backoffs
	// tags holds the node's answers for tags (see tags.go).
	tags *tagCache
	// mirrored holds the registries peers may ask this node to fetch from:
	// Config.Registries and those its own clients named (see mirrors).
	mirrored map[string]bool
}

// miss is a blob answered as a miss until a time, and why; for the
// requests naming registry only, or for all when it is "".
type miss struct {
	until    time.Time
	why      string
	registry string
}

// registryFailedFor is how long a blob is a miss after the registry failed
// every attempt at it, and how long a download does not ask a registry it
// could not reach (see swarm.Download.MissFor).
const registryFailedFor = swarm.RegistryFailedFor

// Sources are the optional places a resolver reads from besides its store
// and the upstream registry. A nil field is a source the node does not have.
type Sources struct {
	Local  Local       // the node's containerd content
	Images ImageLookup // the node's containerd images, for tags when the registry is down
	Router Router      // the mesh: peers that hold blobs
}

// flight is one upstream download, shared by every request for its digest.
type flight struct {
	ready chan struct{} // closed once ingest or err is set
	// fed is closed once a source answered: only then is the ingest
	// served to peers. An ingest published early (its size known from the
	// manifest) may have no source yet, and a peer that read from it could
	// be the very source it ends up waiting for.
	fed    chan struct{}
	ingest store.Ingest
	source atomic.Value // Source: where the bytes come from; see sourceNow
	// leads: the download fetches the blob from the registry for the
	// cluster now (see swarm.LeadsNow), and peers that read it are told so.
	leads atomic.Bool
	// asking counts the download's questions to a designated peer still
	// unanswered: any of them may leave the blob to this node (see
	// designatedAsk).
	asking atomic.Int32
	// tried: the download tried its first source (see willLead).
	tried atomic.Bool
	trust *trust
	err   error
}

// New returns a resolver over st (shoal's own store, where downloads land)
// and up (the registries). reg receives its metrics; nil skips them.
func New(st store.Store, up Upstream, src Sources, cfg Config, reg prometheus.Registerer) (*Resolver, error) {
	if st == nil {
		return nil, errors.New("resolver: a store is required")
	}
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	var rec Recorder = noRecorder{}
	if cfg.Recorder != nil {
		rec = cfg.Recorder
	}
	return &Resolver{
		rec:      rec,
		cfg:      cfg,
		store:    st,
		upstream: up,
		local:    src.Local,
		images:   src.Images,
		router:   src.Router,
		m:        newMetrics(reg),
		ctx:      ctx,
		cancel:   cancel,
		flights:  make(map[digest.Digest]*flight),

		misses:    make(map[digest.Digest]miss),
		wanted:    make(map[string]time.Time),
		wantedNow: make(chan struct{}),
		leftTo:    make(map[digest.Digest]leftTo),
		backoffs:  newBackoffs(),
		pace:      newNodePace(cfg.PeerSlowWindow),
		mirrored:  mirroredSet(cfg.Registries),
		tags:      newTagCache(),
		types:     make(map[digest.Digest]string),
		groups:    make(map[digest.Digest][]digest.Digest),
		sizes:     make(map[digest.Digest]int64),
	}, nil
}

// Run blocks until ctx ends, then stops every download and waits for them.
func (r *Resolver) Run(ctx context.Context) error {
	<-ctx.Done()
	r.Close()
	return nil
}

// Close stops every download and waits for them to end. A request that
// comes meanwhile is a miss.
func (r *Resolver) Close() {
	r.lifeMu.Lock()
	r.closing = true
	r.lifeMu.Unlock()
	r.cancel()
	r.wg.Wait()
}

// start runs f's download, registered by join, in a goroutine Close waits
// for. Once Close has begun it fails f instead: a WaitGroup must not grow
// from zero while Close waits on it.
func (r *Resolver) start(req BlobRequest, f *flight) {
	r.lifeMu.Lock()
	defer r.lifeMu.Unlock()
	if r.closing {
		f.err = fmt.Errorf("blob %s: shoal is stopping: %w", req.Digest, errdefs.ErrNotFound)
		close(f.ready)
		r.finish(req.Digest)
		return
	}
	r.wg.Add(1)
	go r.download(req, f)
}

// Blob finds a blob. It returns an error wrapping errdefs.ErrNotFound when no
// source can deliver it within the configured time: a miss.
func (r *Resolver) Blob(ctx context.Context, req BlobRequest) (*Blob, error) {
	if err := validDigest(req.Digest); err != nil {
		return nil, err
	}
	if req.Registry != "" {
		r.noteMirrored(req.Registry)
		r.noteWanted(req.Registry, req.Repo)
	}
	b, err := r.blob(ctx, req)
	if err != nil {
		r.m.lookups.WithLabelValues("blob", "miss").Inc()
		if !errdefs.IsNotFound(err) && !errdefs.IsInvalidArgument(err) && ctx.Err() == nil {
			// Whatever went wrong upstream, to containerd it is a miss.
			err = fmt.Errorf("blob %s: no source: %w: %w", req.Digest, errdefs.ErrNotFound, err)
		}
		return nil, err
	}
	r.m.lookups.WithLabelValues("blob", string(b.Source)).Inc()
	return r.countedLocal(b), nil
}

func (r *Resolver) blob(ctx context.Context, req BlobRequest) (*Blob, error) {
	if b, err := r.openLocal(ctx, req.Digest); err == nil || !errdefs.IsNotFound(err) {
		return b, err
	}
	if req.Size <= 0 {
		req.Size = r.knownSize(req.Digest)
	}
	// A download that commits between our store look-up and our flight
	// look-up is found on the second pass.
	for range 2 {
		f, started := r.join(req)
		if started {
			r.start(req, f)
		}
		b, err := r.await(ctx, req.Digest, f)
		if errors.Is(err, errdefs.ErrAlreadyExists) {
			if b, err := r.openLocal(ctx, req.Digest); err == nil || !errdefs.IsNotFound(err) {
				return b, err
			}
			continue
		}
		return b, err
	}
	return nil, fmt.Errorf("blob %s: %w", req.Digest, errdefs.ErrNotFound)
}

// openLocal looks in containerd, then in shoal's own store.
func (r *Resolver) openLocal(ctx context.Context, dgst digest.Digest) (*Blob, error) {
	if r.local != nil {
		rd, err := r.local.Open(ctx, dgst)
		if err == nil {
			return readerAtBlob(dgst, rd, SourceContainerd), nil
		}
		if !errdefs.IsNotFound(err) && !errdefs.IsUnavailable(err) {
			r.cfg.Logger.Warn("containerd content read failed", "digest", dgst, "err", err)
		}
	}
	rd, err := r.store.Open(ctx, dgst)
	if err != nil {
		return nil, err
	}
	return readerAtBlob(dgst, rd, SourceStore), nil
}

func readerAtBlob(dgst digest.Digest, rd store.Blob, src Source) *Blob {
	size := rd.Size()
	return &Blob{
		Digest: dgst,
		Size:   size,
		Source: src,
		reader: func(_ context.Context, off int64) (io.ReadCloser, error) {
			if off < 0 || off > size {
				return nil, fmt.Errorf("offset %d of blob %s of %d bytes: %w", off, dgst, size, errdefs.ErrInvalidArgument)
			}
			return &heldSection{SectionReader: io.NewSectionReader(rd, off, size-off), blob: rd, off: off}, nil
		},
		close: rd.Close,
	}
}

// heldSection reads a held blob from an offset, and sends it from the
// store's file where it is one (store.FileSender).
type heldSection struct {
	*io.SectionReader
	blob store.Blob
	off  int64 // the blob's offset where the section starts
}

func (h *heldSection) SendFile(w io.Writer, n int64) (int64, bool, error) {
	pos, err := h.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, false, nil
	}
	sent, ok, err := store.SendFile(h.blob, w, h.off+pos, min(n, h.Size()-pos))
	if _, serr := h.Seek(pos+sent, io.SeekStart); serr != nil && err == nil {
		err = serr
	}
	return sent, ok, err
}

func (h *heldSection) Close() error { return nil }

// join returns the running download of req's digest, or registers a new one
// and reports that the caller must start it.
func (r *Resolver) join(req BlobRequest) (*flight, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if f, ok := r.flights[req.Digest]; ok {
		return f, false
	}
	if m, ok := r.misses[req.Digest]; ok && (m.registry == "" || m.registry == req.Registry) {
		if time.Now().Before(m.until) {
			f := &flight{ready: make(chan struct{}), fed: make(chan struct{}), trust: newTrust(),
				err: fmt.Errorf("blob %s: %s: %w", req.Digest, m.why, errdefs.ErrNotFound)}
			close(f.ready)
			return f, false
		}
		delete(r.misses, req.Digest)
	}
	f := &flight{ready: make(chan struct{}), fed: make(chan struct{}), trust: newTrust()}
	r.flights[req.Digest] = f
	return f, true
}

// designatedAsk says whether this node fetches a blob other than dgst from
// the registry for the cluster now (see flight.leads), will fetch one
// (see willLead), or waits for a designated peer's answer that may leave
// it one (see flight.asking), as it tells a designated peer it asks for
// dgst (see swarm.WaitsForWant). A pull's first questions go out together,
// before any answer: counted only once answered, every one of them would
// be left to this node.
//
// It counts the question about to go out for dgst as waiting for its
// answer until done is called; both under one lock, so that of questions
// sent together the first goes without the word (unless the node will
// lead another blob), and a lone pull's first layer is answered at once.
func (r *Resolver) designatedAsk(ctx context.Context, dgst digest.Digest) (leads bool, done func()) {
	leads = r.willLead(ctx, dgst)
	r.mu.Lock()
	defer r.mu.Unlock()
	for d, f := range r.flights {
		if d != dgst && (f.leads.Load() || f.asking.Load() > 0) {
			leads = true
			break
		}
	}
	f, ok := r.flights[dgst]
	if !ok {
		return leads, func() {}
	}
	f.asking.Add(1)
	return leads, func() { f.asking.Add(-1) }
}

// maxLeadLook bounds the blobs of an image, the largest first, that
// willLead looks at.
const maxLeadLook = 16

// willLead says whether this node will fetch another blob of dgst's image
// than dgst from the registry for the cluster (see swarm.WillLead): it
// ranks first for one it does not hold, whose download, if one runs, has
// not tried a source yet.
func (r *Resolver) willLead(ctx context.Context, dgst digest.Digest) bool {
	d, ok := r.router.(Designator)
	if !ok {
		return false
	}
	group := r.group(dgst)
	for i, g := range group {
		size := r.knownSize(g)
		if i == maxLeadLook || size < swarm.LeadWorthy {
			break // the group is ordered the largest first
		}
		if g == dgst {
			continue
		}
		f, running := r.running(g)
		b := swarm.Unfetched{Size: size, Tried: running && f.tried.Load()}
		if _, b.First = d.Designated(g, group); b.First && !running {
			b.Held = r.has(ctx, g)
		}
		if swarm.WillLead(b) {
			return true
		}
	}
	return false
}

// setSource records where the download's bytes come from.
func (f *flight) setSource(s Source) { f.source.Store(s) }

// sourceNow says where the download's bytes come from: SourceInFlight until
// a source answered a download published early.
func (f *flight) sourceNow() Source {
	if s, ok := f.source.Load().(Source); ok {
		return s
	}
	return SourceInFlight
}

// await waits, at most MissTimeout, for a download to start delivering.
func (r *Resolver) await(ctx context.Context, dgst digest.Digest, f *flight) (*Blob, error) {
	ing, err := r.awaitIngest(ctx, dgst, f)
	if err != nil {
		return nil, err
	}
	b := &Blob{
		Digest: dgst,
		Size:   ing.Size(),
		Source: f.sourceNow(),
		reader: func(ctx context.Context, off int64) (io.ReadCloser, error) {
			if off < 0 || off > ing.Size() {
				return nil, fmt.Errorf("offset %d of blob %s of %d bytes: %w", off, dgst, ing.Size(), errdefs.ErrInvalidArgument)
			}
			return &gatedReader{ctx: ctx, ing: ing, trust: f.trust, off: off, rd: ing.Reader(ctx, off)}, nil
		},
	}
	b.ready = func(ctx context.Context) error {
		// A download published before any source answered (its size came
		// from the manifest) names its source once bytes can flow.
		defer func() { b.Source = f.sourceNow() }()
		for {
			if err := ing.Err(); err != nil {
				// Failed already: whatever was stored, the rest never comes.
				return err
			}
			n, changed := f.trust.state()
			if n > 0 || ing.Size() == 0 {
				return nil
			}
			select {
			case <-changed:
			case <-ing.Done():
				return ing.Err()
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return b, nil
}

// knownSize is the size the last manifest naming dgst gave it, or 0. A
// download that knows its blob's size publishes at once: containerd's
// request then waits for bytes up to the mirror's HeaderWait, not for a
// source to answer within MissTimeout. Prefetch starts at most
// PrefetchBlobs of an image's blobs, and a download may end and be started
// again by containerd's request; without the size, a layer whose holders
// are all busy for MissTimeout would be a miss, which fails the pull when
// the registry is down.
func (r *Resolver) knownSize(dgst digest.Digest) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sizes[dgst]
}

// group returns the blobs of the image dgst was last seen in, or nil.
func (r *Resolver) group(dgst digest.Digest) []digest.Digest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.groups[dgst]
}

func (r *Resolver) finish(dgst digest.Digest) {
	r.mu.Lock()
	f := r.flights[dgst]
	delete(r.flights, dgst)
	r.mu.Unlock()
	r.ended(dgst, f)
}

// maxMirrored bounds the registries a node learns from its clients' requests.
const maxMirrored = 1024

func mirroredSet(registries []string) map[string]bool {
	m := make(map[string]bool, len(registries))
	for _, r := range registries {
		m[r] = true
	}
	return m
}

// noteMirrored records that a client of this node (its containerd) asked
// for content of registry: the node mirrors it.
func (r *Resolver) noteMirrored(registry string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.mirrored[registry] && len(r.mirrored) < maxMirrored {
		r.mirrored[registry] = true
	}
}

// mirrors is the rule for which registries a peer may have this node fetch
// from: those configured, and those this node's own clients pulled from
// through it. Any other is a host the peer chose, not this node's operator.
func (r *Resolver) mirrors(registry string) bool {
	r.mu.Lock()
	known := r.mirrored[registry]
	r.mu.Unlock()
	return known || (r.cfg.Mirrors != nil && r.cfg.Mirrors(registry))
}

// ErrNotMirrored reports a peer's request to fetch from a registry this node
// does not mirror. It wraps errdefs.ErrPermissionDenied.
var ErrNotMirrored = fmt.Errorf("registry not mirrored by this node: %w", errdefs.ErrPermissionDenied)
