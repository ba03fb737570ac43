package main

import (
	"context"
	"log/slog"
	"time"

	containerdplugin "github.com/shoal-dev/shoal/containerd-plugin"
	"github.com/shoal-dev/shoal/resolver"
)

// connectContainerd opens the node's containerd. The daemon runs without it
// when the socket is missing or containerd is down, and picks it up once it
// answers; either way the log says what happened.
func connectContainerd(ctx context.Context, o daemonOptions, log *slog.Logger) (resolver.Sources, func() string, func()) {
	if o.containerdSock == "" {
		log.Info("no containerd socket configured: serving from shoal's own store only")
		return resolver.Sources{}, func() string { return "not configured" }, func() {}
	}
	c, err := containerdplugin.NewLazy(containerdplugin.Config{
		Socket:     o.containerdSock,
		Namespace:  o.containerdNS,
		ContentDir: o.containerdContent,
		Logger:     log,
	})
	if err != nil {
		log.Error("containerd client not usable: serving from shoal's own store only", "socket", o.containerdSock, "err", err)
		return resolver.Sources{}, func() string { return "unusable: " + err.Error() }, func() {}
	}
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if v, _, err := c.Version(pctx); err != nil {
		log.Warn("containerd unreachable: serving from shoal's own store until it answers", "socket", o.containerdSock, "err", err)
	} else {
		log.Info("containerd connected", "socket", o.containerdSock, "version", v, "namespace", o.containerdNS, "content_dir", o.containerdContent)
	}
	status := func() string {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		v, _, err := c.Version(sctx)
		if err != nil {
			return "unreachable: " + err.Error()
		}
		return "connected to " + o.containerdSock + " (containerd " + v + ", namespace " + o.containerdNS + ")"
	}
	return resolver.Sources{Local: c, Images: c}, status, func() { _ = c.Close() }
}
