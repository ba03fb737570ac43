package e2e

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/shoal-dev/shoal/bench/lab"
	"github.com/shoal-dev/shoal/p2p"
)

// secureEnv is a lab for the secure-defaults tests: two registries, and
// two members of a keyed mesh started with the daemon's default listen
// addresses, as the chart runs it; the spare hosts are for strangers.
type secureEnv struct {
	reg1, reg2 *lab.Registry
	regHost2   *lab.Host
	key        string
	a, b       *meshNode
	spare      []*lab.Host
}

func startSecureEnv(t *testing.T) *secureEnv {
	t.Helper()
	ctx := t.Context()
	log := testLogger(t)
	nw, err := lab.NewNetwork(ctx, netName(t, "sec"), 8, lab.NetworkConfig{Subnet: "10.213.87.0/24", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	cleanup(t, nw.Close)
	e := &secureEnv{regHost2: nw.Hosts[1], spare: nw.Hosts[4:]}
	if e.reg1, err = lab.StartRegistry(ctx, lab.RegistryConfig{Netns: nw.Hosts[0].Netns, Addr: nw.Hosts[0].Addr(5000), Logger: log}); err != nil {
		t.Fatal(err)
	}
	cleanup(t, e.reg1.Close)
	if e.reg2, err = lab.StartRegistry(ctx, lab.RegistryConfig{Netns: e.regHost2.Netns, Addr: e.regHost2.Addr(5000), Logger: log}); err != nil {
		t.Fatal(err)
	}
	cleanup(t, e.reg2.Close)
	e.key = writeKey(t)
	seed := nw.Hosts[2].IP.String() + ":7502"
	// a mirrors the first registry only; b both.
	e.a = startSecureNode(t, "a", nw.Hosts[2], e.key, seed, []string{e.reg1.Addr()})
	e.b = startSecureNode(t, "b", nw.Hosts[3], e.key, seed, []string{e.reg1.Addr(), e.reg2.Addr()})
	e.waitMembers(t, 2)
	return e
}

// waitMembers waits until a and b each see want live members.
func (e *secureEnv) waitMembers(t *testing.T, want int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("a and b see %d members", want), 60*time.Second, func() error {
		for _, n := range []*meshNode{e.a, e.b} {
			if st := n.status(t); st.LiveMembers != want {
				return fmt.Errorf("%s sees %d members", n.name, st.LiveMembers)
			}
		}
		return nil
	})
}

// startSecureNode starts containerd and a shoal daemon on h, with the
// daemon's default listen addresses, mirroring registries for containerd.
func startSecureNode(t *testing.T, name string, h *lab.Host, key, seed string, registries []string, extra ...string) *meshNode {
	t.Helper()
	ctx := t.Context()
	log := testLogger(t)
	c, err := lab.StartContainerd(ctx, lab.ContainerdConfig{Flavor: lab.Flavor2, Netns: h.Netns, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	cleanup(t, c.Close)
	conf := []string{"configure", "containerd", "--hosts-dir", c.HostsDir(), "--mirror", "http://127.0.0.1:7500", "--containerd-config", c.ConfigPath()}
	args := []string{
		"--node-name", name,
		"--containerd-sock", c.Socket(),
		"--containerd-content-dir", c.ContentDir(),
		"--hosts-dir", c.HostsDir(),
		"--advertise-ip", h.IP.String(),
		"--join", seed,
		"--rescan-interval", "2s",
	}
	if key != "" {
		args = append(args, "--cluster-key-file", key)
	}
	for _, r := range registries {
		conf = append(conf, "--registry", "http://"+r)
		args = append(args, "--insecure-registry", r)
	}
	// Configured first: the daemon reads which registries it mirrors.
	if out, err := runShoal(ctx, conf...); err != nil {
		t.Fatalf("configure %s: %v\n%s", name, err, out)
	}
	s, err := lab.StartShoal(ctx, lab.ShoalConfig{Binary: shoalBin, Netns: h.Netns,
		MirrorAddr: "127.0.0.1:7500", MetricsAddr: ":7503", StatusAddr: "127.0.0.1:7504",
		Args: append(args, extra...), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	cleanup(t, func() error {
		if t.Failed() {
			t.Logf("%s shoal log:\n%s", name, tailFile(s.LogPath(), 30))
		}
		return s.Close()
	})
	return &meshNode{name: name, host: h, ctrd: c, shoal: s, args: args, owner: t}
}

// TestSecureDefaults checks, on real daemons in network namespaces, what a
// node exposes with the defaults an operator gets: a mesh needs a key;
// only members fetch or have a node fetch for them, and only from the
// registries that node mirrors; the mirror answers its own node; /status
// stays on loopback; and every listener is one docs/security.md lists.
func TestSecureDefaults(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	e := startSecureEnv(t)
	t.Run("no key, no daemon", e.noKeyNoDaemon)
	t.Run("pull-for only from mirrored registries", e.pullForMirroredOnly)
	t.Run("a stranger cannot fetch or have a node fetch", e.strangerCannotFetch)
	t.Run("a stranger cannot join", e.strangerCannotJoin)
	t.Run("the mirror answers its node only", e.mirrorForItsNode)
	t.Run("status on loopback", e.statusOnLoopback)
	t.Run("listeners as documented", e.listenersAsDocumented)
}

// noKeyNoDaemon: a daemon with the mesh on and no key refuses to start and
// says how to make a key or opt in to an open mesh.
func (e *secureEnv) noKeyNoDaemon(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	out, err := e.spare[0].Command(ctx, shoalBin, "daemon", "--containerd-sock", "", "--data-dir", t.TempDir()).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("a daemon without a key: %v, want it to exit with an error\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	last := lines[len(lines)-1]
	for _, want := range []string{"shoal keygen", "--cluster-key-file", "--insecure-open-mesh"} {
		if !strings.Contains(last, want) {
			t.Errorf("the refusal %q does not mention %s", last, want)
		}
	}
}

// synCounter counts, in a host's namespace, the TCP connections it opens
// to one address: no SYN leaving the namespace, no connection.
type synCounter struct {
	h     *lab.Host
	table string
}

func countSYNs(t *testing.T, h *lab.Host, addr netip.Addr) *synCounter {
	t.Helper()
	c := &synCounter{h: h, table: "shoaltest_" + strings.ReplaceAll(addr.String(), ".", "_")}
	for _, args := range [][]string{
		{"add", "table", "inet", c.table},
		{"add", "chain", "inet", c.table, "out", "{ type filter hook output priority 0; }"},
		{"add", "rule", "inet", c.table, "out", "ip", "daddr", addr.String(), "tcp", "flags", "syn", "counter"},
	} {
		if out, err := h.Command(t.Context(), "nft", args...).CombinedOutput(); err != nil {
			t.Fatalf("nft %v: %v\n%s", args, err, out)
		}
	}
	t.Cleanup(func() { _ = h.Command(context.Background(), "nft", "delete", "table", "inet", c.table).Run() })
	return c
}

var nftPackets = regexp.MustCompile(`counter packets (\d+)`)

func (c *synCounter) count(t *testing.T) int {
	t.Helper()
	out, err := c.h.Command(t.Context(), "nft", "list", "chain", "inet", c.table, "out").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list: %v\n%s", err, out)
	}
	m := nftPackets.FindSubmatch(out)
	if m == nil {
		t.Fatalf("no counter in:\n%s", out)
	}
	n, err := strconv.Atoi(string(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// pullForMirroredOnly: b pulls an image from a registry a does not mirror.
// b asks a, the designated fetcher of some of its layers, to fetch them
// for the cluster; a refuses, counts and logs it, and never connects to
// that registry; b's pull succeeds from the registry itself.
func (e *secureEnv) pullForMirroredOnly(t *testing.T) {
	ctx := t.Context()
	syns := countSYNs(t, e.a.host, e.regHost2.IP)
	// Seen from the network, the first registry works for a: the counter
	// counts what it should.
	control := countSYNs(t, e.a.host, netip.MustParseAddrPort(e.reg1.Addr()).Addr())
	im, err := lab.PushImage(ctx, e.reg2.Addr(), "sec/elsewhere", "v1", 4, 1<<20, lab.WithTransport(lab.TransportIn(e.regHost2.Netns)))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.b.ctrd.CtrPull(ctx, im.Ref); err != nil {
		t.Fatalf("b's pull from the second registry: %v", err)
	}
	waitFor(t, "a counts its refusals", 10*time.Second, func() error {
		if n := e.a.metric(t, "shoal_p2p_pull_for_refused_total", map[string]string{"reason": "registry"}); n < 1 {
			return fmt.Errorf("%v refusals counted", n)
		}
		return nil
	})
	if n := syns.count(t); n != 0 {
		t.Errorf("a sent %d SYNs to %s, a registry it does not mirror", n, e.regHost2.IP)
	}
	if n := e.a.metric(t, "shoal_p2p_pull_through_total", nil); n != 0 {
		t.Errorf("a fetched %v blobs for a peer", n)
	}
	log, err := os.ReadFile(e.a.shoal.LogPath())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "refused to fetch for a peer from a registry this node does not mirror") || !strings.Contains(string(log), e.reg2.Addr()) {
		t.Errorf("a's log does not name the refused registry:\n%s", tailFile(e.a.shoal.LogPath(), 20))
	}

	// The registry a mirrors: b's pull of an image there has a fetch for
	// the cluster, which the counter sees. a fetches for the cluster what
	// its own clients want: its containerd resolves the tag first.
	im1, err := lab.PushImage(ctx, e.reg1.Addr(), "sec/here", "v1", 4, 1<<20, lab.WithTransport(lab.TransportIn(e.spare[0].Netns)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := headTag(ctx, e.a, e.reg1.Addr(), "sec/here", "v1"); err != nil {
		t.Fatal(err)
	}
	if err := e.b.ctrd.CtrPull(ctx, im1.Ref); err != nil {
		t.Fatalf("b's pull from the first registry: %v", err)
	}
	if e.a.metric(t, "shoal_p2p_pull_through_total", nil) < 1 || control.count(t) < 1 {
		t.Errorf("a did not fetch for b from the registry it mirrors (%v fetches for peers, %d SYNs): the checks above prove nothing",
			e.a.metric(t, "shoal_p2p_pull_through_total", nil), control.count(t))
	}
}

// newStranger is a libp2p host no member knows, dialling from h's
// namespace, with an identity of its own.
func newStranger(t *testing.T, h *lab.Host) host.Host {
	t.Helper()
	dial := lab.DialerIn(h.Netns)
	s, err := libp2p.New(libp2p.NoListenAddrs, libp2p.DisableRelay(), libp2p.DisableMetrics(),
		libp2p.Transport(tcp.NewTCPTransport, tcp.DisableReuseport(), tcp.WithDialerForAddr(func(ma.Multiaddr) (tcp.ContextDialer, error) {
			return dialFunc(dial), nil
		})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

func (f dialFunc) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return f(ctx, network, addr)
}

// blobRequest is a request of the blob protocol (p2p.ProtocolID) for the
// whole of dgst, asking the node to fetch it from registry/repo for the
// cluster: two bytes of length, the offset, the length, the flags, the
// digest, then NUL, registry, NUL, repository.
func blobRequest(dgst, registry, repo string) []byte {
	tail := dgst + "\x00" + registry + "\x00" + repo
	b := make([]byte, 2+8+8+1, 2+8+8+1+len(tail))
	binary.BigEndian.PutUint16(b, uint16(8+8+1+len(tail)))
	b[18] = 1 // wait
	return append(b, tail...)
}

// strangerCannotFetch: a host that knows a's peer ID and address but is no
// member opens no stream to it: it can neither read a blob a holds nor
// have a fetch one for it.
func (e *secureEnv) strangerCannotFetch(t *testing.T) {
	ctx := t.Context()
	st := e.a.status(t)
	syns := countSYNs(t, e.a.host, netip.MustParseAddrPort(e.reg1.Addr()).Addr())
	requests := e.a.metric(t, "shoal_p2p_upload_requests_total", nil)
	s := newStranger(t, e.spare[1])
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	ai := peer.AddrInfo{ID: st.ID, Addrs: st.Addrs}
	err := s.Connect(cctx, ai)
	t.Logf("the stranger's connection: %v", err)
	if err == nil {
		// The handshake proves who is who; the gater then drops the
		// connection. A stream must not get through either way.
		str, serr := s.NewStream(cctx, st.ID, p2p.ProtocolID)
		t.Logf("the stranger's stream: %v", serr)
		if serr == nil {
			_, _ = str.Write(blobRequest("sha256:"+strings.Repeat("ab", 32), e.reg1.Addr(), "sec/here"))
			_ = str.CloseWrite()
			_ = str.SetReadDeadline(time.Now().Add(5 * time.Second))
			answer, rerr := io.ReadAll(bufio.NewReader(str))
			if rerr == nil && len(answer) > 0 {
				t.Fatalf("a stranger got an answer from a member: %s", hex.EncodeToString(answer))
			}
		}
	}
	// Whatever happened above, a neither served nor fetched anything.
	time.Sleep(500 * time.Millisecond) // the counters are read after the handler would have run
	if got := e.a.metric(t, "shoal_p2p_upload_requests_total", nil); got != requests {
		t.Errorf("a handled %v blob requests from a stranger", got-requests)
	}
	if n := syns.count(t); n != 0 {
		t.Errorf("a connected to the registry %d times for a stranger", n)
	}
	if c := e.a.status(t); slices.ContainsFunc(c.Peers, func(p p2p.PeerStatus) bool { return p.ID == s.ID() }) {
		t.Errorf("a lists the stranger %s among its peers", s.ID())
	}
}

// strangerCannotJoin: a daemon with another key, and one without a key
// (--insecure-open-mesh), join a's gossip in vain: a and b stay two, and
// each stranger says its join failed.
func (e *secureEnv) strangerCannotJoin(t *testing.T) {
	other := filepath.Join(t.TempDir(), "other.key")
	if out, err := runShoal(t.Context(), "keygen", "--out", other); err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	seed := e.a.host.IP.String() + ":7502"
	wrong := startSecureNode(t, "wrong-key", e.spare[1], other, seed, []string{e.reg1.Addr()})
	open := startSecureNode(t, "open", e.spare[2], "", seed, []string{e.reg1.Addr()}, "--insecure-open-mesh")
	for _, s := range []*meshNode{wrong, open} {
		waitFor(t, s.name+" says its join failed", 30*time.Second, func() error {
			if st := s.status(t); st.LastJoinError == "" {
				return fmt.Errorf("%s has joined, or not tried (%d members)", s.name, st.LiveMembers)
			}
			return nil
		})
		if st := s.status(t); st.LiveMembers != 1 {
			t.Errorf("%s sees %d members, want itself alone", s.name, st.LiveMembers)
		}
	}
	if st := open.status(t); st.Encrypted {
		t.Errorf("the open mesh's node says it is encrypted")
	}
	if n := open.metric(t, "shoal_p2p_open_mesh", nil); n != 1 {
		t.Errorf("the open mesh's node reports shoal_p2p_open_mesh %v", n)
	}
	for _, n := range []*meshNode{e.a, e.b} {
		st := n.status(t)
		if st.LiveMembers != 2 {
			t.Errorf("%s sees %d live members, want 2", n.name, st.LiveMembers)
		}
		for _, m := range st.Members {
			if m.Name == "wrong-key" || m.Name == "open" {
				t.Errorf("%s lists the stranger %s", n.name, m.Name)
			}
		}
	}
}

// mirrorForItsNode: a mirror listening on every interface answers its own
// node and refuses everyone else with 403 DENIED, unless --mirror-allow
// lets a network in.
func (e *secureEnv) mirrorForItsNode(t *testing.T) {
	ctx := t.Context()
	h, client := e.spare[3], e.spare[1]
	start := func(extra ...string) *lab.Shoal {
		s, err := lab.StartShoal(ctx, lab.ShoalConfig{Binary: shoalBin, Netns: h.Netns, MirrorAddr: ":7500", MetricsAddr: "127.0.0.1:7503",
			Args: append([]string{"--p2p=false", "--containerd-sock", "", "--insecure-registry", e.reg1.Addr()}, extra...), Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	get := func(from *lab.Host, url string) (int, string) {
		t.Helper()
		c := &http.Client{Transport: lab.TransportIn(from.Netns), Timeout: 10 * time.Second}
		defer c.CloseIdleConnections()
		resp, err := c.Get(url)
		if err != nil {
			t.Fatalf("GET %s from %s: %v", url, from.IP, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	remote := "http://" + h.Addr(7500) + "/v2/"
	s := start()
	if code, body := get(client, remote); code != http.StatusForbidden || !strings.Contains(body, `"DENIED"`) {
		t.Errorf("a client on the network got %d %s, want 403 DENIED", code, body)
	}
	if code, _ := get(h, "http://127.0.0.1:7500/v2/"); code != http.StatusOK {
		t.Errorf("the node itself got %d, want 200", code)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = start("--mirror-allow", client.IP.String()+"/32")
	defer s.Close()
	if code, body := get(client, remote); code != http.StatusOK {
		t.Errorf("an allowed client got %d %s, want 200", code, body)
	}
	if code, _ := get(e.spare[2], remote); code != http.StatusForbidden {
		t.Errorf("a client outside --mirror-allow got %d, want 403", code)
	}
}

// statusOnLoopback: /status is not reachable from another host, nor from
// a's metrics port, and `shoal status` on the node itself works.
func (e *secureEnv) statusOnLoopback(t *testing.T) {
	ctx := t.Context()
	c := &http.Client{Transport: lab.TransportIn(e.b.host.Netns), Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	if resp, err := c.Get("http://" + e.a.host.Addr(7504) + "/status"); err == nil {
		resp.Body.Close()
		t.Errorf("a's /status answered %s to another host", resp.Status)
	}
	resp, err := c.Get("http://" + e.a.host.Addr(7503) + "/status")
	if err != nil {
		t.Fatalf("a's metrics port: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("a's metrics port answered /status with %s, want 404", resp.Status)
	}
	out, err := e.a.host.Command(ctx, shoalBin, "status").CombinedOutput()
	if err != nil {
		t.Fatalf("shoal status on a: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), e.b.host.IP.String()) {
		t.Errorf("shoal status on a does not list b:\n%s", out)
	}
}

// listener is one socket a process listens on.
type listener struct {
	proto string // tcp or udp
	addr  netip.Addr
	port  uint16
}

func (l listener) String() string {
	return l.proto + " " + netip.AddrPortFrom(l.addr, l.port).String()
}

// listeners reads the sockets pid listens on (TCP in LISTEN state, and
// bound UDP sockets) from its namespace's /proc tables, keeping those whose
// inode is one of its open files.
func listeners(t *testing.T, pid int) []listener {
	t.Helper()
	inodes := map[string]bool{}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err != nil {
			continue // closed since the listing
		}
		if ino, ok := strings.CutPrefix(link, "socket:["); ok {
			inodes[strings.TrimSuffix(ino, "]")] = true
		}
	}
	var out []listener
	for _, table := range []string{"tcp", "tcp6", "udp", "udp6"} {
		f, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || !inodes[fields[9]] {
				continue
			}
			proto := strings.TrimSuffix(table, "6")
			if proto == "tcp" && fields[3] != "0A" { // LISTEN
				continue
			}
			out = append(out, parseProcAddr(t, proto, fields[1]))
		}
		f.Close()
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// parseProcAddr reads /proc/net's "ADDR:PORT" in hex, the address in host
// byte order by 32-bit words.
func parseProcAddr(t *testing.T, proto, s string) listener {
	t.Helper()
	a, p, ok := strings.Cut(s, ":")
	raw, err := hex.DecodeString(a)
	port, perr := strconv.ParseUint(p, 16, 16)
	if !ok || err != nil || perr != nil || (len(raw) != 4 && len(raw) != 16) {
		t.Fatalf("bad /proc/net address %q", s)
	}
	for i := 0; i < len(raw); i += 4 {
		w := binary.LittleEndian.Uint32(raw[i:])
		binary.BigEndian.PutUint32(raw[i:], w)
	}
	addr, _ := netip.AddrFromSlice(raw)
	return listener{proto: proto, addr: addr.Unmap(), port: uint16(port)}
}

// documentedListeners reads the listener table of docs/security.md: one row
// per socket, its protocol, port and the address it binds by default.
func documentedListeners(t *testing.T) map[string]listener {
	t.Helper()
	b, err := os.ReadFile("../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(b), "<!-- listeners -->")
	if !ok {
		t.Fatal("docs/security.md has no <!-- listeners --> table")
	}
	table, _, _ = strings.Cut(table, "\n\n")
	rows := map[string]listener{}
	for line := range strings.Lines(strings.TrimSpace(table)) {
		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		if len(cells) < 4 {
			continue
		}
		name := strings.Trim(strings.TrimSpace(cells[0]), "`")
		proto := strings.ToLower(strings.TrimSpace(cells[1]))
		bind := strings.Trim(strings.TrimSpace(cells[2]), "`")
		if proto != "tcp" && proto != "udp" {
			continue // the header and its rule
		}
		ap, err := netip.ParseAddrPort(bind)
		if err != nil {
			t.Fatalf("docs/security.md: %s binds %q, want ADDR:PORT", name, bind)
		}
		rows[name+" "+proto] = listener{proto: proto, addr: ap.Addr(), port: ap.Port()}
	}
	if len(rows) == 0 {
		t.Fatal("docs/security.md: the listener table has no rows")
	}
	return rows
}

// listenersAsDocumented: every socket a's daemon, started with the default
// listen addresses, listens on is a row of docs/security.md's table, on the
// address the table says, and every row is a socket it listens on.
func (e *secureEnv) listenersAsDocumented(t *testing.T) {
	got := listeners(t, e.a.shoal.Pid())
	want := documentedListeners(t)
	matched := map[string]bool{}
	for _, l := range got {
		found := false
		for name, d := range want {
			if d.proto == l.proto && d.port == l.port && (d.addr == l.addr || (d.addr.IsUnspecified() && l.addr.IsUnspecified())) {
				matched[name] = true
				found = true
			}
		}
		if !found {
			t.Errorf("the daemon listens on %s, which docs/security.md does not list", l)
		}
	}
	for name, d := range want {
		if !matched[name] {
			t.Errorf("docs/security.md lists %s on %s, where the daemon does not listen", name, d)
		}
	}
	t.Logf("the daemon's listeners: %v", got)
}

// TestReleaseBinaryHasNoFaultHooks: the binary `make build` makes carries
// no fault-injection flag or message, refuses the flag, and ignores its
// environment variable.
func TestReleaseBinaryHasNoFaultHooks(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the shoal binary")
	}
	bin := filepath.Join(t.TempDir(), "shoal")
	build := exec.CommandContext(t.Context(), "make", "-C", "..", "build", "BIN="+bin)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"fault-corrupt-uploads", "FAULT INJECTION", "FAULT_CORRUPT"} {
		if strings.Contains(string(b), s) {
			t.Errorf("the release binary contains %q", s)
		}
	}
	out, err := exec.CommandContext(t.Context(), bin, "daemon", "--fault-corrupt-uploads").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "unknown flag: --fault-corrupt-uploads") {
		t.Errorf("the release binary took --fault-corrupt-uploads: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "daemon", "--p2p=false", "--containerd-sock", "", "--data-dir", t.TempDir(),
		"--mirror-addr", "127.0.0.1:0", "--metrics-addr", "", "--status-addr", "")
	cmd.Env = append(os.Environ(), "SHOAL_FAULT_CORRUPT_UPLOADS=1")
	var logs lockedBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the release daemon starts", 15*time.Second, func() error {
		if !strings.Contains(logs.String(), "shoal daemon started") {
			return errors.New("not started yet")
		}
		return nil
	})
	_ = cmd.Process.Signal(os.Interrupt)
	_ = cmd.Wait()
	if strings.Contains(logs.String(), "FAULT") {
		t.Errorf("SHOAL_FAULT_CORRUPT_UPLOADS changed the release daemon:\n%s", logs.String())
	}
}

// lockedBuffer is a buffer a process writes to while a test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
