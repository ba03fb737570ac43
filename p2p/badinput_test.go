package p2p_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/p2p/p2ptest"
)

func rawHost(t *testing.T) host.Host {
	t.Helper()
	// A patient dial: on a busy host a handshake can take seconds, and
	// these tests are about what the peer says, not how fast. libp2p has
	// a bound of its own for loopback addresses (5 s), set too.
	h, err := libp2p.New(libp2p.NoListenAddrs, libp2p.Transport(tcp.NewTCPTransport),
		libp2p.DisableRelay(), libp2p.DisableMetrics(), libp2p.WithDialTimeout(time.Minute),
		libp2p.SwarmOpts(swarm.WithDialTimeoutLocal(time.Minute)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func frame(off int64, dgst string) []byte {
	b := make([]byte, 2+8+len(dgst))
	binary.BigEndian.PutUint16(b, uint16(8+len(dgst)))
	binary.BigEndian.PutUint64(b[2:], uint64(off))
	copy(b[10:], dgst)
	return b
}

// rangeFrame is a ProtocolID request frame.
func rangeFrame(off, length int64, flags byte, dgst string) []byte {
	b := make([]byte, 2+17+len(dgst))
	binary.BigEndian.PutUint16(b, uint16(17+len(dgst)))
	binary.BigEndian.PutUint64(b[2:], uint64(off))
	binary.BigEndian.PutUint64(b[10:], uint64(length))
	b[18] = flags
	copy(b[19:], dgst)
	return b
}

// sendFrame opens a stream of proto to server from h and writes frame; it
// half-closes the stream unless stall. The stream is reset when the test ends.
func sendFrame(t *testing.T, h host.Host, server peer.ID, proto protocol.ID, frame []byte, stall bool) network.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	s, err := h.NewStream(ctx, server, proto)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Reset() })
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := s.Write(frame); err != nil {
		t.Fatal(err)
	}
	if !stall {
		_ = s.CloseWrite()
	}
	return s
}

