package pulls

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoal-dev/shoal/resolver"
)

var _ resolver.Recorder = (*Log)(nil)

// Bounds on what the records keep, so that memory stays bounded whatever
// the images and the mesh: at most keep pulls of maxBlobsPerPull blobs,
// and maxBlobs more records by digest, each with a few KiB at most.
const (
	maxBlobsPerPull     = 128 // more are counted in Pull.Omitted
	maxSourcesPerBlob   = 16
	maxFallbacksPerBlob = 8
	maxErrorLen         = 160
	// maxBlobs bounds the blobs known by digest (running downloads and
	// recent ones) and maxNames the tags remembered.
	maxBlobs = 1024
	maxNames = 1024
	// claimWithin: a pull claims a download of one of its blobs that ended
	// this recently and no other pull claimed (a node fetched it for a
	// peer just before its own containerd asked).
	claimWithin = 2 * time.Minute
	// waitingAfter: a transfer with no byte from its source for this long
	// is waiting on it.
	waitingAfter = time.Second
)

// Log keeps the records of the last pulls. Its methods are safe for
// concurrent use. The zero value is not usable: see New.
type Log struct {
	max int
	now func() time.Time

	mu     sync.Mutex
	nextID int64
	pulls  []*pull // oldest first, at most max
	// blobs holds the newest record of each digest: running downloads
	// and recent ones, and reads of the node's copy. order is its FIFO.
	blobs map[digest.Digest]*blob
	order []digest.Digest
	// names maps manifest digests to the image names they were resolved
	// from (a tag, or an index's tag for its platform manifests).
	names     map[digest.Digest]string
	nameOrder []digest.Digest
}

type pull struct {
	id       int64
	image    string
	manifest digest.Digest
	started  time.Time
	entries  []entry
	omitted  int
}

type entry struct {
	digest    digest.Digest
	mediaType string
	size      int64
	rec       *blob // nil: never asked for
}

type srcKey struct {
	source resolver.Source
	peer   string
}

type blob struct {
	digest   digest.Digest
	size     int64
	download bool // false: reads of the node's own copy
	claimed  bool
	started  time.Time
	ended    time.Time
	done     bool
	err      string
	sources  []*SourceBytes
	falls    []Fallback
	more     int
	// The source asked now, since when, and its last byte since.
	trying      *srcKey
	tryingSince time.Time
	tryingByte  time.Time
	rate        window
}

// New returns a log that keeps the last keep pulls (at least 1).
func New(keep int) *Log {
	return &Log{max: max(keep, 1), now: time.Now, blobs: map[digest.Digest]*blob{}, names: map[digest.Digest]string{}}
}

// Tagged remembers the image name a manifest was resolved from.
func (l *Log) Tagged(req resolver.ManifestRequest, m resolver.Manifest) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.nameLocked(m.Digest, req.Registry+"/"+req.Repo+":"+req.Reference)
}

func (l *Log) nameLocked(d digest.Digest, name string) {
	if _, ok := l.names[d]; !ok {
		l.nameOrder = append(l.nameOrder, d)
		if len(l.nameOrder) > maxNames {
			delete(l.names, l.nameOrder[0])
			l.nameOrder = l.nameOrder[1:]
		}
	}
	l.names[d] = name
}

// manifestBody is the part of an index or image manifest a record needs.
type manifestBody struct {
	Manifests []ocispec.Descriptor `json:"manifests"`
	Config    ocispec.Descriptor   `json:"config"`
	Layers    []ocispec.Descriptor `json:"layers"`
}

// Fetched starts a pull's record when m is an image manifest; an index
// passes its name on to the manifests it lists.
func (l *Log) Fetched(req resolver.ManifestRequest, m resolver.Manifest) {
	var body manifestBody
	if err := json.Unmarshal(m.Body, &body); err != nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	name, ok := l.names[m.Digest]
	if !ok {
		name = req.Registry + "/" + req.Repo + "@" + m.Digest.String()
		if _, isDigest := digest.Parse(req.Reference); isDigest != nil {
			name = req.Registry + "/" + req.Repo + ":" + req.Reference
		}
	}
	if len(body.Manifests) > 0 {
		for _, d := range body.Manifests {
			l.nameLocked(d.Digest, name)
		}
		return
	}
	if body.Config.Digest == "" && len(body.Layers) == 0 {
		return
	}
	l.startPullLocked(name, m.Digest, append([]ocispec.Descriptor{body.Config}, body.Layers...))
}

func (l *Log) startPullLocked(name string, manifest digest.Digest, descs []ocispec.Descriptor) {
	now := l.now()
	l.nextID++
	p := &pull{id: l.nextID, image: name, manifest: manifest, started: now}
	for _, d := range descs {
		if d.Digest.Validate() != nil || len(d.URLs) > 0 {
			continue
		}
		if len(p.entries) == maxBlobsPerPull {
			p.omitted++
			continue
		}
		e := entry{digest: d.Digest, mediaType: d.MediaType, size: d.Size}
		if b := l.blobs[d.Digest]; b != nil && b.download && (!b.done || (!b.claimed && now.Sub(b.ended) < claimWithin)) {
			e.rec, b.claimed = b, true
		}
		p.entries = append(p.entries, e)
	}
	l.pulls = append(l.pulls, p)
	if len(l.pulls) > l.max {
		l.pulls[0] = nil
		l.pulls = l.pulls[1:]
	}
}

