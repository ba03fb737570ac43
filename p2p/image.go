package p2p

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoal-dev/shoal/resolver"
)

// ImageProtocolID asks a peer which manifest its container runtime holds for
// an image name, so a tag resolves from the mesh while the registry is down.
//
// A request is a 2-byte big-endian length and the name (at most
// maxImageName bytes). The answer is a 2-byte length and a JSON imageAnswer
// of at most maxImageAnswer bytes; then the server closes the stream.
const ImageProtocolID protocol.ID = "/shoal/image/1.0.0"

// UpdatedAnnotation on a descriptor from ImageSource says when the node's
// runtime last updated the image record, or when the node last had the
// tag's answer from the registry (RFC 3339); ResolveImage prefers the
// newest answer. containerd-plugin sets the same annotation.
const UpdatedAnnotation = resolver.UpdatedAnnotation

const (
	maxImageName   = 512
	maxImageAnswer = 4096
)

// ImageSource resolves an image name (registry/repo:tag) to the descriptor
// this node's runtime holds; NotFound when it has none.
type ImageSource interface {
	ResolveImage(ctx context.Context, name string) (ocispec.Descriptor, error)
}

type imageAnswer struct {
	Found      bool              `json:"found"`
	MediaType  string            `json:"media_type,omitempty"`
	Digest     digest.Digest     `json:"digest,omitempty"`
	Size       int64             `json:"size,omitempty"`
	Annotation map[string]string `json:"annotations,omitempty"`
	Error      string            `json:"error,omitempty"`
}

func writeFrame(w io.Writer, b []byte, limit int) error {
	if len(b) > limit {
		return fmt.Errorf("frame of %d bytes exceeds %d", len(b), limit)
	}
	buf := make([]byte, 2+len(b))
	binary.BigEndian.PutUint16(buf, uint16(len(b)))
	copy(buf[2:], b)
	_, err := w.Write(buf)
	return err
}