// TestBadRequests sends malformed transfer requests straight to a node:
// each is refused with a status and the node goes on serving.
func TestBadRequests(t *testing.T) {
	t.Parallel()
	data := randomBlob(5, 1<<20)
	d := digest.FromBytes(data)
	served := p2ptest.NewContent(data)
	// An open mesh: a stranger's frames reach the handler.
	c := p2ptest.Start(t, 2, p2ptest.Options{
		Open:   true,
		Config: func(i int, cfg *p2p.Config) { cfg.Timing.RequestTimeout = 500 * time.Millisecond },
		Content: func(i int) *p2ptest.Content {
			if i == 1 {
				return served
			}
			return nil
		},
	})
	c.WaitMembers(t, 2, 20*time.Second)
	server := c.Nodes[1]
	h := rawHost(t)
	if err := h.Connect(t.Context(), peer.AddrInfo{ID: server.ID(), Addrs: server.Status().Addrs}); err != nil {
		t.Fatal(err)
	}
	garbage := randomBlob(6, 1024)
	for _, tc := range []struct {
		name  string
		send  []byte
		stall bool // keep the stream open after sending
		want  string
	}{
		{"garbage", garbage, false, "bad request"},
		{"huge length", append([]byte{0xff, 0xff}, garbage...), false, "bad request"},
		{"length past the data", []byte{0x00, 0xf0, 1, 2, 3}, false, "bad request"},
		{"stalled mid-frame", []byte{0x00, 0xf0, 1, 2, 3}, true, "bad request"},
		{"nothing", nil, false, "bad request"},
		{"wrong digest syntax", frame(0, "sha256:0123"), false, "bad request"},
		{"not sha256", frame(0, digest.SHA512.FromBytes(data).String()), false, "bad request"},
		{"digest with junk", frame(0, d.String()+"\x00"), false, "bad request"},
		{"negative offset", frame(-5, d.String()), false, "bad request"},
		{"offset past the end", frame(int64(len(data))+1, d.String()), false, "bad request"},
		{"unknown blob", frame(0, digest.FromString("nope").String()), false, "not found"},
		{"valid", frame(int64(len(data))-3, d.String()), false, "ok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := sendFrame(t, h, server.ID(), p2p.ProtocolV11, tc.send, tc.stall)
			status, _, msg, err := p2p.ReadHeader(s)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			if status != tc.want {
				t.Errorf("status %q (%s), want %q", status, msg, tc.want)
			}
			if status == "ok" {
				if b, err := io.ReadAll(s); err != nil || len(b) != 3 {
					t.Errorf("body: %d bytes, %v", len(b), err)
				}
			}
		})
	}
	// The same, and what ranges add, over the current protocol.
	served.SetHave(d, 1000)
	for _, tc := range []struct {
		name     string
		send     []byte
		want     string
		wantHave int64
		body     int
		// v12 sends the frame over the protocol before flag 2.
		v12 bool
	}{
		{"garbage", garbage, "bad request", 0, 0, false},
		{"v1.1 frame", frame(0, d.String()), "bad request", 0, 0, false},
		{"unknown flag", rangeFrame(0, 10, 4, d.String()), "bad request", 0, 0, false},
		{"leads flag over 1.2", rangeFrame(990, 10, 2, d.String()), "bad request", 0, 0, true},
		{"leads flag", rangeFrame(990, 10, 2, d.String()), "ok", 1000, 10, false},
		{"1.2 frame", rangeFrame(990, 10, 1, d.String()), "ok", 1000, 10, true},
		{"negative length", rangeFrame(0, -1, 0, d.String()), "bad request", 0, 0, false},
		{"range past the end", rangeFrame(int64(len(data))-3, 4, 1, d.String()), "bad request", 0, 0, false},
		{"overflowing range", rangeFrame(int64(len(data))-3, math.MaxInt64, 1, d.String()), "bad request", 0, 0, false},
		{"unknown blob", rangeFrame(0, 0, 0, digest.FromString("nope").String()), "not found", 0, 0, false},
		{"not arrived yet", rangeFrame(1000, 10, 0, d.String()), "not yet", 1000, 0, false},
		{"arrived", rangeFrame(990, 10, 0, d.String()), "ok", 1000, 10, false},
		{"not arrived, wait", rangeFrame(5000, 7, 1, d.String()), "ok", 1000, 7, false},
		{"to the end", rangeFrame(int64(len(data))-3, 0, 1, d.String()), "ok", 1000, 3, false},
	} {
		t.Run("ranged/"+tc.name, func(t *testing.T) {
			proto := p2p.ProtocolID
			if tc.v12 {
				proto = p2p.ProtocolV12
			}
			s := sendFrame(t, h, server.ID(), proto, tc.send, false)
			status, size, have, msg, err := p2p.ReadRangeHeader(s)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			if status != tc.want || have != tc.wantHave {
				t.Errorf("status %q (%s), holds %d; want %q, %d", status, msg, have, tc.want, tc.wantHave)
			}
			if status == "ok" {
				if size != int64(len(data)) {
					t.Errorf("size %d, want %d", size, len(data))
				}
				if b, err := io.ReadAll(s); err != nil || len(b) != tc.body {
					t.Errorf("body: %d bytes, %v; want %d", len(b), err, tc.body)
				}
			}
		})
	}
	served.SetArriving(d, false)
	// Still serving, to the raw host and to a member.
	if err := fetchAll(t.Context(), c.Nodes[0], server.ID(), d, len(data)); err != nil {
		t.Fatalf("fetch after bad requests: %v", err)
	}
}

