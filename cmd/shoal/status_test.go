package main

import (
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/resolver/upstream"
)

// TestStatusShowsUpstreamChain: `shoal status` lists each registry's
// hosts in order, with how each is trusted and its last error.
func TestStatusShowsUpstreamChain(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 2, 7, 0, 0, 0, time.UTC)
	var b strings.Builder
	err := printStatus(&b, daemonStatus{Version: "test", Upstream: []upstream.RegistryStatus{{
		Registry: "docker.io",
		Source:   "/etc/containerd/certs.d/docker.io/hosts.toml",
		Hosts: []upstream.HostStatus{
			{URL: "https://harbor.corp/v2", Capabilities: []string{"pull", "resolve"}, TLS: "hosts.toml CA, client certificate", LastError: "registry harbor.corp: not found", LastErrorAt: at},
			{URL: "https://registry-1.docker.io/v2", Capabilities: []string{"pull", "resolve"}, TLS: "system roots"},
		},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"upstream docker.io, from /etc/containerd/certs.d/docker.io/hosts.toml",
		"https://harbor.corp/v2", "hosts.toml CA, client certificate", "last error 2026-12-02T07:00:00Z: registry harbor.corp: not found",
		"https://registry-1.docker.io/v2",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	t.Log("\n" + out)
	if strings.Index(out, "harbor.corp/v2") > strings.Index(out, "registry-1.docker.io/v2") {
		t.Errorf("hosts out of order:\n%s", out)
	}
}
