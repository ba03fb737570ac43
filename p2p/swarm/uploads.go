package swarm

import "github.com/opencontainers/go-digest"

// Ask is what a peer asks of a node's blob.
type Ask struct {
	Off int64
	// Length is how many bytes from Off; 0 asks for the rest of the blob.
	Length int64
	// Ranged says the request may set Length and Wait; a request that is
	// not ranged asks for the rest of the blob and always waits.
	Ranged bool
	// Wait asks the node to send bytes it does not hold yet as they arrive.
	Wait bool
}

// Copy is what a node holds of a blob.
type Copy struct {
	Size int64
	// Have is how many bytes from the start the node holds without a hole.
	Have int64
	// Arriving says the node is still downloading the blob.
	Arriving bool
	// Leads says the node fetches the blob from the registry for the
	// cluster now (see LeadsNow); its answers say so.
	Leads bool
}

// NotYet says whether ask is answered "not yet": it starts at a byte the
// node does not hold yet and will not wait for it. The answer tells the
// requester how far the node is, and costs it a round trip only.
func NotYet(ask Ask, c Copy) bool {
	return ask.Ranged && !ask.Wait && c.Arriving && ask.Off >= c.Have && ask.Off < c.Size
}

// CountsPerBlob says whether ask counts against the per-blob upload cap
// (see BlobUploadCap). A piece (a request of a set length) counts against
// the node's upload slots only: it is short, and helpers ask for the bytes
// few nodes hold yet, which is what a node's spare slots are best spent on.
func CountsPerBlob(ask Ask) bool { return ask.Length == 0 }

// BlobUploadCap is the per-blob upload cap: how many streams of one blob a
// node serves at once. While the blob is still arriving it is perBlob, so
// that a node that just got a new blob does not feed the whole cluster
// alone: the others are answered busy, ask again, and by then the first
// receivers can serve it onwards, so the blob spreads as a tree. A blob
// held whole is capped by the node's slots only (perNode): the node that
// holds the one blob everyone still lacks (the last layer of a cold start,
// whose first copy just ended there) serves it on every slot. Capping it at
// one stream, so that a node holding a whole image gave each blob its own
// share, left that node's uplink half idle at the end of cold starts and
// drew bursts of busy answers in warm ones (see docs/benchmarks.md).
func BlobUploadCap(arriving bool, perBlob, perNode int) int {
	if arriving {
		return perBlob
	}
	return perNode
}

// UploadSlot is the rule for whether a node that serves open upload
// streams, blobOpen of them of the blob asked for, starts one more: below
// perNode (its slots), yes; at or above it, only for a blob it streams to
// nobody, or while slow readers hold its slots (see SlowReaders), and
// never past twice perNode. A node often holds or receives more blobs
// than it has slots: the first node of a cold start, left several layers
// by designated nodes whose own pulls had not begun; the one node that
// holds a warm image; any node with shoal's prefetch, which downloads
// every layer at once. Without the rule its slots go to the blobs asked
// for first, and a blob nobody reads from it spreads nowhere until a slot
// frees: every other node waits on it, and once their waits run out they
// all fetch it from the registry. With one stream of every blob, each
// blob's tree grows from its first reader.
func UploadSlot(open, blobOpen, perNode int, slowReaders bool) bool {
	if open < perNode {
		return true
	}
	return (blobOpen == 0 || slowReaders) && UnderCeiling(open, perNode)
}

// UnderCeiling says whether a node serving open upload streams, all of
// them, may start one more: it serves at most twice its slots (perNode)
// at once, whatever the other rules count (UploadSlot, Counted).
func UnderCeiling(open, perNode int) bool { return open < 2*perNode }

// SlowReaders is the rule for when a node's upload slots count as held by
// readers that take little: half or more of its open streams wait on
// their readers (waiting), and its uploads send under half of the best
// second it has seen (rate, best, in bytes per second). Slots bound the
// streams that share the uplink, so that each gets a useful share of it;
// a reader behind a link cut to a tenth, which reads every layer at once
// and races its own streams for their pieces, would hold every slot of
// the node it reads from with the uplink all but idle, and the node's
// other readers would be answered busy for as long (ten seconds in the
// lab). Streams that wait on bytes still arriving at the node are not
// slow readers: more streams would only share those bytes. Nor is the
// extra stream for a slow reader (askerWaits: one of the waiting streams
// is the asker's): it would wait too.
func SlowReaders(open, waiting int, rate, best float64, askerWaits bool) bool {
	return open > 0 && 2*waiting >= open && best > 0 && rate < best/2 && !askerWaits
}

