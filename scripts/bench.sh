#!/usr/bin/env bash
# End-to-end benchmark: replay throughput and peak memory against the parse-only baseline.
#
# Usage: scripts/bench.sh [ENTITIES] [EVENTS]     (defaults: 1000000 10000000)
#
# Generates `gen --seed 7 --entities ENTITIES --events EVENTS` into $BENCH_DIR (default /work/bench), reusing
# the file when one with the same parameters exists, warms the page cache, then runs 3 alternating rounds of
#   credit-sentinel replay --parse-only --quiet FILE   (read + decode every line: the baseline)
#   credit-sentinel replay --quiet FILE                (read + decode + engine + alert records)
# each under /usr/bin/time, and prints per-run elapsed time, events/s and max RSS, then the medians, the
# ratio replay / parse-only and the peak RSS per entity.
set -euo pipefail

ENTITIES=${1:-1000000}
EVENTS=${2:-10000000}
ROUNDS=3
SEED=7
DIR=${BENCH_DIR:-/work/bench}

case "$ENTITIES$EVENTS" in
*[!0-9]*) echo "usage: $0 [ENTITIES] [EVENTS]  (positive integers)" >&2; exit 2 ;;
esac

cd "$(dirname "$0")/.."
BIN=target/release/credit-sentinel
TIME=/usr/bin/time
[[ -x $TIME ]] || { echo "$0: $TIME is required (GNU time)" >&2; exit 1; }

echo "== machine"
echo "cpus:    $(nproc)"
echo "cpu:     $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "memory:  $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
echo "commit:  $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "kernel:  $(uname -sr)"
echo

echo "== build"
cargo build --release --quiet
echo "$BIN built"

mkdir -p "$DIR"
FILE=$DIR/events-seed$SEED-e$ENTITIES-n$EVENTS.jsonl
if [[ -s $FILE ]]; then
    echo "reusing $FILE"
else
    echo "generating $FILE"
    "$BIN" gen --seed "$SEED" --entities "$ENTITIES" --events "$EVENTS" > "$FILE.tmp"
    mv "$FILE.tmp" "$FILE"
fi
echo "size:    $(du -h "$FILE" | cut -f1) ($(stat -c %s "$FILE") bytes)"
cat "$FILE" > /dev/null # warm the page cache
echo

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# run MODE ROUND: runs one replay, prints "elapsed maxrss_kb lines_read alerts".
run() {
    local mode=$1 round=$2 args=(replay --quiet)
    [[ $mode == parse-only ]] && args=(replay --parse-only --quiet)
    local t=$WORK/$mode.$round.time e=$WORK/$mode.$round.err
    if ! "$TIME" -f '%e %M' -o "$t" "$BIN" "${args[@]}" "$FILE" > /dev/null 2> "$e"; then
        echo "$0: '$BIN ${args[*]} $FILE' failed:" >&2
        tail -n 20 "$e" >&2
        exit 1
    fi
    local lines alerts
    lines=$(sed -n 's/^events read: \([0-9]*\).*/\1/p' "$e")
    alerts=$(sed -n 's/^alerts: \([0-9]*\).*/\1/p' "$e")
    [[ $mode == parse-only ]] && alerts=-
    echo "$(tail -n 1 "$t") ${lines:-0} ${alerts:--}"
}

# median of the numbers on stdin
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.0f", n / s; else print "inf" }'; }

echo "== runs ($ROUNDS rounds, alternating; $ENTITIES entities, $EVENTS events)"
printf '%-5s %-10s %9s %14s %12s %10s %10s\n' round mode elapsed_s events_per_s max_rss_kb lines alerts
declare -A ELAPSED RSS
LINES=0
for round in $(seq 1 "$ROUNDS"); do
    for mode in parse-only replay; do
        read -r elapsed rss lines alerts < <(run "$mode" "$round")
        ELAPSED[$mode]+="$elapsed "
        RSS[$mode]+="$rss "
        if ((LINES == 0)); then
            LINES=$lines
        elif ((lines != LINES)); then
            echo "$0: $mode read $lines lines, an earlier run read $LINES" >&2
            exit 1
        fi
        printf '%-5s %-10s %9s %14s %12s %10s %10s\n' "$round" "$mode" "$elapsed" "$(rate "$lines" "$elapsed")" "$rss" "$lines" "$alerts"
    done
done
echo

med() { tr ' ' '\n' <<< "$1" | grep . | median; }
P_T=$(med "${ELAPSED[parse-only]}")
R_T=$(med "${ELAPSED[replay]}")
P_M=$(med "${RSS[parse-only]}")
R_M=$(med "${RSS[replay]}")
echo "== medians"
printf '%-10s %9s %14s %12s\n' mode elapsed_s events_per_s max_rss_kb
printf '%-10s %9s %14s %12s\n' parse-only "$P_T" "$(rate "$LINES" "$P_T")" "$P_M"
printf '%-10s %9s %14s %12s\n' replay "$R_T" "$(rate "$LINES" "$R_T")" "$R_M"
awk -v r="$R_T" -v p="$P_T" -v rm="$R_M" -v pm="$P_M" -v n="$ENTITIES" 'BEGIN {
    if (p > 0) printf "ratio replay / parse-only (elapsed): %.2f\n", r / p
    else print "ratio replay / parse-only (elapsed): n/a (parse-only under the timer resolution)"
    printf "peak RSS per entity (replay max RSS / entities): %.0f bytes\n", rm * 1024 / n
    printf "peak RSS per entity above the parse-only baseline: %.0f bytes\n", (rm - pm) * 1024 / n
}'
