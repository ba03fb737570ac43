package p2p

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// Member metadata: how to reach a member over libp2p. memberlist caps it at
// 512 bytes; it arrives from other members, so it is parsed defensively.
const (
	metaVersion  = 1
	metaMaxSize  = 512
	metaMaxAddrs = 16
)

type nodeMeta struct {
	V     int      `json:"v"`
	ID    string   `json:"id"`
	Addrs []string `json:"a"`
	// Version is the member's shoal version, for status; optional.
	Version string `json:"sv,omitempty"`
}

// maxVersionLen bounds the version a member's metadata carries.
const maxVersionLen = 64

// encodeMeta renders this node's metadata in at most limit bytes, keeping as
// many addresses, in order, as fit.
func encodeMeta(id peer.ID, addrs []ma.Multiaddr, limit int) ([]byte, error) {
	return encodeMetaVersion(id, "", addrs, limit)
}

// encodeMetaVersion is encodeMeta with the node's shoal version.
func encodeMetaVersion(id peer.ID, version string, addrs []ma.Multiaddr, limit int) ([]byte, error) {
	if len(version) > maxVersionLen {
		version = version[:maxVersionLen]
	}
	m := nodeMeta{V: metaVersion, ID: id.String(), Version: version}
	var out []byte
	for _, a := range addrs {
		if len(m.Addrs) == metaMaxAddrs {
			break
		}
		m.Addrs = append(m.Addrs, a.String())
		b, err := json.Marshal(m)
		if err != nil {
			return nil, err
		}
		if len(b) > limit {
			m.Addrs = m.Addrs[:len(m.Addrs)-1]
			break
		}
		out = b
	}
	if out == nil {
		return nil, fmt.Errorf("metadata: no address fits in %d bytes", limit)
	}
	return out, nil
}

// decodeMeta parses and checks a member's metadata.
func decodeMeta(b []byte) (peer.ID, []ma.Multiaddr, error) {
	if len(b) == 0 {
		return "", nil, errors.New("no metadata")
	}
	if len(b) > metaMaxSize {
		return "", nil, fmt.Errorf("metadata of %d bytes exceeds %d", len(b), metaMaxSize)
	}
	var m nodeMeta
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&m); err != nil {
		return "", nil, fmt.Errorf("metadata: %w", err)
	}
	if m.V != metaVersion {
		return "", nil, fmt.Errorf("metadata version %d, want %d", m.V, metaVersion)
	}
	id, err := peer.Decode(m.ID)
	if err != nil {
		return "", nil, fmt.Errorf("metadata: peer ID: %w", err)
	}
	if len(m.Addrs) == 0 || len(m.Addrs) > metaMaxAddrs {
		return "", nil, fmt.Errorf("metadata: %d addresses, want 1 to %d", len(m.Addrs), metaMaxAddrs)
	}
	addrs := make([]ma.Multiaddr, 0, len(m.Addrs))
	for _, s := range m.Addrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return "", nil, fmt.Errorf("metadata: address %q: %w", s, err)
		}
		if _, err := a.ValueForProtocol(ma.P_TCP); err != nil {
			return "", nil, fmt.Errorf("metadata: address %q has no TCP port", s)
		}
		addrs = append(addrs, a)
	}
	return id, addrs, nil
}

// metaShoalVersion is the shoal version a member's metadata names, or "".
// The metadata is checked by decodeMeta; this reads one more field of it.
func metaShoalVersion(b []byte) string {
	var m nodeMeta
	if len(b) > metaMaxSize || json.Unmarshal(b, &m) != nil || len(m.Version) > maxVersionLen {
		return ""
	}
	return m.Version
}
