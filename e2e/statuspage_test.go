package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/bench/lab"
	"github.com/shoal-dev/shoal/pulls"
)

// chromium is Debian's browser, which `make deps` installs.
const chromium = "/usr/bin/chromium"

var screenshotDir = flag.String("statuspage.screenshots", os.Getenv("SHOAL_SCREENSHOTS"), "directory for the status page test's screenshots (default: the test's temporary directory)")

// startMesh starts a registry host and n nodes (containerd 1.6 and 2.4
// alternating) in network namespaces of subnet, pushes an image of layers
// layers of size bytes, and waits until every node sees n live members.
func startMesh(t *testing.T, subnet string, n, layers int, size int64) (*lab.Registry, lab.Image, []*meshNode) {
	t.Helper()
	l := startMeshLab(t, meshLabConfig{name: "status" + strings.Split(subnet, ".")[2], subnet: subnet, nodes: n})
	return l.reg, l.push(t, "status/app", "v1", layers, size), l.nodes
}

// pullAll has every node pull ref at once, as a cold start does.
func pullAll(t *testing.T, nodes []*meshNode, ref string) {
	t.Helper()
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(func() {
			if err := n.ctrd.CtrPull(t.Context(), ref); err != nil {
				t.Errorf("%s pull %s: %v", n.name, ref, err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
}

// explain runs `shoal explain` on node n (in its namespace, against its
// status address) and returns the record it prints with --json.
func explain(t *testing.T, n *meshNode, ref string) pulls.Pull {
	t.Helper()
	out, err := n.host.Command(t.Context(), shoalBin, "explain", "--json", "--addr", n.shoal.StatusAddr(), ref).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("%s: shoal explain %s: %v\n%s", n.name, ref, err, ee.Stderr)
		}
		t.Fatalf("%s: shoal explain %s: %v", n.name, ref, err)
	}
	var p pulls.Pull
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatalf("%s: shoal explain --json: %v\n%s", n.name, err, out)
	}
	return p
}

// TestExplainMatchesMetrics: after a cold pull by four nodes at once,
// `shoal explain` on each node lists every blob of the image with its
// sources, and its totals by source are, to the byte, what the node's
// /metrics counts of bytes fetched from peers and from the registry.
func TestExplainMatchesMetrics(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	reg, im, nodes := startMesh(t, "10.213.45.0/24", 4, 4, 4<<20)
	ref := reg.Addr() + "/" + im.Repo + ":" + im.Tag
	pullAll(t, nodes, ref)
	for _, n := range nodes {
		var p pulls.Pull
		var totals map[string]int64
		var metrics map[string]float64
		// A download's last bookkeeping follows the bytes containerd got:
		// wait until the record says the pull ended and both agree.
		err := lab.WaitFor(t.Context(), n.name+"'s record and metrics to settle", 15*time.Second, func() error {
			p = explain(t, n, ref)
			totals = map[string]int64{}
			for _, s := range p.Totals {
				totals[s.Source] += s.Bytes
			}
			metrics = map[string]float64{}
			for _, src := range []string{"peer", "upstream"} {
				metrics[src] = n.metric(t, "shoal_fetched_bytes_total", map[string]string{"source": src})
			}
			if p.Running {
				return errors.New("the pull is still running")
			}
			for _, src := range []string{"peer", "upstream"} {
				if float64(totals[src]) != metrics[src] {
					return fmt.Errorf("%s: explain %d bytes, /metrics %v", src, totals[src], metrics[src])
				}
			}
			return nil
		})
		if err != nil {
			t.Errorf("%s: %v", n.name, err)
		}
		var got []digest.Digest
		for _, b := range p.Blobs {
			got = append(got, b.Digest)
			if b.State != pulls.StateStored && b.State != pulls.StateLocal {
				t.Errorf("%s: blob %s is %s (%s), want stored or local", n.name, b.Digest, b.State, b.Error)
			}
			var sum int64
			for _, s := range b.Sources {
				sum += s.Bytes
			}
			if len(b.Sources) == 0 || sum < b.Size {
				t.Errorf("%s: blob %s of %d bytes has sources %+v", n.name, b.Digest, b.Size, b.Sources)
			}
		}
		if want := im.Blobs(); !slices.Equal(got, want) {
			t.Errorf("%s: explain lists %v, want the image's blobs %v", n.name, got, want)
		}
		t.Logf("%s: explain totals %v, /metrics fetched %v", n.name, totals, metrics)
	}
	out, err := nodes[0].host.Command(t.Context(), shoalBin, "explain", "--addr", nodes[0].shoal.StatusAddr(), ref).CombinedOutput()
	if err != nil {
		t.Fatalf("shoal explain: %v\n%s", err, out)
	}
	t.Logf("node1: shoal explain %s\n%s", ref, out)
}

// pageState is what the test reads of the status page, from the data
// attributes the page sets.
type pageState struct {
	Members []struct{ Name, State string } `json:"members"`
	Pulls   []struct {
		Image  string `json:"image"`
		Layers []struct {
			Digest, State, Sources string
		} `json:"layers"`
	} `json:"pulls"`
	Error string `json:"error"`
}

const readPage = `({
  members: [...document.querySelectorAll("#members tbody tr")].map(r => ({Name: r.dataset.member || "", State: r.dataset.state || ""})),
  pulls: [...document.querySelectorAll("#pulls .pull")].map(p => ({image: p.dataset.image,
    layers: [...p.querySelectorAll(".layer")].map(l => ({Digest: l.dataset.digest, State: l.dataset.state, Sources: l.dataset.sources}))})),
  error: document.getElementById("error").hidden ? "" : document.getElementById("error").textContent,
})`

// TestStatusPage drives headless Chromium against one node's status page
// in a three-node mesh after a pull: the members table shows the three
// live members, the pull shows every layer and its sources, a peer killed
// with SIGKILL shows as failed within memberlist's failure detection, and
// the page logs no error to the console. It saves screenshots at desktop
// and phone widths.
func TestStatusPage(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("the status page test needs %s (make deps installs it): %v", chromium, err)
	}
	reg, im, nodes := startMesh(t, "10.213.44.0/24", 3, 3, 2<<20)
	ref := reg.Addr() + "/" + im.Repo + ":" + im.Tag
	pullAll(t, nodes, ref)

	// The page of node1, whose status address is its namespace's loopback,
	// forwarded to this namespace as `shoal status --web` would.
	target, _ := url.Parse("http://" + nodes[0].shoal.StatusAddr())
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = lab.TransportIn(nodes[0].host.Netns)
	page := httptest.NewServer(proxy)
	defer page.Close()

	ctx, cancel := browser(t)
	defer cancel()
	var mu sync.Mutex
	var consoleErrors []string
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				mu.Lock()
				consoleErrors = append(consoleErrors, fmt.Sprintf("%s:%d %s", m.URL, m.Line+1, m))
				mu.Unlock()
			}
		}
	}()
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900), chromedp.Navigate(page.URL+"/")); err != nil {
		t.Fatal(err)
	}
	read := func() pageState {
		st, err := chromedp.Run(ctx, chromedp.Evaluate[pageState](readPage))
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	var st pageState
	waitFor(t, "the page to show 3 live members and the pull", 30*time.Second, func() error {
		st = read()
		if st.Error != "" {
			return errors.New(st.Error)
		}
		alive := 0
		for _, m := range st.Members {
			if m.State == "alive" {
				alive++
			}
		}
		if alive != 3 || len(st.Members) != 3 {
			return fmt.Errorf("members %+v", st.Members)
		}
		if len(st.Pulls) == 0 || st.Pulls[0].Image != ref {
			return fmt.Errorf("pulls %+v, want %s first", st.Pulls, ref)
		}
		return checkLayers(st, im)
	})
	shots := screenshotsDir(t)
	screenshot(t, ctx, filepath.Join(shots, "status-desktop.png"), 1280, 900, false)
	screenshot(t, ctx, filepath.Join(shots, "status-phone.png"), 390, 844, true)
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900)); err != nil {
		t.Fatal(err)
	}

	// SIGKILL node3's daemon: node1's memberlist declares it dead after
	// a failed probe and the suspicion timeout (4 × the 1 s probe
	// interval at this size), and the page polls every second.
	victim := nodes[2]
	killed := time.Now()
	victim.shoal.Kill()
	const detection = 15 * time.Second
	waitFor(t, "the page to show node3 failed", detection, func() error {
		st = read()
		for _, m := range st.Members {
			if m.Name == victim.name {
				if m.State != "failed" {
					return fmt.Errorf("%s is %s", m.Name, m.State)
				}
				return nil
			}
		}
		return fmt.Errorf("%s not listed: %+v", victim.name, st.Members)
	})
	t.Logf("the page showed %s failed %v after its SIGKILL", victim.name, time.Since(killed).Round(100*time.Millisecond))
	screenshot(t, ctx, filepath.Join(shots, "status-failed.png"), 1280, 900, false)

	mu.Lock()
	defer mu.Unlock()
	if len(consoleErrors) > 0 {
		t.Errorf("the page logged errors:\n%s", strings.Join(consoleErrors, "\n"))
	}
}

