package p2p

import (
	"bytes"
	"io"
	"sync"
	"testing"
	"time"
)

// growingBlob is a blob still arriving: ReadAt blocks until the bytes
// asked for are held, as a download's ingest does.
type growingBlob struct {
	data []byte
	mu   sync.Mutex
	cond *sync.Cond
	have int64
}

func newGrowingBlob(data []byte, have int64) *growingBlob {
	b := &growingBlob{data: data, have: have}
	b.cond = sync.NewCond(&b.mu)
	return b
}

func (b *growingBlob) grow(to int64) {
	b.mu.Lock()
	b.have = to
	b.mu.Unlock()
	b.cond.Broadcast()
}

func (b *growingBlob) ReadAt(p []byte, off int64) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.have < off+int64(len(p)) && b.have < int64(len(b.data)) {
		b.cond.Wait()
	}
	n := copy(p, b.data[off:min(b.have, int64(len(b.data)))])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (b *growingBlob) Size() int64  { return int64(len(b.data)) }
func (b *growingBlob) Close() error { return nil }
func (b *growingBlob) Arriving() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.have < int64(len(b.data))
}
func (b *growingBlob) Have() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.have
}

// TestHeldReaderSendsWhatIsHeld: a node serving a blob it is still
// receiving passes on every byte it holds at once, however large the read,
// and the rest as it arrives: a node whose own source stalled must not
// withhold its tail from the peers that wait on it.
func TestHeldReaderSendsWhatIsHeld(t *testing.T) {
	t.Parallel()
	data := bytes.Repeat([]byte("0123456789"), 1000)
	b := newGrowingBlob(data, 4321)
	r := &heldReader{blob: b, a: b, off: 1000, end: int64(len(data))}
	buf := make([]byte, 64<<10)
	got := make(chan int, 1)
	go func() {
		n, _ := r.Read(buf)
		got <- n
	}()
	select {
	case n := <-got:
		if n != 4321-1000 || !bytes.Equal(buf[:n], data[1000:4321]) {
			t.Fatalf("read %d bytes, want the %d held", n, 4321-1000)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a read for more than is held waited for the rest")
	}
	// Caught up: the next read waits for the next byte, and passes on
	// with it every byte that arrived with it, not that byte alone.
	go b.grow(6000)
	n, err := r.Read(buf)
	if err != nil || n != 6000-4321 || !bytes.Equal(buf[:n], data[4321:6000]) {
		t.Fatalf("after the blob grew by %d bytes, a read took %d (%v)", 6000-4321, n, err)
	}
	// Then the rest as it arrives, to the end.
	go b.grow(int64(len(data)))
	rest, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(rest, data[6000:]) {
		t.Fatalf("the rest: %d bytes, %v", len(rest), err)
	}
}
