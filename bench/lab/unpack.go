package lab

import (
	"errors"
	"io"
	"os"
	"time"

	"github.com/go-logfmt/logfmt"
	"github.com/opencontainers/go-digest"
)

// Applied is one layer containerd unpacked: when the unpack ended and how
// long it took.
type Applied struct {
	At   time.Time
	Took time.Duration
}

// AppliedLayers reads, from the daemon's log, the layers containerd
// unpacked at or after since, by layer digest (the last unpack of each).
// containerd logs each unpack at debug level ("diff applied"), so it needs
// ContainerdConfig.LogLevel "debug"; at other levels the map is empty.
func (c *Containerd) AppliedLayers(since time.Time) (map[digest.Digest]Applied, error) {
	f, err := os.Open(c.LogPath())
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return appliedLayers(f, since)
}

func appliedLayers(r io.Reader, since time.Time) (map[digest.Digest]Applied, error) {
	out := map[digest.Digest]Applied{}
	d := logfmt.NewDecoder(r)
	for d.ScanRecord() {
		var at time.Time
		var took time.Duration
		var dgst digest.Digest
		applied := false
		for d.ScanKeyval() {
			v := string(d.Value())
			switch string(d.Key()) {
			case "time":
				at, _ = time.Parse(time.RFC3339Nano, v)
			case "msg":
				applied = v == "diff applied"
			case "d":
				took, _ = time.ParseDuration(v)
			case "digest":
				dgst = digest.Digest(v)
			}
		}
		if d.Err() != nil {
			// A line that is not logfmt (a panic's trace, say): skip it.
			continue
		}
		if applied && dgst != "" && !at.Before(since) {
			out[dgst] = Applied{At: at, Took: took}
		}
	}
	if err := d.Err(); err != nil && !errors.Is(err, io.EOF) {
		return out, err
	}
	return out, nil
}
