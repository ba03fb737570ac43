#!/usr/bin/env bash
# idle-cpu.sh measures the CPU time an idle shoal daemon uses over a minute:
# one daemon on loopback (an open mesh of one, no containerd), left alone
# for 10 s, then its user and system time from /proc over 60 s. Extra
# arguments go to `shoal daemon`; CLIENT=1 asks the status page's /live
# once a second meanwhile, as an open page does.
#
#   scripts/idle-cpu.sh BINARY [DAEMON FLAGS...]     e.g. scripts/idle-cpu.sh bin/shoal --status-page=false
set -euo pipefail
bin=$1
shift
dir=$(mktemp -d /tmp/idle-cpu-XXXXXX)
"$bin" daemon --insecure-open-mesh --containerd-sock "" --hosts-dir "" --data-dir "$dir/data" \
	--mirror-addr 127.0.0.1:17500 --metrics-addr 127.0.0.1:17503 --status-addr 127.0.0.1:17504 \
	--gossip-addr 127.0.0.1:17502 --p2p-addr 127.0.0.1:17501 --node-name idle "$@" >"$dir/log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
sleep 10
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
before=$(cpu)
if [ -n "${CLIENT:-}" ]; then
	end=$((SECONDS + 60))
	while [ $SECONDS -lt $end ]; do
		curl -s -o /dev/null http://127.0.0.1:17504/live
		sleep 1
	done
else
	sleep 60
fi
after=$(cpu)
echo "$(basename "$bin") $*: $(echo "scale=2; ($after - $before) / $(getconf CLK_TCK)" | bc) CPU seconds over 60 s"
