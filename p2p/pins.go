package p2p

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/opencontainers/go-digest"
)

// The pin table says which images the cluster keeps a floor of copies of.
// Every member holds all of it: a pin made on one node is sent to the
// others as a gossip message (kind msgPin, then one Pin in JSON), and the
// whole table rides memberlist's periodic push-pull state exchange, so a
// member that missed a message, or joins later, gets it within a push-pull
// interval. Each entry carries a version; a merge keeps, key by key, the
// newer entry (PinNewer), so the members converge whatever order entries
// arrive in. An unpin is an entry too (Deleted), kept PinTombstoneKeep so
// that a member that was away does not bring the pin back.
const (
	msgPin byte = 2

	// MaxPins bounds the table, unpinned entries included: a member's
	// entries beyond it are dropped, and a pin beyond it refused.
	MaxPins = 256
	// MaxPinCopies bounds the copies a pin asks for.
	MaxPinCopies = 16
	// PinTombstoneKeep is how long an unpin is remembered.
	PinTombstoneKeep = 7 * 24 * time.Hour

	maxPinRef = 512
	maxPinMsg = 1200
	// maxPinState bounds the table a member sends in a push-pull.
	maxPinState = MaxPins * (maxPinMsg + 8)
	pinFile     = "pins.json"
)

// ErrPinTableFull reports a pin refused because the table holds MaxPins
// entries.
var ErrPinTableFull = errors.New("pin table full")

// ErrPinsOpenMesh reports a pin refused in a mesh without a cluster key,
// where the members are not authenticated.
var ErrPinsOpenMesh = errors.New("pins need a mesh with a cluster key (--cluster-key-file)")

// Pin is one entry of the pin table: an image resolved once (its registry,
// repository and manifest or index digest) and how many members keep a copy
// of each of its blobs.
type Pin struct {
	// Ref is the image as it was pinned, normalized; the table's key.
	Ref      string        `json:"ref"`
	Registry string        `json:"registry"`
	Repo     string        `json:"repo"`
	Digest   digest.Digest `json:"digest"`
	Copies   int           `json:"copies"`
	// Version orders the entries of one Ref: milliseconds since the epoch
	// when it was made, at least one more than the entry it replaced.
	Version uint64 `json:"version"`
	// Origin is the name of the member that made the entry.
	Origin  string `json:"origin"`
	Deleted bool   `json:"deleted,omitempty"`
}

// Check says whether p is a well-formed entry; entries from members that
// are not are dropped.
func (p Pin) Check() error {
	switch {
	case p.Ref == "" || len(p.Ref) > maxPinRef:
		return fmt.Errorf("pin reference of %d bytes", len(p.Ref))
	case len(p.Origin) > 255:
		return fmt.Errorf("pin origin of %d bytes", len(p.Origin))
	case p.Version == 0:
		return errors.New("pin of version 0")
	case p.Deleted:
		return nil
	case p.Copies < 1 || p.Copies > MaxPinCopies:
		return fmt.Errorf("pin of %d copies, want 1 to %d", p.Copies, MaxPinCopies)
	case !validSource(p.Registry, p.Repo):
		return fmt.Errorf("pin of image %s/%s", p.Registry, p.Repo)
	}
	return checkDigest(p.Digest)
}

