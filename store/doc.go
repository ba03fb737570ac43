// Package store is shoal's own content-addressed blob store: blobs are written
// to a spool file, become visible only once their digest and size verify, can be
// read while they are still arriving, and are evicted least-recently-used first.
package store
