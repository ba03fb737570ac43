package p2p

import (
	"net/netip"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/x/rate"
)

// connRate is how fast one address may open new libp2p connections to this
// node. libp2p's default, one every five seconds past a burst of sixteen,
// is made for the public internet: in a cluster that starts together, the
// members' DHT, identify and blob dials exceed it within seconds, and a
// designated fetcher refused with "rate limit exceeded" sends its
// requesters to the registry. Non-members are still refused by the gater
// (or the PSK) right after the handshake.
var connRate = rate.Limit{RPS: 20, Burst: 200}

// resourceManager is libp2p's default resource manager with a connection
// rate fit for a cluster.
func resourceManager() (network.ResourceManager, error) {
	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	return rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits.AutoScale()), rcmgr.WithConnRateLimiters(&rate.Limiter{
		// Loopback is never limited, as in libp2p's default.
		NetworkPrefixLimits: []rate.PrefixLimit{
			{Prefix: netip.MustParsePrefix("127.0.0.0/8")},
			{Prefix: netip.MustParsePrefix("::1/128")},
		},
		SubnetRateLimiter: rate.SubnetLimiter{
			IPv4SubnetLimits: []rate.SubnetLimit{{PrefixLength: 32, Limit: connRate}},
			IPv6SubnetLimits: []rate.SubnetLimit{{PrefixLength: 56, Limit: connRate}},
			GracePeriod:      time.Minute,
		},
	}))
}
