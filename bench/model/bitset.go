package model

import "math/bits"

// bitset is a set of small non-negative integers, walked in order.
type bitset []uint64

func newBitset(n int) bitset { return make(bitset, (n+63)/64) }

func (b bitset) set(k int)   { b[k>>6] |= 1 << (k & 63) }
func (b bitset) clear(k int) { b[k>>6] &^= 1 << (k & 63) }

// clearRange takes lo to hi (not included) out of the set.
func (b bitset) clearRange(lo, hi int) {
	for k := lo; k < hi; k++ {
		b.clear(k)
	}
}

// next is the least member from k on, -1 with none. It reads the set as
// it is now, so that a walk (for k := b.next(0); k >= 0; k = b.next(k+1))
// visits a member set ahead of it as it goes, and not one taken out.
func (b bitset) next(k int) int {
	w := k >> 6
	if w >= len(b) {
		return -1
	}
	word := b[w] &^ (1<<(k&63) - 1)
	for word == 0 {
		w++
		if w == len(b) {
			return -1
		}
		word = b[w]
	}
	return w<<6 + bits.TrailingZeros64(word)
}
