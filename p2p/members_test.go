package p2p

import (
	"log/slog"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// TestMembersLost: a member that died or was cut off is listed as lost,
// for the join loop to try again after a partition heals; one that left is
// not, nor one lost longer than departedRetention ago, nor one back alive.
func TestMembersLost(t *testing.T) {
	t.Parallel()
	m := newMembers("self", slog.New(slog.DiscardHandler))
	node := func(name, ip string) *memberlist.Node {
		return &memberlist.Node{Name: name, Addr: net.ParseIP(ip), Port: 7502}
	}
	for _, n := range []*memberlist.Node{node("cut", "10.0.0.1"), node("left", "10.0.0.2"), node("back", "10.0.0.3")} {
		m.upsert(n)
	}
	d := eventDelegate{m: m, selfName: "self"}
	cut := node("cut", "10.0.0.1")
	cut.State = memberlist.StateDead
	d.NotifyLeave(cut)
	left := node("left", "10.0.0.2")
	left.State = memberlist.StateLeft
	d.NotifyLeave(left)
	back := node("back", "10.0.0.3")
	back.State = memberlist.StateDead
	d.NotifyLeave(back)
	d.NotifyJoin(node("back", "10.0.0.3"))

	now := time.Now()
	if got, want := m.lost(now), []string{"10.0.0.1:7502"}; !slices.Equal(got, want) {
		t.Errorf("lost %v, want %v", got, want)
	}
	if got := m.lost(now.Add(departedRetention + time.Second)); len(got) != 0 {
		t.Errorf("lost long ago, still listed: %v", got)
	}
}
