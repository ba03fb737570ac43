package resolver

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	lookups        *prometheus.CounterVec // by kind and source (or "miss")
	upstreamFetch  *prometheus.CounterVec // by result
	upstreamBytes  prometheus.Counter
	inflightBlobs  prometheus.Gauge
	verifyFailures prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_resolver_lookups_total",
			Help: "Manifest and blob look-ups by kind and by the source that answered (miss when none did).",
		}, []string{"kind", "source"}),
		upstreamFetch: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_upstream_fetches_total",
			Help: "Blob downloads from upstream registries by result (ok, error, mismatch).",
		}, []string{"result"}),
		upstreamBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_upstream_bytes_total",
			Help: "Blob bytes received from upstream registries.",
		}),
		inflightBlobs: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_inflight_downloads",
			Help: "Blob downloads running now.",
		}),
		verifyFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_verify_failures_total",
			Help: "Downloads whose bytes did not match their digest and were discarded.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.lookups, m.upstreamFetch, m.upstreamBytes, m.inflightBlobs, m.verifyFailures)
	}
	return m
}
