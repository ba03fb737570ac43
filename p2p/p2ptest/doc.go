// Package p2ptest starts in-process shoal mesh nodes on loopback, with
// in-memory content, for tests of p2p and of the packages built on it.
package p2ptest
