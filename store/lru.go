package store

import (
	"container/list"

	"github.com/opencontainers/go-digest"
)

// lru indexes committed blobs by digest and orders them by last use.
type lru struct {
	order *list.List // of digest.Digest, least recently used first
	items map[digest.Digest]lruItem
	bytes int64
}

type lruItem struct {
	size int64
	elem *list.Element
}

func newLRU() *lru {
	return &lru{order: list.New(), items: make(map[digest.Digest]lruItem)}
}

func (l *lru) get(dgst digest.Digest) (int64, bool) {
	it, ok := l.items[dgst]
	return it.size, ok
}

// add inserts dgst as the most recently used blob.
func (l *lru) add(dgst digest.Digest, size int64) {
	if _, ok := l.items[dgst]; ok {
		return
	}
	l.items[dgst] = lruItem{size: size, elem: l.order.PushBack(dgst)}
	l.bytes += size
}

// touch marks dgst as the most recently used blob.
func (l *lru) touch(dgst digest.Digest) {
	if it, ok := l.items[dgst]; ok {
		l.order.MoveToBack(it.elem)
	}
}

func (l *lru) remove(dgst digest.Digest) {
	it, ok := l.items[dgst]
	if !ok {
		return
	}
	l.order.Remove(it.elem)
	delete(l.items, dgst)
	l.bytes -= it.size
}

// victims returns, least recently used first, the blobs other than keep
// and the pinned to drop so that the total fits in maxBytes, or as close as
// keep and the pinned allow.
func (l *lru) victims(maxBytes int64, keep digest.Digest, pinned map[digest.Digest]bool) []digest.Digest {
	var out []digest.Digest
	total := l.bytes
	for e := l.order.Front(); e != nil && total > maxBytes; e = e.Next() {
		d := e.Value.(digest.Digest)
		if d == keep || pinned[d] {
			continue
		}
		out = append(out, d)
		total -= l.items[d].size
	}
	return out
}
