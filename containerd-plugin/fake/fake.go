package fake

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	containerdplugin "github.com/shoal-dev/shoal/containerd-plugin"
	"github.com/shoal-dev/shoal/store"
)

var _ containerdplugin.Source = (*Store)(nil)

// Store holds blobs and image records in memory. It is safe for concurrent
// use. The zero value is not usable; call New.
type Store struct {
	mu          sync.Mutex
	blobs       map[digest.Digest][]byte
	images      map[string]ocispec.Descriptor
	unavailable bool
	subs        map[*subscriber]struct{}
}

// New returns an empty store.
func New() *Store {
	return &Store{
		blobs:  map[digest.Digest][]byte{},
		images: map[string]ocispec.Descriptor{},
		subs:   map[*subscriber]struct{}{},
	}
}

// Add stores a copy of data and returns its descriptor.
func (s *Store) Add(mediaType string, data []byte) ocispec.Descriptor {
	d := digest.FromBytes(data)
	s.mu.Lock()
	s.blobs[d] = bytes.Clone(data)
	s.publish(containerdplugin.Event{Topic: containerdplugin.TopicContentCreate, Digest: d})
	s.mu.Unlock()
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}
}

// Delete removes a blob, as `ctr content rm` does, and publishes
// /content/delete. Readers that already opened it keep reading, as with
// containerd's files.
func (s *Store) Delete(dgst digest.Digest) {
	s.mu.Lock()
	delete(s.blobs, dgst)
	s.publish(containerdplugin.Event{Topic: containerdplugin.TopicContentDelete, Digest: dgst})
	s.mu.Unlock()
}

// Collect removes a blob as containerd's garbage collector does: without
// an event.
func (s *Store) Collect(dgst digest.Digest) {
	s.mu.Lock()
	delete(s.blobs, dgst)
	s.mu.Unlock()
}

// SetImage records an image name pointing at target.
func (s *Store) SetImage(name string, target ocispec.Descriptor) {
	ann := maps.Clone(target.Annotations)
	if ann == nil {
		ann = map[string]string{}
	}
	// As containerd does, remember when the record was last updated.
	ann[containerdplugin.UpdatedAnnotation] = time.Now().UTC().Format(time.RFC3339Nano)
	target.Annotations = ann
	s.mu.Lock()
	topic := containerdplugin.TopicImageCreate
	if _, ok := s.images[name]; ok {
		topic = containerdplugin.TopicImageUpdate
	}
	s.images[name] = target
	s.publish(containerdplugin.Event{Topic: topic, Image: name})
	s.mu.Unlock()
}

// DeleteImage removes an image record and publishes /images/delete.
func (s *Store) DeleteImage(name string) {
	s.mu.Lock()
	if _, ok := s.images[name]; ok {
		delete(s.images, name)
		s.publish(containerdplugin.Event{Topic: containerdplugin.TopicImageDelete, Image: name})
	}
	s.mu.Unlock()
}

// SetUnavailable makes every method fail with errdefs.ErrUnavailable, as the
// real client does while containerd is down, until called with false.
// Going down ends every subscription, as containerd's restart does.
func (s *Store) SetUnavailable(down bool) {
	s.mu.Lock()
	s.unavailable = down
	if down {
		for sub := range s.subs {
			delete(s.subs, sub)
			close(sub.lost)
		}
	}
	s.mu.Unlock()
}

func (s *Store) down() error {
	if s.unavailable {
		return fmt.Errorf("fake containerd: %w", errdefs.ErrUnavailable)
	}
	return nil
}

// Open returns the blob or an error wrapping errdefs.ErrNotFound.
func (s *Store) Open(ctx context.Context, dgst digest.Digest) (store.Blob, error) {
	data, err := s.get(ctx, dgst)
	if err != nil {
		return nil, err
	}
	return blob{bytes.NewReader(data)}, nil
}

