// Package containerdplugin is shoal's only door to containerd: it reads blobs
// and image names from containerd's content and image stores over the gRPC API
// (or straight from the content directory when it is mounted), follows its
// image and content events so that an image's blobs are announced as soon as
// containerd records it, writes or removes the hosts.toml mirror entries that
// send containerd's pulls to shoal, and reads the hosts containerd would pull
// from after shoal. No other shoal package imports containerd code.
package containerdplugin
