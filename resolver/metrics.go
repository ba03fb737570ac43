package resolver

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	lookups        *prometheus.CounterVec // by kind and source (or "miss")
	downloads      *prometheus.CounterVec // by result
	sourceBytes    *prometheus.CounterVec // by source
	inflightBlobs  prometheus.Gauge
	verifyFailures prometheus.Counter
	prefetched     prometheus.Counter
	backoffUntil   *prometheus.GaugeVec   // by registry
	rateLimited    *prometheus.CounterVec // by registry
	judged         *prometheus.CounterVec // peer streams given up, by reason
	ownLinkExcused prometheus.Counter
	busyPeerKept   prometheus.Counter
	tagLookups     *prometheus.CounterVec // by source
	tagFallbacks   *prometheus.CounterVec // by reason
	tagServed      *prometheus.CounterVec // by result
	coordinated    *prometheus.CounterVec // peers' fetch requests, by answer
	waitedForWant  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_resolver_lookups_total",
			Help: "Manifest and blob look-ups by kind and by the source that answered (miss when none did).",
		}, []string{"kind", "source"}),
		downloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_downloads_total",
			Help: "Blob downloads into shoal's store, from peers or the registry, by result (ok, error, mismatch).",
		}, []string{"result"}),
		sourceBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_fetched_bytes_total",
			Help: "Blob bytes received by downloads, by source (peer, upstream).",
		}, []string{"source"}),
		inflightBlobs: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_inflight_downloads",
			Help: "Blob downloads running now.",
		}),
		verifyFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_verify_failures_total",
			Help: "Downloads whose bytes did not match their digest and were discarded.",
		}),
		prefetched: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_prefetched_blobs_total",
			Help: "Blob downloads started ahead of containerd's requests, from the image manifests it fetched.",
		}),
		backoffUntil: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shoal_registry_backoff_until_seconds",
			Help: "Unix time until which shoal does not ask the registry, which asked it to slow down (429, or 503 with Retry-After); requests that need it are misses, so containerd asks it directly.",
		}, []string{"registry"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_registry_backoffs_total",
			Help: "Back-offs started or extended, by registry: a 429 (or 503 with Retry-After) answered to this node, or a member's word of one.",
		}, []string{"registry"}),
		judged: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_peer_streams_abandoned_total",
			Help: "Streams from peers given up for the next source mid-blob, by reason: silent (a read waited several times its usual wait, at least --peer-stall) or slow (below a fifth of the rate it had shown).",
		}, []string{"reason"}),
		ownLinkExcused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_peer_waits_laid_to_own_link_total",
			Help: "Times a peer that kept this node waiting (a silent stream, an unanswered request or ping) was kept because the node's other peers did not answer a ping in time either: the node's own link was the cause.",
		}),
		busyPeerKept: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_peer_pings_answered_by_bytes_total",
			Help: "Times a peer that kept this node waiting (a silent stream, an unanswered request) and did not answer a ping in time was kept because its streams to this node brought bytes at a fifth or more of the node's best rate meanwhile: its uplink is full, and the ping waited behind its bytes.",
		}),
		tagLookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_tag_lookups_total",
			Help: "Tags resolved for this node's containerd, by the source of the answer: cache (an answer younger than --tag-ttl), designated (the tag's designated node), registry (this node's own registry look-up), mesh (the registry unreachable: containerd's image, the node's last answer, or the members').",
		}, []string{"source"}),
		tagFallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_tag_fallbacks_total",
			Help: "Tag look-ups whose designated node gave no usable answer, so that this node asked the registry itself, by reason (timeout, mismatch: bytes that did not match the digest, error).",
		}, []string{"reason"}),
		tagServed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_tag_peer_requests_total",
			Help: "Tag look-ups this node answered for peers as the tag's designated node, by result (cache, registry, refused: a registry this node does not mirror, error).",
		}, []string{"result"}),
		coordinated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_fetch_requests_coordinated_total",
			Help: "Peers' requests that this node fetch a blob for the cluster, which it neither held nor was downloading, by answer: fetch_for_cluster (its own clients want the blob's repository), fetch_yourself (the first asker fetches it itself), read_from_fetcher (pointed at that first asker).",
		}, []string{"answer"}),
		waitedForWant: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_fetch_requests_waited_for_want_total",
			Help: "Peers' requests that this node fetch a blob for the cluster that it answered only after waiting, up to 300 ms, for its own clients to want the blob: it did not want it yet, and the asker already fetched another blob from the registry.",
		}),
	}
	for _, s := range []string{"fetch_for_cluster", "fetch_yourself", "read_from_fetcher"} {
		m.coordinated.WithLabelValues(s)
	}
	for _, s := range []string{"cache", "designated", "registry", "mesh"} {
		m.tagLookups.WithLabelValues(s)
	}
	for _, s := range []string{"timeout", "mismatch", "error"} {
		m.tagFallbacks.WithLabelValues(s)
	}
	if reg != nil {
		reg.MustRegister(m.lookups, m.downloads, m.sourceBytes, m.inflightBlobs, m.verifyFailures, m.prefetched, m.backoffUntil, m.rateLimited, m.judged, m.ownLinkExcused, m.busyPeerKept,
			m.tagLookups, m.tagFallbacks, m.tagServed, m.coordinated, m.waitedForWant)
	}
	return m
}
