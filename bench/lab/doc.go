// Package lab starts and drives real processes — a docker-registry, containerd
// 1.6 and 2.x daemons with CRI, network namespaces joined by a shaped bridge,
// and an in-process throttling proxy — for end-to-end tests and for
// `shoal bench --real`; each Start has a way back that ends the process group
// and removes what it made.
//
// It talks to containerd only through its command-line client and the CRI gRPC
// API, never through containerd's Go packages, so that the daemons under test
// are exactly the binaries a node runs. Everything here needs root and the
// binaries that .ci/install-deps.sh installs.
package lab