// checkLayers says what of im's blobs the newest pull on the page lacks:
// each must be listed, fetched, with its sources.
func checkLayers(st pageState, im lab.Image) error {
	byDigest := map[string]int{}
	for i, l := range st.Pulls[0].Layers {
		byDigest[l.Digest] = i
	}
	for _, d := range im.Blobs() {
		i, ok := byDigest[d.String()]
		if !ok {
			return fmt.Errorf("blob %s not on the page", d)
		}
		l := st.Pulls[0].Layers[i]
		if (l.State != pulls.StateStored && l.State != pulls.StateLocal) || l.Sources == "" {
			return fmt.Errorf("blob %s is %q with sources %q", d, l.State, l.Sources)
		}
	}
	if len(st.Pulls[0].Layers) != len(im.Blobs()) {
		return fmt.Errorf("%d blobs on the page, the image has %d", len(st.Pulls[0].Layers), len(im.Blobs()))
	}
	return nil
}

// browser starts headless Chromium; cancel ends it and removes its
// profile directory.
func browser(t *testing.T) (context.Context, context.CancelFunc) {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox, // as root
		chromedp.Flag("disable-dev-shm-usage", true),
	)
	actx, acancel := chromedp.NewExecAllocator(t.Context(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	return ctx, func() { cancel(); acancel() }
}

func screenshotsDir(t *testing.T) string {
	t.Helper()
	dir := *screenshotDir
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// screenshot saves the whole page at a width (a phone's with mobile set).
func screenshot(t *testing.T, ctx context.Context, path string, width, height int64, mobile bool) {
	t.Helper()
	vp := []chromedp.EmulateViewportOption{}
	if mobile {
		vp = append(vp, chromedp.EmulateMobile)
	}
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(width, height, vp...)); err != nil {
		t.Fatal(err)
	}
	// The page redraws every second; give the new width one drawing.
	time.Sleep(1200 * time.Millisecond)
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s (%d×%d, %s bytes)", path, width, height, strconv.Itoa(len(png)))
}
