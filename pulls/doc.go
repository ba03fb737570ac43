// Package pulls keeps, in bounded memory, the records of the node's last
// image pulls: for each blob of a pull, when it started and ended, how
// many bytes came from each source (the node's own copy, each peer, the
// registry), and every source given up on the way, with why and the time
// it cost. It implements the resolver's Recorder; `shoal explain` and the
// status page read the same records.
package pulls
