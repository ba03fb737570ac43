// Package swarm holds the rules that decide how a blob spreads through the
// cluster: which node fetches it from the registry for everyone, whom a node
// may wait on, how many uploads a node serves and when it answers busy,
// what it streams of a blob it is still receiving, which piece a helper
// asks for and from whom, and when a download passes over a source, waits,
// or gives up. Each rule is a named function of plain data: the package
// does no network or file I/O, starts no goroutines and reads no clock (the
// time is passed in), so the daemon's resolver and p2p packages drive it
// with real events and a model drives it in virtual time.
package swarm
