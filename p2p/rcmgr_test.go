package p2p_test

import (
	"testing"

	"github.com/libp2p/go-libp2p/core/network"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/shoal-dev/shoal/p2p"
)

// TestClusterConnectionRate: a member may open many connections at once,
// as a cluster starting together does; libp2p's default refused the
// seventeenth from one address for five seconds.
func TestClusterConnectionRate(t *testing.T) {
	rm, err := p2p.ResourceManager()
	if err != nil {
		t.Fatal(err)
	}
	defer rm.Close()
	addr := ma.StringCast("/ip4/10.213.90.9/tcp/7501")
	for i := range 64 {
		s, err := rm.OpenConnection(network.DirInbound, true, addr)
		if err != nil {
			t.Fatalf("connection %d from one member refused: %v", i+1, err)
		}
		s.Done()
	}
}
