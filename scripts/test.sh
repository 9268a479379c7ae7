#!/usr/bin/env bash
# Every test of credit-sentinel: unit, integration and property tests, the shipped rule unit tests, and a
# differential test of `replay` against the independent Python reference on hostile generated streams.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked
cargo test --release --locked

bin=target/release/credit-sentinel
"$bin" check-rules alert-rules > /dev/null
"$bin" test-rules alert-rules/tests

# Differential test: the reference (tests/reference/ref_replay.py) was written from SPEC alone.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0
for args in "--seed 101 --lines 20000" "--seed 102 --lines 20000 --gray" "--seed 103 --lines 30000 --entities 12"; do
  for until in "" "2032-01-01T00:00:00Z"; do
    python3 tests/reference/hostile_gen.py $args > "$work/in.jsonl"
    u=()
    [ -n "$until" ] && u=(--until "$until")
    python3 tests/reference/ref_replay.py "${u[@]}" --rejects "$work/ref.rej" "$work/in.jsonl" > "$work/ref.jsonl" 2> /dev/null
    "$bin" replay --quiet "${u[@]}" --rules alert-rules --rejects "$work/rust.rej" "$work/in.jsonl" > "$work/rust.jsonl" 2> /dev/null
    if python3 tests/reference/compare.py "$work/ref.jsonl" "$work/rust.jsonl" \
      && diff <(cut -d: -f2 "$work/ref.rej") <(cut -d: -f2 "$work/rust.rej") > /dev/null; then
      echo "differential ($args ${until:+--until $until}): $(wc -l < "$work/rust.jsonl") alerts, equal"
      passed=$((passed + 1))
    else
      echo "differential ($args ${until:+--until $until}): DIFFERENT (alerts or rejected lines)"
      failed=$((failed + 1))
    fi
  done
done
echo "differential: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
