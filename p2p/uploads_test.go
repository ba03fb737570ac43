package p2p_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/p2p/p2ptest"
)

// oneSlotEach starts three nodes with one upload slot each and idle as
// their IdleTimeout, those for which holds is true holding data, and waits
// until they see one another.
func oneSlotEach(t *testing.T, data []byte, idle time.Duration, holds func(i int) bool) *p2ptest.Cluster {
	t.Helper()
	c := p2ptest.Start(t, 3, p2ptest.Options{
		Config: func(i int, cfg *p2p.Config) {
			cfg.MaxUploads = 1
			cfg.Timing.IdleTimeout = idle
		},
		Content: func(i int) *p2ptest.Content {
			if holds(i) {
				return p2ptest.NewContent(data)
			}
			return nil
		},
	})
	c.WaitMembers(t, 3, 20*time.Second)
	return c
}

// TestUploadCap checks that a peer at its upload cap answers "busy" at
// once, ranks last while busy, and that a stalled reader loses its slot.
func TestUploadCap(t *testing.T) {
	t.Parallel()
	// Larger than the stream window and socket buffers, so that a reader
	// that stops reading stalls the server.
	data := randomBlob(3, 64<<20)
	d := digest.FromBytes(data)
	const idle = time.Second
	c := oneSlotEach(t, data, idle, func(i int) bool { return i > 0 })
	client, busy, other := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	waitProviders(t, client, d, []peer.ID{busy.ID(), other.ID()}, 20*time.Second)

	// Take busy's only slot and read nothing.
	stalled, _, err := client.Fetch(t.Context(), busy.ID(), d, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	start := time.Now()
	_, _, err = client.Fetch(t.Context(), busy.ID(), d, 0)
	if !errors.Is(err, p2p.ErrPeerBusy) || !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("second fetch: %v, want ErrPeerBusy and ErrUnavailable", err)
	}
	if wait := time.Since(start); wait >= idle {
		t.Logf("busy answer took %v", wait) // not asserted: timing is for benchmarks
	}
	got, err := client.Providers(t.Context(), d, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != other.ID() {
		t.Errorf("providers %v: want the busy peer %s last", got, busy.ID())
	}

	// The stalled transfer is cut after the idle timeout and the slot
	// comes back.
	p2ptest.Eventually(t, 10*idle, func() error {
		rc, _, err := client.Fetch(t.Context(), busy.ID(), d, int64(len(data))-10)
		if err != nil {
			return err
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil || len(b) != 10 {
			return fmt.Errorf("read %d bytes: %v", len(b), err)
		}
		return nil
	})
	if n, err := io.Copy(io.Discard, stalled); err == nil {
		t.Errorf("the stalled transfer delivered %d bytes and no error; want it cut", n)
	}

	// Closing a reader early frees the slot at once.
	rc, _, err := client.Fetch(t.Context(), busy.ID(), d, 0)
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	p2ptest.Eventually(t, 5*time.Second, func() error {
		rc, _, err := client.Fetch(t.Context(), busy.ID(), d, int64(len(data)))
		if err != nil {
			return err
		}
		return rc.Close()
	})
}

// TestFrozenReaderLosesItsSlot: a reader that stops taking bytes and
// answers no ping (a frozen process, a link gone) loses its upload slot
// within seconds, long before IdleTimeout, and the peers that read are
// served; a reader that reads slowly keeps its stream to the end, and one
// that stops reading but answers keeps its slot until IdleTimeout
// (TestUploadCap). The server then leaves the frozen reader out of its own
// downloads as silent.
func TestFrozenReaderLosesItsSlot(t *testing.T) {
	t.Parallel()
	data := randomBlob(4, 64<<20)
	d := digest.FromBytes(data)
	const idle = time.Minute
	c := oneSlotEach(t, data, idle, func(i int) bool { return i == 1 })
	frozen, server, other := c.Nodes[0], c.Nodes[1], c.Nodes[2]

	stalled, _, err := frozen.Fetch(t.Context(), server.ID(), d, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	p2p.Host(frozen).RemoveStreamHandler(ping.ID) // and answers no ping
	if _, _, err := other.Fetch(t.Context(), server.ID(), d, 0); !errors.Is(err, p2p.ErrPeerBusy) {
		t.Fatalf("a fetch while the frozen reader holds the only slot: %v, want ErrPeerBusy", err)
	}
	// The slow reader takes 64 KiB every 200 ms: a tenth of a link of
	// about 25 Mbit/s.
	var slow io.ReadCloser
	p2ptest.Eventually(t, idle/4, func() error {
		rc, _, err := other.Fetch(t.Context(), server.ID(), d, int64(len(data))-2<<20)
		if err != nil {
			return err
		}
		slow = rc
		return nil
	})
	defer slow.Close()
	if n, err := io.Copy(io.Discard, stalled); err == nil {
		t.Errorf("the frozen reader's stream delivered %d bytes and no error; want it cut", n)
	}
	// The server's own downloads leave the reader out as silent: it
	// answers no ping.
	p2ptest.Eventually(t, 5*time.Second, func() error {
		if !silentAt(server, frozen.ID()) {
			return errors.New("the server does not hold the cut reader silent")
		}
		return nil
	})
	buf := make([]byte, 64<<10)
	var got int
	for {
		k, err := io.ReadFull(slow, buf)
		got += k
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			t.Fatalf("the slow reader's stream after %d bytes: %v", got, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got != 2<<20 {
		t.Errorf("the slow reader got %d bytes, want %d", got, 2<<20)
	}
}

// TestReaderWhoseConnectionFlowsKeepsItsStream: a reader that takes no
// byte of one stream and answers no ping in time, while its connection
// carries the bytes of another stream it reads (behind a link cut to a
// tenth, each stream waits its turn and the ping waits behind them), keeps
// both: it is alive, and cut, it would fetch the rest from the registry
// through the same link. Its stream delivers the blob's bytes once read.
//
// Not parallel: its 64 MiB stream and steady reads under -race hold up the
// pings of the tests beside it, some of which measure how fast pings come.
func TestReaderWhoseConnectionFlowsKeepsItsStream(t *testing.T) {
	waiting, flowing := randomBlob(9, 64<<20), randomBlob(10, 16<<20)
	dw, df := digest.FromBytes(waiting), digest.FromBytes(flowing)
	c := p2ptest.Start(t, 2, p2ptest.Options{
		Config: func(_ int, cfg *p2p.Config) { cfg.MaxUploads, cfg.Timing.IdleTimeout = 2, time.Minute },
		Content: func(i int) *p2ptest.Content {
			if i == 1 {
				return p2ptest.NewContent(waiting, flowing)
			}
			return nil
		},
	})
	c.WaitMembers(t, 2, 20*time.Second)
	reader, server := c.Nodes[0], c.Nodes[1]
	p2p.Host(reader).RemoveStreamHandler(ping.ID) // its answers never come

	stalled, _, err := reader.Fetch(t.Context(), server.ID(), dw, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	flow, _, err := reader.Fetch(t.Context(), server.ID(), df, 0)
	if err != nil {
		t.Fatal(err)
	}
	// 64 KiB every 50 ms for 6 s: the stalled stream waits three times
	// the upload watch's 2 s with no ping answered.
	buf := make([]byte, 64<<10)
	for end := time.Now().Add(6 * time.Second); time.Now().Before(end); {
		if _, err := io.ReadFull(flow, buf); err != nil {
			flow.Close()
			t.Fatalf("the flowing stream: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	done, flowed := make(chan struct{}), make(chan struct{})
	defer func() {
		close(done)
		<-flowed
	}()
	go func() {
		defer close(flowed)
		// Still flowing while the stalled stream is read, however long
		// that takes on a loaded host: at its end the flowing blob is
		// asked for again.
		rc := flow
		for {
			select {
			case <-done:
				rc.Close()
				return
			case <-time.After(50 * time.Millisecond):
			}
			if _, rerr := io.ReadFull(rc, buf); rerr == nil {
				continue
			}
			rc.Close()
			next, _, ferr := reader.Fetch(t.Context(), server.ID(), df, 0)
			if ferr != nil {
				return
			}
			rc = next
		}
	}()
	// Its next 16 MiB come: the upload went on where it waited.
	got := make([]byte, 16<<20)
	if n, err := io.ReadFull(stalled, got); err != nil {
		t.Fatalf("the stream that waited beside a flowing one: %v after %d bytes; want it kept", err, n)
	}
	if !bytes.Equal(got, waiting[:len(got)]) {
		t.Error("the stream that waited delivered other bytes than the blob's")
	}
}

// TestGoneReaderHoldsNoSlot: a stream to a reader the node left out as
// silent, which takes no byte, counts against neither the blob's cap nor
// the node's slots: the next reader of the blob is served at once, where
// it was answered busy before; the silent reader itself, asking again, is
// not. Here the gone reader's connection carries
// a blob it serves to the node, so that neither watch cuts its stream or
// closes the connection, and the stream would hold its slot until
// IdleTimeout.
//
// Not parallel, nor are its cases: their steady streams under -race hold
// up the pings of the tests beside them.
func TestGoneReaderHoldsNoSlot(t *testing.T) {
	for _, tc := range []struct {
		name string
		// config sets the server's caps; arriving: the blob read is
		// still arriving there; others: how many streams of another
		// blob the next reader keeps flowing meanwhile.
		config   func(*p2p.Config)
		arriving bool
		others   int
	}{
		{"the blob's cap", func(cfg *p2p.Config) { cfg.MaxUploadsPerBlob = 1 }, true, 0},
		// Two streams that flow beside the gone one: the slots are not
		// held by slow readers (swarm.SlowReaders).
		{"the node's slots", func(cfg *p2p.Config) { cfg.MaxUploads, cfg.MaxUploadRate = 3, 4<<20 }, false, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// blob: larger than the stream window and socket buffers, so
			// that a reader that takes nothing stalls its stream.
			blob, other, served := randomBlob(21, 64<<20), randomBlob(22, 4<<20), randomBlob(23, 4<<20)
			d := digest.FromBytes(blob)
			c := p2ptest.Start(t, 3, p2ptest.Options{
				Config: func(i int, cfg *p2p.Config) {
					cfg.Timing.IdleTimeout = time.Minute
					switch i {
					case 0:
						cfg.MaxUploadRate = 256 << 10
					case 1:
						tc.config(cfg)
					}
				},
				Content: func(i int) *p2ptest.Content {
					switch i {
					case 0:
						return p2ptest.NewContent(served)
					case 1:
						content := p2ptest.NewContent(blob, other)
						content.SetArriving(d, tc.arriving)
						return content
					}
					return nil
				},
			})
			c.WaitMembers(t, 3, 20*time.Second)
			gone, server, next := c.Nodes[0], c.Nodes[1], c.Nodes[2]
			for range tc.others {
				keepReading(t, next, server.ID(), digest.FromBytes(other))
			}
			stalled, _, err := gone.Fetch(t.Context(), server.ID(), d, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer stalled.Close()
			muteForPings(gone)
			keepReading(t, server, gone.ID(), digest.FromBytes(served))

			tail := int64(len(blob)) - 1<<20
			if _, _, err := next.Fetch(t.Context(), server.ID(), d, tail); !errors.Is(err, p2p.ErrPeerBusy) {
				t.Fatalf("a fetch while the reader that answers no ping holds the stream: %v, want busy", err)
			}
			server.Silent(gone.ID())
			p2ptest.Eventually(t, 10*time.Second, func() error {
				rc, _, err := next.Fetch(t.Context(), server.ID(), d, tail)
				if err != nil {
					return err
				}
				defer rc.Close()
				got, err := io.ReadAll(rc)
				if err != nil {
					return err
				}
				if !bytes.Equal(got, blob[tail:]) {
					t.Fatalf("the next reader got %d bytes other than the blob's last %d", len(got), len(blob)-int(tail))
				}
				return nil
			})
			// The gone reader, asking again while left out, gets no
			// stream for the one it holds.
			if _, _, err := gone.Fetch(t.Context(), server.ID(), d, tail); !errors.Is(err, p2p.ErrPeerBusy) {
				t.Fatalf("a fetch by the reader left out as silent: %v, want busy", err)
			}
		})
	}
}

// keepReading reads d from p at q until the test ends, asking again from
// the start at each end.
func keepReading(t *testing.T, q *p2p.Node, p peer.ID, d digest.Digest) {
	t.Helper()
	rc, _, err := q.Fetch(t.Context(), p, d, 0)
	if err != nil {
		t.Fatal(err)
	}
	done, ended := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() {
		close(done)
		<-ended
	})
	go func() {
		defer close(ended)
		buf := make([]byte, 64<<10)
		for {
			select {
			case <-done:
				rc.Close()
				return
			default:
			}
			if _, err := io.ReadFull(rc, buf); err == nil {
				continue
			}
			rc.Close()
			if rc, _, err = q.Fetch(t.Context(), p, d, 0); err != nil {
				return
			}
		}
	}()
}

// TestUploadCapPerBlob: a node serves a blob still arriving to at most
// MaxUploadsPerBlob peers at once, so that the others fetch it from those
// peers; another blob is still served. A reader that asks for the blob
// again while its earlier stream is open here gave that stream up: its new
// stream replaces it (swarm.ReplacesOwn), and the others are still
// answered busy.
func TestUploadCapPerBlob(t *testing.T) {
	t.Parallel()
	data, other := randomBlob(5, 64<<20), randomBlob(6, 1<<20)
	d := digest.FromBytes(data)
	content := p2ptest.NewContent(data, other)
	content.SetArriving(d, true) // the cap is on blobs still arriving
	readers, server := servedByMany(t, 2, func(cfg *p2p.Config) { cfg.MaxUploadsPerBlob = 1 }, content)
	first, _, err := readers[0].Fetch(t.Context(), server.ID(), d, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	_, _, err = readers[1].Fetch(t.Context(), server.ID(), d, 0)
	if !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Fatalf("another reader's stream of the same blob: %v, want busy (ResourceExhausted)", err)
	}
	again, _, err := readers[0].Fetch(t.Context(), server.ID(), d, 0)
	if err != nil {
		t.Fatalf("the first reader's new stream of the blob: %v, want it to replace the earlier one", err)
	}
	defer again.Close()
	if _, err := io.Copy(io.Discard, first); err == nil {
		t.Error("the replaced stream sent the whole blob, want it cut")
	}
	_, _, err = readers[1].Fetch(t.Context(), server.ID(), d, 0)
	if !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Fatalf("another reader's stream beside the replacing one: %v, want busy (ResourceExhausted)", err)
	}
	got, err := io.ReadAll(again)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the replacing stream: %d bytes, %v", len(got), err)
	}
	rc, _, err := readers[1].Fetch(t.Context(), server.ID(), digest.FromBytes(other), 0)
	if err != nil {
		t.Fatalf("another blob: %v", err)
	}
	got, err = io.ReadAll(rc)
	rc.Close()
	if err != nil || digest.FromBytes(got) != digest.FromBytes(other) {
		t.Fatalf("another blob: %d bytes, %v", len(got), err)
	}
}

// TestWholeBlobsOnEverySlot: a blob still arriving is served to up to
// MaxUploadsPerBlob peers, so that it spreads as a tree; a blob held whole
// is capped by the node's slots only, so that the node that holds the one
// blob the others still lack serves it with its whole uplink.
func TestWholeBlobsOnEverySlot(t *testing.T) {
	t.Parallel()
	whole, inflight := randomBlob(7, 64<<20), randomBlob(8, 64<<20)
	content := p2ptest.NewContent(whole, inflight)
	content.SetArriving(digest.FromBytes(inflight), true)
	readers, server := servedByMany(t, 3, func(cfg *p2p.Config) { cfg.MaxUploads, cfg.MaxUploadsPerBlob = 5, 2 }, content)
	// streams opens a stream of d from each of readers in turn and
	// leaves it open; it returns how many the server let in before it
	// answered busy.
	streams := func(d digest.Digest, readers ...*p2p.Node) int {
		n := 0
		for _, r := range readers {
			rc, _, err := r.Fetch(t.Context(), server.ID(), d, 0)
			if errors.Is(err, errdefs.ErrResourceExhausted) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { rc.Close() })
			n++
		}
		return n
	}
	if n := streams(digest.FromBytes(inflight), readers...); n != 2 {
		t.Errorf("arriving blob: %d streams at once, want 2 (MaxUploadsPerBlob)", n)
	}
	// One reader's streams of a blob held whole are not replaced.
	if n := streams(digest.FromBytes(whole), readers[0], readers[0], readers[0], readers[0]); n != 3 {
		t.Errorf("whole blob: %d streams at once, want 3 (the slots the arriving blob left of 5)", n)
	}
}

// TestUploadSlotForABlobStreamedToNobody: a node out of upload slots still
// serves a blob it streams to nobody, up to twice its slots, so that a
// node holding more blobs than it has slots lets each of them spread; a
// blob it streams already is answered busy.
func TestUploadSlotForABlobStreamedToNobody(t *testing.T) {
	t.Parallel()
	a, b, c := randomBlob(9, 64<<20), randomBlob(10, 64<<20), randomBlob(11, 1<<20)
	client, server := servedBy(t, func(cfg *p2p.Config) { cfg.MaxUploads = 1 }, p2ptest.NewContent(a, b, c))
	// open fetches d from the server and leaves the stream open.
	open := func(d digest.Digest) error {
		rc, _, err := client.Fetch(t.Context(), server.ID(), d, 0)
		if err == nil {
			t.Cleanup(func() { rc.Close() })
		}
		return err
	}
	if err := open(digest.FromBytes(a)); err != nil {
		t.Fatalf("first blob: %v", err)
	}
	if err := open(digest.FromBytes(a)); !errors.Is(err, p2p.ErrPeerBusy) {
		t.Fatalf("the first blob again, every slot taken: %v, want busy", err)
	}
	if err := open(digest.FromBytes(b)); err != nil {
		t.Fatalf("a second blob, streamed to nobody: %v, want it served", err)
	}
	if err := open(digest.FromBytes(c)); !errors.Is(err, p2p.ErrPeerBusy) {
		t.Fatalf("a third blob, twice the slots taken: %v, want busy", err)
	}
}

// TestSlotFreeOnceTheAnswerIsRead: a peer at its upload cap that sent a
// whole answer has its slot back by the time the requester read the last
// byte, so that the requester's next request is served, not answered
// busy.
func TestSlotFreeOnceTheAnswerIsRead(t *testing.T) {
	t.Parallel()
	data := randomBlob(12, 1<<20)
	d := digest.FromBytes(data)
	client, server := servedBy(t, func(cfg *p2p.Config) { cfg.MaxUploads = 1 }, p2ptest.NewContent(data))
	for i := range 300 {
		// The last bytes, and an empty range at the end: each answer
		// ends with its last write.
		off := int64(len(data)) - int64(i%3)*5
		rc, _, err := client.Fetch(t.Context(), server.ID(), d, off)
		if err != nil {
			t.Fatalf("request %d, right after the last was read whole: %v", i, err)
		}
		if _, err := io.Copy(io.Discard, rc); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		rc.Close()
	}
}

// servedBy starts two nodes, configured by cfg, of which the second, the
// server, holds content; it returns them once they see each other.
// servedByMany is servedBy with k readers.
func servedByMany(t *testing.T, k int, cfg func(*p2p.Config), content *p2ptest.Content) (readers []*p2p.Node, server *p2p.Node) {
	t.Helper()
	c := p2ptest.Start(t, k+1, p2ptest.Options{
		Config: func(_ int, c *p2p.Config) { cfg(c) },
		Content: func(i int) *p2ptest.Content {
			if i == k {
				return content
			}
			return nil
		},
	})
	c.WaitMembers(t, k+1, 20*time.Second)
	return c.Nodes[:k], c.Nodes[k]
}

func servedBy(t *testing.T, cfg func(*p2p.Config), content *p2ptest.Content) (client, server *p2p.Node) {
	t.Helper()
	c := p2ptest.Start(t, 2, p2ptest.Options{
		Config: func(_ int, c *p2p.Config) { cfg(c) },
		Content: func(i int) *p2ptest.Content {
			if i == 1 {
				return content
			}
			return nil
		},
	})
	c.WaitMembers(t, 2, 20*time.Second)
	return c.Nodes[0], c.Nodes[1]
}

// TestSlowReadersDoNotHoldEverySlot: two streams to a reader that took
// its first bytes and takes no more for now (behind a link cut to a
// tenth, where a stream waits seconds for its turn) hold both upload slots
// of a node whose uploads sent at their cap a moment before: another
// reader of a blob already streamed is served rather than answered busy,
// the uplink being idle, while the slow reader's own third stream is not.
// Streams that keep the uplink busy hold their slots: the other reader is
// answered busy.
func TestSlowReadersDoNotHoldEverySlot(t *testing.T) {
	t.Parallel()
	const rate = 8 << 20
	a, b := randomBlob(7, 32<<20), randomBlob(8, 32<<20)
	da, db := digest.FromBytes(a), digest.FromBytes(b)
	for _, tc := range []struct {
		name string
		slow bool
	}{
		{"slow reader", true},
		{"a reader that keeps up", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			content := p2ptest.NewContent(a, b)
			c := p2ptest.Start(t, 3, p2ptest.Options{
				Config: func(_ int, cfg *p2p.Config) { cfg.MaxUploads, cfg.MaxUploadRate = 2, rate },
				Content: func(i int) *p2ptest.Content {
					if i == 1 {
						return content
					}
					return nil
				},
			})
			c.WaitMembers(t, 3, 20*time.Second)
			reader, server, other := c.Nodes[0], c.Nodes[1], c.Nodes[2]
			// Two seconds at the upload cap: the server's best second.
			first, _, err := reader.Fetch(t.Context(), server.ID(), db, int64(len(b))-16<<20)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, first); err != nil {
				t.Fatal(err)
			}
			first.Close()
			ctx, cancel := context.WithCancel(t.Context())
			var readers sync.WaitGroup
			defer readers.Wait()
			defer cancel()
			for _, d := range []digest.Digest{da, db} {
				rc, _, err := reader.Fetch(ctx, server.ID(), d, 0)
				if err != nil {
					t.Fatal(err)
				}
				if tc.slow {
					defer rc.Close()
					continue
				}
				readers.Go(func() {
					defer rc.Close()
					_, _ = io.Copy(io.Discard, rc)
				})
			}
			// A second on, the uplink's last second is the two streams'.
			time.Sleep(1200 * time.Millisecond)
			if !tc.slow {
				if _, _, err := other.Fetch(t.Context(), server.ID(), da, int64(len(a))-1<<20); !errors.Is(err, p2p.ErrPeerBusy) {
					t.Fatalf("another reader beside streams that keep the uplink busy: %v, want ErrPeerBusy", err)
				}
				return
			}
			if _, _, err := reader.Fetch(t.Context(), server.ID(), da, int64(len(a))-1<<20); !errors.Is(err, p2p.ErrPeerBusy) {
				t.Fatalf("the slow reader's third stream: %v, want ErrPeerBusy", err)
			}
			third, _, err := other.Fetch(t.Context(), server.ID(), da, int64(len(a))-1<<20)
			if err != nil {
				t.Fatalf("another reader beside the slow one's streams: %v, want it served", err)
			}
			defer third.Close()
			if n, err := io.Copy(io.Discard, third); err != nil || n != 1<<20 {
				t.Fatalf("the other reader got %d bytes, %v; want 1 MiB", n, err)
			}
		})
	}
}
