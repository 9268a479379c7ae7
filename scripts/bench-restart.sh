#!/usr/bin/env bash
# Restart benchmark: how long the daemon takes from start to ready (state restored, source open) with the
# state of ENTITIES entities, against reading the checkpoint file's bytes (the I/O floor), in the same run.
#
# Usage: scripts/bench-restart.sh [ENTITIES] [EVENTS]     (defaults: 1000000 10000000)
#
# Builds the state once: `run` with the file source (event clock, follow = false) over the events of
# `gen --seed 7` (the file of scripts/bench.sh, reused), which ends with a checkpoint. Then 3 rounds of:
#   cat CHECKPOINT > /dev/null                      (the bytes, from the page cache)
#   credit-sentinel run --config ...               (restore, find the file's end, checkpoint, exit)
# and prints the time to ready from the daemon's log ("starting" to "reading events"), the whole run,
# the checkpoint's size and the peak RSS.
set -euo pipefail

ENTITIES=${1:-1000000}
EVENTS=${2:-10000000}
DIR=${BENCH_DIR:-/work/bench}
cd "$(dirname "$0")/.."
BIN=target/release/credit-sentinel
TIME=/usr/bin/time
cargo build --release --quiet

echo "== machine: $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), commit $(git rev-parse --short HEAD)"
mkdir -p "$DIR"
EVENTS_FILE="$DIR/events-seed7-e$ENTITIES-n$EVENTS.jsonl"
[[ -s $EVENTS_FILE ]] || "$BIN" gen --seed 7 --entities "$ENTITIES" --events "$EVENTS" > "$EVENTS_FILE"

WORK="$DIR/restart"
rm -rf "$WORK" && mkdir -p "$WORK"
cat > "$WORK/config.toml" <<TOML
rules = "$PWD/alert-rules"
state_dir = "$WORK/state"
[clock]
mode = "event"
[checkpoint]
interval_secs = 86400
[file]
path = "$EVENTS_FILE"
follow = false
alerts = "alerts.jsonl"
TOML

echo "== building the state ($EVENTS events)"
RUST_LOG=credit_sentinel=debug $TIME -f "first run: %e s, max RSS %M KiB" "$BIN" run --config "$WORK/config.toml" 2> "$WORK/first.log" || { cat "$WORK/first.log"; exit 1; }
grep -E "first run|checkpoint written" "$WORK/first.log" | tail -2 | sed 's/\x1b\[[0-9;]*m//g'

ms() { # the milliseconds between the first log lines matching $2 and $3 in $1
  python3 - "$@" <<'PY'
import sys, datetime
path, a, b = sys.argv[1:4]
def ts(pat):
    for line in open(path):
        if pat in line:
            return datetime.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00"))
print(round((ts(b) - ts(a)).total_seconds() * 1000))
PY
}

echo "== rounds"
for round in 1 2 3; do
  ckpt=$(ls "$WORK/state/file/"*.ckpt | tail -1)
  start=$(date +%s%N)
  cat "$ckpt" > /dev/null
  floor=$(( ($(date +%s%N) - start) / 1000000 ))
  RUST_LOG=info $TIME -f "run: %e s, max RSS %M KiB" "$BIN" run --config "$WORK/config.toml" 2> "$WORK/restart.log"
  ready=$(ms "$WORK/restart.log" "starting" "reading events")
  echo "round $round: checkpoint $(( $(stat -c %s "$ckpt") / 1048576 )) MiB read in $floor ms; restart to ready $ready ms; $(grep -E '^run:' "$WORK/restart.log")"
done
