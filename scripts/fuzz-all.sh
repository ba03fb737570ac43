#!/usr/bin/env bash
# fuzz-all.sh runs every fuzz target of the module (or of the packages given)
# for DURATION each, one after the other, and prints a Markdown table of
# target, package, duration and executions, fit for docs. A target that
# fails stops nothing: its row says FAIL and the script exits 1 at the end,
# with the crasher left in the package's testdata/fuzz/<Target>/.
#
#   scripts/fuzz-all.sh [DURATION] [PACKAGE...]     e.g. scripts/fuzz-all.sh 5m ./mirror
#
# FUZZPARALLEL (default 1) sets -parallel, the number of fuzzing workers.
set -u
GO=${GO:-go}
duration=${1:-1m}
shift || true
pkgs=("$@")
[ ${#pkgs[@]} -eq 0 ] && pkgs=(./...)
parallel=${FUZZPARALLEL:-1}
logdir=$(mktemp -d)
trap 'rm -rf "$logdir"' EXIT

rows=()
failed=0
for pkg in $($GO list "${pkgs[@]}"); do
  for target in $($GO test -list '^Fuzz' "$pkg" | grep '^Fuzz'); do
    log="$logdir/$target.log"
    echo "== $pkg $target ($duration)" >&2
    if $GO test -run '^$' -fuzz "^$target\$" -fuzztime "$duration" -parallel "$parallel" "$pkg" >"$log" 2>&1; then
      result=ok
    else
      result=FAIL
      failed=1
      tail -n 30 "$log" >&2
    fi
    # The last progress line has the run's totals:
    # "fuzz: elapsed: 60s, execs: 123456 (2057/sec), new interesting: 3 (total: 20)"
    last=$(grep -E '^fuzz: elapsed: .*execs: [0-9]+' "$log" | tail -n 1)
    execs=$(sed -E 's/.*execs: ([0-9]+).*/\1/' <<<"$last")
    elapsed=$(sed -E 's/^fuzz: elapsed: ([0-9a-z.]+),.*/\1/' <<<"$last")
    rows+=("| $target | ${pkg#github.com/shoal-dev/shoal/} | ${elapsed:-?} | ${execs:-?} | $result |")
  done
done

echo "| target | package | duration | execs | result |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
exit $failed
