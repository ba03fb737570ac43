package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/go-units"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/resolver"
	"github.com/shoal-dev/shoal/store"
)

const (
	// pinInterval is how often a node checks that it holds its share of
	// the pinned blobs, besides on every change of the pin table or the
	// members.
	pinInterval = 3 * time.Second
	// pinFetches bounds the pinned blobs a node fetches at once.
	pinFetches = 4
	// pinFetchTimeout bounds one pinned blob's fetch; the next check
	// tries again.
	pinFetchTimeout = 10 * time.Minute
	// pinLookupTimeout bounds reading one pinned image's manifests.
	pinLookupTimeout = 30 * time.Second
	// pinLookupRetry is how long an image whose manifests could not be
	// read is left out of the checks, so that it does not hold up the
	// others' (nor fill the log).
	pinLookupRetry = 30 * time.Second
)

// errLookupLater reports an image whose manifests are not read again yet.
var errLookupLater = errors.New("not read lately")

// pinKeeper keeps this node's share of the cluster's pinned copies: on
// every check it computes each pinned blob's holders (p2p.Holders over the
// live members), marks the blobs it is a holder of as pinned in the store,
// and fetches those it lacks through the swarm.
type pinKeeper struct {
	res  *resolver.Resolver
	node *p2p.Node
	st   *store.FS
	log  *slog.Logger
	m    pinMetrics

	mu       sync.Mutex
	blobs    map[digest.Digest][]ocispec.Descriptor // by pinned image digest
	inflight map[digest.Digest]bool
	refused  map[string]bool // registries already warned about
	// unknown holds the images whose manifests could not be read, until
	// when they are left out.
	unknown map[digest.Digest]time.Time
	// holder caches holds' answers for the candidates holdersOf names.
	holdersOf string
	holder    map[string]bool
	sem       chan struct{}
	wg        sync.WaitGroup
}

type pinMetrics struct {
	pins, held, heldBytes, missing prometheus.Gauge
	fetches                        *prometheus.CounterVec
}

func newPinKeeper(res *resolver.Resolver, node *p2p.Node, st *store.FS, log *slog.Logger, reg prometheus.Registerer) *pinKeeper {
	m := pinMetrics{
		pins: prometheus.NewGauge(prometheus.GaugeOpts{Name: "shoal_pins",
			Help: "Images in the cluster's pin table (shoal pin)."}),
		held: prometheus.NewGauge(prometheus.GaugeOpts{Name: "shoal_pinned_blobs_held",
			Help: "Pinned blobs this node is a holder of and holds whole."}),
		heldBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "shoal_pinned_bytes_held",
			Help: "Bytes of the pinned blobs this node is a holder of and holds."}),
		missing: prometheus.NewGauge(prometheus.GaugeOpts{Name: "shoal_pinned_copies_missing",
			Help: "Pinned blobs this node is a holder of and does not hold yet; summed over the members, the copies the cluster lacks."}),
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shoal_pin_fetches_total",
			Help: "Pinned blobs this node fetched as their holder, by result (ok, failed)."}, []string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(m.pins, m.held, m.heldBytes, m.missing, m.fetches)
	}
	return &pinKeeper{res: res, node: node, st: st, log: log, m: m,
		blobs: map[digest.Digest][]ocispec.Descriptor{}, inflight: map[digest.Digest]bool{},
		refused: map[string]bool{}, unknown: map[digest.Digest]time.Time{}, sem: make(chan struct{}, pinFetches)}
}

// Run checks the node's share every pinInterval and on every change, until
// ctx ends, then waits for the fetches it started.
func (k *pinKeeper) Run(ctx context.Context) error {
	defer k.wg.Wait()
	// A node that starts alone would count itself the holder of every
	// pinned blob: give the mesh time to form first.
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(keepFirst):
	}
	t := time.NewTicker(pinInterval)
	defer t.Stop()
	for {
		k.check(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-k.node.PinsChanged():
		}
	}
}

