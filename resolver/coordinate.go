package resolver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/p2p/swarm"
)

// ErrFetchYourself is a designated peer's answer to a node that asked it to
// fetch a blob for the cluster, when the peer does not want the blob itself
// and nobody fetches it through the peer: the node fetches the blob itself
// (see swarm.Coordinate).
var ErrFetchYourself = errors.New("the designated peer does not want the blob and leaves it to the asker")

// ErrPeerCut marks a peer's stream that the peer, alive, ended (it found
// this node not reading; see swarm.CutByOwnLink), or whose answer did not
// come in time while the peer's bytes for this node's other streams did:
// the answer queued behind them.
var ErrPeerCut = errors.New("the peer cut the stream, or its answer queued behind its other bytes")

// ErrNoAnswer marks a request a peer did not answer in time while nothing
// else came from it: it is frozen or cut off, or its answer waits behind
// this node's own full link, which the node's other peers tell apart (see
// swarm.CutByOwnLink).
var ErrNoAnswer = errors.New("the peer did not answer in time")

// ErrPeerLeads marks a peer's "not yet" or busy answer when the peer
// fetches the blob from the registry for the cluster now: it waits on no
// one, so this node may wait on it (see swarm.WaitOn, swarm.WaitsOnLeader,
// PeerLeads).
var ErrPeerLeads = errors.New("the peer fetches the blob from the registry for the cluster now")

// PeerLeads says whether a peer's answer to FetchRange, body or err, came
// from a peer that fetches the blob from the registry for the cluster now:
// its "not yet" or busy answer wraps ErrPeerLeads, or its body has a
// PeerLeads method that says true.
func PeerLeads(body io.Reader, err error) bool {
	if err != nil {
		return errors.Is(err, ErrPeerLeads)
	}
	l, ok := body.(interface{ PeerLeads() bool })
	return ok && l.PeerLeads()
}

// FetchingAtError is a designated peer's answer naming the peer that
// fetches the blob: the asker reads it there (see swarm.Coordinate).
type FetchingAtError struct{ Peer string }

func (e *FetchingAtError) Error() string {
	return fmt.Sprintf("the designated peer points at %s, which fetches the blob", e.Peer)
}

// leftTo is the peer a blob was left to, and when.
type leftTo struct {
	peer string
	at   time.Time
}

// maxCoordinated bounds the blobs and repositories remembered for
// swarm.Coordinate; past it, the expired ones are dropped.
const maxCoordinated = 4096

// noteWanted records that this node's own clients asked for a blob or a
// manifest of registry/repo.
func (r *Resolver) noteWanted(registry, repo string) {
	now := time.Now()
	r.coordMu.Lock()
	defer r.coordMu.Unlock()
	if len(r.wanted) >= maxCoordinated {
		for k, at := range r.wanted {
			if now.Sub(at) >= swarm.WantedFor {
				delete(r.wanted, k)
			}
		}
	}
	r.wanted[registry+"/"+repo] = now
	close(r.wantedNow)
	r.wantedNow = make(chan struct{})
}

// coordinate answers from, a peer asking this node to fetch req's blob
// for the cluster while no download of it runs here (see
// swarm.Coordinate): with the error that tells from so, ErrFetchYourself or
// a *FetchingAtError, or nil when this node fetches it. The caller counts
// that last answer once it has a slot to fetch in (see joinFor).
func (r *Resolver) coordinate(req BlobRequest, from swarm.Asker) (swarm.Answer, error) {
	now := time.Now()
	r.coordMu.Lock()
	defer r.coordMu.Unlock()
	a, l := r.askedLocked(req, from, now)
	ans := swarm.Coordinate(a, now)
	switch ans {
	case swarm.FetchYourself:
		r.forgetLeft(now)
		r.leftTo[req.Digest] = leftTo{peer: from.Peer, at: now}
		r.m.coordinated.WithLabelValues("fetch_yourself").Inc()
		return ans, ErrFetchYourself
	case swarm.ReadFromFetcher:
		r.m.coordinated.WithLabelValues("read_from_fetcher").Inc()
		return ans, &FetchingAtError{Peer: l.peer}
	}
	return ans, nil
}

