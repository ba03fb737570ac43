package p2p

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/distribution/reference"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/opencontainers/go-digest"
)

// ProtocolID is the blob transfer protocol.
//
// A request is a 2-byte big-endian length and that many bytes: an 8-byte
// big-endian offset, the digest string ("sha256:<hex>"), and optionally a
// NUL, the registry (host[:port]), a NUL and the repository: where the
// blob comes from, so a node asked for a blob it does not hold may fetch
// it for the cluster (see Puller). The answer is a
// header (1-byte status, 8-byte total size of the blob, 2-byte length and a
// message of at most maxMessage bytes) followed, on StatusOK only, by the
// blob's bytes from the offset to the end. The server then closes the stream.
const ProtocolID protocol.ID = "/shoal/blob/1.1.0"

// DHTPrefix is the protocol prefix of shoal's DHT, so it never mixes with
// the public IPFS DHT.
const DHTPrefix protocol.ID = "/shoal"

const (
	maxRequest   = 1024 // 8 + 71 bytes of digest + a registry and a repository name
	maxMessage   = 512
	headerSize   = 1 + 8 + 2
	minRequest   = 8 + 1
	copyBufferSz = 256 << 10
)

// status is the answer to a request.
type status uint8

const (
	statusOK status = iota
	statusNotFound
	statusBadRequest
	statusBusy
	statusError
)

func (s status) String() string {
	switch s {
	case statusOK:
		return "ok"
	case statusNotFound:
		return "not found"
	case statusBadRequest:
		return "bad request"
	case statusBusy:
		return "busy"
	case statusError:
		return "error"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

type request struct {
	dgst digest.Digest
	off  int64
	// registry and repo, when set, say where the blob comes from.
	registry, repo string
}

var errRequestTooLarge = errors.New("request exceeds 1024 bytes")

func writeRequest(w io.Writer, r request) error {
	tail := string(r.dgst)
	if r.registry != "" {
		tail += "\x00" + r.registry + "\x00" + r.repo
	}
	body := len(tail) + 8
	if body > maxRequest {
		return errRequestTooLarge
	}
	buf := make([]byte, 2+body)
	binary.BigEndian.PutUint16(buf, uint16(body))
	binary.BigEndian.PutUint64(buf[2:], uint64(r.off))
	copy(buf[10:], tail)
	_, err := w.Write(buf)
	return err
}

// readRequest reads one request frame; its contents are checked by
// parseRequest.
func readRequest(r io.Reader) ([]byte, error) {
	var lb [2]byte
	if _, err := io.ReadFull(r, lb[:]); err != nil {
		return nil, fmt.Errorf("request length: %w", err)
	}
	n := int(binary.BigEndian.Uint16(lb[:]))
	if n > maxRequest {
		return nil, errRequestTooLarge
	}
	if n < minRequest {
		return nil, fmt.Errorf("request of %d bytes is too short", n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, fmt.Errorf("request body: %w", err)
	}
	return body, nil
}

func parseRequest(body []byte) (request, error) {
	off := int64(binary.BigEndian.Uint64(body))
	if off < 0 {
		return request{}, fmt.Errorf("negative offset %d", off)
	}
	d, hint, hasHint := bytes.Cut(body[8:], []byte{0})
	dgst := digest.Digest(d)
	if err := checkDigest(dgst); err != nil {
		return request{}, err
	}
	req := request{dgst: dgst, off: off}
	if hasHint {
		reg, repo, ok := bytes.Cut(hint, []byte{0})
		if !ok || !validSource(string(reg), string(repo)) {
			return request{}, fmt.Errorf("bad source %q", hint)
		}
		req.registry, req.repo = string(reg), string(repo)
	}
	return req, nil
}

type header struct {
	status status
	size   int64
	msg    string
}

func writeHeader(w io.Writer, h header) error {
	msg := h.msg
	if len(msg) > maxMessage {
		msg = msg[:maxMessage]
	}
	buf := make([]byte, headerSize+len(msg))
	buf[0] = byte(h.status)
	binary.BigEndian.PutUint64(buf[1:], uint64(h.size))
	binary.BigEndian.PutUint16(buf[9:], uint16(len(msg)))
	copy(buf[headerSize:], msg)
	_, err := w.Write(buf)
	return err
}

func readHeader(r io.Reader) (header, error) {
	var buf [headerSize]byte
	if _, err := io.ReadFull(r, buf[:]); err != nil {
		return header{}, fmt.Errorf("response header: %w", err)
	}
	h := header{status: status(buf[0]), size: int64(binary.BigEndian.Uint64(buf[1:]))}
	n := int(binary.BigEndian.Uint16(buf[9:]))
	if n > maxMessage {
		return header{}, fmt.Errorf("response message of %d bytes exceeds %d", n, maxMessage)
	}
	if h.size < 0 {
		return header{}, fmt.Errorf("response size %d is negative", h.size)
	}
	if n > 0 {
		msg := make([]byte, n)
		if _, err := io.ReadFull(r, msg); err != nil {
			return header{}, fmt.Errorf("response message: %w", err)
		}
		h.msg = string(msg)
	}
	return h, nil
}

// validSource checks a registry host[:port] and a repository path against
// the distribution grammar.
func validSource(registry, repo string) bool {
	ref, err := reference.Parse(registry + "/" + repo)
	if err != nil {
		return false
	}
	named, ok := ref.(reference.Named)
	if !ok {
		return false
	}
	_, tagged := named.(reference.Tagged)
	return !tagged && reference.Domain(named) == registry && reference.Path(named) == repo
}
