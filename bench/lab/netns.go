package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// NetworkConfig shapes a Network. The zero value is an unshaped network on
// 10.213.0.0/24.
type NetworkConfig struct {
	// Subnet is the private /24 the hosts get addresses in, .2 upwards.
	// Networks never route to each other or to the root namespace, so two
	// of them may use the same subnet. "" is 10.213.0.0/24.
	Subnet string
	// EgressMbit and IngressMbit cap every host's upload and download in
	// Mbit/s; 0 leaves that direction unshaped. Host.Shape changes one host.
	EgressMbit, IngressMbit float64
	// Qdisc is "htb" (default: exact at high rates, tolerant of the 64 KiB
	// GSO packets veths carry) or "tbf".
	Qdisc string
	// Logger receives setup and teardown events; nil discards them.
	Logger *slog.Logger
}

// Network is a switch (a bridge in a namespace of its own, <name>-br) with
// hosts attached (namespaces <name>-h0, <name>-h1, …), each with lo up and
// an eth0 whose peer is a port of the bridge. Nothing is created in the
// root namespace, so nothing there can collide with or leak from it, and
// traffic stays between the namespaces made here.
type Network struct {
	Name  string
	Hosts []*Host

	cfg    NetworkConfig
	log    *slog.Logger
	mu     sync.Mutex
	made   []string // namespaces created, in order
	closed bool
}

// Host is one namespace on a Network.
type Host struct {
	// Netns is the namespace's name, for `ip netns exec` and the Netns
	// fields of RegistryConfig and ContainerdConfig.
	Netns string
	// IP is eth0's address.
	IP netip.Addr
	// Iface is the host's interface ("eth0"); Port its peer in the bridge
	// namespace.
	Iface, Port string

	net *Network
}

// bridgeName is the bridge inside the bridge namespace.
const bridgeName = "br0"

var netName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// NewNetwork creates the switch and hosts namespaces. On failure it removes
// whatever it had made.
func NewNetwork(ctx context.Context, name string, hosts int, cfg NetworkConfig) (_ *Network, err error) {
	if !netName.MatchString(name) {
		return nil, fmt.Errorf("network name %q: want [a-z0-9-], at most 32 bytes", name)
	}
	if hosts < 1 || hosts > 250 {
		return nil, fmt.Errorf("network %s: %d hosts, want 1..250", name, hosts)
	}
	if cfg.Subnet == "" {
		cfg.Subnet = "10.213.0.0/24"
	}
	prefix, err := netip.ParsePrefix(cfg.Subnet)
	if err != nil || prefix.Bits() != 24 || !prefix.Addr().Is4() || !prefix.Addr().IsPrivate() {
		return nil, fmt.Errorf("network %s: subnet %q: want a private IPv4 /24", name, cfg.Subnet)
	}
	switch cfg.Qdisc {
	case "":
		cfg.Qdisc = "htb"
	case "htb", "tbf":
	default:
		return nil, fmt.Errorf("network %s: qdisc %q: want htb or tbf", name, cfg.Qdisc)
	}
	n := &Network{Name: name, cfg: cfg, log: logger(cfg.Logger).With("component", "netns", "network", name)}
	defer func() {
		if err != nil {
			err = errors.Join(err, n.Close())
		}
	}()
	br := n.BridgeNetns()
	if err := n.addNetns(ctx, br); err != nil {
		return nil, err
	}
	if err := n.ip(ctx, "-n", br, "link", "add", bridgeName, "type", "bridge"); err != nil {
		return nil, err
	}
	if err := n.ip(ctx, "-n", br, "link", "set", bridgeName, "up"); err != nil {
		return nil, err
	}
	base := prefix.Masked().Addr().As4()
	for i := range hosts {
		ip := base
		ip[3] = byte(i + 2)
		h := &Host{Netns: fmt.Sprintf("%s-h%d", name, i), IP: netip.AddrFrom4(ip), Iface: "eth0", Port: fmt.Sprintf("h%d", i), net: n}
		if err := n.addNetns(ctx, h.Netns); err != nil {
			return nil, err
		}
		// Both ends are born inside namespaces made here: the veth never
		// exists in the root namespace, even for a moment.
		steps := [][]string{
			{"-n", br, "link", "add", h.Port, "type", "veth", "peer", "name", h.Iface, "netns", h.Netns},
			{"-n", br, "link", "set", h.Port, "master", bridgeName, "up"},
			{"-n", h.Netns, "addr", "add", fmt.Sprintf("%s/24", h.IP), "dev", h.Iface},
			{"-n", h.Netns, "link", "set", h.Iface, "up"},
		}
		for _, s := range steps {
			if err := n.ip(ctx, s...); err != nil {
				return nil, err
			}
		}
		n.Hosts = append(n.Hosts, h)
		if err := h.Shape(ctx, cfg.EgressMbit, cfg.IngressMbit); err != nil {
			return nil, err
		}
	}
	n.log.Info("network up", "hosts", hosts, "subnet", prefix.String(), "egress_mbit", cfg.EgressMbit, "ingress_mbit", cfg.IngressMbit)
	return n, nil
}

