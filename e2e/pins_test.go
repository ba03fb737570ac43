package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/bench/lab"
)

// pinsRestoreBound is how long the survivors of a pinned image's holders
// may take to hold its copies again: memberlist's failure detection (a
// few seconds), a check (at most 3 s after it) and the fetch of a few MiB.
const pinsRestoreBound = 60 * time.Second

// pinnedView is what `shoal pins --json` prints, as a user reads it.
type pinnedView struct {
	Ref    string        `json:"ref"`
	Digest digest.Digest `json:"digest"`
	Copies int           `json:"copies"`
	Blobs  []struct {
		Digest  digest.Digest `json:"digest"`
		Size    int64         `json:"size"`
		Holders []string      `json:"holders"`
		On      []string      `json:"on"`
	} `json:"blobs"`
}

// TestPins pins a small image with --copies 2 on a mesh of four nodes,
// kills both holders of its largest layer with SIGKILL and deletes their
// data dirs: within pinsRestoreBound the two survivors hold every blob
// again, as `shoal pins` and their metrics say, the registry sending only
// the blobs whose every copy was lost. Then, with the registry stopped, a
// node that joins afterwards pulls the image by tag with every blob from
// peers.
func TestPins(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	const n = 4
	lb := startPinsLab(t, n)
	nodes, im, ref := lb.nodes, lb.im, lb.ref

	out, err := shoalOn(t, nodes[n-1], "pin", "--copies", "2", ref)
	if want := "shoal: pin " + ref + " refused: pinned blobs would take "; err == nil || !strings.HasPrefix(out, want) || strings.Contains(out, "\n") ||
		!strings.HasSuffix(out, "over this node's --store-max-bytes of 2MiB (2097152 bytes)") {
		t.Errorf("a pin larger than --store-max-bytes: %v, printed:\n%s\nwant a line starting %q", err, out, want)
	}
	if out, err := shoalOn(t, nodes[0], "pin", "--copies", "2", ref); err != nil {
		t.Fatalf("shoal pin: %v\n%s", err, out)
	}
	blobs := append([]digest.Digest{im.Digest, im.Config}, im.Layers...)
	var view pinnedView
	waitFor(t, "two copies of every pinned blob", pinsRestoreBound, func() error {
		view, err = wholeCopies(t, nodes, blobs, 2)
		return err
	})
	largest := im.Layers[slices.Index(im.LayerSizes, slices.Max(im.LayerSizes))]
	sentBefore := registryBlobBytes(t, lb.reg)
	survivors, lostBytes := killHolders(t, nodes, view, largest)
	killed := time.Now()
	waitFor(t, "the survivors see the holders gone", pinsRestoreBound, func() error {
		return membersSeen(t, survivors, len(survivors))
	})
	detected := time.Since(killed)
	waitFor(t, "two copies again on the survivors", pinsRestoreBound-detected, func() error {
		_, err := wholeCopies(t, survivors, blobs, 2)
		return err
	})
	t.Logf("copies restored %.2fs after the kill (members declared dead after %.2fs, copies made in %.2fs more)",
		time.Since(killed).Seconds(), detected.Seconds(), (time.Since(killed) - detected).Seconds())
	if out, err := shoalOn(t, survivors[0], "pins"); err != nil {
		t.Errorf("shoal pins: %v\n%s", err, out)
	} else {
		t.Logf("shoal pins on %s:\n%s", survivors[0].name, out)
	}
	if sent := registryBlobBytes(t, lb.reg) - sentBefore; sent > lostBytes {
		t.Errorf("the registry sent %d blob bytes to restore the copies, more than the %d of the blobs no survivor held", sent, lostBytes)
	}

	t.Run("registry stopped, a new node pulls from peers", func(t *testing.T) {
		lb.reg.Stop()
		nd := startMeshNode(t, "node5", lb.net.Hosts[n+1], lab.Flavor2, lb.reg.Addr(), lb.seeds, lb.key)
		waitMembers(t, append(slices.Clone(survivors), nd), len(survivors)+1)
		// By tag: node5 never pulled it, and resolves it from the pin
		// table (--resolve-tags-locally, the default).
		if err := nd.ctrd.CtrPull(t.Context(), ref); err != nil {
			t.Fatalf("pull of %s with the registry stopped: %v", ref, err)
		}
		verifyHolds(t, nd.ctrd.ContentDir(), im.Blobs()...)
		if up := nd.metric(t, "shoal_fetched_bytes_total", map[string]string{"source": "upstream"}); up != 0 {
			t.Errorf("node5 fetched %v bytes from the registry", up)
		}
		if peer := nd.metric(t, "shoal_fetched_bytes_total", map[string]string{"source": "peer"}); peer < float64(im.Size-im.ManifestSize) {
			t.Errorf("node5 fetched %v bytes from peers, less than the image's %d", peer, im.Size-im.ManifestSize)
		}
	})
}

// pinsLab is TestPins' network: a registry with the image, n nodes (the
// last with a store smaller than the image) and a spare host.
type pinsLab struct {
	net   *lab.Network
	reg   *lab.Registry
	im    lab.Image
	ref   string
	key   string
	seeds []string
	nodes []*meshNode
}