// check is one pass over the pin table.
func (k *pinKeeper) check(ctx context.Context) {
	pins := k.node.Pins()
	k.m.pins.Set(float64(len(pins)))
	cands := k.node.PinCandidates()
	var mine []digest.Digest
	held, missing := 0, 0
	var heldBytes int64
	for _, p := range pins {
		if !k.res.PinnableRegistry(p.Registry) {
			k.warnRefused(p)
			continue
		}
		im := resolver.Image{Registry: p.Registry, Repo: p.Repo, Digest: p.Digest}
		blobs, err := k.blobsOf(ctx, im)
		if err != nil {
			if !errors.Is(err, errLookupLater) {
				k.log.Warn("pinned image's blobs not known yet", "image", p.Ref, "err", err)
			}
			continue
		}
		for _, b := range blobs {
			if !k.holds(b.Digest, cands, p.Copies) {
				continue
			}
			mine = append(mine, b.Digest)
			if k.res.Holds(ctx, b) {
				held++
				heldBytes += b.Size
				continue
			}
			missing++
			k.fetch(ctx, im, b)
		}
	}
	k.st.SetPinned(mine)
	k.m.held.Set(float64(held))
	k.m.heldBytes.Set(float64(heldBytes))
	k.m.missing.Set(float64(missing))
	k.forget(pins)
}

// holds says whether this node is among a blob's holders. The answers are
// kept while the candidates stay the same: a full table is 256 images of
// up to 1024 blobs, each ranked over every member.
func (k *pinKeeper) holds(dgst digest.Digest, cands []p2p.Candidate, copies int) bool {
	var fp strings.Builder
	for _, c := range cands {
		fmt.Fprintf(&fp, "%s/%s/%t;", c.ID, c.Zone, c.Self)
	}
	key := fmt.Sprintf("%s/%d", dgst, copies)
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.holdersOf != fp.String() {
		k.holdersOf, k.holder = fp.String(), map[string]bool{}
	}
	h, ok := k.holder[key]
	if !ok {
		h = slices.ContainsFunc(p2p.Holders(dgst, cands, copies), func(c p2p.Candidate) bool { return c.Self })
		k.holder[key] = h
	}
	return h
}

func (k *pinKeeper) warnRefused(p p2p.Pin) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.refused[p.Registry] {
		k.refused[p.Registry] = true
		k.log.Warn("pinned image from a registry this node's configuration does not mirror: this node holds none of it", "image", p.Ref, "registry", p.Registry)
	}
}

// blobsOf lists a pinned image's blobs, read once per image.
func (k *pinKeeper) blobsOf(ctx context.Context, im resolver.Image) ([]ocispec.Descriptor, error) {
	k.mu.Lock()
	blobs, ok := k.blobs[im.Digest]
	retry := k.unknown[im.Digest]
	k.mu.Unlock()
	if ok {
		return blobs, nil
	}
	if wait := time.Until(retry); wait > 0 {
		return nil, fmt.Errorf("manifests of %s: next try in %s: %w", im.Digest, wait.Round(time.Second), errLookupLater)
	}
	lctx, cancel := context.WithTimeout(ctx, pinLookupTimeout)
	defer cancel()
	blobs, err := k.res.ImageBlobs(lctx, im)
	k.mu.Lock()
	defer k.mu.Unlock()
	if err != nil {
		k.unknown[im.Digest] = time.Now().Add(pinLookupRetry)
		return nil, err
	}
	delete(k.unknown, im.Digest)
	k.blobs[im.Digest] = blobs
	return blobs, nil
}

// forget drops the blob lists of images no longer pinned.
func (k *pinKeeper) forget(pins []p2p.Pin) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for d := range k.blobs {
		if !slices.ContainsFunc(pins, func(p p2p.Pin) bool { return p.Digest == d }) {
			delete(k.blobs, d)
		}
	}
	for d := range k.unknown {
		if !slices.ContainsFunc(pins, func(p p2p.Pin) bool { return p.Digest == d }) {
			delete(k.unknown, d)
		}
	}
}

// fetch starts fetching blob unless it is being fetched, or pinFetches
// fetches run already (the next check tries again).
func (k *pinKeeper) fetch(ctx context.Context, im resolver.Image, blob ocispec.Descriptor) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.inflight[blob.Digest] {
		return
	}
	select {
	case k.sem <- struct{}{}:
	default:
		return
	}
	k.inflight[blob.Digest] = true
	k.wg.Go(func() {
		defer func() {
			<-k.sem
			k.mu.Lock()
			delete(k.inflight, blob.Digest)
			k.mu.Unlock()
			k.node.PokePins()
		}()
		fctx, cancel := context.WithTimeout(ctx, pinFetchTimeout)
		defer cancel()
		start := time.Now()
		if err := k.res.Hold(fctx, im, blob); err != nil {
			if ctx.Err() == nil {
				k.m.fetches.WithLabelValues("failed").Inc()
				k.log.Warn("pinned blob not fetched", "digest", blob.Digest, "registry", im.Registry, "repo", im.Repo, "err", err)
			}
			return
		}
		k.m.fetches.WithLabelValues("ok").Inc()
		k.log.Info("pinned blob fetched", "digest", blob.Digest, "bytes", blob.Size, "took", time.Since(start).Round(time.Millisecond))
	})
}

