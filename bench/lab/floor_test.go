package lab

import (
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

var floorMbit = flag.Float64("floor.mbit", 200, "BenchmarkLinkFloor: the links' rate in Mbit/s (0: unshaped)")

// floorBytes is what one iteration of BenchmarkLinkFloor moves.
const floorBytes = 64 << 20

// floorRoleEnv makes the test binary a sender or a receiver of
// BenchmarkLinkFloor instead of running tests (see TestMain).
const floorRoleEnv = "SHOAL_LAB_FLOOR_ROLE"

// BenchmarkLinkFloor measures what the lab's links cost a process that
// does the least a mirror must: one host sends floorBytes over plain TCP,
// and a process on another host receives them in 256 KiB reads, each step
// adding one thing a daemon does with a blob:
//
//	recv    read and drop
//	hash    and SHA-256 every byte
//	store   and write it to a new file
//	serve   and then send that file to a reader over loopback (sendfile),
//	        as a mirror hands a blob to containerd; the reader is in the
//	        same process and counted too
//
// Each reports the receiving and the sending process's CPU time (user and
// system, from the first byte to the last, as each process reads it with
// getrusage) per GiB moved. This is the floor under the real mode's core-s/GiB: a daemon
// receives, hashes, stores and serves each byte and sends some to peers,
// and on shaped veths the kernel charges the processes for the packets'
// way through the bridge and the queue. Needs root. Run:
//
//	sudo go test -run '^$' -bench LinkFloor -benchtime 2x ./bench/lab/
//	sudo go test -run '^$' -bench LinkFloor -benchtime 2x ./bench/lab/ -args -floor.mbit 0
func BenchmarkLinkFloor(b *testing.B) {
	requireRoot(b, "ip", "tc")
	n, err := NewNetwork(b.Context(), testNetworkName(b, "floor"), 2, NetworkConfig{
		Subnet: "10.213.9.0/24", EgressMbit: *floorMbit, IngressMbit: *floorMbit, Logger: testLogger(b)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := n.Close(); err != nil {
			b.Error(err)
		}
	})
	for _, mode := range []string{"recv", "hash", "store", "serve"} {
		b.Run(mode, func(b *testing.B) {
			var recv, send time.Duration
			b.SetBytes(floorBytes)
			for b.Loop() {
				r, s := floorTransfer(b, n, mode)
				recv += r
				send += s
			}
			gib := float64(b.N) * floorBytes / (1 << 30)
			b.ReportMetric(recv.Seconds()/gib, "recv-core-s/GiB")
			b.ReportMetric(send.Seconds()/gib, "send-core-s/GiB")
		})
	}
}

// floorTransfer runs a sender on the first host and a receiver doing mode
// on the second, and returns the CPU time each used.
func floorTransfer(b *testing.B, n *Network, mode string) (recv, send time.Duration) {
	const port = 9000
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	var sout, rout strings.Builder
	role := func(h *Host, out io.Writer, args ...string) *exec.Cmd {
		c := h.Command(b.Context(), self)
		c.Env = append(os.Environ(), floorRoleEnv+"="+strings.Join(args, " "))
		c.Stdout = out
		c.Stderr = os.Stderr
		return c
	}
	snd := role(n.Hosts[0], &sout, "send", fmt.Sprint(port))
	if err := snd.Start(); err != nil {
		b.Fatal(err)
	}
	rerr := role(n.Hosts[1], &rout, "recv", n.Hosts[0].Addr(port), mode).Run()
	serr := snd.Wait()
	if rerr != nil || serr != nil {
		b.Fatalf("receiver: %v; sender: %v", rerr, serr)
	}
	recv, rerr = time.ParseDuration(strings.TrimSpace(rout.String()))
	send, serr = time.ParseDuration(strings.TrimSpace(sout.String()))
	if rerr != nil || serr != nil {
		b.Fatalf("CPU times: receiver %q, sender %q", rout.String(), sout.String())
	}
	return recv, send
}

// cpuTime is the CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runFloorRole is the sender's or the receiver's process. It prints the
// CPU time it spent on the transfer, after the connection was made.
func runFloorRole(spec string) error {
	args := strings.Fields(spec)
	var used time.Duration
	var err error
	switch {
	case len(args) == 2 && args[0] == "send":
		used, err = floorSend(args[1])
	case len(args) == 3 && args[0] == "recv":
		used, err = floorRecv(args[1], args[2])
	default:
		return fmt.Errorf("%s=%q: want \"send PORT\" or \"recv ADDR MODE\"", floorRoleEnv, spec)
	}
	if err == nil {
		fmt.Println(used)
	}
	return err
}

// floorSend accepts one connection and writes floorBytes to it in 1 MiB
// writes.
func floorSend(port string) (time.Duration, error) {
	ln, err := net.Listen("tcp", ":"+port)
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	c, err := ln.Accept()
	if err != nil {
		return 0, err
	}
	start := cpuTime()
	for off := 0; off < floorBytes; off += len(buf) {
		if _, err := c.Write(buf); err != nil {
			c.Close()
			return 0, err
		}
	}
	err = c.Close()
	return cpuTime() - start, err
}

// floorRecv dials the sender, retrying while it starts, and does mode with
// what arrives.
func floorRecv(addr, mode string) (time.Duration, error) {
	var c net.Conn
	var err error
	for range 100 {
		if c, err = net.Dial("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return 0, err
	}
	defer c.Close()
	start := cpuTime()
	var sink io.Writer = io.Discard
	h := sha256.New()
	if mode != "recv" {
		sink = h
	}
	var f *os.File
	if mode == "store" || mode == "serve" {
		if f, err = os.CreateTemp("", "floor-*"); err != nil {
			return 0, err
		}
		defer os.Remove(f.Name())
		defer f.Close()
		sink = io.MultiWriter(h, f)
	}
	n, err := io.CopyBuffer(sink, onlyReader{c}, make([]byte, 256<<10))
	if err == nil && n != floorBytes {
		err = fmt.Errorf("received %d bytes, want %d", n, floorBytes)
	}
	if err == nil && mode == "serve" {
		err = serveLoopback(f)
	}
	return cpuTime() - start, err
}

// onlyReader hides the connection's WriterTo, so that io.CopyBuffer reads
// in the buffer's size as a daemon does.
type onlyReader struct{ io.Reader }

// serveLoopback sends f over a loopback connection to a reader in this
// process.
func serveLoopback(f *os.File) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	got := make(chan error, 1)
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err == nil {
			var n int64
			n, err = io.Copy(io.Discard, c)
			c.Close()
			if err == nil && n != floorBytes {
				err = fmt.Errorf("loopback reader got %d bytes", n)
			}
		}
		got <- err
	}()
	c, err := ln.Accept()
	if err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	_, err = io.Copy(c, f)
	return errors.Join(err, c.Close(), <-got)
}
