#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz, libFuzzer) of every decoder of outside input, each for a bounded time:
#
#   scripts/fuzz.sh [SECONDS per target, default 60] [TARGET...]   # default: every target
#
# Targets (fuzz/fuzz_targets/, their checks in fuzz/checks.rs): event_lines (Kafka messages and file lines),
# rule_file, config_file, checkpoint (a corrupted checkpoint must be refused, never trusted), admin_request.
# Seeds are fuzz/seeds/<target>/ (committed); what the fuzzer learns goes to fuzz/corpus/<target>/ (not
# committed, kept between runs). An input that fails a check or panics is copied to fuzz/regressions/<target>/
# and the script exits 1: `cargo test --test fuzz_inputs` then fails on it until it is fixed, and keeps it as a
# regression test for good (commit the file with the fix). An input that runs out of memory (2 GiB) or time
# (10 s) also fails the script; it stays in fuzz/artifacts/<target>/ (the stable test has no such bounds).
#
# Needs a nightly compiler (this machine kind has one beside stable; RUSTC_BOOTSTRAP=1 on stable otherwise)
# and cargo-fuzz (installed from crates.io when missing). Built without a sanitizer (`-s none`): the project
# has no `unsafe`, so what is left to find is panics, overflows, unbounded allocation and hangs; set
# FUZZ_SANITIZER=address for AddressSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(event_lines rule_file config_file checkpoint admin_request)

if ! command -v cargo-fuzz > /dev/null; then
  cargo install --locked --quiet cargo-fuzz@0.13.2
fi
if rustup run nightly rustc --version > /dev/null 2>&1; then
  toolchain=(+nightly)
else
  echo "fuzz: no nightly toolchain; using stable with RUSTC_BOOTSTRAP=1" >&2
  toolchain=()
  export RUSTC_BOOTSTRAP=1
fi
sanitizer=${FUZZ_SANITIZER:-none}

# Longest input per target: above the largest seed, and above the 64 KiB line limit for event lines.
declare -A max_len=([event_lines]=70000 [rule_file]=8192 [config_file]=16384 [checkpoint]=8192 [admin_request]=4096)

if [ $# -eq 0 ]; then
  (cd fuzz && cargo "${toolchain[@]}" fuzz build -s "$sanitizer")
else
  for t in "${targets[@]}"; do (cd fuzz && cargo "${toolchain[@]}" fuzz build -s "$sanitizer" "$t"); done
fi

failed=()
for t in "${targets[@]}"; do
  rm -rf "fuzz/artifacts/$t"
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  echo "fuzz: $t for ${seconds}s"
  log="fuzz/artifacts/$t/last-run.log"
  dict=()
  [ -f "fuzz/dict/$t.dict" ] && dict=(-dict="dict/$t.dict")
  if (cd fuzz && cargo "${toolchain[@]}" fuzz run -s "$sanitizer" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -max_len="${max_len[$t]}" -rss_limit_mb=2048 -timeout=10 \
        "${dict[@]}" -print_final_stats=1) > "$log" 2>&1; then
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)|^#[0-9]+ *DONE' "$log" \
      | sed "s/^/fuzz: $t: /" || true
  else
    failed+=("$t")
    mkdir -p "fuzz/regressions/$t"
    for a in fuzz/artifacts/"$t"/crash-*; do
      [ -e "$a" ] || continue
      cp "$a" "fuzz/regressions/$t/"
      echo "fuzz: $t: failing input saved as fuzz/regressions/$t/$(basename "$a")" >&2
    done
    for a in fuzz/artifacts/"$t"/{oom,timeout,leak}-*; do
      [ -e "$a" ] && echo "fuzz: $t: input over the memory or time bound: $a" >&2
    done
    grep -E -A12 'panicked at|ERROR: libFuzzer|SUMMARY' "$log" | head -40 >&2 || true
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]} (full logs: fuzz/artifacts/<target>/last-run.log)" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, nothing found"
