package lab

import (
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func TestAppliedLayersFromContainerdsLog(t *testing.T) {
	log := `time="2026-12-02T16:25:05.366278382Z" level=info msg="loading plugin" id=io.containerd.differ.v1.walking type=io.containerd.differ.v1
time="2026-12-02T16:30:01.500000000Z" level=debug msg="diff applied" d=120.5ms digest="sha256:aaaa" media=application/vnd.oci.image.layer.v1.tar+gzip size=8388608
time="2026-12-02T16:31:02.250000000Z" level=debug msg="diff applied" d=1.2s digest="sha256:bbbb" media=application/vnd.oci.image.layer.v1.tar+gzip size=8388608
time="2026-12-02T16:31:03.000000000Z" level=debug msg="fetch" digest="sha256:cccc"
`
	since := time.Date(2026, 12, 2, 16, 31, 0, 0, time.UTC)
	got, err := appliedLayers(strings.NewReader(log), since)
	if err != nil {
		t.Fatal(err)
	}
	want := Applied{At: time.Date(2026, 12, 2, 16, 31, 2, 250_000_000, time.UTC), Took: 1200 * time.Millisecond}
	if len(got) != 1 || got[digest.Digest("sha256:bbbb")] != want {
		t.Fatalf("applied %v, want only sha256:bbbb at %v taking %v (the earlier unpack is before since, the fetch is no unpack)", got, want.At, want.Took)
	}
}
