package p2p

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/distribution/reference"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/opencontainers/go-digest"
)

// ProtocolID is the blob transfer protocol, version 1.3: ranges, and an
// asker that says it leads.
//
// A request is a 2-byte big-endian length and that many bytes: an 8-byte
// big-endian offset, an 8-byte length (0: to the end of the blob), a flags
// byte, the digest string ("sha256:<hex>"), and optionally a NUL, the
// registry (host[:port]), a NUL and the repository: where the blob comes
// from, so a node asked for a blob it does not hold may fetch it for the
// cluster (see Puller). Flag 1 (wait) asks a node that is still receiving
// the blob to wait for the bytes at the offset; without it such a node
// answers "not yet" at once. The answer is a header (1-byte status, 8-byte
// total size of the blob, 8-byte count of bytes the node holds from the
// start without a hole, the size when it holds the blob whole, 2-byte
// length and a message of at most maxMessage bytes) followed, on StatusOK
// only, by the bytes asked for. The server then closes the stream. On
// statusRateLimited (the registry the request named asked the node to slow
// down), the size field holds instead the milliseconds for which the node
// leaves that registry alone. A node asked to fetch a blob for the cluster
// that does not want it itself answers statusFetchYourself, or
// statusFetchingAt with the ID of the peer that fetches it as the message
// (see swarm.Coordinate). An "ok", "not yet" or busy answer whose message
// is leadsMessage comes from a node that fetches the blob from the
// registry for the cluster now and waits on no peer (see swarm.LeadsNow):
// the asker may wait on it whatever the ranking (see swarm.WaitOn), and
// waits for its slot even when it leads the blob itself (see
// swarm.WaitsOnLeader). A node that does not know the message ignores it.
// Flag 2 (leads), new in 1.3, says the asker fetches another blob from the
// registry for the cluster now: a designated node that does not want the
// blob waits a moment for its own clients to want it before it leaves the
// blob to the asker (see swarm.WaitsForWant).
const ProtocolID protocol.ID = "/shoal/blob/1.3.0"

// ProtocolV12 is the protocol before flag 2, still served: a request
// with that flag is a bad request there.
const ProtocolV12 protocol.ID = "/shoal/blob/1.2.0"

// ProtocolV11 is the protocol before ranges, still served: a request has
// no length and no flags (the rest of the blob, waiting for bytes still
// arriving) and a header has no count of bytes held.
const ProtocolV11 protocol.ID = "/shoal/blob/1.1.0"

// DHTPrefix is the protocol prefix of shoal's DHT, so it never mixes with
// the public IPFS DHT.
const DHTPrefix protocol.ID = "/shoal"

