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
	// Labels are the member's node labels (Config.Labels), which a
	// preheat selects nodes by; optional.
	Labels map[string]string `json:"l,omitempty"`
}

// maxVersionLen bounds the version a member's metadata carries.
const maxVersionLen = 64

// encodeMeta renders this node's metadata in at most limit bytes, keeping as
// many addresses, in order, as fit.
func encodeMeta(id peer.ID, addrs []ma.Multiaddr, limit int) ([]byte, error) {
	return encodeMetaVersion(id, "", nil, addrs, limit)
}

// encodeMetaVersion is encodeMeta with the node's shoal version and labels.
func encodeMetaVersion(id peer.ID, version string, labels map[string]string, addrs []ma.Multiaddr, limit int) ([]byte, error) {
	if len(version) > maxVersionLen {
		version = version[:maxVersionLen]
	}
	m := nodeMeta{V: metaVersion, ID: id.String(), Version: version, Labels: labels}
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

// metaLabels are the node labels a member's metadata names, or nil; any
// that fail CheckLabels are dropped whole.
func metaLabels(b []byte) map[string]string {
	var m nodeMeta
	if len(b) > metaMaxSize || json.Unmarshal(b, &m) != nil || CheckLabels(m.Labels) != nil {
		return nil
	}
	return m.Labels
}

// MaxLabelBytes bounds a node's labels, keys and values together: they
// travel in the member metadata, which memberlist caps at 512 bytes with
// the node's addresses.
const MaxLabelBytes = 192

// CheckLabels checks node labels: keys and values of letters, digits,
// '-', '_', '.' and '/' (keys not empty), MaxLabelBytes in all.
func CheckLabels(labels map[string]string) error {
	total := 0
	for k, v := range labels {
		total += len(k) + len(v)
		if k == "" || !labelText(k) || !labelText(v) {
			return fmt.Errorf("label %q=%q: want letters, digits, '-', '_', '.' and '/'", k, v)
		}
	}
	if total > MaxLabelBytes {
		return fmt.Errorf("labels of %d bytes exceed %d", total, MaxLabelBytes)
	}
	return nil
}

func labelText(s string) bool {
	for _, c := range s {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '/'
		if !ok {
			return false
		}
	}
	return true
}
