package p2p

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"mime"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
)

func TestRequestRoundTrip(t *testing.T) {
	t.Parallel()
	want := request{dgst: digest.FromString("x"), off: 12345}
	got, err := parseRequest(writeRead(t, want))
	if err != nil || got != want {
		t.Fatalf("got %+v, %v; want %+v", got, err, want)
	}
}

// TestLeadsFlag checks flag 2 both ways: a 1.3 request says its asker
// leads, and the 1.2 parser, which an older node runs, refuses it.
func TestLeadsFlag(t *testing.T) {
	t.Parallel()
	want := request{dgst: digest.FromString("x"), ranged: true, wait: true, leads: true, registry: "docker.io", repo: "a"}
	body := writeRead(t, want)
	got, err := parseRangeRequest(bytes.Clone(body), flagWait|flagLeads)
	if err != nil || got != want {
		t.Fatalf("1.3: got %+v, %v; want %+v", got, err, want)
	}
	if got, err := parseRangeRequest(body, flagWait); err == nil {
		t.Fatalf("1.2 accepted the leads flag as %+v", got)
	}
}

// writeRead writes r as a request frame and reads the frame's body back.
func writeRead(t *testing.T, r request) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := writeRequest(&buf, r); err != nil {
		t.Fatal(err)
	}
	body, err := readRequest(&buf)
	if err != nil {
		t.Fatal(err)
	}
	return body
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

// FuzzRequest reads arbitrary bytes as a peer's request frame: a request
// it accepts has a non-negative offset, a sha256 digest and a valid source,
// and writeRequest renders it back to exactly the frame's bytes.
func FuzzRequest(f *testing.F) {
	good := digest.FromString("x").String()
	f.Add(frame(0, good))
	f.Add(frame(1<<40, good+"\x00registry.example:5000\x00library/alpine"))
	f.Add(frame(0, good+"\x00docker.io\x00a"))
	f.Add(frame(0, good+"\x00\x00"))
	f.Add(frame(0, good+"\x00docker.io\x00a\x00b"))
	f.Add(frame(0, good+"\x00docker.io\x00a:tag"))
	f.Add(frame(-1, good))
	f.Add(append(frame(0, good), "trailing"...))
	f.Add([]byte{0xff, 0xff})
	for _, r := range []request{
		{dgst: digest.Digest(good), off: 5, ranged: true, length: 4 << 20},
		{dgst: digest.Digest(good), ranged: true, wait: true, registry: "docker.io", repo: "a"},
		{dgst: digest.Digest(good), ranged: true, leads: true, registry: "docker.io", repo: "a"},
	} {
		var buf bytes.Buffer
		if err := writeRequest(&buf, r); err != nil {
			f.Fatal(err)
		}
		f.Add(bytes.Clone(buf.Bytes()))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		body, err := readRequest(bytes.NewReader(b))
		if err != nil {
			return
		}
		if len(body) < minRequest || len(body) > maxRequest {
			t.Fatalf("read a %d-byte request", len(body))
		}
		// Every version's parser takes the same frame; each must judge it
		// on its own.
		v12 := func(b []byte) (request, error) { return parseRangeRequest(b, flagWait) }
		v13 := func(b []byte) (request, error) { return parseRangeRequest(b, flagWait|flagLeads) }
		for _, parse := range []func([]byte) (request, error){parseRequest, v12, v13} {
			checkRequest(t, b, body, parse)
		}
	})
}

// checkRequest parses body, the frame b's, and checks what it accepts.
func checkRequest(t *testing.T, b, body []byte, parse func([]byte) (request, error)) {
	t.Helper()
	req, err := parse(bytes.Clone(body))
	if err != nil {
		return
	}
	if req.off < 0 || checkDigest(req.dgst) != nil || req.length < 0 {
		t.Fatalf("accepted %+v", req)
	}
	if (req.registry != "" || req.repo != "") && !validSource(req.registry, req.repo) {
		t.Fatalf("accepted source %q %q", req.registry, req.repo)
	}
	var buf bytes.Buffer
	if err := writeRequest(&buf, req); err != nil {
		t.Fatalf("cannot write back %+v: %v", req, err)
	}
	if want := b[:2+len(body)]; !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("%+v writes back as %x, read from %x", req, buf.Bytes(), want)
	}
}