const (
	maxRequest = 1024 // 8 + 71 bytes of digest + a registry and a repository name
	maxMessage = 512
	headerSize = 1 + 8 + 2
	minRequest = 8 + 1
	// rangeFields is what ProtocolID adds to a request: length and flags.
	rangeFields = 8 + 1
	// flagWait asks a node receiving the blob to wait for the bytes.
	flagWait = 1
	// flagLeads says the asker fetches another blob from the registry
	// for the cluster now, or may be left one (ProtocolID only).
	flagLeads = 2
	// leadsMessage is the message of an answer from a node that fetches
	// the blob from the registry for the cluster now.
	leadsMessage = "leads: fetching the blob from the registry for the cluster"
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
	// statusNotYet: the node is receiving the blob and does not hold the
	// byte at the offset yet (ProtocolID, requests without flagWait).
	statusNotYet
	// statusRateLimited: the node does not hold the blob and the registry
	// the request named asked it to slow down; the header's size is the
	// back-off left, in milliseconds. A node that does not know this
	// status takes it for statusError.
	statusRateLimited
	// statusFetchYourself: asked to fetch a blob for the cluster, the node
	// does not want it itself and leaves it to the asker, which fetches
	// it from the registry (see swarm.Coordinate).
	statusFetchYourself
	// statusFetchingAt: asked to fetch a blob for the cluster, the node
	// names the peer that fetches it, in the message (a peer ID).
	statusFetchingAt
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
	case statusNotYet:
		return "not yet"
	case statusRateLimited:
		return "rate limited"
	case statusFetchYourself:
		return "fetch it yourself"
	case statusFetchingAt:
		return "fetching at"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

type request struct {
	dgst digest.Digest
	off  int64
	// ranged requests (ProtocolID) carry length and wait; others
	// (ProtocolV11) ask for the rest of the blob and always wait.
	ranged bool
	length int64 // 0: to the end
	wait   bool
	// leads: the asker fetches another blob from the registry for the
	// cluster now, or may be left one (ProtocolID only; see flagLeads).
	leads bool
	// registry and repo, when set, say where the blob comes from.
	registry, repo string
}

// end is where the range asked for ends in a blob of size bytes.
func (r request) end(size int64) int64 {
	if r.length > 0 {
		return r.off + r.length
	}
	return size
}

var errRequestTooLarge = errors.New("request exceeds 1024 bytes")

func writeRequest(w io.Writer, r request) error {
	tail := string(r.dgst)
	if r.registry != "" {
		tail += "\x00" + r.registry + "\x00" + r.repo
	}
	body := len(tail) + 8
	if r.ranged {
		body += rangeFields
	}
	if body > maxRequest {
		return errRequestTooLarge
	}
	buf := make([]byte, 2+body)
	binary.BigEndian.PutUint16(buf, uint16(body))
	binary.BigEndian.PutUint64(buf[2:], uint64(r.off))
	at := 10
	if r.ranged {
		binary.BigEndian.PutUint64(buf[at:], uint64(r.length))
		if r.wait {
			buf[at+8] |= flagWait
		}
		if r.leads {
			buf[at+8] |= flagLeads
		}
		at += rangeFields
	}
	copy(buf[at:], tail)
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

// parseRangeRequest parses a ProtocolID or ProtocolV12 request body;
// known is the flags that protocol has.
func parseRangeRequest(body []byte, known byte) (request, error) {
	if len(body) < minRequest+rangeFields {
		return request{}, fmt.Errorf("request of %d bytes is too short", len(body))
	}
	length := int64(binary.BigEndian.Uint64(body[8:]))
	if length < 0 {
		return request{}, fmt.Errorf("negative length %d", length)
	}
	flags := body[16]
	if flags&^known != 0 {
		return request{}, fmt.Errorf("unknown flags %#x", flags)
	}
	rest := append(body[:8:8], body[8+rangeFields:]...)
	req, err := parseRequest(rest)
	if err != nil {
		return request{}, err
	}
	if length > 0 && req.off > math.MaxInt64-length {
		return request{}, fmt.Errorf("range at %d of %d bytes overflows", req.off, length)
	}
	req.ranged, req.length, req.wait, req.leads = true, length, flags&flagWait != 0, flags&flagLeads != 0
	return req, nil
}

// parseRequest parses a ProtocolV11 request body.
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
	// ranged headers (ProtocolID) carry have: the bytes the node holds
	// from the start without a hole.
	ranged bool
	have   int64
	msg    string
}

func writeHeader(w io.Writer, h header) error {
	msg := h.msg
	if len(msg) > maxMessage {
		msg = msg[:maxMessage]
	}
	fixed := headerSize
	if h.ranged {
		fixed += 8
	}
	buf := make([]byte, fixed+len(msg))
	buf[0] = byte(h.status)
	binary.BigEndian.PutUint64(buf[1:], uint64(h.size))
	if h.ranged {
		binary.BigEndian.PutUint64(buf[9:], uint64(h.have))
	}
	binary.BigEndian.PutUint16(buf[fixed-2:], uint16(len(msg)))
	copy(buf[fixed:], msg)
	_, err := w.Write(buf)
	return err
}

// readRangeHeader reads a ProtocolID header.
func readRangeHeader(r io.Reader) (header, error) {
	var buf [headerSize + 8]byte
	if _, err := io.ReadFull(r, buf[:]); err != nil {
		return header{}, fmt.Errorf("response header: %w", err)
	}
	h := header{status: status(buf[0]), size: int64(binary.BigEndian.Uint64(buf[1:])),
		ranged: true, have: int64(binary.BigEndian.Uint64(buf[9:]))}
	if h.size < 0 {
		return header{}, fmt.Errorf("response size %d is negative", h.size)
	}
	if h.have < 0 || (h.status == statusOK && h.have > h.size) {
		return header{}, fmt.Errorf("response states %d bytes held of %d", h.have, h.size)
	}
	return h, readMessage(r, &h, int(binary.BigEndian.Uint16(buf[17:])))
}

// readHeader reads a ProtocolV11 header.
func readHeader(r io.Reader) (header, error) {
	var buf [headerSize]byte
	if _, err := io.ReadFull(r, buf[:]); err != nil {
		return header{}, fmt.Errorf("response header: %w", err)
	}
	h := header{status: status(buf[0]), size: int64(binary.BigEndian.Uint64(buf[1:]))}
	if h.size < 0 {
		return header{}, fmt.Errorf("response size %d is negative", h.size)
	}
	return h, readMessage(r, &h, int(binary.BigEndian.Uint16(buf[9:])))
}

// readMessage reads a header's message of n bytes into h.
func readMessage(r io.Reader, h *header, n int) error {
	if n > maxMessage {
		return fmt.Errorf("response message of %d bytes exceeds %d", n, maxMessage)
	}
	if n > 0 {
		msg := make([]byte, n)
		if _, err := io.ReadFull(r, msg); err != nil {
			return fmt.Errorf("response message: %w", err)
		}
		h.msg = string(msg)
	}
	return nil
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
