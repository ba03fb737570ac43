package p2p

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	members       prometheus.Gauge
	provided      prometheus.Gauge
	provides      *prometheus.CounterVec // by result
	uploads       *prometheus.CounterVec // by result
	uploadsActive prometheus.Gauge
	served        prometheus.Counter
	fetched       prometheus.Counter
	fetches       *prometheus.CounterVec // by result
	avoided       prometheus.Counter
	silenced      prometheus.Counter
	silentHeard   prometheus.Counter
	reconciled    prometheus.Counter
	pullThrough   prometheus.Counter
	// pointedAtReader counts askers pointed at a blob's first reader
	// (swarm.PointAtReader).
	pointedAtReader prometheus.Counter
	badGossip       prometheus.Counter
	openMesh        prometheus.Gauge
	pullRefused     *prometheus.CounterVec // by reason
	preheats        *prometheus.CounterVec // by result
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		members: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_p2p_members",
			Help: "Live members of the cluster with usable metadata, this node included.",
		}),
		provided: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_p2p_blobs_provided",
			Help: "Blobs this node currently announces in the DHT.",
		}),
		provides: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_p2p_provides_total",
			Help: "DHT announcements by result (ok, error).",
		}, []string{"result"}),
		uploads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_p2p_upload_requests_total",
			Help: "Blob requests from peers by result (ok, busy, not_found, bad_request, error).",
		}, []string{"result"}),
		uploadsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_p2p_uploads_active",
			Help: "Blob streams being served now.",
		}),
		served: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_p2p_served_bytes_total",
			Help: "Blob bytes sent to peers.",
		}),
		fetched: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_p2p_fetched_bytes_total",
			Help: "Blob bytes received from peers (before verification).",
		}),
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_p2p_fetches_total",
			Help: "Blob requests to peers by result (ok, busy, not_yet, not_found, bad_request, rate_limited, fetch_yourself, fetching_at, error).",
		}, []string{"result"}),
		pullThrough: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_p2p_pull_through_total",
			Help: "Blobs this node began serving to a peer that asked it to fetch them for the cluster.",
		}),
		pointedAtReader: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_p2p_pointed_at_reader_total",
			Help: "Peers that asked this node to fetch a blob it holds whole, pointed at the peer it streams the blob to first.",
		}),
		badGossip: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_p2p_gossip_messages_refused_total",
			Help: "Gossip messages from members that were not well-formed and were dropped.",
		}),
		openMesh: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_p2p_open_mesh",
			Help: "1 when the mesh runs without a cluster key (--insecure-open-mesh): anyone who reaches the ports can join and fetch.",
		}),
		pullRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_p2p_pull_for_refused_total",
			Help: "Requests from peers to fetch a blob for the cluster that this node refused, by reason (open_mesh: no peer is authenticated; registry: a registry this node does not mirror).",
		}, []string{"reason"}),
		preheats: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_p2p_preheats_served_total",
			Help: "Preheats members asked of this node, by result (ok, failed, busy; refused_registry: a registry this node's configuration does not mirror; refused_open_mesh: no peer is authenticated).",
		}, []string{"result"}),
		avoided: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_p2p_peers_avoided_total",
			Help: "Times a peer was set aside for sending bad bytes.",
		}),
		silenced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_p2p_peers_silent_total",
			Help: "Times a peer whose stream went silent mid-blob was set aside until it answered a ping again.",
		}),
		silentHeard: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_p2p_peers_silent_heard_total",
			Help: "Times a peer that another member found silent mid-blob did not answer this node's ping within 500 ms either, and was set aside here until it answered one.",
		}),
		reconciled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_p2p_reconciles_total",
			Help: "Times this node, having doubted its own side (its link down, or the host too busy to answer probes), exchanged its member state with other members once they answered again.",
		}),
	}
	// Both reasons exist from the start, at zero, for dashboards and alerts.
	m.pullRefused.WithLabelValues("open_mesh")
	m.pullRefused.WithLabelValues("registry")
	if reg != nil {
		for _, c := range []prometheus.Collector{m.members, m.provided, m.provides, m.uploads,
			m.uploadsActive, m.served, m.fetched, m.fetches, m.avoided, m.silenced, m.silentHeard, m.reconciled, m.pullThrough, m.pointedAtReader, m.badGossip, m.openMesh, m.pullRefused, m.preheats} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