// FuzzHeader reads arbitrary bytes as a provider's answer header: an
// accepted header has a non-negative size and a bounded message, and
// writeHeader renders it back to exactly the bytes read.
func FuzzHeader(f *testing.F) {
	var buf bytes.Buffer
	for _, h := range []header{
		{status: statusOK, size: 1 << 40},
		{status: statusBusy, msg: "busy"},
		{status: statusError, msg: strings.Repeat("m", maxMessage)},
		{status: 200, size: 7, msg: "\x00\xff"},
	} {
		buf.Reset()
		if err := writeHeader(&buf, h); err != nil {
			f.Fatal(err)
		}
		f.Add(bytes.Clone(buf.Bytes()))
	}
	f.Add([]byte{0, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff})
	buf.Reset()
	if err := writeHeader(&buf, header{status: statusNotYet, size: 100, ranged: true, have: 40, msg: "not yet"}); err != nil {
		f.Fatal(err)
	}
	f.Add(bytes.Clone(buf.Bytes()))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, read := range []func(io.Reader) (header, error){readHeader, readRangeHeader} {
			h, err := read(bytes.NewReader(b))
			if err != nil {
				continue
			}
			if h.size < 0 || len(h.msg) > maxMessage || h.have < 0 || (h.status == statusOK && h.have > h.size) {
				t.Fatalf("accepted %+v", h)
			}
			var out bytes.Buffer
			if err := writeHeader(&out, h); err != nil {
				t.Fatal(err)
			}
			n := headerSize + len(h.msg)
			if h.ranged {
				n += 8
			}
			if want := b[:n]; !bytes.Equal(out.Bytes(), want) {
				t.Fatalf("%+v writes back as %x, read from %x", h, out.Bytes(), want)
			}
		}
	})
}

// FuzzImageFrame reads arbitrary bytes as the image protocol's frames: a
// frame within its limit writes back to the same bytes, and an answer
// parseImageAnswer takes as found names a sha256 digest, a positive size
// and a media type fit for a Content-Type header.
func FuzzImageFrame(f *testing.F) {
	d := digest.FromString("x")
	for _, ans := range []string{
		`{"found":true,"media_type":"application/vnd.oci.image.index.v1+json","digest":"` + d.String() + `","size":12,"annotations":{"io.shoal.image.updated":"2024-05-01T10:00:00.123Z"}}`,
		`{"found":false}`,
		`{"found":true,"media_type":"x","digest":"` + d.String() + `","size":1}`,
		`{"found":true,"media_type":"a/b\r\nX-Evil: 1","digest":"` + d.String() + `","size":1}`,
		`{"found":true,"media_type":"a/b","digest":"sha512:00","size":1}`,
		`{"found":true,"media_type":"a/b","digest":"` + d.String() + `","size":-1}`,
		`{"error":"boom"}`,
	} {
		var buf bytes.Buffer
		if err := writeFrame(&buf, []byte(ans), maxImageAnswer); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes())
	}
	f.Add([]byte{0xff, 0xff, '{'})
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, limit := range []int{maxImageName, maxImageAnswer} {
			fr, err := readFrame(bytes.NewReader(b), limit)
			if err != nil {
				continue
			}
			if len(fr) > limit {
				t.Fatalf("read a %d-byte frame past the limit %d", len(fr), limit)
			}
			var out bytes.Buffer
			if err := writeFrame(&out, fr, limit); err != nil {
				t.Fatal(err)
			}
			if want := b[:2+len(fr)]; !bytes.Equal(out.Bytes(), want) {
				t.Fatalf("frame writes back as %x, read from %x", out.Bytes(), want)
			}
			if limit != maxImageAnswer {
				continue
			}
			desc, _, found, err := parseImageAnswer(fr)
			if err != nil || !found {
				continue
			}
			if checkDigest(desc.Digest) != nil || desc.Size <= 0 {
				t.Fatalf("accepted %+v", desc)
			}
			if mt, params, err := mime.ParseMediaType(desc.MediaType); err != nil || len(params) != 0 || mt != strings.ToLower(desc.MediaType) || strings.Count(mt, "/") != 1 {
				t.Fatalf("accepted media type %q: %v", desc.MediaType, err)
			}
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