// TestBadGossip lets members with malformed metadata into the gossip, and
// throws garbage at the gossip ports: nodes ignore and log the bad members,
// never crash, and the mesh keeps working.
func TestBadGossip(t *testing.T) {
	t.Parallel()
	data := []byte("still served")
	d := digest.FromBytes(data)
	// An open mesh: a stranger's gossip reaches memberlist.
	c := p2ptest.Start(t, 2, p2ptest.Options{
		Open: true,
		Content: func(i int) *p2ptest.Content {
			if i == 1 {
				return p2ptest.NewContent(data)
			}
			return nil
		},
	})
	c.WaitMembers(t, 2, 20*time.Second)
	node := c.Nodes[0]
	seed := node.Status().GossipAddr

	metas := map[string]string{
		"garbage":     "\x00\xffnot json at all",
		"bad-peer-id": `{"v":1,"id":"12D3KooWnotapeer","a":["/ip4/127.0.0.1/tcp/1"]}`,
		"bad-addr":    `{"v":1,"id":"` + c.Nodes[1].ID().String() + `","a":["/ip4/300.1.1.1/tcp/1"]}`,
		"future":      `{"v":9}`,
		"empty":       "",
		"long":        strings.Repeat("x", memberlist.MetaMaxSize),
	}
	// Members that claim the peer ID of a real node: that node refuses the
	// claim; the others cannot tell it from a renamed node, and take it as
	// a second name of the same peer.
	for i, n := range c.Nodes {
		metas[fmt.Sprintf("claims-%d", i)] = `{"v":1,"id":"` + n.ID().String() + `","a":["/ip4/127.0.0.1/tcp/1"]}`
	}
	var stops []func()
	for name, meta := range metas {
		ml, stop := rawMember(t, "bad-"+name, []byte(meta), seed)
		if _, err := ml.Join([]string{seed}); err != nil {
			t.Fatalf("%s: join: %v", name, err)
		}
		stops = append(stops, stop)
	}
	p2ptest.Eventually(t, 20*time.Second, func() error {
		for i, n := range c.Nodes {
			st := n.Status()
			ignored := 0
			for _, m := range st.Members {
				if !strings.HasPrefix(m.Name, "bad-") || m.State != p2p.MemberAlive {
					continue
				}
				if m.MetaError != "" && m.ID == "" {
					ignored++
				}
			}
			if want := len(metas) - len(c.Nodes) + 1; ignored != want {
				return fmt.Errorf("node %d lists %d members with ignored metadata, want %d", i, ignored, want)
			}
			if st.LiveMembers != 2 {
				return fmt.Errorf("node %d counts %d live peers, want 2", i, st.LiveMembers)
			}
		}
		return nil
	})

	// The bad members leave; the real nodes still count each other.
	for _, stop := range stops {
		stop()
	}
	p2ptest.Eventually(t, 20*time.Second, func() error {
		for i, n := range c.Nodes {
			for _, m := range n.Status().Members {
				if strings.HasPrefix(m.Name, "bad-") && m.State == p2p.MemberAlive {
					return fmt.Errorf("node %d still lists %s alive", i, m.Name)
				}
			}
		}
		return nil
	})

	// Garbage at the gossip port, over UDP and TCP.
	junk := randomBlob(7, 1400)
	if u, err := net.Dial("udp", seed); err == nil {
		for i := range 50 {
			_, _ = u.Write(junk[:1+i*27%len(junk)])
		}
		u.Close()
	}
	for _, b := range [][]byte{junk, {0x00}, {0xff, 0xff, 0xff, 0xff}, bytes.Repeat([]byte{0x0c}, 64<<10)} {
		if conn, err := net.DialTimeout("tcp", seed, time.Second); err == nil {
			_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
			_, _ = conn.Write(b)
			_, _ = io.Copy(io.Discard, conn)
			conn.Close()
		}
	}

	waitProviders(t, node, d, []peer.ID{c.Nodes[1].ID()}, 20*time.Second)
	if err := fetchAll(t.Context(), node, c.Nodes[1].ID(), d, len(data)); err != nil {
		t.Fatalf("fetch after bad gossip: %v", err)
	}
	if got := node.Status().LiveMembers; got != 2 {
		t.Errorf("%d live members after garbage, want 2", got)
	}
}

