package containerdplugin_test

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"

	containerdplugin "github.com/shoal-dev/shoal/containerd-plugin"
	"github.com/shoal-dev/shoal/containerd-plugin/fake"
	"github.com/shoal-dev/shoal/containerd-plugin/sourcetest"
)

// advertised records what a Watcher told it.
type advertised struct {
	mu        sync.Mutex
	provided  []digest.Digest
	withdrawn []digest.Digest
	rescans   int
}

func (a *advertised) Provide(_ context.Context, d digest.Digest) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.provided = append(a.provided, d)
	return nil
}

func (a *advertised) Withdraw(_ context.Context, d digest.Digest) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.withdrawn = append(a.withdrawn, d)
	return true
}

func (a *advertised) Rescan() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.rescans++
}

func (a *advertised) snapshot() (provided, withdrawn []digest.Digest, rescans int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.provided), slices.Clone(a.withdrawn), a.rescans
}

// eventually waits, boundedly, for cond; it makes no claim on speed.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// watch runs a Watcher over s until the test ends, once it follows events.
func watch(t *testing.T, s *fake.Store, cfg containerdplugin.WatchConfig) (*advertised, *prometheus.Registry) {
	t.Helper()
	adv := &advertised{}
	reg := prometheus.NewRegistry()
	cfg.Metrics = reg
	w, err := containerdplugin.NewWatcher(s, adv, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	// Every subscription starts with a rescan.
	eventually(t, "the watcher subscribes", func() bool { _, _, r := adv.snapshot(); return r >= 1 })
	return adv, reg
}

func TestWatcherAdvertisesAnImageWhenContainerdRecordsIt(t *testing.T) {
	t.Parallel()
	f := sourcetest.NewFixture()
	s := fake.New()
	for _, d := range f.Descriptors() {
		s.Add(d.MediaType, f.Blobs[d.Digest])
	}
	adv, reg := watch(t, s, containerdplugin.WatchConfig{})
	s.SetImage(f.ImageName, f.Manifest)
	want := []digest.Digest{f.Manifest.Digest, f.Config.Digest, f.Layer.Digest}
	eventually(t, "the image's blobs are provided", func() bool {
		p, _, _ := adv.snapshot()
		return !slices.ContainsFunc(want, func(d digest.Digest) bool { return !slices.Contains(p, d) })
	})
	if p, _, _ := adv.snapshot(); slices.Contains(p, f.Loose.Digest) && !slices.Contains(want, f.Loose.Digest) {
		// The fake publishes /content/create on Add, before the watcher
		// subscribed: the loose blob must not come from the image.
		t.Errorf("provided %v: the loose blob is no part of the image", p)
	}
	if got := counter(t, reg, "shoal_containerd_events_total", containerdplugin.TopicImageCreate); got != 1 {
		t.Errorf("events_total{topic=/images/create} = %v, want 1", got)
	}
}

// CRI updates an image record's labels after its pull: an update that
// keeps the target announces nothing again; one that moves it does.
func TestWatcherAnnouncesAnUpdateOnlyForANewTarget(t *testing.T) {
	t.Parallel()
	f := sourcetest.NewFixture()
	s := fake.New()
	for _, d := range f.Descriptors() {
		s.Add(d.MediaType, f.Blobs[d.Digest])
	}
	adv, _ := watch(t, s, containerdplugin.WatchConfig{ImageWorkers: 1})
	count := func(d digest.Digest) int {
		p, _, _ := adv.snapshot()
		n := 0
		for _, x := range p {
			if x == d {
				n++
			}
		}
		return n
	}
	s.SetImage(f.ImageName, f.Manifest)
	eventually(t, "the image is announced", func() bool { return count(f.Layer.Digest) == 1 })
	s.SetImage(f.ImageName, f.Manifest) // labels only
	// One worker: the events are handled in order, so once the next
	// image's blob is announced, the update has been handled.
	s.SetImage("reg.example/loose:v1", f.Loose)
	eventually(t, "the next image is announced", func() bool { return count(f.Loose.Digest) == 1 })
	if n := count(f.Layer.Digest); n != 1 {
		t.Errorf("the layer was announced %d times, want once: an update that kept the target announced it again", n)
	}
	s.SetImage(f.ImageName, f.Loose) // the tag moves
	eventually(t, "the moved tag's target is announced", func() bool { return count(f.Loose.Digest) == 2 })
}

func TestWatcherWithdrawsDeletedContent(t *testing.T) {
	t.Parallel()
	f := sourcetest.NewFixture()
	s := fake.New()
	s.Add(f.Loose.MediaType, f.Blobs[f.Loose.Digest])
	adv, _ := watch(t, s, containerdplugin.WatchConfig{})
	s.Delete(f.Loose.Digest)
	eventually(t, "the deleted blob is withdrawn", func() bool {
		_, w, _ := adv.snapshot()
		return slices.Equal(w, []digest.Digest{f.Loose.Digest})
	})
}

// Garbage collection publishes nothing: an image's deletion is followed by
// a rescan at once and another once the collector has run.
func TestWatcherRescansAfterAnImageIsDeleted(t *testing.T) {
	t.Parallel()
	f := sourcetest.NewFixture()
	s := fake.New()
	for _, d := range f.Descriptors() {
		s.Add(d.MediaType, f.Blobs[d.Digest])
	}
	s.SetImage(f.ImageName, f.Manifest)
	adv, _ := watch(t, s, containerdplugin.WatchConfig{GCDelay: 100 * time.Millisecond})
	_, _, before := adv.snapshot()
	s.DeleteImage(f.ImageName)
	eventually(t, "two rescans after the deletion", func() bool { _, _, r := adv.snapshot(); return r >= before+2 })
}

// A containerd restart ends the stream; the watcher subscribes again,
// rescans for what it missed, counts the reconnect, and follows the events
// that come after.
func TestWatcherResubscribesAfterContainerdRestarts(t *testing.T) {
	t.Parallel()
	f := sourcetest.NewFixture()
	s := fake.New()
	for _, d := range f.Descriptors() {
		s.Add(d.MediaType, f.Blobs[d.Digest])
	}
	adv, reg := watch(t, s, containerdplugin.WatchConfig{ResubscribeMin: time.Millisecond, ResubscribeMax: 10 * time.Millisecond})
	_, _, before := adv.snapshot()
	s.SetUnavailable(true)
	time.Sleep(50 * time.Millisecond) // a few failed attempts
	s.SetUnavailable(false)
	eventually(t, "the watcher subscribes again and rescans", func() bool { _, _, r := adv.snapshot(); return r > before })
	if got := counter(t, reg, "shoal_containerd_event_reconnects_total", ""); got != 1 {
		t.Errorf("reconnects_total = %v, want 1", got)
	}
	s.SetImage(f.ImageName, f.Manifest)
	eventually(t, "the image created after the restart is provided", func() bool {
		p, _, _ := adv.snapshot()
		return slices.Contains(p, f.Layer.Digest)
	})
}

// counter reads the counter registered as name (with that topic label
// when topic is set).
func counter(t *testing.T, reg *prometheus.Registry, name, topic string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := topic == ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "topic" && l.GetValue() == topic {
					match = true
				}
			}
			if match {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no metric %s{topic=%q}", name, topic)
	return 0
}

// ImageBlobs follows an index to what containerd holds: another platform's
// manifest it never fetched, and a layer the collector removed, are left
// out; the same blob twice is listed once.
func TestImageBlobsListsWhatIsHeld(t *testing.T) {
	t.Parallel()
	f := sourcetest.NewFixture()
	s := fake.New()
	for _, d := range f.Descriptors() {
		s.Add(d.MediaType, f.Blobs[d.Digest])
	}
	absent := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("another platform"), Size: 16}
	idx, err := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{f.Manifest, absent, f.Manifest},
	})
	if err != nil {
		t.Fatal(err)
	}
	index := s.Add(ocispec.MediaTypeImageIndex, idx)
	s.SetImage("reg.example/app:v1", index)

	for _, tc := range []struct {
		name    string
		collect []digest.Digest
		want    []digest.Digest
	}{
		{"everything held", nil, []digest.Digest{index.Digest, f.Manifest.Digest, f.Config.Digest, f.Layer.Digest}},
		{"layer collected", []digest.Digest{f.Layer.Digest}, []digest.Digest{index.Digest, f.Manifest.Digest, f.Config.Digest}},
	} {
		for _, d := range tc.collect {
			s.Collect(d)
		}
		got, err := containerdplugin.ImageBlobs(t.Context(), s, "reg.example/app:v1")
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: ImageBlobs = %v, want %v", tc.name, got, tc.want)
		}
	}
	if _, err := containerdplugin.ImageBlobs(t.Context(), s, "reg.example/absent:v1"); !errdefs.IsNotFound(err) {
		t.Errorf("ImageBlobs(absent) = %v, want NotFound", err)
	}
}