func readFrame(r io.Reader, limit int) ([]byte, error) {
	var lb [2]byte
	if _, err := io.ReadFull(r, lb[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(lb[:]))
	if n > limit {
		return nil, fmt.Errorf("frame of %d bytes exceeds %d", n, limit)
	}
	b := make([]byte, n)
	_, err := io.ReadFull(r, b)
	return b, err
}

// handleImage answers one image-name question.
func (n *Node) handleImage(s network.Stream) {
	if !n.enterHandler() {
		_ = s.Reset()
		return
	}
	defer n.handlers.Done()
	t := n.cfg.Timing
	_ = s.SetDeadline(time.Now().Add(t.RequestTimeout))
	var ans imageAnswer
	name, err := readFrame(s, maxImageName)
	switch {
	case err != nil:
		ans.Error = "bad request: " + err.Error()
	case len(name) == 0:
		ans.Error = "bad request: empty name"
	case n.cfg.Images == nil:
		// A node without a runtime holds no images: not found.
	default:
		ctx, cancel := context.WithTimeout(n.life, t.RequestTimeout)
		d, err := n.cfg.Images.ResolveImage(ctx, string(name))
		cancel()
		switch {
		case err == nil:
			ans = imageAnswer{Found: true, MediaType: d.MediaType, Digest: d.Digest, Size: d.Size}
			if u, ok := d.Annotations[UpdatedAnnotation]; ok {
				ans.Annotation = map[string]string{UpdatedAnnotation: u}
			}
		case !errdefs.IsNotFound(err):
			ans.Error = err.Error()
		}
	}
	b, _ := json.Marshal(ans)
	if err := writeFrame(s, b, maxImageAnswer); err != nil {
		_ = s.Reset()
		return
	}
	_ = s.Close()
}

// ResolveImage asks a few members (Config.ImagePeers, in rendezvous order
// over name: the tag's designated node first, which knows the tag's last
// answer) which manifest they hold for name, and returns the newest
// answer, or an error wrapping errdefs.ErrNotFound when none holds it. It
// never asks every member: its cost does not grow with the cluster.
func (n *Node) ResolveImage(ctx context.Context, name string) (ocispec.Descriptor, error) {
	if name == "" || len(name) > maxImageName {
		return ocispec.Descriptor{}, fmt.Errorf("image name %q: %w", name, errdefs.ErrInvalidArgument)
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.Timing.DialTimeout+n.cfg.Timing.RequestTimeout)
	defer cancel()
	var (
		mu     sync.Mutex
		best   ocispec.Descriptor
		bestAt time.Time
		found  bool
		wg     sync.WaitGroup
	)
	for _, p := range n.imagePeers(name) {
		wg.Go(func() {
			d, at, ok := n.askImage(ctx, p, name)
			if !ok {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if !found || at.After(bestAt) {
				best, bestAt, found = d, at, true
			}
		})
	}
	wg.Wait()
	if !found {
		return ocispec.Descriptor{}, fmt.Errorf("image %s: no member holds it: %w", name, errdefs.ErrNotFound)
	}
	return best, nil
}

// askImage asks one peer; ok is false for no answer, a miss or a bad answer.
func (n *Node) askImage(ctx context.Context, p peer.ID, name string) (ocispec.Descriptor, time.Time, bool) {
	// The connector may not have passed a new member's addresses on yet.
	if ps := n.host.Peerstore(); len(ps.Addrs(p)) == 0 {
		ps.AddAddrs(p, n.members.addrsOf(p), peerstore.TempAddrTTL)
	}
	s, err := n.host.NewStream(network.WithForceDirectDial(ctx, "image"), p, ImageProtocolID)
	if err != nil {
		return ocispec.Descriptor{}, time.Time{}, false
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	if err := writeFrame(s, []byte(name), maxImageName); err != nil {
		_ = s.Reset()
		return ocispec.Descriptor{}, time.Time{}, false
	}
	b, err := readFrame(s, maxImageAnswer)
	if err != nil {
		return ocispec.Descriptor{}, time.Time{}, false
	}
	d, at, found, err := parseImageAnswer(b)
	if err != nil {
		n.log.Debug("bad image answer", "peer", p, "name", name, "answer", string(b), "err", err)
		return ocispec.Descriptor{}, time.Time{}, false
	}
	return d, at, found
}

// parseImageAnswer reads a peer's answer: found is false for a miss; an
// error says the answer is malformed. A found descriptor has a sha256
// digest, a positive size and a media type fit for a Content-Type header.
func parseImageAnswer(b []byte) (d ocispec.Descriptor, updated time.Time, found bool, err error) {
	var ans imageAnswer
	if err := json.Unmarshal(b, &ans); err != nil {
		return ocispec.Descriptor{}, time.Time{}, false, err
	}
	if !ans.Found {
		return ocispec.Descriptor{}, time.Time{}, false, nil
	}
	if err := checkDigest(ans.Digest); err != nil {
		return ocispec.Descriptor{}, time.Time{}, false, err
	}
	if ans.Size <= 0 {
		return ocispec.Descriptor{}, time.Time{}, false, fmt.Errorf("size %d: %w", ans.Size, errdefs.ErrInvalidArgument)
	}
	if !validMediaType(ans.MediaType) {
		return ocispec.Descriptor{}, time.Time{}, false, fmt.Errorf("media type %q: %w", ans.MediaType, errdefs.ErrInvalidArgument)
	}
	at, _ := time.Parse(time.RFC3339Nano, ans.Annotation[UpdatedAnnotation])
	return ocispec.Descriptor{MediaType: ans.MediaType, Digest: ans.Digest, Size: ans.Size}, at, true, nil
}

// validMediaType accepts a bare type/subtype, as manifests carry them: the
// mirror sends it to containerd as the Content-Type.
func validMediaType(mt string) bool {
	base, params, err := mime.ParseMediaType(mt)
	return err == nil && len(params) == 0 && base == strings.ToLower(mt) && strings.Count(mt, "/") == 1
}
