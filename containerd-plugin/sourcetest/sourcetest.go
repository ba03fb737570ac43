// Package sourcetest is the conformance suite every containerdplugin.Source
// must pass, so the fake and a real containerd are known to behave alike.
package sourcetest

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	containerdplugin "github.com/shoal-dev/shoal/containerd-plugin"
)

// AnnotationImageName is the index.json annotation containerd's importers
// take an image's full name from.
const AnnotationImageName = "io.containerd.image.name"

// Fixture is the content a Source must hold before Run: one image (index
// manifest, config, a layer larger than containerd's 1 MiB read chunks) and
// one loose blob no image refers to.
type Fixture struct {
	ImageName string
	Manifest  ocispec.Descriptor
	Config    ocispec.Descriptor
	Layer     ocispec.Descriptor
	Loose     ocispec.Descriptor
	// Blobs holds the bytes of all four descriptors.
	Blobs map[digest.Digest][]byte
}

// NewFixture builds the same fixture every time.
func NewFixture() *Fixture {
	f := &Fixture{ImageName: "127.0.0.1:5000/test/img:v1", Blobs: map[digest.Digest][]byte{}}
	add := func(mediaType string, b []byte) ocispec.Descriptor {
		d := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b), Size: int64(len(b))}
		f.Blobs[d.Digest] = b
		return d
	}

	rng := rand.New(rand.NewChaCha8([32]byte{'s', 'h', 'o', 'a', 'l'}))
	payload := make([]byte, 3<<20+1234)
	for i := range payload {
		payload[i] = byte(rng.Uint32())
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	_ = tw.WriteHeader(&tar.Header{Name: "data", Mode: 0o644, Size: int64(len(payload)), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg})
	_, _ = tw.Write(payload)
	_ = tw.Close()
	f.Layer = add(ocispec.MediaTypeImageLayer, layer.Bytes())

	f.Config = add(ocispec.MediaTypeImageConfig, mustJSON(ocispec.Image{
		Platform: ocispec.Platform{Architecture: runtime.GOARCH, OS: "linux"},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{f.Layer.Digest}},
	}))
	f.Manifest = add(ocispec.MediaTypeImageManifest, mustJSON(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    f.Config,
		Layers:    []ocispec.Descriptor{f.Layer},
	}))
	f.Loose = add("application/octet-stream", []byte("a loose blob that no image refers to\n"))
	return f
}

// Descriptors lists the fixture's blobs: manifest, config, layer, loose blob.
func (f *Fixture) Descriptors() []ocispec.Descriptor {
	return []ocispec.Descriptor{f.Manifest, f.Config, f.Layer, f.Loose}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// WriteOCIArchive writes the image (not the loose blob) as an OCI layout tar,
// as `ctr images import` reads it, naming the image with AnnotationImageName.
func (f *Fixture) WriteOCIArchive(w io.Writer) error {
	tw := tar.NewWriter(w)
	put := func(name string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	target := f.Manifest
	target.Platform = &ocispec.Platform{Architecture: runtime.GOARCH, OS: "linux"}
	target.Annotations = map[string]string{AnnotationImageName: f.ImageName, ocispec.AnnotationRefName: "v1"}
	if err := put(ocispec.ImageLayoutFile, mustJSON(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})); err != nil {
		return err
	}
	if err := put(ocispec.ImageIndexFile, mustJSON(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{target},
	})); err != nil {
		return err
	}
	for _, d := range []ocispec.Descriptor{f.Config, f.Layer, f.Manifest} {
		if err := put("blobs/"+d.Digest.Algorithm().String()+"/"+d.Digest.Encoded(), f.Blobs[d.Digest]); err != nil {
			return err
		}
	}
	return tw.Close()
}

