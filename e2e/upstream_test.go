package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/bench/lab"
	"github.com/shoal-dev/shoal/resolver/upstream"
)

// upstreamLab is a network with registries that only hosts.toml tells
// how to reach, and three nodes (containerd 1.6 and 2.4) with shoal.
type upstreamLab struct {
	tls, mtls  *lab.Registry // HTTPS from a private CA; the second wants a client certificate
	origin     *lab.Registry // plain HTTP, unreachable from the nodes
	mirror     *lab.Registry // HTTPS pull-through cache of origin
	deadMirror string        // listed before mirror; nothing answers there
	nodes      []*meshNode
}

// TestUpstreamChain: shoal fetches each registry through the hosts its
// hosts.toml lists after shoal's entry, with their ca and client
// settings, so a three-node cold pull reaches the registry once, through
// shoal, where containerd alone would need those settings to pull at all.
func TestUpstreamChain(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	ul := startUpstreamLab(t)

	t.Run("registry with a private CA", func(t *testing.T) {
		im, before := pushTo(t, ul.tls, "chain/tls")
		coldPull(t, ul.nodes, ul.tls.Addr(), im)
		checkEgress(t, ul.nodes, ul.tls, before, im, "registry")
	})
	t.Run("registry that requires a client certificate", func(t *testing.T) {
		im, before := pushTo(t, ul.mtls, "chain/mtls")
		coldPull(t, ul.nodes, ul.mtls.Addr(), im)
		checkEgress(t, ul.nodes, ul.mtls, before, im, "registry")
	})
	t.Run("registry reachable only through a pull-through mirror", func(t *testing.T) {
		im, originBefore := pushTo(t, ul.origin, "chain/mirrored")
		mirrorBefore, err := ul.mirror.Requests()
		if err != nil {
			t.Fatal(err)
		}
		coldPull(t, ul.nodes, ul.origin.Addr(), im)
		checkEgress(t, ul.nodes, ul.mirror, len(mirrorBefore), im, "mirror")
		// The origin served the mirror alone.
		after, err := ul.origin.Requests()
		if err != nil {
			t.Fatal(err)
		}
		mirrorIP := strings.Split(ul.mirror.Addr(), ":")[0]
		for _, q := range after[originBefore:] {
			if !strings.HasPrefix(q.RemoteAddr, mirrorIP+":") {
				t.Errorf("origin answered %s %s from %s (%q), not the mirror", q.Method, q.Path, q.RemoteAddr, q.UserAgent)
			}
		}
		// Each node's status shows the chain: the dead mirror, the
		// mirror, then the origin, which was never needed.
		for _, n := range ul.nodes {
			chain := upstreamStatus(t, n, ul.origin.Addr())
			if len(chain.Hosts) != 3 || chain.Hosts[0].URL != ul.deadMirror+"/v2" || chain.Hosts[1].URL != ul.mirror.URL()+"/v2" || chain.Hosts[2].URL != ul.origin.URL()+"/v2" {
				t.Errorf("%s: chain for %s is %+v, want the dead mirror, the mirror, then the origin", n.name, ul.origin.Addr(), chain.Hosts)
				continue
			}
			if chain.Hosts[1].TLS != "hosts.toml CA" || chain.Hosts[1].LastError != "" || chain.Hosts[1].LastOKAt.IsZero() {
				t.Errorf("%s: mirror host %+v, want its hosts.toml CA, an answer and no error", n.name, chain.Hosts[1])
			}
			if chain.Hosts[2].LastError != "" || !chain.Hosts[2].LastOKAt.IsZero() {
				t.Errorf("%s: origin %+v, want it never asked", n.name, chain.Hosts[2])
			}
			t.Logf("%s: dead mirror's last error: %s", n.name, chain.Hosts[0].LastError)
		}
	})
}

