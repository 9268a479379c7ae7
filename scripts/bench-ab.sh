#!/usr/bin/env bash
# A/B benchmark of two builds on the same replay, same run: the baseline binary and the candidate alternate,
# ROUNDS times each, under /usr/bin/time; prints each run's seconds and max RSS, the medians and the ratio of
# throughputs (candidate / baseline). Used to measure the cost of a change on the engine's hot path.
#
# Usage: scripts/bench-ab.sh BASELINE_BIN CANDIDATE_BIN FILE [ROUNDS=3]
#   e.g. git worktree add /tmp/old <rev>; (cd /tmp/old && CARGO_TARGET_DIR=/tmp/old-target cargo build --release)
#        scripts/bench-ab.sh /tmp/old-target/release/credit-sentinel target/release/credit-sentinel \
#          /work/bench/events-seed11-e100000-n2000000.jsonl
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 BASELINE_BIN CANDIDATE_BIN FILE [ROUNDS]" >&2; exit 2; }
A=$1 B=$2 FILE=$3 ROUNDS=${4:-3}
cd "$(dirname "$0")/.."
rules=alert-rules/default.toml

echo "== machine: $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(uname -sr)"
echo "== input: $FILE ($(wc -l < "$FILE") lines); rules: $rules"
cat "$FILE" > /dev/null # page cache
declare -a ta tb
for r in $(seq "$ROUNDS"); do
  for side in a b; do
    bin=$A; [ $side = b ] && bin=$B
    out=$( { /usr/bin/time -f "%e %M" "$bin" replay --quiet --rules "$rules" "$FILE" > /dev/null; } 2>&1 | tail -1)
    echo "round $r $side: ${out% *} s, max RSS ${out#* } KiB"
    if [ $side = a ]; then ta+=("${out% *}"); else tb+=("${out% *}"); fi
  done
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
ma=$(median "${ta[@]}") mb=$(median "${tb[@]}")
echo "median baseline ${ma} s, candidate ${mb} s; candidate/baseline throughput $(awk -v a="$ma" -v b="$mb" 'BEGIN {printf "%.3f", a / b}')"
