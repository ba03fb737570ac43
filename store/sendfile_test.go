package store_test

import (
	"bytes"
	"io"
	"net"
	"testing"

	"github.com/shoal-dev/shoal/store"
)

// overTCP runs send with one end of a loopback TCP connection, the kind of
// writer sendfile(2) serves, and returns what the other end received.
func overTCP(t *testing.T, send func(w io.Writer)) []byte {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		got <- b
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	send(c)
	c.Close()
	return <-got
}

func TestSendFileSendsTheRangeAskedFor(t *testing.T) {
	t.Parallel()
	s := newFS(t, t.TempDir(), 0)
	data, dgst := testBlob(1, 3<<20+17)
	put(t, s, data, dgst)
	b, err := s.Open(t.Context(), dgst)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, tc := range []struct {
		name      string
		off, n    int64
		want      []byte
		wantSent  int64
		wantError bool
	}{
		{"whole", 0, int64(len(data)), data, int64(len(data)), false},
		{"middle", 1000, 2 << 20, data[1000 : 1000+2<<20], 2 << 20, false},
		{"past the end is cut at the end", int64(len(data)) - 10, 100, data[len(data)-10:], 10, false},
		{"at the end", int64(len(data)), 5, nil, 0, false},
	} {
		var sent int64
		var ok bool
		got := overTCP(t, func(w io.Writer) { sent, ok, err = store.SendFile(b, w, tc.off, tc.n) })
		if !ok || err != nil || sent != tc.wantSent || !bytes.Equal(got, tc.want) {
			t.Errorf("%s: sent %d of %d (ok %v, err %v), received %d bytes, equal %v", tc.name, sent, tc.wantSent, ok, err, len(got), bytes.Equal(got, tc.want))
		}
	}
	// The file's other readers are unaffected.
	if got := readAll(t, b); !bytes.Equal(got, data) {
		t.Fatal("ReadAt after SendFile read other bytes")
	}
}

func TestSendFileOnlyFromAWholeFile(t *testing.T) {
	t.Parallel()
	mem := store.NewMemory()
	data, dgst := testBlob(2, 1<<20)
	put(t, mem, data, dgst)
	b, err := mem.Open(t.Context(), dgst)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if sent, ok, err := store.SendFile(b, io.Discard, 0, 10); ok || sent != 0 || err != nil {
		t.Fatalf("a blob in memory: sent %d, ok %v, err %v; want nothing and not ok", sent, ok, err)
	}

	s := newFS(t, t.TempDir(), 0)
	in, err := s.Begin(t.Context(), dgst, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Abort(nil)
	if _, err := in.WriteAt(data[:1000], 0); err != nil {
		t.Fatal(err)
	}
	early := in.Reader(t.Context(), 0)
	defer early.Close()
	if sent, ok, err := early.(store.FileSender).SendFile(io.Discard, 10); ok || sent != 0 || err != nil {
		t.Fatalf("a reader of an ingest being written: sent %d, ok %v, err %v; want nothing and not ok", sent, ok, err)
	}
	if _, err := in.WriteAt(data[1000:], 1000); err != nil {
		t.Fatal(err)
	}
	if err := in.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	late := in.Reader(t.Context(), 100)
	defer late.Close()
	var sent int64
	var ok bool
	got := overTCP(t, func(w io.Writer) { sent, ok, err = late.(store.FileSender).SendFile(w, 5000) })
	if !ok || err != nil || !bytes.Equal(got, data[100:5100]) {
		t.Fatalf("a reader of a committed ingest: sent %d (ok %v, err %v), received %d bytes, want data[100:5100]", sent, ok, err, len(got))
	}
	// Reading goes on after the bytes sent.
	next := make([]byte, 10)
	if _, err := io.ReadFull(late, next); err != nil || !bytes.Equal(next, data[5100:5110]) {
		t.Fatalf("read after SendFile: %v, bytes equal %v", err, bytes.Equal(next, data[5100:5110]))
	}
	// The early reader still reads the whole blob.
	if got, err := io.ReadAll(early); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("early reader: %v, %d bytes, equal %v", err, len(got), bytes.Equal(got, data))
	}
}
