package pulls

import (
	"slices"
	"strings"
	"time"

	"github.com/distribution/reference"
)

// window measures a rate over the last few seconds, in buckets.
type window struct {
	buckets [5]int64
	at      time.Time // start of the newest bucket
}

const bucket = 500 * time.Millisecond

func (w *window) roll(now time.Time) {
	if w.at.IsZero() {
		w.at = now.Truncate(bucket)
		return
	}
	for i := 0; now.Sub(w.at) >= bucket && i <= len(w.buckets); i++ {
		copy(w.buckets[:], w.buckets[1:])
		w.buckets[len(w.buckets)-1] = 0
		w.at = w.at.Add(bucket)
	}
	if now.Sub(w.at) >= bucket {
		w.at = now.Truncate(bucket)
	}
}

func (w *window) add(now time.Time, n int) {
	w.roll(now)
	w.buckets[len(w.buckets)-1] += int64(n)
}

// rate is bytes per second over the window.
func (w *window) rate(now time.Time) float64 {
	w.roll(now)
	var sum int64
	for _, b := range w.buckets {
		sum += b
	}
	return float64(sum) / (time.Duration(len(w.buckets)) * bucket).Seconds()
}

// Pulls returns the records, newest first, with peers named by name (nil
// leaves names empty).
func (l *Log) Pulls(name Namer) []Pull {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Pull, 0, len(l.pulls))
	for i := len(l.pulls) - 1; i >= 0; i-- {
		out = append(out, l.pulls[i].view(name))
	}
	return out
}

// Latest returns the newest record of image, named as `ctr` or `docker`
// would name it (alpine, docker.io/library/alpine:latest,
// registry:5000/repo:tag), or by its manifest digest; false when there is
// none.
func (l *Log) Latest(image string, name Namer) (Pull, bool) {
	want := normalize(image)
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.pulls) - 1; i >= 0; i-- {
		p := l.pulls[i]
		if normalize(p.image) == want || p.manifest.String() == image || strings.HasSuffix(p.image, "/"+image) {
			return p.view(name), true
		}
	}
	return Pull{}, false
}

// normalize names an image the way docker does, tag included; a name it
// cannot parse stays as it is.
func normalize(image string) string {
	if r, err := reference.ParseDockerRef(image); err == nil {
		return r.String()
	}
	return image
}

func (p *pull) view(name Namer) Pull {
	v := Pull{ID: p.id, Image: p.image, Manifest: p.manifest, Started: p.started, Omitted: p.omitted, Blobs: make([]Blob, 0, len(p.entries)), Totals: []SourceBytes{}}
	totals := map[srcKey]*SourceBytes{}
	var order []srcKey
	for _, e := range p.entries {
		b := e.view(name)
		v.Blobs = append(v.Blobs, b)
		if b.State == StateRunning {
			v.Running = true
		}
		if b.Ended.After(v.Ended) {
			v.Ended = b.Ended
		}
		for _, s := range b.Sources {
			k := srcKey{source: sourceOf(s.Source), peer: s.Peer}
			t := totals[k]
			if t == nil {
				t = &SourceBytes{Source: s.Source, Peer: s.Peer, Name: s.Name}
				totals[k] = t
				order = append(order, k)
			}
			t.Bytes += s.Bytes
		}
		v.Falls += len(b.Fallbacks) + b.MoreFallbacks
		for _, f := range b.Fallbacks {
			v.LostMS += f.LostMS
		}
	}
	if v.Running {
		v.Ended = time.Time{}
	}
	for _, k := range order {
		v.Totals = append(v.Totals, *totals[k])
	}
	sortSources(v.Totals)
	return v
}

func (e entry) view(name Namer) Blob {
	b := Blob{Digest: e.digest, MediaType: e.mediaType, Size: e.size, State: StateHeld, Sources: []SourceBytes{}, Fallbacks: []Fallback{}}
	r := e.rec
	if r == nil {
		return b
	}
	b.Started, b.Ended, b.Error, b.MoreFallbacks = r.started, r.ended, r.err, r.more
	switch {
	case !r.done:
		b.State, b.Ended = StateRunning, time.Time{}
	case r.err != "":
		b.State = StateFailed
	case r.download:
		b.State = StateStored
	default:
		b.State = StateLocal
	}
	for _, s := range r.sources {
		c := *s
		c.Name = nameOf(name, s.Peer)
		b.Sources = append(b.Sources, c)
	}
	sortSources(b.Sources)
	for _, f := range r.falls {
		f.Name = nameOf(name, f.Peer)
		b.Fallbacks = append(b.Fallbacks, f)
	}
	return b
}

func nameOf(name Namer, peer string) string {
	if name == nil || peer == "" {
		return ""
	}
	return name(peer)
}

// sortSources orders sources by bytes, most first.
func sortSources(s []SourceBytes) {
	slices.SortStableFunc(s, func(a, b SourceBytes) int {
		switch {
		case a.Bytes > b.Bytes:
			return -1
		case a.Bytes < b.Bytes:
			return 1
		}
		return 0
	})
}

// Transfers returns the downloads running now, oldest first.
func (l *Log) Transfers(name Namer) []Transfer {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	out := []Transfer{}
	for _, d := range l.order {
		b := l.blobs[d]
		if b == nil || !b.download || b.done {
			continue
		}
		t := Transfer{Digest: b.digest, Size: b.size, Started: b.started, Rate: b.rate.rate(now), Sources: []SourceBytes{}}
		for _, s := range b.sources {
			t.Bytes += s.Bytes
			c := *s
			c.Name = nameOf(name, s.Peer)
			t.Sources = append(t.Sources, c)
		}
		if b.trying != nil {
			t.Source, t.Peer, t.Name = string(b.trying.source), b.trying.peer, nameOf(name, b.trying.peer)
			last := b.tryingSince
			if b.tryingByte.After(last) {
				last = b.tryingByte
			}
			t.Waiting = now.Sub(last) >= waitingAfter
		} else if n := len(b.falls); n > 0 {
			f := b.falls[n-1]
			t.Source, t.Peer, t.Name, t.Reason, t.Waiting = f.Source, f.Peer, nameOf(name, f.Peer), f.Reason, true
		}
		out = append(out, t)
	}
	slices.SortStableFunc(out, func(a, b Transfer) int { return a.Started.Compare(b.Started) })
	return out
}
