package mirror

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	served   *prometheus.CounterVec
	inflight prometheus.Gauge
	rejected prometheus.Counter
	denied   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_mirror_requests_total",
			Help: "Requests from containerd by kind (manifest, blob, base, other), method and status code.",
		}, []string{"kind", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "shoal_mirror_request_duration_seconds",
			Help:    "Time to answer a request, body included, by kind.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"kind"}),
		served: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_served_bytes_total",
			Help: "Bytes of manifests and blobs sent to containerd, by source (containerd, store, upstream, peer).",
		}, []string{"source"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_mirror_requests_inflight",
			Help: "Requests from containerd being served now, blob bodies still streaming included.",
		}),
		denied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_mirror_requests_denied_total",
			Help: "Requests refused with 403 because the client's address is outside the allowed networks (--mirror-allow; loopback by default).",
		}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_mirror_requests_rejected_total",
			Help: "Requests answered 503 at once because --mirror-max-requests were in flight.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.served, m.inflight, m.rejected, m.denied)
	}
	return m
}
