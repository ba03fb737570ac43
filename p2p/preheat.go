package p2p

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/opencontainers/go-digest"
)

// PreheatProtocolID asks a member to fill itself with a whole image
// (manifests, config, layers), so that its first pull of it finds every
// blob on the node.
//
// A request is a 2-byte big-endian length and a JSON PreheatRequest of at
// most maxPreheatFrame bytes. The answer is a sequence of frames, each a
// 2-byte length and a JSON PreheatProgress: one at least every
// preheatTick while the preheat runs, and a last one with Done set (and
// Error, when it failed); then the server closes the stream. A requester
// that goes away cancels the preheat.
const PreheatProtocolID protocol.ID = "/shoal/preheat/1.0.0"

// MaxPreheatsServed is how many preheats a node runs for members at once;
// more are answered busy at once.
const MaxPreheatsServed = 2

const (
	maxPreheatFrame = 1024
	preheatTick     = 500 * time.Millisecond
	// preheatSilence is how long a requester waits for a frame before it
	// gives the member up.
	preheatSilence = 30 * time.Second
)

// ErrPreheatCut reports a preheat whose stream to the member broke before
// the member said how it ended: the member was unreachable, or the
// connection went (a member judged silent has its connections closed).
// The member stops its preheat then, and keeps what it holds: asking
// again resumes it.
var ErrPreheatCut = errors.New("preheat stream cut")

// PreheatRequest names an image resolved by the requester: the registry and
// repository it comes from and its manifest's or index's digest.
type PreheatRequest struct {
	Registry string        `json:"registry"`
	Repo     string        `json:"repo"`
	Digest   digest.Digest `json:"digest"`
	// IntoContainerd asks the member to create the image in its container
	// runtime too, under Name: registry/repo:tag (or @digest) of the
	// Registry and Repo above.
	IntoContainerd bool   `json:"into_containerd,omitempty"`
	Name           string `json:"name,omitempty"`
}

// PreheatProgress is how far a member's preheat is: the blobs of the image
// for its platform with their bytes, and how many of them it holds.
type PreheatProgress struct {
	Blobs     int    `json:"blobs"`
	HeldBlobs int    `json:"held_blobs"`
	Bytes     int64  `json:"bytes"`
	HeldBytes int64  `json:"held_bytes"`
	Done      bool   `json:"done,omitempty"`
	Error     string `json:"error,omitempty"`
}

// Preheater fills this node with an image at a member's request (see
// Config.Preheater). It must refuse, with an error wrapping
// errdefs.ErrPermissionDenied and before any fetch, a registry the node's
// own configuration does not mirror. progress may be called from several
// goroutines, one at a time; Preheat returns once the node holds every
// blob, or with the first failure.
type Preheater interface {
	Preheat(ctx context.Context, req PreheatRequest, progress func(PreheatProgress)) error
}

func (p PreheatProgress) check() error {
	if p.Blobs < 0 || p.HeldBlobs < 0 || p.HeldBlobs > p.Blobs || p.Bytes < 0 || p.HeldBytes < 0 || p.HeldBytes > p.Bytes {
		return fmt.Errorf("progress %d of %d blobs, %d of %d bytes: %w", p.HeldBlobs, p.Blobs, p.HeldBytes, p.Bytes, errdefs.ErrInvalidArgument)
	}
	return nil
}

