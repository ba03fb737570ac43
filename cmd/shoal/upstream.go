package main

import (
	"log/slog"

	containerdplugin "github.com/shoal-dev/shoal/containerd-plugin"
	"github.com/shoal-dev/shoal/resolver/upstream"
)

// hostsChains gives the upstream client each registry's hosts from
// containerd's hosts dir: the hosts containerd tries after shoal.
type hostsChains struct {
	r *containerdplugin.UpstreamHosts
}

var _ upstream.Hosts = hostsChains{}

func (h hostsChains) Chain(registry string) (upstream.Chain, error) {
	ch, gen, err := h.r.Chain(registry)
	out := upstream.Chain{Source: ch.File, Warning: ch.Warning, Gen: gen}
	for _, uh := range ch.Hosts {
		out.Endpoints = append(out.Endpoints, upstream.Endpoint{
			Scheme:  uh.Scheme,
			Host:    uh.Host,
			Path:    uh.Path,
			Pull:    uh.Pull,
			Resolve: uh.Resolve,
			Header:  uh.Header,
			TLS:     uh.TLS,
			Implied: uh.Implied,
		})
	}
	return out, err
}

// upstreamHosts reads the chains from --hosts-dir; nil without it, so
// that each registry is reached alone. self is shoal's own mirror
// address, which no chain may lead back to.
func upstreamHosts(o daemonOptions, self string, log *slog.Logger) (upstream.Hosts, error) {
	if o.hostsDir == "" {
		return nil, nil
	}
	r, err := containerdplugin.NewUpstreamHosts(containerdplugin.UpstreamHostsConfig{
		HostsDir: o.hostsDir,
		Self:     self,
		Logger:   log,
	})
	if err != nil {
		return nil, err
	}
	return hostsChains{r: r}, nil
}