// awaitWant waits, when no download of req's blob runs here and the
// answer would leave the blob to from, an asker that leads another blob,
// for this node's own clients to want it (see swarm.WaitsForWant). It says
// whether it waited; the caller then looks again for the node's copy of
// the blob and for a download of it, either of which may have come
// meanwhile.
func (r *Resolver) awaitWant(ctx context.Context, req BlobRequest, from swarm.Asker) bool {
	if _, running := r.running(req.Digest); running {
		return false
	}
	wait := r.waitsForWant(req, from)
	if wait == nil || r.cfg.WantWait <= 0 {
		return false
	}
	start := time.Now()
	wanted := r.waitForWant(ctx, req, wait)
	r.cfg.Logger.Debug("waited for this node's clients before leaving a blob to a peer that leads another",
		"digest", req.Digest, "peer", from.Peer, "wanted", wanted, "took", time.Since(start).Round(time.Millisecond))
	return true
}

// askedLocked is what this node knows when from asks it to fetch req's
// blob, and the peer it left the blob to; the caller holds coordMu.
func (r *Resolver) askedLocked(req BlobRequest, from swarm.Asker, now time.Time) (swarm.Asked, leftTo) {
	l := r.leftTo[req.Digest]
	return swarm.Asked{
		Wanted:  now.Sub(r.wanted[req.Registry+"/"+req.Repo]) < swarm.WantedFor,
		Fetcher: l.peer, Told: l.at, Asker: from.Peer, AskerLeads: from.Leads,
	}, l
}

// waitsForWant returns, when swarm.WaitsForWant holds for from's ask, the
// channel that this node's clients' next request closes; nil otherwise.
func (r *Resolver) waitsForWant(req BlobRequest, from swarm.Asker) <-chan struct{} {
	now := time.Now()
	r.coordMu.Lock()
	defer r.coordMu.Unlock()
	if a, _ := r.askedLocked(req, from, now); !swarm.WaitsForWant(a, now) {
		return nil
	}
	return r.wantedNow
}

// waitForWant waits, up to Config.WantWait, until this node's own clients
// want req's repository, wait being closed at their next request; a
// request for another repository waits again on the next. It says whether
// they came to want it.
func (r *Resolver) waitForWant(ctx context.Context, req BlobRequest, wait <-chan struct{}) bool {
	r.m.waitedForWant.Inc()
	timer := time.NewTimer(r.cfg.WantWait)
	defer timer.Stop()
	key := req.Registry + "/" + req.Repo
	for {
		select {
		case <-wait:
		case <-timer.C:
			return false
		case <-ctx.Done():
			return false
		}
		r.coordMu.Lock()
		wanted := time.Since(r.wanted[key]) < swarm.WantedFor
		wait = r.wantedNow
		r.coordMu.Unlock()
		if wanted {
			return true
		}
	}
}

// leftFetcher returns the peer this node left dgst to within
// swarm.LeftFor, if any.
func (r *Resolver) leftFetcher(dgst digest.Digest) (string, bool) {
	r.coordMu.Lock()
	defer r.coordMu.Unlock()
	l, ok := r.leftTo[dgst]
	if !ok || time.Since(l.at) >= swarm.LeftFor {
		return "", false
	}
	return l.peer, true
}

// forgetLeft drops the expired entries of leftTo once it is full; the
// caller holds coordMu.
func (r *Resolver) forgetLeft(now time.Time) {
	if len(r.leftTo) < maxCoordinated {
		return
	}
	for d, l := range r.leftTo {
		if now.Sub(l.at) >= swarm.LeftFor {
			delete(r.leftTo, d)
		}
	}
}