// BridgeNetns is the namespace that holds the bridge.
func (n *Network) BridgeNetns() string { return n.Name + "-br" }

// Namespaces lists the namespaces the network created.
func (n *Network) Namespaces() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.made...)
}

func (n *Network) addNetns(ctx context.Context, name string) error {
	if err := n.ip(ctx, "netns", "add", name); err != nil {
		return err
	}
	n.mu.Lock()
	n.made = append(n.made, name)
	n.mu.Unlock()
	return n.ip(ctx, "-n", name, "link", "set", "lo", "up")
}

func (n *Network) ip(ctx context.Context, args ...string) error {
	_, err := run(ctx, n.log, append([]string{ipPath()}, args...)...)
	return err
}

// Close kills every process left in the network's namespaces and deletes
// them, which takes their veths, bridge and qdiscs along. Idempotent.
func (n *Network) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	// Hosts first: deleting a host namespace destroys its veth pair.
	for i := len(n.made) - 1; i >= 0; i-- {
		errs = append(errs, deleteNetns(ctx, n.log, n.made[i]))
	}
	n.log.Info("network removed", "namespaces", len(n.made))
	return errors.Join(errs...)
}

// Sweep deletes every namespace whose name starts with prefix, killing the
// processes inside: the leftovers of a run that was interrupted before its
// Close. It returns the names it removed.
func Sweep(ctx context.Context, prefix string, log *slog.Logger) ([]string, error) {
	if prefix == "" {
		return nil, errors.New("sweep: empty prefix")
	}
	log = logger(log).With("component", "netns")
	names, err := ListNetns()
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, name := range names {
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		if err := deleteNetns(ctx, log, name); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, name)
	}
	if len(removed) > 0 {
		log.Info("swept namespaces", "prefix", prefix, "removed", removed)
	}
	return removed, errors.Join(errs...)
}

// DeadRun says whether name belongs to a run that died: it is prefix, a
// process id, "-" and the rest, and that process no longer runs. Runs put
// their process id in the names of what they make (namespaces, temp
// dirs), so that a later run can tell a dead run's leftovers from what a
// live run still uses. This process never counts as dead.
func DeadRun(name, prefix string) (pid int, dead bool) {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return 0, false
	}
	digits, _, ok := strings.Cut(rest, "-")
	pid, err := strconv.Atoi(digits)
	if !ok || err != nil || pid <= 0 || pid == os.Getpid() {
		return 0, false
	}
	return pid, errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// SweepDead deletes the namespaces of dead runs (see DeadRun), killing
// the processes inside: what runs left behind when they were killed before
// their clean-up. It returns the names it removed.
func SweepDead(ctx context.Context, prefix string, log *slog.Logger) ([]string, error) {
	names, err := ListNetns()
	if err != nil {
		return nil, err
	}
	swept := map[int]bool{}
	var removed []string
	var errs []error
	for _, n := range names {
		pid, dead := DeadRun(n, prefix)
		if !dead || swept[pid] {
			continue
		}
		swept[pid] = true
		r, err := Sweep(ctx, prefix+strconv.Itoa(pid)+"-", log)
		removed = append(removed, r...)
		errs = append(errs, err)
	}
	return removed, errors.Join(errs...)
}

