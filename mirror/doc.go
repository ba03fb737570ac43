// Package mirror serves the OCI Distribution pull API that containerd calls
// on its hosts.toml mirror: manifests and blobs by tag or digest, ranges, and
// OCI error bodies, answering every request within a bounded time.
package mirror
