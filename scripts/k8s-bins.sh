#!/usr/bin/env bash
# Builds the Kubernetes control plane, the kubelet and etcd that the lab
# cluster runs (bench/lab/kube), and the kubectl that e2e/k8s puts in an image
# for the chart's uninstall hook, from the pinned module in e2e/k8s/tools, into
# a cache directory keyed by the versions: a binary already there is kept, so
# only the first run pays for the build (several minutes per binary).
#
#   scripts/k8s-bins.sh          build what is missing, print the directory
#   SHOAL_K8S_BIN=DIR            use DIR instead of the cache
set -euo pipefail

K8S_VERSION=v1.34.2
here="$(cd "$(dirname "$0")/.." && pwd)"
tools="$here/e2e/k8s/tools"
etcd_version="$(cd "$tools" && go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}"
dir="${SHOAL_K8S_BIN:-$cache/shoal-k8s/$K8S_VERSION-etcd$etcd_version}"
mkdir -p "$dir"

# Kubernetes' own build (hack/lib/version.sh) stamps these; without them the
# binaries call themselves v0.0.0 and the kubelet's version skew checks fail.
minor="${K8S_VERSION#v1.}"
minor="${minor%%.*}"
vpkgs=(k8s.io/component-base/version k8s.io/client-go/pkg/version)
ldflags="-s -w"
for p in "${vpkgs[@]}"; do
	ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
	ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done

pkgs=()
for cmd in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do
	[ -x "$dir/$cmd" ] || pkgs+=("k8s.io/kubernetes/cmd/$cmd")
done
[ -x "$dir/etcd" ] || pkgs+=("./etcd")

if [ "${#pkgs[@]}" -gt 0 ]; then
	echo "k8s-bins: building ${pkgs[*]} into $dir" >&2
	start=$(date +%s)
	tmp="$(mktemp -d "$dir/.build.XXXXXX")"
	trap 'rm -rf "$tmp"' EXIT
	# One go build for all of them shares the compiled packages. CGO off:
	# static binaries, as Kubernetes releases them.
	(cd "$tools" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}")
	mv "$tmp"/* "$dir/"
	echo "k8s-bins: built in $(($(date +%s) - start))s" >&2
else
	echo "k8s-bins: cached in $dir" >&2
fi
echo "$dir"
