package containerdplugin

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
)

// Advertiser is what a Watcher tells about the node's content. p2p.Node
// implements it. Its methods may be called from several goroutines.
type Advertiser interface {
	// Provide announces that the node holds dgst.
	Provide(ctx context.Context, dgst digest.Digest) error
	// Withdraw stops announcing dgst unless the node still holds it, and
	// reports whether it stopped.
	Withdraw(ctx context.Context, dgst digest.Digest) bool
	// Rescan asks for a walk of the node's content soon, without waiting
	// for it: it finds what no event tells.
	Rescan()
}

// EventSource is the part of containerd a Watcher reads: its events, and
// the images and blobs they name. Client and fake.Store implement it.
type EventSource interface {
	imageContent
	Subscribe(ctx context.Context, ready func(), fn func(Event)) error
}

// Defaults of WatchConfig.
const (
	DefaultResubscribeMin = 100 * time.Millisecond
	DefaultResubscribeMax = time.Second
	DefaultGCDelay        = 5 * time.Second
	DefaultProvideWorkers = 8
	DefaultImageWorkers   = 4
)

// WatchConfig holds a Watcher's settings; zero fields take the defaults.
type WatchConfig struct {
	// ResubscribeMin and ResubscribeMax bound the wait before subscribing
	// again once the event stream broke (containerd restarted or stopped).
	// The wait doubles at each failed attempt and starts over once events
	// flow. Zero means 100 ms and 1 s: a restarted containerd answers again
	// within a second or two, an attempt costs one connection to a local
	// socket, and events it publishes before the watcher is back are found
	// by the rescan that follows every subscription.
	ResubscribeMin, ResubscribeMax time.Duration
	// GCDelay is how long after an image's deletion the node's content is
	// walked once more: containerd's garbage collector removes the blobs
	// the image alone held a moment after the record goes, and publishes
	// nothing when it does. Zero means 5 s.
	GCDelay time.Duration
	// ProvideWorkers bounds the announcements one image event makes at
	// once. Zero means 8.
	ProvideWorkers int
	// ImageWorkers bounds the image events handled at once; more wait, and
	// the event stream with them. One handles them in the order containerd
	// published them. Zero means 4.
	ImageWorkers int
	// Logger receives the watcher's logs; nil discards them.
	Logger *slog.Logger
	// Metrics registers the watcher's collectors; nil registers none.
	Metrics prometheus.Registerer
}

// Watcher follows containerd's image and content events and keeps the
// node's announcements in step with them: an image's blobs are announced
// as soon as containerd records the image, and a blob is withdrawn when
// containerd deletes it and the node holds no other copy.
type Watcher struct {
	src EventSource
	adv Advertiser
	cfg WatchConfig
	log *slog.Logger

	events     *prometheus.CounterVec // by topic
	reconnects prometheus.Counter
	subscribed prometheus.Gauge

	// images holds a token per image event being handled.
	images   chan struct{}
	inflight sync.WaitGroup

	mu      sync.Mutex
	gcTimer *time.Timer // the pending rescan after an image deletion
	stopped bool
	// announced is the target each image record had when its blobs were
	// last all announced: CRI updates a record's labels after a pull, and
	// an update that kept the target announces nothing new.
	announced map[string]digest.Digest
}

