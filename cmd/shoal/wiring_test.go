package main

import (
	"log/slog"
	"testing"
	"time"

	containerdplugin "github.com/shoal-dev/shoal/containerd-plugin"
	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/resolver"
)

// The packages meet only through interfaces and shared strings; these
// checks keep the wiring honest.
var (
	_ resolver.Router      = (*p2p.Router)(nil)
	_ resolver.ImageLookup = (*p2p.Router)(nil)
	_ resolver.Local       = (*containerdplugin.Client)(nil)
	_ resolver.ImageLookup = (*containerdplugin.Client)(nil)
	_ p2p.ImageSource      = (*containerdplugin.Client)(nil)
	_ walker               = (*containerdplugin.Client)(nil)
)

func TestUpdatedAnnotationAgrees(t *testing.T) {
	t.Parallel()
	if p2p.UpdatedAnnotation != containerdplugin.UpdatedAnnotation {
		t.Fatalf("p2p reads %q, containerd-plugin writes %q", p2p.UpdatedAnnotation, containerdplugin.UpdatedAnnotation)
	}
}

// TestHostsRegistriesFollowConfigure: the registries peers may ask the
// daemon to fetch from include those `shoal configure` sent through shoal,
// also when it wrote them after the daemon started.
func TestHostsRegistriesFollowConfigure(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h := &hostsRegistries{dir: dir, log: slog.New(slog.DiscardHandler)}
	if h.mirrors("registry.local:5000") {
		t.Fatal("an empty hosts dir mirrors registry.local:5000")
	}
	if _, err := containerdplugin.Configure(containerdplugin.ConfigureOptions{HostsDir: dir, Mirror: "http://127.0.0.1:7500", Registries: []string{"http://registry.local:5000"}}); err != nil {
		t.Fatal(err)
	}
	if h.mirrors("registry.local:5000") {
		t.Fatal("the answer was read again before hostsRecheck passed")
	}
	h.mu.Lock()
	h.at = time.Time{} // as if hostsRecheck had passed
	h.mu.Unlock()
	if !h.mirrors("registry.local:5000") || h.mirrors("elsewhere.example") {
		t.Fatal("after configure: registry.local:5000 not mirrored, or another registry is")
	}
}
