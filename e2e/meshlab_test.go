package e2e

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/bench/lab"
)

// meshLab is a registry host and nodes (containerd 1.6 and 2.4
// alternating, each with a shoal daemon) in one network of namespaces, the
// nodes in one keyed mesh.
type meshLab struct {
	reg   *lab.Registry
	regNS string
	nodes []*meshNode
}

// meshLabConfig says what startMeshLab builds.
type meshLabConfig struct {
	name   string // the network's name, made unique by the test's pid
	subnet string
	nodes  int
	mbit   float64 // each link's rate both ways; 0 leaves links unshaped
	// flags are node i's daemon flags besides the lab's own; nil for none.
	flags func(i int) []string
}

// startMeshLab starts cfg's network, registry and nodes, and waits until
// every node sees all of them live.
func startMeshLab(t *testing.T, cfg meshLabConfig) *meshLab {
	t.Helper()
	ctx := t.Context()
	log := testLogger(t)
	net, err := lab.NewNetwork(ctx, netName(t, cfg.name), cfg.nodes+1,
		lab.NetworkConfig{Subnet: cfg.subnet, EgressMbit: cfg.mbit, IngressMbit: cfg.mbit, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	cleanup(t, net.Close)
	regHost := net.Hosts[0]
	reg, err := lab.StartRegistry(ctx, lab.RegistryConfig{Netns: regHost.Netns, Addr: regHost.Addr(5000), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	cleanup(t, reg.Close)
	key := writeKey(t)
	var seeds []string
	for _, h := range net.Hosts[1:] {
		seeds = append(seeds, h.IP.String()+":7502")
	}
	nodes := make([]*meshNode, cfg.nodes)
	var wg sync.WaitGroup
	for i := range cfg.nodes {
		flavor := lab.Flavor16
		if i%2 == 1 {
			flavor = lab.Flavor2
		}
		var extra []string
		if cfg.flags != nil {
			extra = cfg.flags(i)
		}
		wg.Go(func() {
			nodes[i] = startMeshNode(t, fmt.Sprintf("node%d", i+1), net.Hosts[i+1], flavor, reg.Addr(), seeds, key, extra...)
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	waitFor(t, "mesh converges", 60*time.Second, func() error {
		for _, nd := range nodes {
			if got := nd.status(t).LiveMembers; got != cfg.nodes {
				return fmt.Errorf("%s sees %d live members, want %d", nd.name, got, cfg.nodes)
			}
		}
		return nil
	})
	return &meshLab{reg: reg, regNS: regHost.Netns, nodes: nodes}
}

// push pushes a new image of layers layers of size bytes each.
func (l *meshLab) push(t *testing.T, repo, tag string, layers int, size int64) lab.Image {
	t.Helper()
	im, err := lab.PushImage(t.Context(), l.reg.Addr(), repo, tag, layers, size, lab.WithTransport(lab.TransportIn(l.regNS)))
	if err != nil {
		t.Fatal(err)
	}
	return im
}
