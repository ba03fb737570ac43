package store

import (
	"slices"
	"sort"
)

// span is the half-open byte range [start, end).
type span struct{ start, end int64 }

// ranges is a set of byte ranges, kept sorted and merged, so that a blob
// written piece by piece costs one entry per hole rather than one per write.
type ranges []span

// add inserts s, merging it with every range it overlaps or touches.
func (r *ranges) add(s span) {
	if s.start >= s.end {
		return
	}
	rs := *r
	i := sort.Search(len(rs), func(i int) bool { return rs[i].end >= s.start })
	j := i
	for j < len(rs) && rs[j].start <= s.end {
		s.start = min(s.start, rs[j].start)
		s.end = max(s.end, rs[j].end)
		j++
	}
	*r = slices.Replace(rs, i, j, s)
}

// gaps returns the parts of s that the set does not cover, in order.
func (r ranges) gaps(s span) []span {
	var out []span
	pos := s.start
	i := sort.Search(len(r), func(i int) bool { return r[i].end > s.start })
	for ; i < len(r) && r[i].start < s.end; i++ {
		if r[i].start > pos {
			out = append(out, span{pos, r[i].start})
		}
		pos = max(pos, r[i].end)
	}
	if pos < s.end {
		out = append(out, span{pos, s.end})
	}
	return out
}

// prefix is the length of the range that starts at 0: the contiguous prefix.
func (r ranges) prefix() int64 {
	if len(r) == 0 || r[0].start != 0 {
		return 0
	}
	return r[0].end
}
