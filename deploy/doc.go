// Package deploy holds how shoal is installed — the Helm chart in helm/shoal,
// the same rendered as plain manifests in kubernetes/, the systemd unit and
// the Grafana dashboard — and renders the chart with Helm's SDK, for the
// manifests and for the tests that start daemons from what it renders.
package deploy

//go:generate go run ./internal/genmanifests
