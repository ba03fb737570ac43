// Package p2p is shoal's mesh: it keeps the member list of the cluster with
// hashicorp/memberlist, finds which members hold a blob through a private
// libp2p Kademlia DHT keyed by the blob's CID, and streams blobs between
// members over an authenticated libp2p protocol. It knows nothing of
// containerd or of the OCI API; what a node serves comes from a Content.
package p2p
