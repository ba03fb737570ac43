// Package resolver decides where the bytes of a manifest or blob come from:
// the node itself (containerd, then shoal's own store), a download of the same
// digest already running, the upstream registry (fetched once however many
// clients ask), or a fast miss that sends containerd to the registry itself.
package resolver