func startUpstreamLab(t *testing.T) *upstreamLab {
	t.Helper()
	ctx := t.Context()
	net, err := lab.NewNetwork(ctx, netName(t, "up"), 7, lab.NetworkConfig{Subnet: "10.213.9.0/24", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	cleanup(t, net.Close)
	ul, files := startUpstreamRegistries(t, net)
	key := writeKey(t)
	var seeds []string
	for _, h := range net.Hosts[4:] {
		seeds = append(seeds, h.IP.String()+":7502")
	}
	ul.nodes = make([]*meshNode, 3)
	var wg sync.WaitGroup
	for i, h := range net.Hosts[4:] {
		flavor := lab.Flavor16
		if i%2 == 1 {
			flavor = lab.Flavor2
		}
		wg.Go(func() {
			// The origin is out of the nodes' reach: only the mirror can
			// talk to it.
			if err := h.Block(ctx, net.Hosts[2].IP); err != nil {
				t.Error(err)
				return
			}
			ul.nodes[i] = startChainNode(t, fmt.Sprintf("node%d", i+1), h, flavor, seeds, key, files)
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	waitFor(t, "mesh converges", 30*time.Second, func() error {
		for _, n := range ul.nodes {
			if got := n.status(t).LiveMembers; got != 3 {
				return fmt.Errorf("%s sees %d live members", n.name, got)
			}
		}
		return nil
	})
	return ul
}

// startUpstreamRegistries starts the registries on hosts 0-3 of net, and
// returns them with what the operator's hosts.toml files say about them
// before shoal is installed, by registry.
func startUpstreamRegistries(t *testing.T, net *lab.Network) (*upstreamLab, map[string]string) {
	t.Helper()
	ctx := t.Context()
	log := testLogger(t)
	pki := t.TempDir()
	ca, err := lab.NewCA("shoal e2e registry CA")
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(pki, "ca.pem")
	if err := ca.WriteFile(caFile); err != nil {
		t.Fatal(err)
	}
	clientCert, clientKey, err := ca.IssueFiles(pki, "node-client")
	if err != nil {
		t.Fatal(err)
	}
	cc, err := ca.ClientTLS(clientCert, clientKey)
	if err != nil {
		t.Fatal(err)
	}
	start := func(h *lab.Host, cfg lab.RegistryConfig) *lab.Registry {
		cfg.Netns, cfg.Addr, cfg.Logger = h.Netns, h.Addr(5000), log
		if cfg.TLS != nil {
			if cfg.TLS.CertFile, cfg.TLS.KeyFile, err = ca.IssueFiles(pki, h.Netns, h.IP.String()); err != nil {
				t.Fatal(err)
			}
		}
		reg, err := lab.StartRegistry(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		cleanup(t, reg.Close)
		return reg
	}
	ul := &upstreamLab{}
	ul.tls = start(net.Hosts[0], lab.RegistryConfig{TLS: &lab.RegistryTLS{Client: cc}})
	ul.mtls = start(net.Hosts[1], lab.RegistryConfig{TLS: &lab.RegistryTLS{Client: cc, ClientCAFile: caFile}})
	ul.origin = start(net.Hosts[2], lab.RegistryConfig{})
	ul.mirror = start(net.Hosts[3], lab.RegistryConfig{TLS: &lab.RegistryTLS{Client: cc}, ProxyRemote: ul.origin.URL()})
	// An address in the network that no host has: connections to it
	// neither succeed nor fail until they time out.
	ul.deadMirror = "https://" + strings.TrimSuffix(net.Hosts[0].IP.String(), ".2") + ".99:5000"
	return ul, map[string]string{
		ul.tls.Addr():  fmt.Sprintf("server = %q\nca = %q\n", ul.tls.URL(), caFile),
		ul.mtls.Addr(): fmt.Sprintf("server = %q\nca = %q\nclient = [[%q, %q]]\n", ul.mtls.URL(), caFile, clientCert, clientKey),
		// A mirror that is gone comes first: shoal moves on to the next.
		ul.origin.Addr(): fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = %q\n",
			ul.origin.URL(), ul.deadMirror, ul.mirror.URL(), caFile),
	}
}

// startChainNode starts containerd and shoal in h, with the operator's
// hosts.toml files, then runs shoal configure for their registries.
func startChainNode(t *testing.T, name string, h *lab.Host, flavor lab.Flavor, seeds []string, keyFile string, files map[string]string) *meshNode {
	t.Helper()
	ctx := t.Context()
	log := testLogger(t)
	c, err := lab.StartContainerd(ctx, lab.ContainerdConfig{Flavor: flavor, Netns: h.Netns, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	cleanup(t, c.Close)
	configure := []string{"configure", "containerd", "--hosts-dir", c.HostsDir(), "--mirror", "http://127.0.0.1:7500", "--containerd-config", c.ConfigPath()}
	for reg, body := range files {
		dir := filepath.Join(c.HostsDir(), reg)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		configure = append(configure, "--registry", reg)
	}
	ip := h.IP.String()
	args := []string{
		"--node-name", name,
		"--containerd-sock", c.Socket(),
		"--containerd-content-dir", c.ContentDir(),
		"--hosts-dir", c.HostsDir(),
		"--gossip-addr", ip + ":7502",
		"--p2p-addr", ip + ":7501",
		"--advertise-ip", ip,
		"--join", strings.Join(seeds, ","),
		"--cluster-key-file", keyFile,
		"--stall-timeout", "3s",
		"--peer-stall", patientPeerStall,
		"--rescan-interval", "2s",
	}
	s, err := lab.StartShoal(ctx, lab.ShoalConfig{Binary: shoalBin, Netns: h.Netns, MirrorAddr: "127.0.0.1:7500", MetricsAddr: "127.0.0.1:7503", Args: args, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	cleanup(t, func() error {
		// The daemon under test is built with -race: it reports when it stops.
		s.Stop()
		b, err := os.ReadFile(s.LogPath())
		if err != nil {
			t.Errorf("%s: shoal's log: %v", name, err)
		}
		if strings.Contains(string(b), "DATA RACE") {
			t.Errorf("%s: the race detector reported in shoal's log", name)
		}
		if t.Failed() {
			t.Logf("%s shoal log:\n%s", name, tailFile(s.LogPath(), 30))
		}
		return s.Close()
	})
	if out, err := runShoal(ctx, configure...); err != nil {
		t.Fatalf("configure %s: %v\n%s", name, err, out)
	}
	return &meshNode{name: name, host: h, ctrd: c, shoal: s, args: args, owner: t}
}

// pushTo pushes a new image of three 4 MiB layers to reg, and returns
// it with the number of requests in reg's log after the push.
func pushTo(t *testing.T, reg *lab.Registry, repo string) (lab.Image, int) {
	t.Helper()
	tr := reg.Transport()
	defer tr.CloseIdleConnections()
	im, err := lab.PushImage(t.Context(), reg.Addr(), repo, "v1", 3, 4<<20, lab.WithTransport(tr))
	if err != nil {
		t.Fatal(err)
	}
	reqs, err := reg.Requests()
	if err != nil {
		t.Fatal(err)
	}
	return im, len(reqs)
}

// coldPull has every node pull im from registry at once, and checks what
// each holds.
func coldPull(t *testing.T, nodes []*meshNode, registry string, im lab.Image) {
	t.Helper()
	ctx := t.Context()
	ref := registry + "/" + im.Repo + ":" + im.Tag
	start := time.Now()
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(func() {
			if err := n.ctrd.CtrPull(ctx, ref); err != nil {
				t.Errorf("%s pull %s: %v\n%s", n.name, ref, err, tailFile(n.ctrd.LogPath(), 20))
			}
		})
	}
	wg.Wait()
	t.Logf("3-node cold pull of %s (%d bytes) took %v", ref, im.Size, time.Since(start).Round(time.Millisecond))
	if t.Failed() {
		t.FailNow()
	}
	for _, n := range nodes {
		verifyHolds(t, n.ctrd.ContentDir(), im.Blobs()...)
		if ok, err := n.ctrd.HasImage(ctx, ref); err != nil || !ok {
			t.Errorf("%s has %s: %v %v", n.name, ref, ok, err)
		}
	}
}

// checkEgress reads reg's log past its first before requests: every
// request came from shoal, and the image's blobs were sent about once.
func checkEgress(t *testing.T, nodes []*meshNode, reg *lab.Registry, before int, im lab.Image, what string) {
	t.Helper()
	reqs, err := reg.Requests()
	if err != nil {
		t.Fatal(err)
	}
	reqs = reqs[before:]
	if len(reqs) == 0 {
		t.Fatalf("%s answered no request", what)
	}
	want := map[string]bool{}
	for _, d := range im.Blobs() {
		want[d.String()] = true
	}
	var blobBytes, manifestBytes int64
	for _, q := range reqs {
		if !strings.HasPrefix(q.UserAgent, "shoal/") {
			t.Errorf("%s answered %s %s for %q, not shoal", what, q.Method, q.Path, q.UserAgent)
		}
		switch {
		case q.Blob && q.Method == "GET" && want[q.Digest.String()]:
			blobBytes += q.BytesWritten
		case q.Reference != "" && q.Method == "GET":
			manifestBytes += q.BytesWritten
		}
	}
	layers := im.Size - im.ManifestSize
	ratio := float64(blobBytes) / float64(layers)
	t.Logf("%s sent %d blob bytes for the image's %d bytes of config and layers (%.3f ×), and %d manifest bytes (manifest %d bytes)",
		what, blobBytes, layers, ratio, manifestBytes, im.ManifestSize)
	if ratio < 0.999 || ratio > 1.05 {
		t.Errorf("%s sent %.3f × the image's blobs, want about 1", what, ratio)
		for _, q := range reqs {
			if q.Blob && q.Method == "GET" {
				t.Logf("%s: GET %s from %s: %d bytes in %v, status %d, done %s",
					what, q.Digest, q.RemoteAddr, q.BytesWritten, q.Duration, q.Status, q.Time.Format("15:04:05.000"))
			}
		}
		for _, n := range nodes {
			t.Logf("%s's log about the image's blobs:\n%s", n.name, blobLines(n.shoal.LogPath(), im))
		}
	}
}

// blobLines is the lines of a shoal log, above debug, that name one of
// im's blobs.
func blobLines(path string, im lab.Image) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	var out []string
	for l := range strings.Lines(string(b)) {
		if strings.Contains(l, `"level":"DEBUG"`) {
			continue
		}
		for _, d := range im.Blobs() {
			if strings.Contains(l, d.Encoded()) {
				out = append(out, strings.TrimRight(l, "\n"))
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

// upstreamStatus is node n's chain for registry, from its /status.
func upstreamStatus(t *testing.T, n *meshNode, registry string) upstream.RegistryStatus {
	t.Helper()
	b, err := n.shoal.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Upstream []upstream.RegistryStatus `json:"upstream"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("status %s: %v", b, err)
	}
	for _, r := range st.Upstream {
		if r.Registry == registry {
			return r
		}
	}
	t.Fatalf("%s: status shows no chain for %s: %s", n.name, registry, b)
	return upstream.RegistryStatus{}
}
