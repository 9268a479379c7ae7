#!/usr/bin/env bash
# Issue 7's target: replay throughput with the shipped domain sets enabled against the default policy alone,
# same binary, same input, same run. The two alternate ROUNDS times each under /usr/bin/time; prints each
# run's seconds, max RSS and alert count, the medians and the throughput ratio (domain sets / default alone).
#
# Usage: scripts/bench-domains.sh FILE [ROUNDS=5] [BIN=target/release/credit-sentinel]
#   e.g. scripts/bench-domains.sh /work/bench/events-seed11-e100000-n2000000.jsonl
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 FILE [ROUNDS] [BIN]" >&2; exit 2; }
FILE=$1 ROUNDS=${2:-5}
cd "$(dirname "$0")/.."
BIN=${3:-target/release/credit-sentinel}
[ -x "$BIN" ] || cargo build --release --quiet --bin credit-sentinel
enable=(--enable alert-rules/food --enable alert-rules/drug --enable alert-rules/special_equipment)

echo "== machine: $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(uname -sr)"
echo "== input: $FILE ($(wc -l < "$FILE") lines); commit $(git rev-parse --short HEAD)"
cat "$FILE" > /dev/null # page cache
out=$(mktemp) tf=$(mktemp)
trap 'rm -f "$out" "$tf"' EXIT
declare -a ta tb
for r in $(seq "$ROUNDS"); do
  for side in a b; do
    args=(); [ $side = b ] && args=("${enable[@]}")
    /usr/bin/time -o "$tf" -f "%e %M" "$BIN" replay --quiet --rules alert-rules "${args[@]}" "$FILE" > "$out" 2> /dev/null
    t=$(tail -1 "$tf")
    name=default; [ $side = b ] && name=domains
    echo "round $r $name: ${t% *} s, max RSS ${t#* } KiB, $(wc -l < "$out") alerts"
    if [ $side = a ]; then ta+=("${t% *}"); else tb+=("${t% *}"); fi
  done
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
ma=$(median "${ta[@]}") mb=$(median "${tb[@]}")
echo "median default alone ${ma} s, with the domain sets ${mb} s; throughput ratio $(awk -v a="$ma" -v b="$mb" 'BEGIN {printf "%.3f", a / b}') (target >= 0.8)"
