// Package kube runs a real Kubernetes cluster in the lab: etcd,
// kube-apiserver, kube-controller-manager and kube-scheduler in one network
// namespace beside a docker-registry, and one kubelet per node namespace,
// each on its own containerd 2.x through CRI with runc. The binaries are the
// release ones built by scripts/k8s-bins.sh (make k8s-bins), not stand-ins,
// so what runs on it (shoal's chart, its DaemonSet) meets the same
// apiserver, scheduler and kubelet as on a real node.
//
// Everything needs root, the binaries that .ci/install-deps.sh installs and
// the ones k8s-bins builds. Close stops every process and removes what the
// cluster made, mounts and namespaces included.
package kube
