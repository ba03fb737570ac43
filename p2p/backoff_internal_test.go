package p2p

import (
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/shoal-dev/shoal/resolver"
)

func TestBackoffMessage(t *testing.T) {
	t.Parallel()
	m := backoffMsg{origin: "node-3", registry: "registry.example:5000", left: 42 * time.Second}
	got, err := parseBackoffMsg(m.encode())
	if err != nil || got != m {
		t.Fatalf("round trip: %+v, %v; want %+v", got, err, m)
	}
	long := backoffMsg{origin: "n", registry: "docker.io", left: 5 * time.Hour}
	if got, err := parseBackoffMsg(long.encode()); err != nil || got.left != resolver.MaxRetryAfter {
		t.Fatalf("a back-off of hours: %+v, %v; want it capped at %s", got, err, resolver.MaxRetryAfter)
	}
	for _, tc := range []struct {
		name string
		msg  []byte
	}{
		{"empty", nil},
		{"kind only", []byte{msgBackoff}},
		{"unknown kind", append([]byte{9}, m.encode()[1:]...)},
		{"no registry", backoffMsg{origin: "n", left: time.Second}.encode()},
		{"bad registry", backoffMsg{origin: "n", registry: "Not A Host!", left: time.Second}.encode()},
		{"registry with a path", backoffMsg{origin: "n", registry: "host.example/repo", left: time.Second}.encode()},
		{"no time", backoffMsg{origin: "n", registry: "docker.io"}.encode()},
		{"name longer than the message", []byte{msgBackoff, 0, 0, 1, 0, 200, 'a', 'b'}},
		{"too long", append(m.encode(), strings.Repeat("a", maxBackoffMsg)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got, err := parseBackoffMsg(tc.msg); err == nil {
				t.Fatalf("parsed %+v from %q", got, tc.msg)
			}
		})
	}
}

// TestBackoffNewsOnce: a member passes a back-off on, and tells its
// resolver, only when it moves the registry's back-off later; the same
// back-off heard again through other members is dropped, so the gossip
// stops.
func TestBackoffNewsOnce(t *testing.T) {
	t.Parallel()
	var heard []string
	g := &backoffGossip{
		queue: &memberlist.TransmitLimitedQueue{NumNodes: func() int { return 8 }, RetransmitMult: 3},
		heard: func(registry string, left time.Duration, origin string) {
			heard = append(heard, registry+" "+left.String()+" "+origin)
		},
		until: map[string]time.Time{},
	}
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	msg := func(reg string, left time.Duration) []byte {
		return backoffMsg{origin: "a", registry: reg, left: left}.encode()
	}
	steps := []struct {
		at   time.Duration
		msg  []byte
		news bool
	}{
		{0, msg("docker.io", time.Minute), true},
		{100 * time.Millisecond, msg("docker.io", time.Minute), false},         // the same, a gossip round later
		{2 * time.Second, msg("docker.io", 58*time.Second), false},             // the same, with less left
		{0, msg("quay.io", time.Minute), true},                                 // another registry
		{10 * time.Second, msg("docker.io", 5*time.Minute), true},              // a longer one
		{10*time.Minute + time.Second, msg("docker.io", time.Minute), true},    // after the last ended
		{10*time.Minute + 2*time.Second, msg("docker.io", time.Minute), false}, // and that one again
	}
	want := 0
	for i, s := range steps {
		queued := g.queue.NumQueued()
		if err := g.receive(s.msg, now.Add(s.at)); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if s.news {
			want++
		}
		if len(heard) != want {
			t.Fatalf("step %d: heard %d back-offs, want %d: %v", i, len(heard), want, heard)
		}
		// A new message replaces a queued one for the same registry, so
		// news may leave the count as it was; old news never adds one.
		if !s.news && g.queue.NumQueued() != queued {
			t.Fatalf("step %d: passed on a back-off that was no news", i)
		}
	}
}
