#!/usr/bin/env bash
# Operations overhead benchmark: the daemon with the file source (event clock, follow = false) over the same
# generated events, alternating in one run between
#   plain: alert-rules/default.toml only (SPEC's policy), no [metrics];
#   ops:   every shipped rule file (default + regional aggregates), [metrics] with the regional view refreshed
#          every second, /metrics scraped every 100 ms by curl while the input is read.
# Prints each run's input phase (log "reading events" to "stopped") and lines/s, the view refreshes (how many,
# median and max microseconds, from the debug line "regional view refreshed"), then the medians and their ratio.
#
# Usage: scripts/bench-ops.sh [ENTITIES] [EVENTS] [ROUNDS]     (defaults: 100000 500000 3)
set -euo pipefail

ENTITIES=${1:-100000}
EVENTS=${2:-500000}
ROUNDS=${3:-3}
DIR=${BENCH_DIR:-/work/bench}
cd "$(dirname "$0")/.."
BIN=$PWD/target/release/credit-sentinel
cargo build --release --quiet

echo "== machine: $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), commit $(git rev-parse --short HEAD)"
mkdir -p "$DIR"
EVENTS_FILE="$DIR/events-seed11-e$ENTITIES-n$EVENTS.jsonl"
[[ -s $EVENTS_FILE ]] || "$BIN" gen --seed 11 --entities "$ENTITIES" --events "$EVENTS" > "$EVENTS_FILE"

WORK="$DIR/ops"
mkdir -p "$WORK/plain/rules"
cp alert-rules/default.toml "$WORK/plain/rules/"
config() { # NAME RULES WITH_METRICS
  local dir="$WORK/$1"
  mkdir -p "$dir"
  {
    echo "rules = \"$2\""
    echo "state_dir = \"$dir/state\""
    printf '[clock]\nmode = "event"\n[checkpoint]\ninterval_secs = 30\n'
    printf '[file]\npath = "%s"\nfollow = false\nalerts = "alerts.jsonl"\n' "$EVENTS_FILE"
    if [[ $3 == yes ]]; then
      printf '[metrics]\nlisten = "127.0.0.1:19464"\nview_interval_secs = 1\n'
    fi
  } > "$dir/config.toml"
}
config plain "$WORK/plain/rules" no
config ops "$PWD/alert-rules" yes

declare -A times
for round in $(seq 1 "$ROUNDS"); do
  for name in plain ops; do
    dir=$WORK/$name
    rm -rf "$dir/state"
    RUST_LOG=info,credit_sentinel::view=debug "$BIN" run --config "$dir/config.toml" 2> "$dir/log.txt" &
    pid=$!
    scrapes=0
    if [[ $name == ops ]]; then
      while kill -0 "$pid" 2> /dev/null; do
        curl -sf -o /dev/null http://127.0.0.1:19464/metrics && scrapes=$((scrapes + 1)) || true
        sleep 0.1
      done
    fi
    wait "$pid"
    read -r input refreshes med max < <(python3 - "$dir/log.txt" <<'PY'
import sys, datetime, re
t = {}
views = []
for line in open(sys.argv[1], encoding="utf-8"):
    for key in ("reading events", "stopped"):
        if key in line and key not in t:
            t[key] = datetime.datetime.fromisoformat(line.split()[0].rstrip("Z")[:26])
    m = re.search(r"micros=(\d+)", line)
    if "regional view refreshed" in line and m:
        views.append(int(m.group(1)))
views.sort()
med = views[len(views) // 2] if views else 0
print((t["stopped"] - t["reading events"]).total_seconds(), len(views), med, views[-1] if views else 0)
PY
)
    times[$name]+="$input "
    printf '%-5s round %d: input %6.2f s  %8.0f lines/s  alerts %d' "$name" "$round" "$input" \
      "$(echo "$EVENTS / $input" | bc -l)" "$(wc -l < "$dir/state/alerts.jsonl")"
    if [[ $name == ops ]]; then
      printf '  | %d scrapes, %d view refreshes: median %d µs, max %d µs' "$scrapes" "$refreshes" "$med" "$max"
    fi
    echo
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
p=$(echo "${times[plain]}" | median)
o=$(echo "${times[ops]}" | median)
printf 'median input phase: plain %.2f s, ops %.2f s; ops/plain throughput %.2f\n' "$p" "$o" "$(echo "$p / $o" | bc -l)"
