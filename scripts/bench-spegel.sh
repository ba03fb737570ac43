#!/usr/bin/env bash
# bench-spegel.sh runs the real-mode benchmark with Spegel as a third
# candidate next to direct and shoal: same links, same registry, same
# containerd, one Spegel per node in the node's namespace, every node
# bootstrapping from node 0 over HTTP. It builds nothing: pass the path of a
# Spegel binary built from Spegel's own repository (docs/benchmarks.md,
# "Comparing with Spegel", names the version it was tested with).
#
#   sudo scripts/bench-spegel.sh /path/to/spegel [shoal bench flags...]
#   sudo scripts/bench-spegel.sh ~/bin/spegel --nodes 8 --layers 4 --layer-size 32MiB --scenarios cold,warm
#
# SHOAL (default: bin/shoal of this repository) is the shoal binary;
# SPEGEL_LOG_LEVEL (default INFO; DEBUG logs every request) is Spegel's, in
# the mirror logs that --keep-logs keeps. Extra flags go to
# `shoal bench --real` as they are; --candidates, if given, replaces the
# default direct,spegel,shoal.
set -euo pipefail

usage() {
  sed -n '2,16s/^# \{0,1\}//p' "$0" >&2
  exit "${1:-2}"
}
die() {
  echo "bench-spegel: $*" >&2
  exit 1
}

[ $# -ge 1 ] || usage
case $1 in -h | --help) usage 0 ;; -*) usage ;; esac
spegel=$1
shift

[ -e "$spegel" ] || die "no Spegel binary at $spegel (build it from Spegel's own repository and pass its path)"
if [ ! -f "$spegel" ] || [ ! -x "$spegel" ]; then die "$spegel is not an executable file"; fi
spegel=$(realpath "$spegel")
# The path goes into a command that shoal bench runs through sh -c and in
# which it replaces {placeholders}: keep it plain.
[[ $spegel =~ ^[A-Za-z0-9._/+@:,=-]+$ ]] || die "$spegel: the path may hold only letters, digits and ._/+@:,=- (move or link the binary)"

repo=$(cd "$(dirname "$0")/.." && pwd)
shoal=${SHOAL:-$repo/bin/shoal}
[ -x "$shoal" ] || die "no shoal binary at $shoal (go build -o bin/shoal ./cmd/shoal, or set SHOAL)"

loglevel=${SPEGEL_LOG_LEVEL:-INFO}
case $loglevel in DEBUG | INFO | WARN | ERROR) ;; *) die "SPEGEL_LOG_LEVEL=$loglevel: want DEBUG, INFO, WARN or ERROR" ;; esac

[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, tc, containerd); run it with sudo"

candidates=(--candidates "direct,spegel,shoal")
for a in "$@"; do
  case $a in --candidates | --candidates=*) candidates=() ;; esac
done

# Spegel's registry serves containerd's content on {mirror_port}; its
# libp2p router, HTTP bootstrap and metrics listen on the node's own IP.
# Node 0 serves its peer ID at :5002/id and every node bootstraps from it.
# No --mirrored-registries here: Spegel matches it against the registry
# named in containerd's distribution-source labels, which hold the host
# without its port, so with the lab's registry on :5000 every layer would be
# filtered out and never advertised. Left empty, Spegel mirrors every
# registry, and the lab has only one.
run="$spegel --log-level $loglevel registry
 --containerd-sock {containerd_sock} --containerd-namespace k8s.io
 --containerd-content-path {content_dir} --data-dir {data_dir}
 --registry-addr :{mirror_port} --router-addr {ip}:5001 --metrics-addr {ip}:9090
 --bootstrap-kind http --http-bootstrap-addr {ip}:5002 --http-bootstrap-peer http://{seed_ip}:5002"
# Spegel writes the node's hosts.toml itself: its mirror first, the
# registry as the server.
setup="$spegel configuration --containerd-registry-config-path {hosts_dir}
 --mirrored-registries http://{registry} --mirror-targets http://127.0.0.1:{mirror_port}"

set -x
exec "$shoal" bench --real "${candidates[@]}" \
  --candidate "spegel=${run//$'\n'/}" \
  --candidate-setup "spegel=${setup//$'\n'/}" \
  "$@"
