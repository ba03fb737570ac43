// Package model runs the swarm's decision rules (package p2p/swarm) for N
// nodes on a model network in virtual time: every node and the registry
// have an upload and a download capacity, the transfers crossing a link
// share it max-min fairly, and each connection costs a round trip before
// its first byte. A run is deterministic for its seed, so that a cluster
// far larger than a machine can host is measured against the physical
// bound T* in seconds of computation.
package model
