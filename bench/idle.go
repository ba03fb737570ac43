package bench

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/shoal-dev/shoal/bench/report"
)

// idleCost records, in the lone scenario, what the nodes that did not pull
// received while one node pulled, and the blob bytes they keep after it.
func (s *session) idleCost(rec *report.Record, idle []*node, before, after snapshot) error {
	for _, n := range idle {
		rec.IdleReceivedBytes += after.nodes[n.i].RxBytes - before.nodes[n.i].RxBytes
		b, err := storedBlobBytes(n.dir)
		if err != nil {
			return fmt.Errorf("node %d's stores: %w", n.i, err)
		}
		rec.IdleStoredBytes += b
	}
	rec.Notes = append(rec.Notes, fmt.Sprintf("the %d nodes that did not pull received %s (gossip included) and keep %s of blobs",
		len(idle), human(rec.IdleReceivedBytes), human(rec.IdleStoredBytes)))
	return nil
}

// storedBlobBytes adds up the blob files under dir: each file of a
// content store's blobs/sha256 directory (containerd's and the mirror's),
// and every file under a directory named ingest (their blobs still
// arriving).
func storedBlobBytes(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				// Removed while walked: a temp file of a daemon.
				return nil
			}
			return err
		}
		if !d.Type().IsRegular() || !isBlobFile(dir, path) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		total += info.Size()
		return nil
	})
	return total, err
}

// isBlobFile says whether path, a file under root, is in a blobs/sha256
// directory or under an ingest directory.
func isBlobFile(root, path string) bool {
	parent := filepath.Dir(path)
	if filepath.Base(parent) == "sha256" && filepath.Base(filepath.Dir(parent)) == "blobs" {
		return true
	}
	for p := parent; len(p) > len(root); p = filepath.Dir(p) {
		if filepath.Base(p) == "ingest" {
			return true
		}
	}
	return false
}
