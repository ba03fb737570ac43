// Package e2e holds the end-to-end tests: real containerd 1.6 and 2.4
// daemons pulling through real shoal daemons from a real docker-registry.
// They need root and the binaries `make deps` installs.
package e2e
