#!/usr/bin/env bash
# Prints podwatch's performance figures. Each is a ratio or a rate measured in
# the same run (the machine is shared and noisy):
#   1. what every open, exec and connect on the node pays: no agent vs podwatch vs
#      bpftrace on the same hooks, kernel program run times, agent CPU and RSS,
#      the end-to-end matched-event rate (bench/system.py, needs root);
#   2. the reader's work per event (decode, enrich, encodings), /metrics scrape
#      and sink encoders (cargo benches).
# BENCH_ROUNDS (default 5) sets the rounds of part 1.
# --baseline REV also builds REV (a commit, e.g. main~3) and measures it in
# the same rounds, so "before" and "after" share the machine's noise.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --bench
export PATH="$HOME/.cargo/bin:$PATH"
if [ "$(id -u)" -ne 0 ]; then
  echo "bench.sh: the system bench loads eBPF programs and needs root; re-running with sudo" >&2
  exec sudo -E env "PATH=$PATH" bash "$0" "$@"
fi
extra=()
if [ "${1:-}" = "--baseline" ]; then
  rev="${2:?--baseline needs a revision}"
  src="$(mktemp -d)/baseline"
  git worktree add --detach --quiet "$src" "$rev"
  trap 'git worktree remove --force "$src"' EXIT
  # Its own target dir, seeded with a copy of this tree's so dependencies are
  # not rebuilt (sharing one dir lets the two trees' workspace crates mix).
  if [ -d target/release ]; then
    mkdir -p "$src/target" && cp -a target/release "$src/target/" && rm -f "$src/target/release/podwatch"
  fi
  (cd "$src" && cargo build --release --quiet -p podwatch 2>&1 | grep -v "^warning: podwatch@") || true
  [ -x "$src/target/release/podwatch" ] || { echo "bench.sh: building $rev failed" >&2; exit 1; }
  cp "$src/target/release/podwatch" "$(dirname "$src")/podwatch-baseline"
  extra=(--baseline-agent "$(dirname "$src")/podwatch-baseline")
fi
cargo build --release --quiet -p podwatch 2>&1 | grep -v "^warning: podwatch@" || true
workload="$(mktemp -d)/workload"
cc -O2 -static -o "$workload" tests/integration/workload.c
python3 bench/system.py --workload "$workload" --rounds "${BENCH_ROUNDS:-5}" "${extra[@]}"
echo
cargo bench --quiet -p podwatch --bench pipeline --bench scrape --bench sinks 2>&1 | grep -v "^warning: podwatch@"
