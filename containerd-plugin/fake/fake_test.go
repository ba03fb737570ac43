package fake_test

import (
	"testing"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"go.uber.org/goleak"

	containerdplugin "github.com/shoal-dev/shoal/containerd-plugin"
	"github.com/shoal-dev/shoal/containerd-plugin/fake"
	"github.com/shoal-dev/shoal/containerd-plugin/sourcetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func filled(f *sourcetest.Fixture) *fake.Store {
	s := fake.New()
	for _, d := range f.Descriptors() {
		s.Add(d.MediaType, f.Blobs[d.Digest])
	}
	s.SetImage(f.ImageName, f.Manifest)
	return s
}

func TestConformance(t *testing.T) {
	t.Parallel()
	f := sourcetest.NewFixture()
	sourcetest.Run(t, filled(f), f)
}

// actions drive the fake as ctr drives containerd.
func actions(s *fake.Store) sourcetest.Actions {
	return sourcetest.Actions{
		TagImage: func(t *testing.T, src, dst string) {
			d, err := s.ResolveImage(t.Context(), src)
			if err != nil {
				t.Fatal(err)
			}
			s.SetImage(dst, d)
		},
		LabelImage: func(t *testing.T, name string) {
			d, err := s.ResolveImage(t.Context(), name)
			if err != nil {
				t.Fatal(err)
			}
			s.SetImage(name, d)
		},
		RemoveImage:   func(_ *testing.T, name string) { s.DeleteImage(name) },
		AddContent:    func(_ *testing.T, data []byte) { s.Add("application/octet-stream", data) },
		RemoveContent: func(_ *testing.T, dgst digest.Digest) { s.Delete(dgst) },
	}
}

func TestEventsConformance(t *testing.T) {
	t.Parallel()
	f := sourcetest.NewFixture()
	s := filled(f)
	sourcetest.RunEvents(t, s, f, actions(s))
}

// Going unavailable ends a subscription, as a containerd restart does, and
// a new one made once it is back receives the events that follow.
func TestSubscriptionEndsWhenUnavailable(t *testing.T) {
	t.Parallel()
	f := sourcetest.NewFixture()
	s := filled(f)
	done := make(chan error, 1)
	ready := make(chan struct{})
	go func() {
		done <- s.Subscribe(t.Context(), func() { close(ready) }, func(containerdplugin.Event) {})
	}()
	<-ready
	s.SetUnavailable(true)
	if err := <-done; !errdefs.IsUnavailable(err) {
		t.Errorf("Subscribe after SetUnavailable = %v, want Unavailable", err)
	}
	if err := s.Subscribe(t.Context(), func() { t.Error("ready while unavailable") }, nil); !errdefs.IsUnavailable(err) {
		t.Errorf("Subscribe while unavailable = %v, want Unavailable", err)
	}
}

func TestDeleteIsAMiss(t *testing.T) {
	t.Parallel()
	f := sourcetest.NewFixture()
	s := filled(f)
	b, err := s.Open(t.Context(), f.Loose.Digest)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	s.Delete(f.Loose.Digest)
	if _, err := s.Open(t.Context(), f.Loose.Digest); !errdefs.IsNotFound(err) {
		t.Errorf("Open after Delete = %v, want NotFound", err)
	}
	// Like a file containerd's GC unlinks, an open blob stays readable.
	p := make([]byte, b.Size())
	if _, err := b.ReadAt(p, 0); err != nil {
		t.Errorf("ReadAt after Delete: %v", err)
	}
	s.DeleteImage(f.ImageName)
	if _, err := s.ResolveImage(t.Context(), f.ImageName); !errdefs.IsNotFound(err) {
		t.Errorf("ResolveImage after DeleteImage = %v, want NotFound", err)
	}
}

func TestUnavailable(t *testing.T) {
	t.Parallel()
	f := sourcetest.NewFixture()
	s := filled(f)
	s.SetUnavailable(true)
	checks := map[string]error{
		"Ping": s.Ping(t.Context()),
		"Walk": s.Walk(t.Context(), func(_ digest.Digest, _ int64) error { return nil }),
	}
	_, checks["Open"] = s.Open(t.Context(), f.Layer.Digest)
	_, checks["Stat"] = s.Stat(t.Context(), f.Layer.Digest)
	_, checks["ResolveImage"] = s.ResolveImage(t.Context(), f.ImageName)
	for name, err := range checks {
		if !errdefs.IsUnavailable(err) {
			t.Errorf("%s while unavailable = %v, want Unavailable", name, err)
		}
	}
	s.SetUnavailable(false)
	if err := s.Ping(t.Context()); err != nil {
		t.Errorf("Ping after recovery: %v", err)
	}
}
