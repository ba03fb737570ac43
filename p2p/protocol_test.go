package p2p

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
)

func TestRequestRoundTrip(t *testing.T) {
	t.Parallel()
	want := request{dgst: digest.FromString("x"), off: 12345}
	var buf bytes.Buffer
	if err := writeRequest(&buf, want); err != nil {
		t.Fatal(err)
	}
	body, err := readRequest(&buf)
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseRequest(body)
	if err != nil || got != want {
		t.Fatalf("got %+v, %v; want %+v", got, err, want)
	}
}

func frame(off int64, dgst string) []byte {
	b := make([]byte, 2+8+len(dgst))
	binary.BigEndian.PutUint16(b, uint16(8+len(dgst)))
	binary.BigEndian.PutUint64(b[2:], uint64(off))
	copy(b[10:], dgst)
	return b
}

func TestRequestRejects(t *testing.T) {
	t.Parallel()
	good := digest.FromString("x").String()
	for _, tc := range []struct {
		name  string
		frame []byte
	}{
		{"empty", nil},
		{"half length", []byte{0}},
		{"too short", []byte{0, 3, 1, 2, 3}},
		{"oversized", append([]byte{0xff, 0xff}, make([]byte, 100)...)},
		{"truncated body", frame(0, good)[:20]},
		{"negative offset", frame(-1, good)},
		{"bad digest", frame(0, "sha256:zz")},
		{"uppercase hex", frame(0, strings.ToUpper(good))},
		{"sha512", frame(0, digest.SHA512.FromString("x").String())},
		{"no algorithm", frame(0, digest.FromString("x").Encoded())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, err := readRequest(bytes.NewReader(tc.frame))
			if err == nil {
				_, err = parseRequest(body)
			}
			if err == nil {
				t.Errorf("accepted %x", tc.frame)
			}
		})
	}
	if _, err := parseRequest(frame(0, "sha256:zz")[2:]); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("bad digest: %v, want ErrInvalidArgument", err)
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	t.Parallel()
	for _, h := range []header{
		{status: statusOK, size: 1 << 40},
		{status: statusBusy, msg: "busy"},
		{status: statusError, msg: strings.Repeat("m", 2*maxMessage)},
	} {
		var buf bytes.Buffer
		if err := writeHeader(&buf, h); err != nil {
			t.Fatal(err)
		}
		got, err := readHeader(&buf)
		if err != nil {
			t.Fatal(err)
		}
		if len(h.msg) > maxMessage {
			h.msg = h.msg[:maxMessage]
		}
		if got != h {
			t.Errorf("got %+v, want %+v", got, h)
		}
	}
	bad := make([]byte, headerSize)
	binary.BigEndian.PutUint64(bad[1:], 1<<63)
	if _, err := readHeader(bytes.NewReader(bad)); err == nil {
		t.Errorf("accepted a negative size")
	}
	binary.BigEndian.PutUint64(bad[1:], 0)
	binary.BigEndian.PutUint16(bad[9:], maxMessage+1)
	if _, err := readHeader(bytes.NewReader(bad)); err == nil {
		t.Errorf("accepted an oversized message")
	}
}

func FuzzRequest(f *testing.F) {
	f.Add(frame(0, digest.FromString("x").String()))
	f.Add([]byte{0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		body, err := readRequest(bytes.NewReader(b))
		if err == nil {
			_, _ = parseRequest(body) // must not panic
		}
	})
}

func TestDeriveKey(t *testing.T) {
	t.Parallel()
	secret := bytes.Repeat([]byte{7}, 32)
	g, p := deriveKey(secret, infoGossip), deriveKey(secret, infoPSK)
	if len(g) != 32 || len(p) != 32 || bytes.Equal(g, p) || bytes.Equal(g, secret) {
		t.Errorf("derived keys must be 32 bytes, distinct from each other and from the secret")
	}
	if !bytes.Equal(g, deriveKey(secret, infoGossip)) {
		t.Errorf("derivation is not deterministic")
	}
}

// TestFrameLimits: the image protocol's frames are refused past their
// limits on both sides, before anything that size is read or sent.
func TestFrameLimits(t *testing.T) {
	t.Parallel()
	for _, limit := range []int{maxImageName, maxImageAnswer} {
		var buf bytes.Buffer
		if err := writeFrame(&buf, make([]byte, limit+1), limit); err == nil || buf.Len() != 0 {
			t.Errorf("writeFrame sent %d bytes of a frame over %d: %v", buf.Len(), limit, err)
		}
		if err := writeFrame(&buf, make([]byte, limit), limit); err != nil {
			t.Fatalf("frame of exactly %d: %v", limit, err)
		}
		if b, err := readFrame(&buf, limit); err != nil || len(b) != limit {
			t.Fatalf("read back %d bytes: %v", len(b), err)
		}
		// A length past the limit is refused on the length alone: the
		// reader never waits for, or allocates, the body.
		over := []byte{byte((limit + 1) >> 8), byte(limit + 1)}
		if _, err := readFrame(bytes.NewReader(over), limit); err == nil || !strings.Contains(err.Error(), "exceeds") {
			t.Errorf("frame length %d over a limit of %d: %v", limit+1, limit, err)
		}
	}
}