// GoneReader is the rule for an open upload stream that counts against
// neither the node's slots (UploadSlot) nor its blob's cap
// (BlobUploadCap): one to a reader the node left out as silent (a stream
// from it stalled and it answered no ping, or a member said so and it did
// not answer this node's ping) whose chunk has waited on it as long as
// that ping may take. Such a reader takes nothing, frozen or behind a
// link that is down, and its stream stays open until
// the node's watches cut it or close the connection, seconds later. While
// it counts, the peers that read the blob from the silent reader, and now
// ask the node it read from, are answered busy: a node that fetches a
// blob for the cluster streams it to two readers at first, and when one
// of them froze, the others waited on the slot it held for over a second
// in the lab. A reader left out whose stream still takes bytes counts: it
// uses its share of the uplink; one behind a link cut to a tenth takes a
// chunk every fraction of a second. See Counted for how many are left
// out.
func GoneReader(silent, chunkWaits bool) bool { return silent && chunkWaits }

// Counted is how many of open streams count against a cap of limit
// streams, for a new stream to an asker that is left out as silent or not
// (askerSilent), when gone of them go to gone readers (GoneReader): all
// of them for an asker left out itself, else at most limit fewer. A
// reader left out as silent that still asks is alive, behind a link cut
// to a tenth whose pings queue behind its bytes, and its streams wait on
// it too: it would take stream after stream of a node whose own streams
// to it do not count, while the peers the rule is for, those that lost a
// frozen relay, are not left out. And at most limit are left out, so that
// a blob's cap admits at most twice its streams; the node's slots stay
// under UnderCeiling, which counts every stream.
func Counted(open, gone, limit int, askerSilent bool) int {
	if askerSilent {
		return open
	}
	return open - min(gone, limit)
}

// ReplacesOwn is the rule for a reader's new stream of a blob still
// arriving while own of its earlier streams of that blob are open here: it
// gave them up (a relay asked once more after its copy stopped growing,
// say), and its reset may reach this node after its new request does,
// over a connection whose queue is full. Counted against the blob's cap,
// they had the reader answered busy by the one node that holds its next
// bytes, and it read them through a relay that held less, a second and
// more late (at N = 4 with a peer frozen, in the lab). The earlier streams
// are cut, and do not count: the reader still holds one stream of the
// blob at most. A reader left out as silent is not replaced (see
// Counted), and neither is one of a blob held whole: its cap is the node's
// slots, not two streams.
func ReplacesOwn(own int, arriving, askerSilent bool) bool {
	return own > 0 && arriving && !askerSilent
}

// BlobUploads counts the streams a node serves, by blob, against the
// per-blob cap. The zero value is ready to use. It is not safe for
// concurrent use.
type BlobUploads struct {
	open map[digest.Digest]int
}

// Take counts one more stream of d and says true, or says false (answer
// busy) when limit streams of d are open already.
func (u *BlobUploads) Take(d digest.Digest, limit int) bool {
	if u.open[d] >= limit {
		return false
	}
	if u.open == nil {
		u.open = make(map[digest.Digest]int)
	}
	u.open[d]++
	return true
}

// Release counts one stream of d fewer.
func (u *BlobUploads) Release(d digest.Digest) {
	if u.open[d]--; u.open[d] <= 0 {
		delete(u.open, d)
	}
}

// Open is how many streams of d are counted.
func (u *BlobUploads) Open(d digest.Digest) int { return u.open[d] }

// HeldRead is the rule for how many bytes a node serving c, a blob it may
// still be receiving, reads next for a stream at off of a range that ends
// at end, into a buffer of max bytes: every byte it holds past off at once,
// for a read of more than arrived would wait for the rest, and a node
// whose own source stalled would withhold the tail it has from the peers
// that wait on it. Caught up while the blob still arrives, one byte: the
// read waits for the next byte only, and the reader then asks again for
// what arrived with it, so that one write of the node's source goes out
// as one read.
func HeldRead(off, end, max int64, c Copy) int64 {
	n := min(max, end-off)
	switch {
	case c.Have > off:
		return min(n, c.Have-off)
	case c.Arriving:
		return min(n, 1)
	}
	return n
}