// PinNewer is the merge rule: whether a replaces b, which has the same
// Ref. The higher version wins; at equal versions, the higher origin, then
// an unpin, then the greater encoding, so any two members that hold the
// same entries keep the same one.
func PinNewer(a, b Pin) bool {
	if c := cmp.Or(cmp.Compare(a.Version, b.Version), cmp.Compare(a.Origin, b.Origin)); c != 0 {
		return c > 0
	}
	if a.Deleted != b.Deleted {
		return a.Deleted
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Compare(ja, jb) > 0
}

// pinTable is this node's copy of the table. Safe for concurrent use.
type pinTable struct {
	path string // where it is saved; "" keeps it in memory only

	mu      sync.Mutex
	entries map[string]Pin
	change  chan struct{} // poked on every change, capacity 1
}

func newPinTable(dir string) *pinTable {
	t := &pinTable{entries: map[string]Pin{}, change: make(chan struct{}, 1)}
	if dir != "" {
		t.path = filepath.Join(dir, pinFile)
	}
	return t
}

// merge takes the entries of ps that are news and returns them; it drops
// malformed ones, those past MaxPins and unpins older than
// PinTombstoneKeep.
func (t *pinTable) merge(ps []Pin, now time.Time) []Pin {
	t.mu.Lock()
	defer t.mu.Unlock()
	var news []Pin
	for _, p := range ps {
		if p.Check() != nil || expired(p, now) {
			continue
		}
		old, ok := t.entries[p.Ref]
		if ok && !PinNewer(p, old) {
			continue
		}
		if !ok && len(t.entries) >= MaxPins {
			t.dropExpiredLocked(now)
			if len(t.entries) >= MaxPins {
				continue
			}
		}
		t.entries[p.Ref] = p
		news = append(news, p)
	}
	if len(news) > 0 {
		select {
		case t.change <- struct{}{}:
		default:
		}
	}
	return news
}

func expired(p Pin, now time.Time) bool {
	return p.Deleted && now.Sub(time.UnixMilli(int64(p.Version))) > PinTombstoneKeep
}

func (t *pinTable) dropExpiredLocked(now time.Time) {
	maps.DeleteFunc(t.entries, func(_ string, p Pin) bool { return expired(p, now) })
}

// next makes the entry that replaces ref's: p with a version above the
// current entry's.
func (t *pinTable) next(p Pin, now time.Time) (Pin, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p.Version = uint64(now.UnixMilli())
	old, ok := t.entries[p.Ref]
	if ok && old.Version >= p.Version {
		p.Version = old.Version + 1
	}
	if !ok && len(t.entries) >= MaxPins {
		t.dropExpiredLocked(now)
		if len(t.entries) >= MaxPins {
			return Pin{}, fmt.Errorf("%d entries: %w", MaxPins, ErrPinTableFull)
		}
	}
	return p, nil
}

// all lists every entry, unpins included, sorted by Ref.
func (t *pinTable) all() []Pin {
	t.mu.Lock()
	out := slices.Collect(maps.Values(t.entries))
	t.mu.Unlock()
	slices.SortFunc(out, func(a, b Pin) int { return cmp.Compare(a.Ref, b.Ref) })
	return out
}

func (t *pinTable) encode() []byte {
	b, _ := json.Marshal(t.all())
	return b
}

func decodePins(b []byte) ([]Pin, error) {
	if len(b) > maxPinState {
		return nil, fmt.Errorf("pin table of %d bytes", len(b))
	}
	var ps []Pin
	if err := json.Unmarshal(b, &ps); err != nil {
		return nil, fmt.Errorf("pin table: %w", err)
	}
	if len(ps) > MaxPins {
		ps = ps[:MaxPins]
	}
	return ps, nil
}

// load reads the table saved by an earlier run, so that a cluster that
// restarts whole keeps its pins.
func (t *pinTable) load(now time.Time) error {
	if t.path == "" {
		return nil
	}
	b, err := os.ReadFile(t.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	ps, err := decodePins(b)
	if err != nil {
		return err
	}
	t.merge(ps, now)
	return nil
}

// save writes the table next to the node's identity, atomically.
func (t *pinTable) save() error {
	if t.path == "" {
		return nil
	}
	tmp := t.path + ".tmp"
	if err := os.WriteFile(tmp, t.encode(), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, t.path)
}

func encodePinMsg(p Pin) []byte {
	b, _ := json.Marshal(p)
	return append([]byte{msgPin}, b...)
}

// parsePinMsg reads a gossip message of kind msgPin.
func parsePinMsg(b []byte) (Pin, error) {
	if len(b) < 2 || len(b) > maxPinMsg || b[0] != msgPin {
		return Pin{}, fmt.Errorf("pin message of %d bytes", len(b))
	}
	var p Pin
	if err := json.Unmarshal(b[1:], &p); err != nil {
		return Pin{}, fmt.Errorf("pin message: %w", err)
	}
	return p, p.Check()
}

// pinBroadcast is one queued entry; a newer one for the same Ref replaces
// it.
type pinBroadcast struct {
	ref string
	msg []byte
}

func (b pinBroadcast) Invalidates(other memberlist.Broadcast) bool {
	o, ok := other.(pinBroadcast)
	return ok && o.ref == b.ref
}
func (b pinBroadcast) Message() []byte { return b.msg }
func (b pinBroadcast) Finished()       {}

// receivePin handles a pin message from the gossip; it runs on
// memberlist's goroutine, so it does not block on I/O beyond saving the
// small table.
func (n *Node) receivePin(b []byte) error {
	p, err := parsePinMsg(b)
	if err != nil {
		return err
	}
	n.learnPins([]Pin{p})
	return nil
}

// learnPins merges entries from members, passes on those that are news
// and saves the table.
func (n *Node) learnPins(ps []Pin) {
	if n.protection == "" {
		// In an open mesh anyone who reaches the gossip port could make
		// the node fetch: pins are kept in keyed meshes only.
		return
	}
	news := n.pins.merge(ps, time.Now())
	for _, p := range news {
		n.backoffs.queue.QueueBroadcast(pinBroadcast{ref: p.Ref, msg: encodePinMsg(p)})
	}
	if len(news) > 0 {
		if err := n.pins.save(); err != nil {
			n.log.Warn("pin table not saved", "err", err)
		}
		n.log.Info("pin table changed", "entries", len(news), "from", "member")
	}
}

// SetPin records a pin (or, with Deleted, an unpin) made on this node and
// sends it to every member. It fills in Version and Origin and returns the
// entry.
func (n *Node) SetPin(p Pin) (Pin, error) {
	if n.protection == "" {
		return Pin{}, ErrPinsOpenMesh
	}
	p.Origin = n.cfg.NodeName
	if len(p.Origin) > 255 {
		p.Origin = p.Origin[:255]
	}
	if p.Deleted {
		p.Copies, p.Registry, p.Repo, p.Digest = 0, "", "", ""
	}
	p, err := n.pins.next(p, time.Now())
	if err != nil {
		return Pin{}, err
	}
	if err := p.Check(); err != nil {
		return Pin{}, err
	}
	n.pins.merge([]Pin{p}, time.Now())
	n.backoffs.queue.QueueBroadcast(pinBroadcast{ref: p.Ref, msg: encodePinMsg(p)})
	if err := n.pins.save(); err != nil {
		n.log.Warn("pin table not saved", "err", err)
	}
	return p, nil
}

// Pins lists the table's live entries (no unpins), sorted by Ref; none in
// an open mesh.
func (n *Node) Pins() []Pin {
	if n.protection == "" {
		return nil
	}
	return slices.DeleteFunc(n.pins.all(), func(p Pin) bool { return p.Deleted })
}

// PinsChanged is poked when the pin table or the member list changes:
// the moments to compute the holders again. Capacity 1; one reader.
func (n *Node) PinsChanged() <-chan struct{} { return n.pins.change }

// PokePins wakes the reader of PinsChanged, as a change would.
func (n *Node) PokePins() {
	select {
	case n.pins.change <- struct{}{}:
	default:
	}
}