// rawMember is a bare memberlist node advertising meta as its metadata.
// stop leaves and shuts it down; it also runs when the test ends. The
// leave also reaches seed over TCP, in a push/pull of the member's state:
// the gossip of a leave goes to a few members picked at random, at times
// only bad members already gone, and the real nodes would then take up to
// SuspicionMult × 6 probe intervals to declare the member dead.
func rawMember(t *testing.T, name string, meta []byte, seed string) (ml *memberlist.Memberlist, stop func()) {
	t.Helper()
	cfg := memberlist.DefaultLocalConfig()
	cfg.Name = name
	cfg.BindAddr = "127.0.0.1"
	cfg.BindPort = 0
	cfg.AdvertisePort = 0
	cfg.Label = "shoal"
	cfg.Delegate = rawMeta(meta)
	cfg.Logger = log.New(io.Discard, "", 0)
	ml, err := memberlist.Create(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// memberlist panics on a Leave after Shutdown.
	stop = sync.OnceFunc(func() {
		_ = ml.Leave(time.Second)
		if _, err := ml.Join([]string{seed}); err != nil {
			t.Logf("%s: its leave, pushed to %s: %v", name, seed, err)
		}
		_ = ml.Shutdown()
	})
	t.Cleanup(stop)
	return ml, stop
}

type rawMeta []byte

func (m rawMeta) NodeMeta(int) []byte           { return m }
func (rawMeta) NotifyMsg([]byte)                {}
func (rawMeta) GetBroadcasts(int, int) [][]byte { return nil }
func (rawMeta) LocalState(bool) []byte          { return nil }
func (rawMeta) MergeRemoteState([]byte, bool)   {}

// TestBadImageRequests sends oversized and malformed image-name questions
// straight to a node: each gets a "bad request" answer, and the node still
// answers a good one.
func TestBadImageRequests(t *testing.T) {
	t.Parallel()
	// An open mesh: a stranger's frames reach the handler.
	c := p2ptest.Start(t, 1, p2ptest.Options{
		Open: true,
		Config: func(i int, cfg *p2p.Config) {
			cfg.Timing.RequestTimeout = 500 * time.Millisecond
			cfg.Images = images{}
		},
	})
	server := c.Nodes[0]
	h := rawHost(t)
	if err := h.Connect(t.Context(), peer.AddrInfo{ID: server.ID(), Addrs: server.Status().Addrs}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		send  []byte
		stall bool
		want  string // a fragment of the answer's error; "" for a clean miss
	}{
		{"name over 512 bytes", append([]byte{0x02, 0x01}, bytes.Repeat([]byte("n"), 513)...), false, "exceeds"},
		{"huge length", []byte{0xff, 0xff, 'x'}, false, "exceeds"},
		{"empty name", []byte{0, 0}, false, "empty name"},
		// The node gives up on the stream at its request timeout. Reading
		// and answering share that deadline, so the answer that follows
		// may or may not make it out before the stream is reset.
		{"stalled mid-frame", []byte{0x00, 0x40, 'a'}, true, "bad request"},
		{"unknown image", append([]byte{0, 10}, "reg/app:v1"...), false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			s, err := h.NewStream(ctx, server.ID(), p2p.ImageProtocolID)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Reset()
			_ = s.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := s.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			if !tc.stall {
				_ = s.CloseWrite()
			}
			var lb [2]byte
			if _, err := io.ReadFull(s, lb[:]); err != nil {
				var ne interface{ Timeout() bool }
				if tc.stall && !(errors.As(err, &ne) && ne.Timeout()) {
					return // reset by the node, well before this test's deadline
				}
				t.Fatalf("no answer: %v", err)
			}
			n := int(binary.BigEndian.Uint16(lb[:]))
			if n > 4096 {
				t.Fatalf("answer of %d bytes, over the protocol's 4096", n)
			}
			b := make([]byte, n)
			if _, err := io.ReadFull(s, b); err != nil {
				t.Fatal(err)
			}
			var ans struct {
				Found bool   `json:"found"`
				Error string `json:"error"`
			}
			if err := json.Unmarshal(b, &ans); err != nil {
				t.Fatalf("answer %q: %v", b, err)
			}
			if ans.Found || !strings.Contains(ans.Error, tc.want) || (tc.want == "") != (ans.Error == "") {
				t.Errorf("answer %q, want an error containing %q", b, tc.want)
			}
		})
	}
}

// TestBadTagRequests sends malformed tag questions straight to a node:
// each gets a "bad request" answer; a well-formed one from a stranger of
// an open mesh is refused without a look-up.
func TestBadTagRequests(t *testing.T) {
	t.Parallel()
	tags := &fixedTags{}
	c := p2ptest.Start(t, 1, p2ptest.Options{
		Open: true,
		Config: func(i int, cfg *p2p.Config) {
			cfg.Timing.RequestTimeout = 500 * time.Millisecond
			cfg.Tags = tags
		},
	})
	server := c.Nodes[0]
	h := rawHost(t)
	if err := h.Connect(t.Context(), peer.AddrInfo{ID: server.ID(), Addrs: server.Status().Addrs}); err != nil {
		t.Fatal(err)
	}
	frame := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
	for _, tc := range []struct {
		name string
		send []byte
		want string
	}{
		{"request over 1024 bytes", append([]byte{0x04, 0x01}, bytes.Repeat([]byte("n"), 1025)...), "exceeds"},
		{"not JSON", frame("registry.example/app:v1"), "bad request"},
		{"a digest for a tag", frame(`{"registry":"registry.example","repo":"app","tag":"sha256:0000"}`), "bad request"},
		{"a host with a path", frame(`{"registry":"registry.example/x","repo":"app","tag":"v1"}`), "bad request"},
		{"well formed, open mesh", frame(`{"registry":"registry.example","repo":"app","tag":"v1"}`), "resolves no tags"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			s, err := h.NewStream(ctx, server.ID(), p2p.TagProtocolID)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Reset()
			_ = s.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := s.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			_ = s.CloseWrite()
			b, err := io.ReadAll(s)
			if err != nil || len(b) < 2 || int(binary.BigEndian.Uint16(b))+2 != len(b) {
				t.Fatalf("answer %q, %v: want one frame and the end of the stream", b, err)
			}
			var ans struct {
				Found bool   `json:"found"`
				Error string `json:"error"`
			}
			if err := json.Unmarshal(b[2:], &ans); err != nil {
				t.Fatalf("answer %q: %v", b, err)
			}
			if ans.Found || !strings.Contains(ans.Error, tc.want) {
				t.Errorf("answer %q, want an error containing %q", b, tc.want)
			}
		})
	}
	if got := tags.asked.Load(); got != 0 {
		t.Errorf("the tag source was asked %d times", got)
	}
}