// putLocked makes b the newest record of its digest.
func (l *Log) putLocked(b *blob) {
	if _, ok := l.blobs[b.digest]; !ok {
		l.order = append(l.order, b.digest)
		if len(l.order) > maxBlobs {
			delete(l.blobs, l.order[0])
			l.order = l.order[1:]
		}
	}
	l.blobs[b.digest] = b
}

// claimLocked binds b to the entries of the pulls that wait for its
// digest and have no record yet, and says whether any did.
func (l *Log) claimLocked(b *blob) bool {
	now := l.now()
	for _, p := range l.pulls {
		if !p.open(now) {
			continue
		}
		for i := range p.entries {
			if e := &p.entries[i]; e.digest == b.digest && e.rec == nil {
				e.rec, b.claimed = b, true
				if b.size == 0 {
					b.size = e.size
				}
			}
		}
	}
	return b.claimed
}

// open says whether a pull may still claim records: it started lately,
// or a blob of it is still running.
func (p *pull) open(now time.Time) bool {
	if now.Sub(p.started) < claimWithin {
		return true
	}
	for _, e := range p.entries {
		if e.rec != nil && !e.rec.done {
			return true
		}
	}
	return false
}

// Started records a download that began.
func (l *Log) Started(dgst digest.Digest, size int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if b := l.blobs[dgst]; b != nil && b.download && b.done && b.claimed && now.Sub(b.ended) < claimWithin {
		// A download of a pull's blob started again (the last one failed,
		// or ended before the blob was whole): its record goes on, so the
		// bytes of both attempts count.
		b.done, b.err, b.ended = false, "", time.Time{}
		b.size = max(b.size, size)
		l.claimLocked(b)
		return
	}
	b := &blob{digest: dgst, size: size, download: true, started: now}
	l.putLocked(b)
	l.claimLocked(b)
}

// Trying records the source a download asks now.
func (l *Log) Trying(dgst digest.Digest, src resolver.Source, peer string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b := l.blobs[dgst]; b != nil && b.download {
		b.trying = &srcKey{src, peer}
		b.tryingSince, b.tryingByte = l.now(), time.Time{}
	}
}

// Received counts n bytes of dgst from src. Bytes read from the node's
// own copy count for a blob the pull did not download: a downloaded blob
// is delivered from there too, and its sources are those it came from.
func (l *Log) Received(dgst digest.Digest, src resolver.Source, peer string, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b := l.blobs[dgst]
	local := src == resolver.SourceContainerd || src == resolver.SourceStore
	if local {
		if b == nil || b.download || b.done {
			// A new read of the node's copy, for a pull that waits for it.
			nb := &blob{digest: dgst, started: now}
			if !l.claimLocked(nb) {
				if b == nil || b.download {
					return
				}
				nb = b // a pull's read of its own copy, again (a resumed range)
			} else {
				l.putLocked(nb)
			}
			b = nb
		}
	} else if b == nil || !b.download {
		return
	}
	s := b.source(src, peer)
	if s == nil {
		return
	}
	s.Bytes += int64(n)
	if s.First.IsZero() {
		s.First = now
	}
	s.Last = now
	b.rate.add(now, n)
	if b.trying != nil && *b.trying == (srcKey{src, peer}) {
		b.tryingByte = now
	}
	if local {
		b.ended = now
		var got int64
		for _, s := range b.sources {
			got += s.Bytes
		}
		b.done = b.size > 0 && got >= b.size
	}
}

// source returns b's count for src, made if new; nil past the bound.
func (b *blob) source(src resolver.Source, peer string) *SourceBytes {
	for _, s := range b.sources {
		if s.Source == string(src) && s.Peer == peer {
			return s
		}
	}
	if len(b.sources) == maxSourcesPerBlob {
		return nil
	}
	s := &SourceBytes{Source: string(src), Peer: peer}
	b.sources = append(b.sources, s)
	return s
}

// FellBack records a source given up.
func (l *Log) FellBack(dgst digest.Digest, src resolver.Source, peer, reason string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.blobs[dgst]
	if b == nil || !b.download {
		return
	}
	now := l.now()
	f := Fallback{At: now, Source: string(src), Peer: peer, Reason: reason}
	if err != nil {
		f.Error = truncate(err.Error(), maxErrorLen)
	}
	if b.trying != nil && *b.trying == (srcKey{src, peer}) {
		from := b.tryingSince
		if b.tryingByte.After(from) {
			from = b.tryingByte
		}
		f.LostMS = now.Sub(from).Milliseconds()
	}
	b.trying = nil
	if len(b.falls) == maxFallbacksPerBlob {
		b.more++
		return
	}
	b.falls = append(b.falls, f)
}

// Ended records the end of a download.
func (l *Log) Ended(dgst digest.Digest, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.blobs[dgst]
	if b == nil || !b.download || b.done {
		return
	}
	b.done, b.ended, b.trying = true, l.now(), nil
	if err != nil {
		b.err = truncate(err.Error(), maxErrorLen)
		if b.err == "" {
			b.err = "failed"
		}
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func sourceOf(s string) resolver.Source { return resolver.Source(s) }
