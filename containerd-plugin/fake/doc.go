// Package fake is an in-memory stand-in for containerd's content and image
// stores with the method set of containerdplugin.Client, for tests of the
// packages that read containerd.
package fake