// ListNetns lists the named network namespaces (`ip netns list`).
func ListNetns() ([]string, error) {
	ents, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names, nil
}

// deleteNetns kills the processes in a namespace, then deletes it.
func deleteNetns(ctx context.Context, log *slog.Logger, name string) error {
	if _, err := os.Stat(netnsDir + "/" + name); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := killNetnsPids(ctx, log, name); err != nil {
		return err
	}
	_, err := run(ctx, log, ipPath(), "netns", "delete", name)
	if _, serr := os.Stat(netnsDir + "/" + name); errors.Is(serr, os.ErrNotExist) {
		return nil // gone, whoever removed it
	}
	return err
}

// killNetnsPids SIGKILLs every process in the namespace and waits until none
// is left, so that deleting the name also frees the namespace.
func killNetnsPids(ctx context.Context, log *slog.Logger, name string) error {
	for {
		out, err := run(ctx, log, ipPath(), "netns", "pids", name)
		if err != nil {
			return err
		}
		var pids []int
		for _, f := range strings.Fields(string(out)) {
			// This process shows up while one of its threads dials from
			// inside; that thread leaves on its own.
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
				pids = append(pids, pid)
			}
		}
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			log.Warn("killing process left in namespace", "netns", name, "pid", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("netns %s: processes %v did not die: %w", name, pids, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Addr is ip:port on this host.
func (h *Host) Addr(port int) string {
	return netip.AddrPortFrom(h.IP, uint16(port)).String()
}

// Command is an *exec.Cmd that runs inside the host's namespace.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, ipPath(), append([]string{"netns", "exec", h.Netns, name}, args...)...)
}

// Shape caps the host's upload (egress of its eth0) and download (egress
// of its bridge port) in Mbit/s, replacing earlier caps; 0 removes the cap
// in that direction. Shaping the bridge port instead of eth0's ingress
// needs no ifb device and queues rather than drops.
func (h *Host) Shape(ctx context.Context, egressMbit, ingressMbit float64) error {
	n := h.net
	if err := shapeDev(ctx, n.log, h.Netns, h.Iface, egressMbit, n.cfg.Qdisc); err != nil {
		return err
	}
	return shapeDev(ctx, n.log, n.BridgeNetns(), h.Port, ingressMbit, n.cfg.Qdisc)
}

func shapeDev(ctx context.Context, log *slog.Logger, netns, dev string, mbit float64, qdisc string) error {
	tc := func(args ...string) error {
		_, err := run(ctx, log, append([]string{tcPath(), "-n", netns}, args...)...)
		return err
	}
	// Deleting a root qdisc that is not there fails; that is fine.
	_, _ = run(ctx, log, tcPath(), "-n", netns, "qdisc", "del", "dev", dev, "root")
	if mbit <= 0 {
		return nil
	}
	rate := fmt.Sprintf("%dkbit", int64(mbit*1000))
	// 10 ms worth of bytes, at least a few GSO packets: a burst below the
	// packet size would stall tbf and starve htb's accounting.
	burst := int64(mbit * 1e6 / 8 / 100)
	burst = max(burst, 256*1024)
	b := strconv.FormatInt(burst, 10)
	switch qdisc {
	case "tbf":
		return tc("qdisc", "add", "dev", dev, "root", "tbf", "rate", rate, "burst", b, "latency", "100ms")
	default:
		if err := tc("qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "1"); err != nil {
			return err
		}
		if err := tc("class", "add", "dev", dev, "parent", "1:", "classid", "1:1", "htb",
			"rate", rate, "ceil", rate, "burst", b, "cburst", b, "quantum", "60000"); err != nil {
			return err
		}
		// The class's own queue would be a FIFO of txqueuelen (1000)
		// packets, up to 64 KiB each on a veth: seconds of queue at these
		// rates, in which the flows that filled it first crowd out the
		// later ones. A host's link holds far less (byte queue limits, and
		// fq_codel where the kernel has it, which this one may not): a
		// byte FIFO of 100 ms at the link's rate.
		limit := max(int64(mbit*1e6/8/10), 4*64*1024)
		return tc("qdisc", "add", "dev", dev, "parent", "1:1", "handle", "10:", "bfifo", "limit", strconv.FormatInt(limit, 10))
	}
}

// Counters are an interface's byte and packet counts since creation, and
// the TCP segments its namespace sent again.
type Counters struct {
	RxBytes, TxBytes     int64
	RxPackets, TxPackets int64
	// RetransSegs counts the TCP segments sent again after a loss: the
	// interface carries their bytes a second time, which no application
	// wrote twice.
	RetransSegs int64
}

// Counters reads the host's eth0 counters: RxBytes is what it downloaded,
// TxBytes what it uploaded.
func (h *Host) Counters(ctx context.Context) (Counters, error) {
	c, err := linkCounters(ctx, h.net.log, h.Netns, h.Iface)
	if err != nil {
		return c, err
	}
	out, err := run(ctx, h.net.log, ipPath(), "netns", "exec", h.Netns, "cat", "/proc/net/snmp")
	if err != nil {
		return c, err
	}
	c.RetransSegs, err = retransSegs(string(out))
	return c, err
}

// retransSegs reads RetransSegs from the "Tcp:" lines of /proc/net/snmp:
// a line of names, then one of values.
func retransSegs(snmp string) (int64, error) {
	var names []string
	for l := range strings.Lines(snmp) {
		f := strings.Fields(l)
		if len(f) == 0 || f[0] != "Tcp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		if i := slices.Index(names, "RetransSegs"); i > 0 && i < len(f) {
			return strconv.ParseInt(f[i], 10, 64)
		}
		break
	}
	return 0, fmt.Errorf("/proc/net/snmp: no Tcp RetransSegs in %q", snmp)
}

func linkCounters(ctx context.Context, log *slog.Logger, netns, dev string) (Counters, error) {
	out, err := run(ctx, log, ipPath(), "-n", netns, "-s", "-j", "link", "show", "dev", dev)
	if err != nil {
		return Counters{}, err
	}
	var links []struct {
		Stats struct {
			Rx struct{ Bytes, Packets int64 } `json:"rx"`
			Tx struct{ Bytes, Packets int64 } `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		return Counters{}, fmt.Errorf("ip -s -j link show %s in %s: %q: %v", dev, netns, out, err)
	}
	s := links[0].Stats
	return Counters{RxBytes: s.Rx.Bytes, TxBytes: s.Tx.Bytes, RxPackets: s.Rx.Packets, TxPackets: s.Tx.Packets}, nil
}

// DialContext connects from inside the host's namespace.
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return dialIn(ctx, h.Netns, network, addr)
}

// blackholeMAC is a locally administered address no host of a Network has:
// frames sent to it are flooded by the bridge and accepted by nobody.
const blackholeMAC = "02:00:5e:de:ad:01"

// Block makes the host lose every packet it sends to addrs, silently and
// in transit, as a partitioned network does: a permanent neighbour entry
// sends them to a MAC no host has. Nothing fails locally, so the host's
// programs learn of it only by timeouts. Block both ends for a two-way
// partition; Unblock heals it.
func (h *Host) Block(ctx context.Context, addrs ...netip.Addr) error {
	for _, a := range addrs {
		if err := h.net.ip(ctx, "-n", h.Netns, "neigh", "replace", a.String(), "lladdr", blackholeMAC, "nud", "permanent", "dev", h.Iface); err != nil {
			return err
		}
	}
	return nil
}

// Unblock removes Block's entries for addrs; the host resolves them again
// with ARP on the next packet.
func (h *Host) Unblock(ctx context.Context, addrs ...netip.Addr) error {
	var errs []error
	for _, a := range addrs {
		errs = append(errs, h.net.ip(ctx, "-n", h.Netns, "neigh", "del", a.String(), "dev", h.Iface))
	}
	return errors.Join(errs...)
}

// SetLink takes the host's eth0 down (a pulled cable: its own sends fail,
// packets to it are lost at the bridge) or brings it back up. Its address
// and shaping stay.
func (h *Host) SetLink(ctx context.Context, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	return h.net.ip(ctx, "-n", h.Netns, "link", "set", h.Iface, state)
}
