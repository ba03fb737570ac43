package main

import (
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"net/http/pprof"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/pulls"
)

// The status page: plain HTML, CSS and JavaScript, embedded so that it
// works with no network. It polls /live while it is open and visible; the
// daemon does nothing for it otherwise.
//
//go:embed ui
var uiFiles embed.FS

// statusViews is what the status address serves besides /status.
type statusViews struct {
	status func() daemonStatus
	// pulls are the records of the last pulls; nil with --pull-history 0.
	pulls *pulls.Log
	// page serves the status page at / (--status-page).
	page bool
	// pprof serves Go's profiles at /debug/pprof/ (--pprof).
	pprof bool
	// metrics is gathered for the page's counters.
	metrics prometheus.Gatherer
	// backoffs lists the registries backed off now.
	backoffs func() map[string]time.Time
	maxStore int64
	// preheat serves POST /preheat (shoal preheat).
	preheat http.HandlerFunc
	// pins serves POST /pin, POST /unpin and GET /pins (shoal pin, unpin,
	// pins); nil without a mesh.
	pins *pinKeeper
}

// liveStatus is what /live answers: everything the page shows.
type liveStatus struct {
	Now       time.Time         `json:"now"`
	Status    daemonStatus      `json:"status"`
	StoreMax  int64             `json:"store_max_bytes"`
	Transfers []pulls.Transfer  `json:"transfers"`
	Pulls     []pulls.Pull      `json:"pulls"`
	Counters  map[string]uint64 `json:"counters"`
	Backoffs  []backoffStatus   `json:"backoffs"`
	// Recording says whether pulls are recorded (--pull-history).
	Recording bool `json:"recording"`
}

type backoffStatus struct {
	Registry string    `json:"registry"`
	Until    time.Time `json:"until"`
}

// pagePulls is how many pulls /live carries; /pulls has them all.
const pagePulls = 10

func (v statusViews) handle(mux *http.ServeMux) {
	if v.pprof {
		handleProfiles(mux)
	}
	if v.preheat != nil {
		mux.HandleFunc("POST /preheat", v.preheat)
	}
	if v.pins != nil {
		mux.HandleFunc("POST /pin", v.pins.servePin)
		mux.HandleFunc("POST /unpin", v.pins.serveUnpin)
		mux.HandleFunc("GET /pins", v.pins.servePins)
	}
	mux.HandleFunc("GET /pulls", func(w http.ResponseWriter, r *http.Request) {
		if v.pulls == nil {
			http.Error(w, "pull records are off (--pull-history 0)", http.StatusNotFound)
			return
		}
		name := namer(v.status())
		if image := r.URL.Query().Get("image"); image != "" {
			p, ok := v.pulls.Latest(image, name)
			if !ok {
				http.Error(w, "no pull of "+image+" recorded", http.StatusNotFound)
				return
			}
			writeJSON(w, p)
			return
		}
		writeJSON(w, v.pulls.Pulls(name))
	})
	if !v.page {
		return
	}
	mux.HandleFunc("GET /live", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, v.live())
	})
	ui, _ := fs.Sub(uiFiles, "ui")
	static := http.FileServerFS(ui)
	mux.Handle("GET /ui/", http.StripPrefix("/ui/", static))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:")
		http.ServeFileFS(w, r, ui, "index.html")
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}

// namer names peers by the member names the mesh of st knows them under.
func namer(st daemonStatus) pulls.Namer {
	if st.Mesh == nil {
		return nil
	}
	names := make(map[string]string, len(st.Mesh.Members))
	for _, m := range st.Mesh.Members {
		if m.ID != "" {
			names[m.ID.String()] = m.Name
		}
	}
	return func(p string) string { return names[p] }
}

func (v statusViews) live() liveStatus {
	st := v.status()
	ls := liveStatus{Now: time.Now(), Status: st, StoreMax: v.maxStore, Counters: v.counters(), Recording: v.pulls != nil,
		Transfers: []pulls.Transfer{}, Pulls: []pulls.Pull{}, Backoffs: []backoffStatus{}}
	if v.pulls != nil {
		name := namer(st)
		ls.Transfers = v.pulls.Transfers(name)
		all := v.pulls.Pulls(name)
		ls.Pulls = all[:min(len(all), pagePulls)]
	}
	if v.backoffs != nil {
		for reg, until := range v.backoffs() {
			ls.Backoffs = append(ls.Backoffs, backoffStatus{Registry: reg, Until: until})
		}
		slices.SortFunc(ls.Backoffs, func(a, b backoffStatus) int { return a.Until.Compare(b.Until) })
	}
	return ls
}

// counters are the metrics the page shows, by name and label: bytes
// fetched by source, served to containerd by source, and blob look-ups
// by source.
func (v statusViews) counters() map[string]uint64 {
	out := map[string]uint64{}
	if v.metrics == nil {
		return out
	}
	mfs, err := v.metrics.Gather()
	if err != nil {
		return out
	}
	for _, mf := range mfs {
		var prefix string
		switch mf.GetName() {
		case "shoal_fetched_bytes_total":
			prefix = "fetched_"
		case "shoal_served_bytes_total":
			prefix = "served_"
		case "shoal_resolver_lookups_total":
			prefix = "lookups_"
		default:
			continue
		}
		for _, m := range mf.GetMetric() {
			key := prefix
			ok := true
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "source":
					key += l.GetValue()
				case "kind":
					ok = l.GetValue() == "blob"
				}
			}
			if ok {
				out[key] += uint64(m.GetCounter().GetValue())
			}
		}
	}
	return out
}

// handleProfiles serves Go's profiles under /debug/pprof/, as
// net/http/pprof does on the default mux, which the daemon never serves.
func handleProfiles(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}
