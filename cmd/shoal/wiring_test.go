package main

import (
	"testing"

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