// NewWatcher returns a watcher of src that tells adv; Run starts it.
func NewWatcher(src EventSource, adv Advertiser, cfg WatchConfig) (*Watcher, error) {
	if src == nil || adv == nil {
		return nil, fmt.Errorf("watcher needs an event source and an advertiser: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.ResubscribeMin < 0 || cfg.ResubscribeMax < 0 || cfg.GCDelay < 0 || cfg.ProvideWorkers < 0 || cfg.ImageWorkers < 0 {
		return nil, fmt.Errorf("watcher settings must not be negative: %w", errdefs.ErrInvalidArgument)
	}
	cfg.ResubscribeMin = cmpOr(cfg.ResubscribeMin, DefaultResubscribeMin)
	cfg.ResubscribeMax = max(cmpOr(cfg.ResubscribeMax, DefaultResubscribeMax), cfg.ResubscribeMin)
	cfg.GCDelay = cmpOr(cfg.GCDelay, DefaultGCDelay)
	cfg.ProvideWorkers = cmpOr(cfg.ProvideWorkers, DefaultProvideWorkers)
	cfg.ImageWorkers = cmpOr(cfg.ImageWorkers, DefaultImageWorkers)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	w := &Watcher{
		src: src, adv: adv, cfg: cfg, log: cfg.Logger,
		images:    make(chan struct{}, cfg.ImageWorkers),
		announced: map[string]digest.Digest{},
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_containerd_events_total",
			Help: "containerd image and content events received, by topic.",
		}, []string{"topic"}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_containerd_event_reconnects_total",
			Help: "Times the containerd event stream was subscribed to again after it broke.",
		}),
		subscribed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_containerd_events_subscribed",
			Help: "1 while containerd's events reach shoal, 0 while shoal is subscribing again.",
		}),
	}
	for _, t := range []string{TopicImageCreate, TopicImageUpdate, TopicImageDelete, TopicContentCreate, TopicContentDelete} {
		w.events.WithLabelValues(t)
	}
	if cfg.Metrics != nil {
		for _, c := range []prometheus.Collector{w.events, w.reconnects, w.subscribed} {
			if err := cfg.Metrics.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return w, nil
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Run follows the events until ctx ends, subscribing again with backoff
// whenever the stream breaks. After every subscription it asks for a
// rescan, which finds what changed while no event could arrive.
func (w *Watcher) Run(ctx context.Context) error {
	defer w.stop()
	wait := w.cfg.ResubscribeMin
	var (
		everUp    bool
		downSince time.Time
		attempts  int
	)
	for {
		var up atomic.Bool
		err := w.src.Subscribe(ctx, func() {
			up.Store(true)
			w.subscribed.Set(1)
			if !everUp {
				w.log.Info("following containerd's image and content events")
			} else {
				w.reconnects.Inc()
				w.log.Info("containerd events resumed: rescanning for what changed meanwhile",
					"down_for", time.Since(downSince).Round(time.Millisecond), "attempts", attempts)
			}
			everUp, attempts, wait = true, 0, w.cfg.ResubscribeMin
			w.adv.Rescan()
		}, func(ev Event) { w.handle(ctx, ev) })
		w.subscribed.Set(0)
		if ctx.Err() != nil {
			return nil
		}
		attempts++
		switch {
		case up.Load():
			downSince = time.Now()
			w.log.Warn("containerd event stream lost: subscribing again with backoff; the rescan covers the gap", "err", err)
		case attempts == 1 && !everUp:
			w.log.Warn("cannot follow containerd events yet: retrying with backoff", "err", err)
		default:
			w.log.Debug("containerd events still unavailable", "err", err, "attempts", attempts, "next_in", wait)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, w.cfg.ResubscribeMax)
	}
}

// stop cancels the pending rescan and waits for the image events being
// handled.
func (w *Watcher) stop() {
	w.mu.Lock()
	w.stopped = true
	if w.gcTimer != nil {
		w.gcTimer.Stop()
	}
	w.mu.Unlock()
	w.inflight.Wait()
}

// handle acts on one event. It runs on the subscription's goroutine, so
// image events, which may take a while to announce, go to their own.
func (w *Watcher) handle(ctx context.Context, ev Event) {
	w.events.WithLabelValues(ev.Topic).Inc()
	switch ev.Topic {
	case TopicImageCreate, TopicImageUpdate:
		select {
		case w.images <- struct{}{}:
		case <-ctx.Done():
			return
		}
		w.inflight.Go(func() {
			defer func() { <-w.images }()
			w.advertiseImage(ctx, ev)
		})
	case TopicContentCreate:
		if err := w.adv.Provide(ctx, ev.Digest); err != nil && ctx.Err() == nil {
			w.log.Debug("cannot announce new content yet: rescanning", "digest", ev.Digest, "err", err)
			w.adv.Rescan()
		}
	case TopicContentDelete:
		if w.adv.Withdraw(ctx, ev.Digest) {
			w.log.Debug("withdrew deleted content", "digest", ev.Digest)
		}
	case TopicImageDelete:
		w.adv.Rescan()
		w.mu.Lock()
		delete(w.announced, ev.Image)
		if !w.stopped {
			if w.gcTimer != nil {
				w.gcTimer.Stop()
			}
			w.gcTimer = time.AfterFunc(w.cfg.GCDelay, w.adv.Rescan)
		}
		w.mu.Unlock()
	}
}

// advertiseImage announces every blob of the image that containerd holds.
func (w *Watcher) advertiseImage(ctx context.Context, ev Event) {
	target, err := w.src.ResolveImage(ctx, ev.Image)
	if err == nil && ev.Topic == TopicImageUpdate {
		w.mu.Lock()
		same := w.announced[ev.Image] == target.Digest
		w.mu.Unlock()
		if same {
			return
		}
	}
	blobs, err := ImageBlobs(ctx, w.src, ev.Image)
	if err != nil {
		if errdefs.IsNotFound(err) && len(blobs) == 0 || ctx.Err() != nil {
			return // deleted since, or shutting down
		}
		w.log.Warn("cannot read an image's blobs: rescanning", "image", ev.Image, "err", err)
		w.adv.Rescan()
		if len(blobs) == 0 {
			return
		}
	}
	var (
		mu      sync.Mutex
		failed  int
		lastErr error
	)
	g := new(errgroup.Group)
	g.SetLimit(w.cfg.ProvideWorkers)
	for _, d := range blobs {
		g.Go(func() error {
			if err := w.adv.Provide(ctx, d); err != nil {
				mu.Lock()
				failed, lastErr = failed+1, err
				mu.Unlock()
			}
			return nil
		})
	}
	_ = g.Wait()
	if ctx.Err() != nil {
		return
	}
	if failed > 0 {
		w.log.Info("some of an image's blobs could not be announced yet: rescanning",
			"image", ev.Image, "blobs", len(blobs), "failed", failed, "err", lastErr)
		w.adv.Rescan()
		return
	}
	w.mu.Lock()
	w.announced[ev.Image] = target.Digest
	w.mu.Unlock()
	w.log.Info("announced an image's blobs", "image", ev.Image, "topic", ev.Topic, "blobs", len(blobs),
		"after", time.Since(ev.Time).Round(time.Millisecond))
}
