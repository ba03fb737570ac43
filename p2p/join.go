package p2p

import (
	"context"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"time"
)

// maxSeedsPerAttempt bounds how many seed addresses one join attempt tries:
// a headless Service may resolve to every node of the cluster, and one
// successful push/pull already brings the whole member list.
const maxSeedsPerAttempt = 8

// joinLoop joins the seeds, retrying with backoff until it succeeds, again
// whenever the node finds itself alone, and every RejoinInterval to merge
// partitions.
func (n *Node) joinLoop(ctx context.Context) {
	if len(n.cfg.Join) == 0 {
		return
	}
	t := n.cfg.Timing
	backoff := t.JoinBackoffMin
	var lastJoin time.Time
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		alone := n.ml.NumMembers() <= 1
		if alone || time.Since(lastJoin) >= t.RejoinInterval {
			if n.joinOnce(ctx) {
				lastJoin, backoff = time.Now(), t.JoinBackoffMin
			} else if alone {
				backoff = min(2*backoff, t.JoinBackoffMax)
			}
		}
		next := t.JoinBackoffMax
		if n.ml.NumMembers() <= 1 {
			// Full jitter spreads the retries of nodes that lost the
			// cluster together.
			next = backoff/2 + rand.N(backoff/2+1)
		}
		timer.Reset(next)
	}
}

// joinOnce tries the seeds one at a time, in random order, until one join
// brings in another member.
func (n *Node) joinOnce(ctx context.Context) bool {
	seeds := n.resolveSeeds(ctx)
	if len(seeds) == 0 {
		n.setJoinErr("no seed address resolved")
		return false
	}
	var lastErr error
	for _, s := range seeds {
		if ctx.Err() != nil {
			return false
		}
		_, err := n.ml.Join([]string{s})
		if err == nil && n.ml.NumMembers() > 1 {
			n.log.Debug("joined the cluster", "seed", s, "members", n.ml.NumMembers())
			n.setJoinErr("")
			return true
		}
		if err != nil {
			lastErr = err
		}
	}
	if lastErr != nil {
		// memberlist's errors span lines; keep one.
		msg := strings.Join(strings.Fields(lastErr.Error()), " ")
		n.log.Warn("cannot join the cluster", "seeds", seeds, "error", msg)
		n.setJoinErr(msg)
	}
	return false
}

// resolveSeeds resolves every seed to all its addresses, drops this node's
// own address and returns at most maxSeedsPerAttempt of them, shuffled.
func (n *Node) resolveSeeds(ctx context.Context) []string {
	_, ownPort, _ := splitAddr(n.cfg.GossipAddr)
	defPort := strconv.Itoa(DefaultGossipPort)
	if ownPort != 0 {
		defPort = strconv.Itoa(ownPort)
	}
	var out []string
	seen := map[string]bool{n.gossipAddr: true}
	for _, seed := range n.cfg.Join {
		host, port, err := net.SplitHostPort(seed)
		if err != nil {
			host, port = seed, defPort
		}
		var ips []string
		if net.ParseIP(host) != nil {
			ips = []string{host}
		} else {
			rctx, cancel := context.WithTimeout(ctx, n.cfg.Timing.GossipTCPTimeout)
			ips, err = net.DefaultResolver.LookupHost(rctx, host)
			cancel()
			if err != nil {
				n.log.Warn("cannot resolve seed", "seed", seed, "error", err)
				continue
			}
		}
		for _, ip := range ips {
			a := net.JoinHostPort(ip, port)
			if !seen[a] {
				seen[a] = true
				out = append(out, a)
			}
		}
	}
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	if len(out) > maxSeedsPerAttempt {
		out = out[:maxSeedsPerAttempt]
	}
	return out
}

func (n *Node) setJoinErr(s string) {
	n.joinMu.Lock()
	n.lastJoinErr = s
	n.joinMu.Unlock()
}