// Stat returns the blob's size or an error wrapping errdefs.ErrNotFound.
func (s *Store) Stat(ctx context.Context, dgst digest.Digest) (int64, error) {
	data, err := s.get(ctx, dgst)
	if err != nil {
		return 0, err
	}
	return int64(len(data)), nil
}

func (s *Store) get(ctx context.Context, dgst digest.Digest) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := dgst.Validate(); err != nil {
		return nil, fmt.Errorf("content %q: %w", dgst, errdefs.ErrInvalidArgument)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.down(); err != nil {
		return nil, err
	}
	data, ok := s.blobs[dgst]
	if !ok {
		return nil, fmt.Errorf("content %s: %w", dgst, errdefs.ErrNotFound)
	}
	return data, nil // never written after Add, so safe to share
}

// Walk calls fn for every blob, in no particular order, without holding the
// store's lock, so fn may call the store.
func (s *Store) Walk(ctx context.Context, fn func(dgst digest.Digest, size int64) error) error {
	s.mu.Lock()
	if err := s.down(); err != nil {
		s.mu.Unlock()
		return err
	}
	sizes := make(map[digest.Digest]int64, len(s.blobs))
	for d, b := range s.blobs {
		sizes[d] = int64(len(b))
	}
	s.mu.Unlock()
	for _, d := range slices.Sorted(maps.Keys(sizes)) {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(d, sizes[d]); err != nil {
			return err
		}
	}
	return nil
}

// ResolveImage returns the target of the named image or an error wrapping
// errdefs.ErrNotFound.
func (s *Store) ResolveImage(ctx context.Context, name string) (ocispec.Descriptor, error) {
	if err := ctx.Err(); err != nil {
		return ocispec.Descriptor{}, err
	}
	if name == "" {
		return ocispec.Descriptor{}, fmt.Errorf("image name is empty: %w", errdefs.ErrInvalidArgument)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.down(); err != nil {
		return ocispec.Descriptor{}, err
	}
	d, ok := s.images[name]
	if !ok {
		return ocispec.Descriptor{}, fmt.Errorf("image %q: %w", name, errdefs.ErrNotFound)
	}
	return d, nil
}

// Ping fails only while the store is set unavailable.
func (s *Store) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.down()
}

type blob struct{ *bytes.Reader }

func (blob) Close() error { return nil }

// subscriberBuffer is how many events a subscriber may fall behind by
// before the fake drops its subscription, as a broken stream would.
const subscriberBuffer = 1024

type subscriber struct {
	events chan containerdplugin.Event
	lost   chan struct{} // closed when the store drops the subscription
}

// publish hands ev to every subscriber; s.mu must be held.
func (s *Store) publish(ev containerdplugin.Event) {
	ev.Time = time.Now()
	for sub := range s.subs {
		select {
		case sub.events <- ev:
		default:
			delete(s.subs, sub)
			close(sub.lost)
		}
	}
}

// Subscribe delivers the store's events from the call on, as
// containerdplugin.Client.Subscribe does: ready once subscribed, then fn
// for each event in order, until ctx ends (nil) or the store goes
// unavailable (an error wrapping errdefs.ErrUnavailable).
func (s *Store) Subscribe(ctx context.Context, ready func(), fn func(containerdplugin.Event)) error {
	sub := &subscriber{events: make(chan containerdplugin.Event, subscriberBuffer), lost: make(chan struct{})}
	s.mu.Lock()
	if err := s.down(); err != nil {
		s.mu.Unlock()
		return err
	}
	s.subs[sub] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.subs, sub)
		s.mu.Unlock()
	}()
	ready()
	for {
		// Events already queued go out before the loss is noticed.
		select {
		case ev := <-sub.events:
			fn(ev)
			continue
		default:
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev := <-sub.events:
			fn(ev)
		case <-sub.lost:
			return fmt.Errorf("fake containerd events: %w", errdefs.ErrUnavailable)
		}
	}
}
