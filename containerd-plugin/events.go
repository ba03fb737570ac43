package containerdplugin

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	eventtypes "github.com/containerd/containerd/api/events"
	eventsapi "github.com/containerd/containerd/api/services/events/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Topics of the containerd events Subscribe delivers, as containerd names
// them. containerd 1.6 publishes no TopicContentCreate (2.4 does); no release
// publishes anything when garbage collection removes content.
const (
	TopicImageCreate   = "/images/create"
	TopicImageUpdate   = "/images/update"
	TopicImageDelete   = "/images/delete"
	TopicContentCreate = "/content/create"
	TopicContentDelete = "/content/delete"
)

// Event is one change to the namespace's images or content.
type Event struct {
	// Topic is one of the Topic constants.
	Topic string
	// Image names the image of an image event, as containerd stores it.
	Image string
	// Digest names the blob of a content event.
	Digest digest.Digest
	// Time is when containerd published the event.
	Time time.Time
}

// Subscribe delivers the namespace's image and content events to fn, in
// the order containerd publishes them, until ctx ends or the stream breaks
// (containerd stopped: an error wrapping errdefs.ErrUnavailable). ready is
// called once containerd is known to deliver: Subscribe publishes a marker
// event of its own and waits for it, so an event published after ready
// returns reaches fn. fn and ready run on Subscribe's goroutine.
func (c *Client) Subscribe(ctx context.Context, ready func(), fn func(Event)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// While containerd is away the connection retries on gRPC's backoff,
	// which grows to seconds; a caller subscribing again wants the attempt
	// now, on its own backoff.
	if c.conn.GetState() == connectivity.TransientFailure {
		c.conn.ResetConnectBackoff()
	}
	var tok [8]byte
	_, _ = rand.Read(tok[:])
	marker := "/shoal/subscribed/" + hex.EncodeToString(tok[:])
	ns := fmt.Sprintf("namespace==%q", c.cfg.Namespace)
	stream, err := eventsapi.NewEventsClient(c.conn).Subscribe(ctx, &eventsapi.SubscribeRequest{Filters: []string{
		ns + `,topic~="^/images/"`,
		ns + `,topic~="^/content/"`,
		ns + fmt.Sprintf(",topic==%q", marker),
	}})
	if err != nil {
		return c.rpcErr(err, "subscribe to containerd events")
	}
	// The marker goes out beside the stream, again until it comes back: one
	// published before containerd registered the subscription is lost. If
	// it cannot go out, the stream is ended and Subscribe returns why.
	var pubErr error
	seen := make(chan struct{})
	published := make(chan struct{})
	go func() {
		defer close(published)
		if pubErr = c.publishMarker(ctx, marker, seen); pubErr != nil {
			cancel()
		}
	}()
	defer func() { <-published }()
	waiting := true
	for {
		env, err := stream.Recv()
		if err != nil {
			cancel()
			<-published
			if pubErr != nil {
				return pubErr
			}
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("containerd events: stream ended: %w", io.ErrUnexpectedEOF)
			}
			return c.rpcErr(err, "containerd events")
		}
		if env.GetTopic() == marker {
			if waiting {
				waiting = false
				close(seen)
				<-published
				ready()
			}
			continue
		}
		ev, ok := decodeEvent(env)
		if !ok {
			c.log.Debug("ignoring a containerd event", "topic", env.GetTopic())
			continue
		}
		fn(ev)
	}
}

// markerEvery is how often the subscription's marker is published until
// it comes back.
const markerEvery = 50 * time.Millisecond

// publishMarker publishes topic until seen is closed or ctx ends.
func (c *Client) publishMarker(ctx context.Context, topic string, seen <-chan struct{}) error {
	payload, err := anypb.New(&emptypb.Empty{})
	if err != nil {
		return err
	}
	tick := time.NewTicker(markerEvery)
	defer tick.Stop()
	for {
		_, err := eventsapi.NewEventsClient(c.conn).Publish(ctx, &eventsapi.PublishRequest{Topic: topic, Event: payload})
		if err != nil && ctx.Err() == nil {
			return c.rpcErr(err, "publish a containerd event")
		}
		select {
		case <-seen:
			return nil
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// decodeEvent turns an envelope into an Event; false for a topic shoal
// does not follow or a payload it cannot read.
func decodeEvent(env *types.Envelope) (Event, bool) {
	ev := Event{Topic: env.GetTopic(), Time: env.GetTimestamp().AsTime()}
	raw := env.GetEvent().GetValue()
	switch ev.Topic {
	case TopicImageCreate:
		var m eventtypes.ImageCreate
		if proto.Unmarshal(raw, &m) != nil {
			return ev, false
		}
		ev.Image = m.Name
	case TopicImageUpdate:
		var m eventtypes.ImageUpdate
		if proto.Unmarshal(raw, &m) != nil {
			return ev, false
		}
		ev.Image = m.Name
	case TopicImageDelete:
		var m eventtypes.ImageDelete
		if proto.Unmarshal(raw, &m) != nil {
			return ev, false
		}
		ev.Image = m.Name
	case TopicContentCreate:
		var m eventtypes.ContentCreate
		if proto.Unmarshal(raw, &m) != nil {
			return ev, false
		}
		ev.Digest = digest.Digest(m.Digest)
	case TopicContentDelete:
		var m eventtypes.ContentDelete
		if proto.Unmarshal(raw, &m) != nil {
			return ev, false
		}
		ev.Digest = digest.Digest(m.Digest)
	default:
		return ev, false
	}
	if ev.Digest != "" && ev.Digest.Validate() != nil {
		return ev, false
	}
	return ev, ev.Image != "" || ev.Digest != ""
}
