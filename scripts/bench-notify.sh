#!/usr/bin/env bash
# Notification overhead benchmark: the daemon with the file source (event clock, follow = false) over the
# same generated events, with and without [notify], alternating, in one run. With [notify] every alert is
# routed (five receivers, inspect to two), grouped by entity and, at the end of the input, written as
# .eml files (the embedded default transport); without it, alerts are only written to the alert file.
#
# Usage: scripts/bench-notify.sh [ENTITIES] [EVENTS] [ROUNDS]     (defaults: 100000 500000 3)
# Prints each run's input phase (log "reading events" to the end of the input: "stopped" without
# notifications, "input ended" with them) and its lines/s, then, with notifications, the send phase (every
# waiting group made into an e-mail, queued durably and written out as .eml) and its e-mails/s; then the
# medians of the input phases and their ratio.
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

WORK="$DIR/notify"
config() { # NAME WITH_NOTIFY
  local dir="$WORK/$1"
  mkdir -p "$dir"
  {
    echo "rules = \"$PWD/alert-rules\""
    echo "state_dir = \"$dir/state\""
    printf '[clock]\nmode = "event"\n[checkpoint]\ninterval_secs = 30\n'
    printf '[file]\npath = "%s"\nfollow = false\nalerts = "alerts.jsonl"\n' "$EVENTS_FILE"
    if [[ $2 == yes ]]; then
      # deploy/local.toml's [notify] section: the README's example routes.
      sed -n '/^\[notify\]/,$p' deploy/local.toml
    fi
  } > "$dir/config.toml"
  echo "$dir"
}
plain=$(config plain no)
notify=$(config notify yes)

declare -A times
for round in $(seq 1 "$ROUNDS"); do
  for name in plain notify; do
    dir=$WORK/$name
    rm -rf "$dir/state"
    "$BIN" run --config "$dir/config.toml" 2> "$dir/log.txt"
    read -r input send < <(python3 - "$dir/log.txt" <<'PY'
import sys, datetime
t = {}
for line in open(sys.argv[1], encoding="utf-8"):
    for key in ("reading events", "input ended", "stopped"):
        if key in line and key not in t:
            t[key] = datetime.datetime.fromisoformat(line.split()[0].rstrip("Z")[:26])
end = t.get("input ended", t["stopped"])
print((end - t["reading events"]).total_seconds(), (t["stopped"] - end).total_seconds())
PY
)
    times[$name]+="$input "
    alerts=$(wc -l < "$dir/state/alerts.jsonl")
    mails=$( (find "$dir/state/mail" -name '*.eml' 2> /dev/null || true) | wc -l)
    printf '%-6s round %d: input %6.2f s  %8.0f lines/s  alerts %d' "$name" "$round" "$input" \
      "$(echo "$EVENTS / $input" | bc -l)" "$alerts"
    if [[ $name == notify ]]; then
      printf '  | send %6.2f s  e-mails %d  %6.0f e-mails/s' "$send" "$mails" "$(echo "$mails / ($send + 0.001)" | bc -l)"
    fi
    echo
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
p=$(echo "${times[plain]}" | median)
n=$(echo "${times[notify]}" | median)
printf 'median input phase: plain %.2f s, notify %.2f s; notify/plain throughput %.2f\n' "$p" "$n" "$(echo "$p / $n" | bc -l)"
