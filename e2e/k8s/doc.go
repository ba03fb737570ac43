// Package k8s installs shoal's Helm chart on a real Kubernetes (the lab
// cluster of bench/lab/kube) and checks it as an operator would: the
// DaemonSet Ready on every node, the daemons in one encrypted mesh,
// containerd on each node pulling through its shoal, the registry's egress
// for a new image, a helm upgrade rolling the DaemonSet while pods of
// another image start, and what an uninstall leaves behind. It has tests
// only; `make e2e-k8s` runs them.
package k8s
