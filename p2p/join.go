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
	var lastJoin, lastLost time.Time
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
		// Members lost without leaving may be across a partition that has
		// healed, or behind a link that came back: memberlist gossips to
		// them for a short while only, and this side, having members, is
		// not alone. Contacting them merges the sides.
		lost := n.members.lost(time.Now())
		if len(lost) > 0 && !alone && time.Since(lastLost) >= t.LostRetryInterval {
			lastLost = time.Now()
			n.rejoinLost(ctx, lost)
		}
		next := t.JoinBackoffMax
		if len(lost) > 0 {
			next = min(next, t.LostRetryInterval)
		}
		if n.ml.NumMembers() <= 1 {
			// Full jitter spreads the retries of nodes that lost the
			// cluster together.
			next = backoff/2 + rand.N(backoff/2+1)
		}
		timer.Reset(next)
	}
}

// joinOnce contacts every seed (at most maxSeedsPerAttempt of them), not
// just the first that answers: nodes that start together can pair up into
// islands, each joined and so never alone, and a join that reaches a seed
// in each island merges them. It reports whether the node has members.
func (n *Node) joinOnce(ctx context.Context) bool {
	seeds := n.resolveSeeds(ctx)
	if len(seeds) == 0 {
		n.setJoinErr("no seed address resolved")
		return false
	}
	// One at a time, so that shutdown waits for one seed at most.
	var lastErr error
	joined := 0
	for _, s := range seeds {
		if ctx.Err() != nil {
			return false
		}
		k, err := n.ml.Join([]string{s})
		joined += k
		if err != nil {
			lastErr = err
		}
	}
	if joined > 0 && n.ml.NumMembers() > 1 {
		n.log.Debug("joined the cluster", "seeds", seeds, "reached", joined, "members", n.ml.NumMembers())
		n.setJoinErr("")
		return true
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

// rejoinLost contacts at most maxSeedsPerAttempt of the lost members'
// gossip addresses, one at a time so that shutdown waits for one at most.
// Those still dead cost a refused or timed-out connection each.
func (n *Node) rejoinLost(ctx context.Context, lost []string) {
	rand.Shuffle(len(lost), func(i, j int) { lost[i], lost[j] = lost[j], lost[i] })
	for _, a := range lost[:min(len(lost), maxSeedsPerAttempt)] {
		if ctx.Err() != nil {
			return
		}
		if k, _ := n.ml.Join([]string{a}); k > 0 {
			n.log.Info("rejoined a lost member", "addr", a, "members", n.ml.NumMembers())
		}
	}
}

func (n *Node) setJoinErr(s string) {
	n.joinMu.Lock()
	n.lastJoinErr = s
	n.joinMu.Unlock()
}
