#!/usr/bin/env bash
# Installs what the real-process tests in bench/lab (and e2e) need on a
# Debian 12 machine, as root: Debian's containerd 1.6, docker-registry 2.8
# and iproute2 (ip, tc), plus containerd and ctr v2.4.2 built from the Go
# module into GOBIN, and the lab's Kubernetes binaries into a cache. Safe
# to run again: each step is skipped when its result is already there.
set -euo pipefail

CONTAINERD2_VERSION=v2.4.2

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: must run as root" >&2
	exit 1
fi

# Debian packages. runc comes with containerd; nftables counts packets in
# the security tests; containernetworking-plugins give the lab kubelets'
# containerd a CNI network (bench/lab/kube); gcc and libc6-dev let
# `go install` build containerd with cgo, as upstream does; chromium is the
# browser e2e.TestStatusPage drives.
apt_pkgs=(containerd docker-registry iproute2 nftables runc containernetworking-plugins ca-certificates gcc libc6-dev chromium)
missing=()
for p in "${apt_pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done
if [ "${#missing[@]}" -gt 0 ]; then
	echo "install-deps: apt-get install ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update
	apt-get install -y --no-install-recommends "${missing[@]}"
else
	echo "install-deps: Debian packages present"
fi

# containerd 2.x, its ctr and its runc shim, from the module, into GOBIN
# (GOPATH/bin by default). The lab puts GOBIN first on the 2.x daemon's
# PATH: Debian's 1.6 shim does not work with a 2.x daemon.
if ! command -v go >/dev/null; then
	echo "install-deps: go is not installed" >&2
	exit 1
fi
gobin="$(go env GOBIN)"
if [ -z "$gobin" ]; then
	gobin="$(go env GOPATH | cut -d: -f1)/bin"
fi
want="${CONTAINERD2_VERSION#v}"
for cmd in containerd ctr containerd-shim-runc-v2; do
	if [ -x "$gobin/$cmd" ] && go version -m "$gobin/$cmd" 2>/dev/null | grep -qE "^[[:space:]]+mod[[:space:]]+github.com/containerd/containerd/v2[[:space:]]+$CONTAINERD2_VERSION[[:space:]]"; then
		echo "install-deps: $gobin/$cmd is $want"
		continue
	fi
	echo "install-deps: go install $cmd@$CONTAINERD2_VERSION into $gobin"
	GOBIN="$gobin" GOFLAGS=-buildvcs=false go install "github.com/containerd/containerd/v2/cmd/$cmd@$CONTAINERD2_VERSION"
done

# The lab Kubernetes (etcd, kube-apiserver, controller-manager, scheduler,
# kubelet), built once into a cache: the first build takes about 10 minutes
# on 2 cores, so it runs here rather than inside a test beside others.
bash "$(dirname "$0")/../scripts/k8s-bins.sh" >/dev/null

echo "install-deps: done"
/usr/bin/containerd --version
"$gobin/containerd" --version
"$gobin/ctr" --version
/usr/bin/docker-registry --version
