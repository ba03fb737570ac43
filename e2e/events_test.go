package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/bench/lab"
)

// advertiseBound is how soon after containerd finished a pull by itself
// its node must have announced the image's blobs.
const advertiseBound = 2 * time.Second

// TestEventsAdvertise checks that an image containerd pulls around shoal
// is announced to the mesh from containerd's events, not by the rescan
// (--rescan-interval 1h): node A's containerd pulls straight from the
// registry; A announces the image's blobs within 2 s of the pull's end;
// node B then pulls the image through shoal and gets every blob from A,
// none from the registry. Then A's containerd restarts, and the same holds
// for another image; and once A deletes the first image, A stops announcing
// its blobs. Once with containerd 1.6 on both nodes, once with 2.4.
func TestEventsAdvertise(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	for i, flavor := range flavors {
		// One after the other: the bound is on the daemons' reaction, and
		// two labs at once on a small host would measure the host.
		t.Run(string(flavor), func(t *testing.T) { testEventsAdvertise(t, i, flavor) })
	}
}

func testEventsAdvertise(t *testing.T, i int, flavor lab.Flavor) {
	ctx := t.Context()
	log := testLogger(t)
	net, err := lab.NewNetwork(ctx, netName(t, fmt.Sprintf("ev%d", i)), 3,
		lab.NetworkConfig{Subnet: fmt.Sprintf("10.213.%d.0/24", 40+i), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	cleanup(t, net.Close)
	regHost := net.Hosts[0]
	reg, err := lab.StartRegistry(ctx, lab.RegistryConfig{Netns: regHost.Netns, Addr: regHost.Addr(5000), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	cleanup(t, reg.Close)
	var images []lab.Image
	for _, repo := range []string{"events/first", "events/second"} {
		im, err := lab.PushImage(ctx, reg.Addr(), repo, "v1", 3, 2<<20, lab.WithTransport(lab.TransportIn(regHost.Netns)))
		if err != nil {
			t.Fatal(err)
		}
		images = append(images, im)
	}

	key := writeKey(t)
	seeds := []string{net.Hosts[1].IP.String() + ":7502", net.Hosts[2].IP.String() + ":7502"}
	a := startMeshNode(t, "a", net.Hosts[1], flavor, reg.Addr(), seeds, key, "--rescan-interval", "1h")
	b := startMeshNode(t, "b", net.Hosts[2], flavor, reg.Addr(), seeds, key, "--rescan-interval", "1h")
	waitFor(t, "the two nodes connect", 30*time.Second, func() error {
		for _, n := range []*meshNode{a, b} {
			st := n.status(t)
			if st.LiveMembers != 2 || len(st.Members) != 1 || !st.Members[0].Connected {
				return fmt.Errorf("%s: %d live members, %+v", n.name, st.LiveMembers, st.Members)
			}
		}
		return nil
	})

	t.Run("pulled around shoal", func(t *testing.T) { pullAroundShoal(t, reg, a, b, images[0]) })
	if t.Failed() {
		return
	}
	t.Run("after containerd restarts", func(t *testing.T) {
		a.ctrd.Stop()
		if err := a.ctrd.Start(ctx); err != nil {
			t.Fatal(err)
		}
		pullAroundShoal(t, reg, a, b, images[1])
		waitMetric(t, a.shoal, "shoal_containerd_event_reconnects_total", nil, 1)
		logged, err := os.ReadFile(a.shoal.LogPath())
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(logged), "containerd event stream lost") || !strings.Contains(string(logged), "containerd events resumed") {
			t.Errorf("a's log does not say that it lost containerd's events and resumed them:\n%s", tailFile(a.shoal.LogPath(), 30))
		}
	})
	if t.Failed() {
		return
	}
	// Garbage collection publishes no event: the image's deletion is
	// followed by rescans, which find its blobs gone.
	t.Run("image deleted", func(t *testing.T) { deleteImage(t, reg, a, images[0]) })
}

// deleteImage has a's containerd delete im and collect its blobs, and
// checks that a stops announcing them.
func deleteImage(t *testing.T, reg *lab.Registry, a *meshNode, im lab.Image) {
	before := a.status(t).BlobsProvided
	if err := a.ctrd.RemoveImage(t.Context(), reg.Addr()+"/"+im.Repo+":"+im.Tag); err != nil {
		t.Fatal(err)
	}
	removed := time.Now()
	want := before - len(im.Blobs()) - 1
	waitFor(t, "a withdraws the deleted image's blobs", 30*time.Second, func() error {
		if got := a.status(t).BlobsProvided; got != want {
			return fmt.Errorf("%d blobs provided, want %d", got, want)
		}
		return nil
	})
	t.Logf("a withdrew %s's %d blobs %v after ctr images rm --sync returned", im.Repo, len(im.Blobs())+1, time.Since(removed).Round(time.Millisecond))
}

// pullAroundShoal has a's containerd pull im straight from the registry,
// checks that a announced its blobs within advertiseBound, then has b pull
// im through shoal and checks that b's blobs came from a.
func pullAroundShoal(t *testing.T, reg *lab.Registry, a, b *meshNode, im lab.Image) {
	ctx := t.Context()
	ref := reg.Addr() + "/" + im.Repo + ":" + im.Tag
	servedBefore := a.metric(t, "shoal_served_bytes_total", nil)
	providedBefore := a.status(t).BlobsProvided
	// No --hosts-dir: ctr (1.6) or the daemon's transfer service (2.4)
	// fetches from the registry itself.
	if out, err := a.ctrd.Ctr(ctx, "images", "pull", "--plain-http", ref); err != nil {
		t.Fatalf("a: direct pull: %v\n%s", err, out)
	}
	pulled := time.Now()
	want := providedBefore + len(im.Blobs()) + 1 // and the manifest
	var delay time.Duration
	waitFor(t, "a announces the image's blobs", 30*time.Second, func() error {
		if got := a.status(t).BlobsProvided; got < want {
			return fmt.Errorf("%d blobs provided, want %d", got, want)
		}
		delay = time.Since(pulled)
		return nil
	})
	t.Logf("a (containerd %s) had announced %s's %d blobs %v after ctr's pull returned, at the latest",
		a.ctrd.Flavor(), im.Repo, len(im.Blobs())+1, delay.Round(time.Millisecond))
	if delay > advertiseBound {
		t.Errorf("a announced the blobs %v after the pull finished, want within %v", delay, advertiseBound)
	}
	if got := a.metric(t, "shoal_served_bytes_total", nil); got != servedBefore {
		t.Fatalf("a's shoal served %v bytes during the direct pull: the pull did not go around shoal", got-servedBefore)
	}

	reqsBefore, err := reg.Requests()
	if err != nil {
		t.Fatal(err)
	}
	fetchedBefore := b.metric(t, "shoal_fetched_bytes_total", map[string]string{"source": "peer"})
	if err := b.ctrd.CtrPull(ctx, ref); err != nil {
		t.Fatalf("b: pull through shoal: %v", err)
	}
	verifyHolds(t, b.ctrd.ContentDir(), im.Blobs()...)
	fromPeers := b.metric(t, "shoal_fetched_bytes_total", map[string]string{"source": "peer"}) - fetchedBefore
	if blobs := float64(im.Size - im.ManifestSize); fromPeers < blobs {
		t.Errorf("b fetched %v bytes from peers, want at least the %v bytes of config and layers", fromPeers, blobs)
	}
	// By now the image event's log line is written, also where
	// /content/create (2.4) announced the blobs before it.
	t.Logf("a: %s; events so far: %v /images/create, %v /content/create", announcedLine(t, a, im.Repo),
		a.metric(t, "shoal_containerd_events_total", map[string]string{"topic": "/images/create"}),
		a.metric(t, "shoal_containerd_events_total", map[string]string{"topic": "/content/create"}))
	reqs, err := reg.Requests()
	if err != nil {
		t.Fatal(err)
	}
	bAddr := b.host.IP.String() + ":"
	for _, q := range reqs[len(reqsBefore):] {
		if q.Blob && q.Method == http.MethodGet && strings.HasPrefix(q.RemoteAddr, bAddr) {
			t.Errorf("the registry served b a blob: %s %s (%d bytes)", q.Method, q.Path, q.BytesWritten)
		}
	}
}

// announcedLine says when n's log (JSON) says it announced repo's image:
// the time from containerd's event to the last announcement, or that no
// event did it.
func announcedLine(t *testing.T, n *meshNode, repo string) string {
	t.Helper()
	b, err := os.ReadFile(n.shoal.LogPath())
	if err != nil {
		t.Fatal(err)
	}
	found := "no event announced it"
	var said []string
	for _, line := range strings.Split(string(b), "\n") {
		var l struct {
			Msg       string  `json:"msg"`
			Component string  `json:"component"`
			Image     string  `json:"image"`
			After     float64 `json:"after"` // slog writes a duration in ns
		}
		if json.Unmarshal([]byte(line), &l) != nil || l.Component != "containerd-events" {
			continue
		}
		if l.Msg != "announced an image's blobs" || !strings.Contains(l.Image, repo) {
			said = append(said, line)
			continue
		}
		found = fmt.Sprintf("%v from containerd's event to the last announcement", time.Duration(l.After).Round(time.Millisecond))
	}
	if found == "no event announced it" {
		found += "; the watcher logged: " + strings.Join(said, "\n")
	}
	return found
}