func startPinsLab(t *testing.T, n int) pinsLab {
	t.Helper()
	ctx := t.Context()
	log := testLogger(t)
	var lb pinsLab
	var err error
	lb.net, err = lab.NewNetwork(ctx, netName(t, "pins"), n+2, lab.NetworkConfig{Subnet: "10.213.67.0/24", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	cleanup(t, lb.net.Close)
	regHost := lb.net.Hosts[0]
	lb.reg, err = lab.StartRegistry(ctx, lab.RegistryConfig{Netns: regHost.Netns, Addr: regHost.Addr(5000), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	cleanup(t, lb.reg.Close)
	lb.im, err = lab.PushImage(ctx, lb.reg.Addr(), "pins/app", "v1", 3, 1<<20, lab.WithTransport(lab.TransportIn(regHost.Netns)))
	if err != nil {
		t.Fatal(err)
	}
	lb.ref = lb.reg.Addr() + "/" + lb.im.Repo + ":" + lb.im.Tag
	lb.key = writeKey(t)
	for _, h := range lb.net.Hosts[1 : n+1] {
		lb.seeds = append(lb.seeds, h.IP.String()+":7502")
	}
	lb.nodes = make([]*meshNode, n)
	var wg sync.WaitGroup
	for i := range n {
		var extra []string
		if i == n-1 {
			extra = []string{"--store-max-bytes", "2MiB"} // less than the image
		}
		wg.Go(func() {
			lb.nodes[i] = startMeshNode(t, fmt.Sprintf("node%d", i+1), lb.net.Hosts[i+1], lab.Flavor2, lb.reg.Addr(), lb.seeds, lb.key, extra...)
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	waitMembers(t, lb.nodes, n)
	return lb
}

// killHolders kills both holders of blob with SIGKILL and deletes their
// data dirs. It returns the other nodes, and the bytes of the blobs that
// had no holder among them.
func killHolders(t *testing.T, nodes []*meshNode, view pinnedView, blob digest.Digest) ([]*meshNode, int64) {
	t.Helper()
	var holders []string
	for _, b := range view.Blobs {
		if b.Digest == blob {
			holders = b.Holders
		}
	}
	if len(holders) != 2 {
		t.Fatalf("blob %s has holders %v, want 2", blob, holders)
	}
	var lostBytes int64
	lost := 0
	for _, b := range view.Blobs {
		if slices.Equal(slices.Sorted(slices.Values(b.Holders)), slices.Sorted(slices.Values(holders))) {
			lostBytes += b.Size
			lost++
		}
	}
	var survivors []*meshNode
	for _, nd := range nodes {
		if !slices.Contains(holders, nd.name) {
			survivors = append(survivors, nd)
			continue
		}
		nd.shoal.Kill()
		if err := os.RemoveAll(nd.shoal.DataDir()); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("killed %v, the holders of %s, and deleted their data dirs; %d blobs had no other copy", holders, blob, lost)
	return survivors, lostBytes
}

func waitMembers(t *testing.T, nodes []*meshNode, want int) {
	t.Helper()
	waitFor(t, "mesh converges", 60*time.Second, func() error { return membersSeen(t, nodes, want) })
}

func membersSeen(t *testing.T, nodes []*meshNode, want int) error {
	t.Helper()
	for _, nd := range nodes {
		if got := nd.status(t).LiveMembers; got != want {
			return fmt.Errorf("%s sees %d live members", nd.name, got)
		}
	}
	return nil
}

// wholeCopies checks what a user checks: `shoal pins` on the first node
// lists every blob with want copies, each on a holder, and on every node
// shoal_pinned_copies_missing is 0 with the node's share held.
func wholeCopies(t *testing.T, nodes []*meshNode, blobs []digest.Digest, want int) (pinnedView, error) {
	t.Helper()
	out, err := shoalOn(t, nodes[0], "pins", "--json")
	if err != nil {
		return pinnedView{}, fmt.Errorf("shoal pins: %v: %s", err, out)
	}
	var views []pinnedView
	if err := json.Unmarshal([]byte(out), &views); err != nil || len(views) != 1 {
		return pinnedView{}, fmt.Errorf("shoal pins printed %d pins (%v): %s", len(views), err, out)
	}
	v := views[0]
	var names []string
	for _, nd := range nodes {
		names = append(names, nd.name)
	}
	listed := map[digest.Digest]bool{}
	for _, b := range v.Blobs {
		listed[b.Digest] = true
		on := slices.DeleteFunc(slices.Clone(b.On), func(s string) bool { return !slices.Contains(b.Holders, s) })
		if len(b.Holders) != want || len(on) != want {
			return v, fmt.Errorf("blob %s: holders %v, on %v", b.Digest, b.Holders, b.On)
		}
		for _, h := range b.Holders {
			if !slices.Contains(names, h) {
				return v, fmt.Errorf("blob %s: holder %s is not live", b.Digest, h)
			}
		}
	}
	for _, d := range blobs {
		if !listed[d] {
			return v, fmt.Errorf("shoal pins does not list blob %s", d)
		}
	}
	held := 0.0
	for _, nd := range nodes {
		if m := nd.metric(t, "shoal_pinned_copies_missing", nil); m != 0 {
			return v, fmt.Errorf("%s misses %v pinned copies", nd.name, m)
		}
		held += nd.metric(t, "shoal_pinned_blobs_held", nil)
	}
	if int(held) != want*len(blobs) {
		return v, fmt.Errorf("the nodes hold %v pinned copies, want %d", held, want*len(blobs))
	}
	return v, nil
}

// shoalOn runs the shoal command in node nd's namespace and returns its
// output.
func shoalOn(t *testing.T, nd *meshNode, args ...string) (string, error) {
	t.Helper()
	cmd := nd.host.Command(t.Context(), shoalBin, args...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}
