package resolver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/p2p/swarm"
	"github.com/shoal-dev/shoal/store"
)

// PullFor serves a peer that asked this node for a blob, naming where it
// comes from: the node's own copy when it has one, else the download of it
// (started now when none runs), whose bytes the peer receives as they
// arrive. The peer verifies the whole blob itself, so the bytes are not
// held back here. ctx bounds only the wait for the download to start. A
// registry this node does not mirror (see Config.Registries) is refused
// with an error wrapping ErrNotMirrored; the node's own copy is served
// whatever the registry.
//
// from names the asking peer. A node that runs no download of the blob
// and does not want it itself fetches nothing: it answers
// ErrFetchYourself to the first asker and points the next at it with a
// *FetchingAtError (see swarm.Coordinate). To an asker that leads another
// blob, it gives that answer only after waiting a moment for its own
// clients to want the blob (see swarm.WaitsForWant).
//
// take takes an upload slot for the peer's stream. PullFor calls it at
// most once, when it knows it will stream the blob: its own copy, a
// download running here, or one it starts for the peer, which it decides
// before it takes a slot (see swarm.TakesSlot). When take says false,
// PullFor starts nothing and returns ErrNoSlot. A nil take always says
// true.
func (r *Resolver) PullFor(ctx context.Context, dgst digest.Digest, registry, repo string, from swarm.Asker, take func() bool) (store.Blob, error) {
	if err := validDigest(dgst); err != nil {
		return nil, err
	}
	take = takeOnce(take)
	if b, err := r.openLocalRaw(ctx, dgst); err == nil || !errdefs.IsNotFound(err) {
		return withSlot(dgst, b, err, take)
	}
	if !r.mirrors(registry) {
		return nil, fmt.Errorf("blob %s from %s: %w", dgst, registry, ErrNotMirrored)
	}
	req := BlobRequest{Registry: registry, Repo: repo, Digest: dgst, ForPeer: true}
	if r.awaitWant(ctx, req, from) {
		// The node may have come to hold the blob while it waited, or to
		// download it (joined below), whether its clients' want came
		// with that or not (a preheat).
		if b, err := r.openLocalRaw(ctx, dgst); err == nil || !errdefs.IsNotFound(err) {
			return withSlot(dgst, b, err, take)
		}
	}
	for range 2 {
		f, started, err := r.joinFor(ctx, req, from, take)
		if err != nil {
			return nil, err
		}
		if started {
			r.start(req, f)
		}
		ing, err := r.awaitIngest(ctx, dgst, f)
		if errors.Is(err, errdefs.ErrAlreadyExists) {
			if b, err := r.openLocalRaw(ctx, dgst); err == nil || !errdefs.IsNotFound(err) {
				return b, err
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		// Served once a source feeds it (see flight.fed).
		select {
		case <-f.fed:
		case <-ing.Done():
			if err := ing.Err(); err != nil {
				return nil, err
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("blob %s: no source answered: %w: %w", dgst, ctx.Err(), errdefs.ErrNotFound)
		}
		r.m.lookups.WithLabelValues("peer_blob", string(f.sourceNow())).Inc()
		return &ingestBlob{ctx: r.ctx, ing: ing, f: f}, nil
	}
	return nil, fmt.Errorf("blob %s: %w", dgst, errdefs.ErrNotFound)
}

// ErrNoSlot is PullFor's answer when take found no upload slot free: the
// peer is answered busy.
var ErrNoSlot = errors.New("no upload slot free")

// takeOnce calls take the first time only, and says what it said then;
// nil takes nothing and says true.
func takeOnce(take func() bool) func() bool {
	if take == nil {
		return func() bool { return true }
	}
	var called, took bool
	return func() bool {
		if !called {
			called, took = true, take()
		}
		return took
	}
}

// withSlot returns the node's own copy b of dgst, opened with err, once
// take took a slot for it.
func withSlot(dgst digest.Digest, b store.Blob, err error, take func() bool) (store.Blob, error) {
	if err != nil {
		return nil, err
	}
	if !take() {
		b.Close()
		return nil, fmt.Errorf("blob %s: %w", dgst, ErrNoSlot)
	}
	return b, nil
}

// joinFor joins the running download of req's blob, or, when none runs
// and swarm.Coordinate says this node fetches it for from, registers one
// that the caller must start. Either takes a slot through take first; an
// answer that leaves the blob to from, or points it at the fetcher, takes
// none (see swarm.TakesSlot).
func (r *Resolver) joinFor(ctx context.Context, req BlobRequest, from swarm.Asker, take func() bool) (*flight, bool, error) {
	f, running := r.running(req.Digest)
	if !running {
		if a, err := r.coordinate(req, from); !swarm.TakesSlot(a) {
			return nil, false, err
		}
	}
	if !take() {
		return nil, false, fmt.Errorf("blob %s: %w", req.Digest, ErrNoSlot)
	}
	if running {
		return f, false, nil
	}
	// Counted once a slot is taken: without one, the asker is answered busy.
	r.m.coordinated.WithLabelValues("fetch_for_cluster").Inc()
	f, started := r.join(req)
	return f, started, nil
}

// running returns the download of dgst running on this node, if any.
func (r *Resolver) running(dgst digest.Digest) (*flight, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f, ok := r.flights[dgst]
	return f, ok
}

// InFlight returns a download of dgst running on this node, for a peer to
// read as it arrives (the peer verifies the whole blob itself), or false.
func (r *Resolver) InFlight(dgst digest.Digest) (store.Blob, bool) {
	r.mu.Lock()
	f, ok := r.flights[dgst]
	r.mu.Unlock()
	if !ok {
		return nil, false
	}
	select {
	case <-f.ready:
	default:
		return nil, false
	}
	if f.err != nil || f.ingest == nil {
		return nil, false
	}
	select {
	case <-f.fed:
	default:
		return nil, false
	}
	return &ingestBlob{ctx: r.ctx, ing: f.ingest, f: f}, true
}

// openLocalRaw opens the node's own copy: containerd's, then the store's.
func (r *Resolver) openLocalRaw(ctx context.Context, dgst digest.Digest) (store.Blob, error) {
	if r.local != nil {
		if b, err := r.local.Open(ctx, dgst); err == nil {
			return b, nil
		}
	}
	return r.store.Open(ctx, dgst)
}

// awaitIngest waits, at most MissTimeout, for a download to start.
func (r *Resolver) awaitIngest(ctx context.Context, dgst digest.Digest, f *flight) (store.Ingest, error) {
	t := time.NewTimer(r.cfg.MissTimeout)
	defer t.Stop()
	select {
	case <-f.ready:
	case <-t.C:
		return nil, fmt.Errorf("blob %s: no source delivered within %s: %w", dgst, r.cfg.MissTimeout, errdefs.ErrNotFound)
	case <-ctx.Done():
		return nil, fmt.Errorf("blob %s: %w: %w", dgst, ctx.Err(), errdefs.ErrNotFound)
	}
	if f.err != nil {
		return nil, f.err
	}
	return f.ingest, nil
}

// ingestBlob reads a blob that may still be arriving: ReadAt blocks until
// the bytes asked for are there, the download fails, or ctx ends.
type ingestBlob struct {
	ctx context.Context
	ing store.Ingest
	f   *flight
}

func (b *ingestBlob) Size() int64 { return b.ing.Size() }

func (b *ingestBlob) Close() error { return nil }

// Arriving reports whether the download is still running.
func (b *ingestBlob) Arriving() bool {
	select {
	case <-b.ing.Done():
		return false
	default:
		return true
	}
}

// Leads says whether this node fetches the blob from the registry for the
// cluster now (see swarm.LeadsNow).
func (b *ingestBlob) Leads() bool { return b.f.leads.Load() }

// Have is how many bytes from the start have arrived without a hole.
func (b *ingestBlob) Have() int64 { return b.ing.Contiguous() }

func (b *ingestBlob) ReadAt(p []byte, off int64) (int, error) {
	if off >= b.ing.Size() {
		return 0, io.EOF
	}
	rd := b.ing.Reader(b.ctx, off)
	defer rd.Close()
	n, err := io.ReadFull(rd, p)
	if errors.Is(err, io.ErrUnexpectedEOF) && off+int64(n) == b.ing.Size() {
		err = io.EOF
	}
	return n, err
}
