#!/usr/bin/env bash
# Fuzzes every parser of outside input with cargo fuzz (libFuzzer, nightly,
# AddressSanitizer, debug assertions on): ring-buffer records, policies, the
# agent config, the static pod file, Kubernetes watch lines and list pages,
# sink responses. Not part of scripts/test.sh (CI's timed path).
#
#   scripts/fuzz.sh [TARGET...]     all six targets by default
#
#   FUZZ_RUNS=N      executions per target (default 1000000; -1 = until stopped)
#   FUZZ_TIMEOUT=S   one input running longer is a failure (default 60: wall
#                    time, and nice 19 can starve a run for seconds on a busy machine)
#   FUZZ_MAX_LEN=N   longest input tried (default: libFuzzer's, from the corpus)
#   FUZZ_MERGE=1     afterwards, add the inputs of the working corpus that
#                    reach new edges to the committed corpus (fuzz/corpus/)
#
# fuzz/dict/<target>.dict, when there, is the target's libFuzzer dictionary
# (keys, YAML/JSON syntax, boundary numbers libFuzzer rarely types itself).
# Corpora: fuzz/corpus/<target>/ are the committed seeds and a corpus minimized
# to edges (FUZZ_MERGE=1 adds to it; a plain run only reads it);
# fuzz/work/<target>/ is the working corpus, kept between runs so each run
# starts where the last one stopped. A crash, hang or out-of-memory
# input lands in fuzz/artifacts/<target>/; reproduce it with
#   cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>
# and turn it into a unit test in the exporter crate before fixing it.
# Per target this prints executions, wall seconds, corpus size and crashes;
# the exit status is non-zero when any target found one.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

ALL=(decode_record policy agent_config static_pods kube_watch sink_response)
if [ $# -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL[@]}"); fi
for t in "${TARGETS[@]}"; do
  [[ " ${ALL[*]} " == *" $t "* ]] || { echo "fuzz.sh: unknown target $t (one of: ${ALL[*]})" >&2; exit 2; }
done
RUNS="${FUZZ_RUNS:-1000000}"
TIMEOUT="${FUZZ_TIMEOUT:-60}"
# anyhow captures a backtrace for every error when RUST_BACKTRACE is set, which
# under ASan costs more than parsing; panics still print theirs.
export RUST_LIB_BACKTRACE="${RUST_LIB_BACKTRACE:-0}"

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz.sh: cargo fuzz needs the nightly toolchain; scripts/setup.sh installs it" >&2
  exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz" >&2
  nice -n 19 cargo install cargo-fuzz --locked
fi

echo "== cargo fuzz build ${TARGETS[*]}" >&2
for t in "${TARGETS[@]}"; do
  nice -n 19 cargo +nightly fuzz build "$t" >&2
done

mkdir -p fuzz/logs
failed=0
summary=()
for t in "${TARGETS[@]}"; do
  work="fuzz/work/$t"
  artifacts="fuzz/artifacts/$t"
  mkdir -p "$work" "$artifacts" "fuzz/corpus/$t"
  before=$(find "$artifacts" -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | wc -l)
  args=(-runs="$RUNS" -timeout="$TIMEOUT" -print_final_stats=1)
  [ -n "${FUZZ_MAX_LEN:-}" ] && args+=(-max_len="$FUZZ_MAX_LEN")
  [ -f "fuzz/dict/$t.dict" ] && args+=(-dict="fuzz/dict/$t.dict")
  log="fuzz/logs/$t.log"
  echo "== $t: $RUNS runs (log: $log)" >&2
  start=$(date +%s.%N)
  rc=0
  # The working corpus first: libFuzzer writes new inputs only to the first directory.
  nice -n 19 cargo +nightly fuzz run "$t" "$work" "fuzz/corpus/$t" -- "${args[@]}" >"$log" 2>&1 || rc=$?
  end=$(date +%s.%N)
  secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.0f", b - a }')
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  after=$(find "$artifacts" -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | wc -l)
  crashes=$((after - before))
  if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
    crashes="?"   # libFuzzer failed without leaving an artifact: read the log
  fi
  files=$(find "$work" -type f | wc -l)
  kb=$(du -sk --apparent-size "$work" | cut -f1)
  summary+=("$(printf '%-14s %12s %8s %8s %8s %8s' "$t" "${execs:-?}" "$secs" "$files" "${kb}K" "$crashes")")
  if [ "$rc" -ne 0 ] || [ "$crashes" != 0 ]; then
    failed=1
    echo "fuzz.sh: $t failed (exit $rc); see $log and $artifacts/" >&2
    tail -n 30 "$log" >&2
  elif [ "${FUZZ_MERGE:-0}" = 1 ]; then
    # Edges only (no hit counters): the committed corpus stays small.
    nice -n 19 cargo +nightly fuzz run "$t" "fuzz/corpus/$t" "$work" -- -merge=1 -use_counters=0 >>"$log" 2>&1
  fi
done

printf '%-14s %12s %8s %8s %8s %8s\n' target executions seconds corpus size crashes
printf '%s\n' "${summary[@]}"
exit "$failed"