// pinRequest is what `shoal pin` and `shoal unpin` post.
type pinRequest struct {
	Image  string `json:"image"`
	Copies int    `json:"copies,omitempty"`
}

// pinRef normalizes an image reference into the pin table's key and the
// request that resolves it.
func pinRef(image string) (string, resolver.ManifestRequest, error) {
	req, name, err := parseImage(image)
	return name, req, err
}

// readPinRequest decodes a JSON body; only JSON is accepted, so that a web
// page cannot post one from a browser on the node.
func readPinRequest(w http.ResponseWriter, r *http.Request) (pinRequest, bool) {
	var req pinRequest
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		http.Error(w, "want a JSON body (Content-Type: application/json)", http.StatusUnsupportedMediaType)
		return req, false
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<10)).Decode(&req); err != nil || req.Image == "" {
		http.Error(w, fmt.Sprintf("want {\"image\": ..., \"copies\": k}: %v", err), http.StatusBadRequest)
		return req, false
	}
	return req, true
}

// servePin answers POST /pin: it resolves the image once, checks that the
// pinned blobs fit, and adds the pin to the cluster's table.
func (k *pinKeeper) servePin(w http.ResponseWriter, r *http.Request) {
	req, ok := readPinRequest(w, r)
	if !ok {
		return
	}
	if req.Copies < 1 || req.Copies > p2p.MaxPinCopies {
		http.Error(w, fmt.Sprintf("--copies %d: want 1 to %d", req.Copies, p2p.MaxPinCopies), http.StatusBadRequest)
		return
	}
	key, mreq, err := pinRef(req.Image)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if !k.res.PinnableRegistry(mreq.Registry) {
		http.Error(w, fmt.Sprintf("pin %s refused: this node's configuration does not mirror %s (--default-registry, --registries, --hosts-dir)", key, mreq.Registry), http.StatusForbidden)
		return
	}
	im, err := k.res.ResolveImage(r.Context(), mreq)
	var blobs []ocispec.Descriptor
	if err == nil {
		blobs, err = k.blobsOf(r.Context(), im)
	}
	if err != nil {
		http.Error(w, fmt.Sprintf("pin %s: %v", key, err), http.StatusBadGateway)
		return
	}
	if err := k.fits(r.Context(), key, blobs); err != nil {
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	p, err := k.node.SetPin(p2p.Pin{Ref: key, Registry: im.Registry, Repo: im.Repo, Digest: im.Digest, Copies: req.Copies})
	if err != nil {
		http.Error(w, fmt.Sprintf("pin %s refused: %v", key, err), http.StatusConflict)
		return
	}
	k.log.Info("pinned", "image", key, "digest", p.Digest, "copies", p.Copies, "blobs", len(blobs))
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(p)
}

// fits is the rule for a pin that fits: the pinned blobs of every pin,
// this one's included (each blob once), within this node's
// --store-max-bytes. Any member may have to hold every pinned blob: when
// no more members are left than a pin's copies.
func (k *pinKeeper) fits(ctx context.Context, key string, blobs []ocispec.Descriptor) error {
	max := k.st.MaxBytes()
	if max == 0 {
		return nil
	}
	sizes := map[digest.Digest]int64{}
	for _, b := range blobs {
		sizes[b.Digest] = b.Size
	}
	var mine int64
	for _, s := range sizes {
		mine += s
	}
	for _, p := range k.node.Pins() {
		if p.Ref == key {
			continue
		}
		others, err := k.blobsOf(ctx, resolver.Image{Registry: p.Registry, Repo: p.Repo, Digest: p.Digest})
		if err != nil {
			return fmt.Errorf("pin %s refused: the blobs of pinned %s are not known: %v", key, p.Ref, err)
		}
		for _, b := range others {
			sizes[b.Digest] = b.Size
		}
	}
	return pinFits(key, mine, sizes, max)
}

// pinFits says, in one line, why the pinned blobs do not fit in max.
func pinFits(key string, mine int64, sizes map[digest.Digest]int64, max int64) error {
	var total int64
	for _, s := range sizes {
		total += s
	}
	if total <= max {
		return nil
	}
	return fmt.Errorf("pin %s refused: pinned blobs would take %s (%d bytes; this image %d), over this node's --store-max-bytes of %s (%d bytes)",
		key, units.BytesSize(float64(total)), total, mine, units.BytesSize(float64(max)), max)
}

// serveUnpin answers POST /unpin.
func (k *pinKeeper) serveUnpin(w http.ResponseWriter, r *http.Request) {
	req, ok := readPinRequest(w, r)
	if !ok {
		return
	}
	key, _, err := pinRef(req.Image)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if !slices.ContainsFunc(k.node.Pins(), func(p p2p.Pin) bool { return p.Ref == key }) {
		http.Error(w, fmt.Sprintf("%s is not pinned", key), http.StatusNotFound)
		return
	}
	if _, err := k.node.SetPin(p2p.Pin{Ref: key, Deleted: true}); err != nil {
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	k.log.Info("unpinned", "image", key)
	w.WriteHeader(http.StatusNoContent)
}

// pinStatus is one pin as GET /pins lists it.
type pinStatus struct {
	p2p.Pin
	Blobs []pinnedBlob `json:"blobs"`
	Error string       `json:"error,omitempty"`
}

// pinnedBlob is one blob of a pin: its holders and the live members that
// announce it (this node when it holds it).
type pinnedBlob struct {
	Digest  digest.Digest `json:"digest"`
	Size    int64         `json:"size"`
	Holders []string      `json:"holders"`
	On      []string      `json:"on"`
}

// servePins answers GET /pins.
func (k *pinKeeper) servePins(w http.ResponseWriter, r *http.Request) {
	cands := k.node.PinCandidates()
	names := map[string]string{}
	for _, c := range cands {
		names[c.ID.String()] = c.Name
	}
	out := []pinStatus{}
	for _, p := range k.node.Pins() {
		ps := pinStatus{Pin: p, Blobs: []pinnedBlob{}}
		blobs, err := k.blobsOf(r.Context(), resolver.Image{Registry: p.Registry, Repo: p.Repo, Digest: p.Digest})
		if err != nil {
			ps.Error = err.Error()
		}
		for _, b := range blobs {
			ps.Blobs = append(ps.Blobs, k.blobStatus(r.Context(), b, cands, p.Copies, names))
		}
		out = append(out, ps)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

func (k *pinKeeper) blobStatus(ctx context.Context, b ocispec.Descriptor, cands []p2p.Candidate, copies int, names map[string]string) pinnedBlob {
	pb := pinnedBlob{Digest: b.Digest, Size: b.Size, Holders: []string{}, On: []string{}}
	for _, h := range p2p.Holders(b.Digest, cands, copies) {
		pb.Holders = append(pb.Holders, h.Name)
	}
	if k.res.Holds(ctx, b) {
		pb.On = append(pb.On, k.node.Status().NodeName)
	}
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ids, err := k.node.Providers(lctx, b.Digest, 64)
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		k.log.Debug("providers of a pinned blob", "digest", b.Digest, "err", err)
	}
	for _, id := range ids {
		if name, ok := names[id.String()]; ok {
			pb.On = append(pb.On, name)
		}
	}
	slices.Sort(pb.On)
	pb.On = slices.Compact(pb.On)
	return pb
}

// pinnedImages resolves a pinned tag to the digest it was pinned at, after
// the node's containerd: with --resolve-tags-locally, a node that never
// pulled a pinned image still resolves its tag while the registry is down.
type pinnedImages struct {
	next resolver.ImageLookup // nil without containerd
	node *p2p.Node
}

func (l pinnedImages) ResolveImage(ctx context.Context, name string) (ocispec.Descriptor, error) {
	if l.next != nil {
		if d, err := l.next.ResolveImage(ctx, name); err == nil {
			return d, nil
		}
	}
	for _, p := range l.node.Pins() {
		if p.Ref == name {
			return ocispec.Descriptor{Digest: p.Digest}, nil
		}
	}
	return ocispec.Descriptor{}, fmt.Errorf("image %s: not in containerd nor pinned: %w", name, errdefs.ErrNotFound)
}
