package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	containerdplugin "github.com/shoal-dev/shoal/containerd-plugin"
	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/resolver"
)

// ctrdConn is the daemon's link to the node's containerd.
type ctrdConn struct {
	sources resolver.Sources
	status  func() string
	close   func()
	// client is nil when the daemon runs without containerd.
	client *containerdplugin.Client
}

// connectContainerd opens the node's containerd. The daemon runs without it
// when the socket is missing or containerd is down, and picks it up once it
// answers; either way the log says what happened.
func connectContainerd(ctx context.Context, o daemonOptions, log *slog.Logger) ctrdConn {
	if o.containerdSock == "" {
		log.Info("no containerd socket configured: serving from shoal's own store only")
		return ctrdConn{status: func() string { return "not configured" }, close: func() {}}
	}
	c, err := containerdplugin.NewLazy(containerdplugin.Config{
		Socket:     o.containerdSock,
		Namespace:  o.containerdNS,
		ContentDir: o.containerdContent,
		Logger:     log,
	})
	if err != nil {
		log.Error("containerd client not usable: serving from shoal's own store only", "socket", o.containerdSock, "err", err)
		return ctrdConn{status: func() string { return "unusable: " + err.Error() }, close: func() {}}
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
	return ctrdConn{sources: resolver.Sources{Local: c, Images: c}, status: status, close: func() { _ = c.Close() }, client: c}
}

var _ containerdplugin.Advertiser = (*p2p.Node)(nil)

// watchContainerd follows containerd's events so that the mesh learns of
// an image the moment containerd records it, however it was pulled; nil
// without containerd or without the mesh.
func watchContainerd(c *containerdplugin.Client, node *p2p.Node, log *slog.Logger, reg prometheus.Registerer) (*containerdplugin.Watcher, error) {
	if c == nil || node == nil {
		return nil, nil
	}
	w, err := containerdplugin.NewWatcher(c, node, containerdplugin.WatchConfig{Logger: log, Metrics: reg})
	if err != nil {
		return nil, fmt.Errorf("containerd events: %w", err)
	}
	return w, nil
}