// Run checks src against f. src must hold f's blobs and its image.
func Run(t *testing.T, src containerdplugin.Source, f *Fixture) {
	t.Helper()
	absent := digest.FromString("shoal sourcetest: nobody stores this")

	t.Run("Ping", func(t *testing.T) {
		if err := src.Ping(t.Context()); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("Stat", func(t *testing.T) {
		for d, b := range f.Blobs {
			size, err := src.Stat(t.Context(), d)
			if err != nil {
				t.Fatalf("Stat(%s): %v", d, err)
			}
			if size != int64(len(b)) {
				t.Errorf("Stat(%s) = %d, want %d", d, size, len(b))
			}
		}
		if _, err := src.Stat(t.Context(), absent); !errdefs.IsNotFound(err) {
			t.Errorf("Stat(absent) = %v, want NotFound", err)
		}
	})

	t.Run("OpenWhole", func(t *testing.T) {
		for d, want := range f.Blobs {
			b, err := src.Open(t.Context(), d)
			if err != nil {
				t.Fatalf("Open(%s): %v", d, err)
			}
			if b.Size() != int64(len(want)) {
				t.Errorf("Size() = %d, want %d", b.Size(), len(want))
			}
			got := make([]byte, len(want))
			n, err := b.ReadAt(got, 0)
			if n != len(want) || (err != nil && !errors.Is(err, io.EOF)) {
				t.Errorf("ReadAt(all) = %d, %v", n, err)
			}
			if digest.FromBytes(got) != d {
				t.Errorf("ReadAt(all) of %s returned other bytes", d)
			}
			if err := b.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		}
	})

	t.Run("ReadAtEdges", func(t *testing.T) {
		want := f.Blobs[f.Layer.Digest]
		size := int64(len(want))
		b, err := src.Open(t.Context(), f.Layer.Digest)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		for _, tc := range []struct {
			name    string
			off     int64
			len     int
			wantN   int
			wantEOF bool
		}{
			{"empty buffer", 5, 0, 0, false},
			{"across 1MiB chunks", 1<<20 - 100, 2<<20 + 200, 2<<20 + 200, false},
			{"last byte", size - 1, 1, 1, false},
			{"past the end", size - 10, 100, 10, true},
			{"at the end", size, 10, 0, true},
			{"beyond the end", size + 10, 10, 0, true},
		} {
			p := make([]byte, tc.len)
			n, err := b.ReadAt(p, tc.off)
			if n != tc.wantN {
				t.Errorf("%s: n = %d, want %d", tc.name, n, tc.wantN)
			}
			if tc.wantEOF != errors.Is(err, io.EOF) || (!tc.wantEOF && err != nil) {
				t.Errorf("%s: err = %v, want EOF %v", tc.name, err, tc.wantEOF)
			}
			if n > 0 && !bytes.Equal(p[:n], want[tc.off:tc.off+int64(n)]) {
				t.Errorf("%s: wrong bytes", tc.name)
			}
		}
		if _, err := b.ReadAt(make([]byte, 1), -1); err == nil {
			t.Error("ReadAt(-1) did not fail")
		}
	})

	t.Run("ReadAtSequentialSmall", func(t *testing.T) {
		want := f.Blobs[f.Layer.Digest]
		b, err := src.Open(t.Context(), f.Layer.Digest)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		got, err := io.ReadAll(io.NewSectionReader(b, 0, b.Size()))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("io.ReadAll: %d bytes, %v; want %d equal bytes", len(got), err, len(want))
		}
		// An odd piece size, so reads straddle every internal boundary.
		got = got[:0]
		p := make([]byte, 33333)
		for off := int64(0); off < b.Size(); {
			n, err := b.ReadAt(p, off)
			got = append(got, p[:n]...)
			off += int64(n)
			if err != nil && !errors.Is(err, io.EOF) || n == 0 {
				t.Fatalf("ReadAt(%d) = %d, %v", off, n, err)
			}
		}
		if !bytes.Equal(got, want) {
			t.Error("33333-byte reads returned other bytes")
		}
	})

	t.Run("ReadAtConcurrent", func(t *testing.T) {
		want := f.Blobs[f.Layer.Digest]
		b, err := src.Open(t.Context(), f.Layer.Digest)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		const piece = 256 << 10
		var wg sync.WaitGroup
		for off := 0; off < len(want); off += piece {
			wg.Go(func() {
				p := make([]byte, min(piece, len(want)-off))
				n, err := b.ReadAt(p, int64(off))
				if n != len(p) || (err != nil && !errors.Is(err, io.EOF)) {
					t.Errorf("ReadAt(%d) = %d, %v", off, n, err)
					return
				}
				if !bytes.Equal(p, want[off:off+n]) {
					t.Errorf("ReadAt(%d): wrong bytes", off)
				}
			})
		}
		wg.Wait()
	})

	t.Run("OpenMissing", func(t *testing.T) {
		if _, err := src.Open(t.Context(), absent); !errdefs.IsNotFound(err) {
			t.Errorf("Open(absent) = %v, want NotFound", err)
		}
		if _, err := src.Open(t.Context(), "sha256:not-hex"); err == nil || errdefs.IsNotFound(err) {
			t.Errorf("Open(invalid digest) = %v, want an error other than NotFound", err)
		}
	})

	t.Run("Walk", func(t *testing.T) {
		seen := map[digest.Digest]int64{}
		err := src.Walk(t.Context(), func(d digest.Digest, size int64) error {
			seen[d] = size
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for d, b := range f.Blobs {
			if size, ok := seen[d]; !ok || size != int64(len(b)) {
				t.Errorf("Walk: %s has size %d (listed %v), want %d", d, size, ok, len(b))
			}
		}

		stop := errors.New("stop")
		calls := 0
		err = src.Walk(t.Context(), func(digest.Digest, int64) error {
			calls++
			return stop
		})
		if !errors.Is(err, stop) || calls != 1 {
			t.Errorf("Walk with fn failing: err %v after %d calls, want stop after 1", err, calls)
		}
	})

	t.Run("ResolveImage", func(t *testing.T) {
		d, err := src.ResolveImage(t.Context(), f.ImageName)
		if err != nil {
			t.Fatal(err)
		}
		if d.Digest != f.Manifest.Digest || d.Size != f.Manifest.Size || d.MediaType != f.Manifest.MediaType {
			t.Errorf("ResolveImage = %+v, want %+v", d, f.Manifest)
		}
		if u, err := time.Parse(time.RFC3339Nano, d.Annotations[containerdplugin.UpdatedAnnotation]); err != nil || time.Since(u) > time.Hour {
			t.Errorf("ResolveImage: update time %q (%v), want the record's recent update", d.Annotations[containerdplugin.UpdatedAnnotation], err)
		}
		if _, err := src.ResolveImage(t.Context(), "127.0.0.1:5000/test/absent:v1"); !errdefs.IsNotFound(err) {
			t.Errorf("ResolveImage(absent) = %v, want NotFound", err)
		}
	})
}

// Actions change a Source the way containerd's users do, so that
// RunEvents can watch what they publish. Each fails t when it fails.
type Actions struct {
	// TagImage records image dst with the target of image src
	// (`ctr images tag`): an /images/create.
	TagImage func(t *testing.T, src, dst string)
	// LabelImage changes an image record's labels (`ctr images label`):
	// an /images/update.
	LabelImage func(t *testing.T, name string)
	// RemoveImage deletes an image record (`ctr images rm`): an
	// /images/delete.
	RemoveImage func(t *testing.T, name string)
	// AddContent stores data as a blob no image refers to
	// (`ctr content ingest`).
	AddContent func(t *testing.T, data []byte)
	// RemoveContent deletes a blob (`ctr content rm`): a /content/delete.
	RemoveContent func(t *testing.T, dgst digest.Digest)
}

// eventWait bounds the wait for one event; it makes no claim on speed.
const eventWait = 30 * time.Second

// RunEvents checks src's Subscribe against the events acts make. src must
// hold f's image, as for Run.
func RunEvents(t *testing.T, src containerdplugin.Source, f *Fixture, act Actions) {
	t.Helper()
	events := subscribe(t, src)
	copyName := f.ImageName + "-events"

	t.Run("ImageCreate", func(t *testing.T) {
		act.TagImage(t, f.ImageName, copyName)
		events.expect(t, containerdplugin.Event{Topic: containerdplugin.TopicImageCreate, Image: copyName})
		blobs, err := containerdplugin.ImageBlobs(t.Context(), src, copyName)
		if err != nil {
			t.Fatal(err)
		}
		want := []digest.Digest{f.Manifest.Digest, f.Config.Digest, f.Layer.Digest}
		if !sameSet(blobs, want) {
			t.Errorf("ImageBlobs(%s) = %v, want %v", copyName, blobs, want)
		}
	})
	t.Run("ImageUpdate", func(t *testing.T) {
		act.LabelImage(t, copyName)
		events.expect(t, containerdplugin.Event{Topic: containerdplugin.TopicImageUpdate, Image: copyName})
	})
	t.Run("ImageDelete", func(t *testing.T) {
		act.RemoveImage(t, copyName)
		events.expect(t, containerdplugin.Event{Topic: containerdplugin.TopicImageDelete, Image: copyName})
		if _, err := containerdplugin.ImageBlobs(t.Context(), src, copyName); !errdefs.IsNotFound(err) {
			t.Errorf("ImageBlobs after the image's deletion = %v, want NotFound", err)
		}
	})
	t.Run("ContentDelete", func(t *testing.T) {
		data := []byte("shoal sourcetest: a blob to delete, " + time.Now().String())
		dgst := digest.FromBytes(data)
		act.AddContent(t, data)
		act.RemoveContent(t, dgst)
		events.expect(t, containerdplugin.Event{Topic: containerdplugin.TopicContentDelete, Digest: dgst})
		if _, err := src.Stat(t.Context(), dgst); !errdefs.IsNotFound(err) {
			t.Errorf("Stat after /content/delete = %v, want NotFound", err)
		}
	})
}

func sameSet(got, want []digest.Digest) bool {
	if len(got) != len(want) {
		return false
	}
	in := map[digest.Digest]bool{}
	for _, d := range want {
		in[d] = true
	}
	for _, d := range got {
		if !in[d] {
			return false
		}
		delete(in, d)
	}
	return true
}

// eventLog is one subscription's events, as they arrive.
type eventLog struct{ ch chan containerdplugin.Event }

// subscribe subscribes to src for the rest of the test and returns once
// src said it is ready.
func subscribe(t *testing.T, src containerdplugin.Source) *eventLog {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &eventLog{ch: make(chan containerdplugin.Event, 256)}
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- src.Subscribe(ctx, func() { close(ready) }, func(ev containerdplugin.Event) {
			select {
			case l.ch <- ev:
			case <-ctx.Done():
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Subscribe ended before it was ready: %v", err)
	case <-time.After(eventWait):
		t.Fatalf("Subscribe not ready after %v", eventWait)
	}
	return l
}

// expect waits for an event with want's topic, image and digest, passing
// over others (such as the /content/create containerd 2.4 publishes).
func (l *eventLog) expect(t *testing.T, want containerdplugin.Event) {
	t.Helper()
	timeout := time.After(eventWait)
	var passed []string
	for {
		select {
		case ev := <-l.ch:
			if ev.Topic == want.Topic && ev.Image == want.Image && ev.Digest == want.Digest {
				if ev.Time.IsZero() || time.Since(ev.Time) > time.Hour || time.Until(ev.Time) > time.Minute {
					t.Errorf("event %s has time %v, want the time it was published", ev.Topic, ev.Time)
				}
				return
			}
			passed = append(passed, ev.Topic+" "+ev.Image+string(ev.Digest))
		case <-timeout:
			t.Fatalf("no %s %s%s within %v; got %q", want.Topic, want.Image, want.Digest, eventWait, passed)
		}
	}
}