func (r PreheatRequest) check() error {
	if err := checkDigest(r.Digest); err != nil {
		return err
	}
	if !validSource(r.Registry, r.Repo) {
		return fmt.Errorf("image %s/%s: %w", r.Registry, r.Repo, errdefs.ErrInvalidArgument)
	}
	if r.IntoContainerd || r.Name != "" {
		named, err := reference.ParseNamed(r.Name)
		if err != nil || reference.Domain(named) != r.Registry || reference.Path(named) != r.Repo {
			return fmt.Errorf("image name %q is not of %s/%s: %w", r.Name, r.Registry, r.Repo, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// handlePreheat serves one member's preheat request.
func (n *Node) handlePreheat(s network.Stream) {
	if !n.enterHandler() {
		_ = s.Reset()
		return
	}
	defer n.handlers.Done()
	remote := s.Conn().RemotePeer()
	_ = s.SetReadDeadline(time.Now().Add(n.cfg.Timing.RequestTimeout))
	var req PreheatRequest
	b, err := readFrame(s, maxPreheatFrame)
	if err == nil {
		err = json.Unmarshal(b, &req)
	}
	if err == nil {
		err = req.check()
	}
	result, last, err := n.preheatFor(s, remote, req, err)
	n.metrics.preheats.WithLabelValues(result).Inc()
	last.Done = true
	if err != nil {
		last.Error = err.Error()
		if len(last.Error) > maxMessage {
			last.Error = last.Error[:maxMessage]
		}
	}
	if result == "ok" || result == "failed" {
		n.log.Info("preheated for a member", "peer", remote, "registry", req.Registry, "repo", req.Repo, "digest", req.Digest, "result", result, "err", err)
	}
	w := &progressWriter{s: s, idle: n.cfg.Timing.IdleTimeout}
	if err := w.send(last); err != nil {
		_ = s.Reset()
		return
	}
	_ = s.Close()
}

// preheatFor runs a valid request (bad is why it is not) and says how it
// ended, for the metric, with the last progress.
func (n *Node) preheatFor(s network.Stream, remote peer.ID, req PreheatRequest, bad error) (string, PreheatProgress, error) {
	var none PreheatProgress
	switch {
	case bad != nil:
		return "failed", none, fmt.Errorf("bad request: %w", bad)
	case n.protection == "":
		return "refused_open_mesh", none, errors.New("this node preheats for members only in a mesh with a cluster key")
	case n.cfg.Preheater == nil:
		return "failed", none, errors.New("this node does not preheat for members")
	}
	select {
	case n.preheats <- struct{}{}:
		defer func() { <-n.preheats }()
	default:
		return "busy", none, fmt.Errorf("busy: %d preheats running", MaxPreheatsServed)
	}
	ctx, cancel := context.WithCancel(n.life)
	defer cancel()
	w := &progressWriter{s: s, idle: n.cfg.Timing.IdleTimeout}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { w.tick(done, cancel) })
	err := n.cfg.Preheater.Preheat(ctx, req, w.note)
	close(done)
	wg.Wait()
	w.mu.Lock()
	last := w.last
	w.mu.Unlock()
	switch {
	case errdefs.IsPermissionDenied(err):
		n.log.Warn("refused to preheat for a member from a registry this node does not mirror", "peer", remote, "registry", req.Registry, "repo", req.Repo)
		return "refused_registry", last, err
	case err != nil:
		return "failed", last, err
	}
	return "ok", last, nil
}

// progressWriter sends a preheat's progress to the requester every
// preheatTick, the latest only.
type progressWriter struct {
	s    network.Stream
	idle time.Duration

	mu   sync.Mutex
	last PreheatProgress
}

func (w *progressWriter) note(p PreheatProgress) {
	w.mu.Lock()
	w.last = p
	w.mu.Unlock()
}

// tick sends the progress until done closes; a requester that stopped
// reading, or went away, cancels the preheat.
func (w *progressWriter) tick(done <-chan struct{}, cancel context.CancelFunc) {
	t := time.NewTicker(preheatTick)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		w.mu.Lock()
		p := w.last
		w.mu.Unlock()
		if err := w.send(p); err != nil {
			cancel()
			return
		}
	}
}

func (w *progressWriter) send(p PreheatProgress) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	_ = w.s.SetWriteDeadline(time.Now().Add(w.idle))
	return writeFrame(w.s, b, maxPreheatFrame)
}

// Preheat asks member p to fill itself with the image req names, and
// calls progress with each report it sends. It returns nil once p says it
// holds every blob, and otherwise an error that says why, in p's words
// when p gave them.
func (n *Node) Preheat(ctx context.Context, p peer.ID, req PreheatRequest, progress func(PreheatProgress)) error {
	if err := req.check(); err != nil {
		return err
	}
	if ps := n.host.Peerstore(); len(ps.Addrs(p)) == 0 {
		ps.AddAddrs(p, n.members.addrsOf(p), peerstore.TempAddrTTL)
	}
	dctx, cancel := context.WithTimeout(ctx, n.cfg.Timing.DialTimeout)
	s, err := n.host.NewStream(network.WithForceDirectDial(dctx, "preheat"), p, PreheatProtocolID)
	cancel()
	if err != nil {
		return fmt.Errorf("member unreachable: %w: %w", ErrPreheatCut, err)
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	b, _ := json.Marshal(req)
	_ = s.SetWriteDeadline(time.Now().Add(n.cfg.Timing.RequestTimeout))
	if err := writeFrame(s, b, maxPreheatFrame); err != nil {
		_ = s.Reset()
		return fmt.Errorf("request: %w: %w", ErrPreheatCut, err)
	}
	_ = s.CloseWrite()
	for {
		_ = s.SetReadDeadline(time.Now().Add(preheatSilence))
		b, err := readFrame(s, maxPreheatFrame)
		if err != nil {
			_ = s.Reset()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("member stopped answering: %w: %w", ErrPreheatCut, err)
		}
		var pr PreheatProgress
		if err := json.Unmarshal(b, &pr); err != nil {
			_ = s.Reset()
			return fmt.Errorf("bad progress: %w", err)
		}
		if err := pr.check(); err != nil {
			_ = s.Reset()
			return fmt.Errorf("bad progress: %w", err)
		}
		if progress != nil {
			progress(pr)
		}
		if pr.Done {
			if pr.Error != "" {
				return errors.New(pr.Error)
			}
			return nil
		}
	}
}
