#!/usr/bin/env bash
# Measures how many events a policy set makes on this host: idle for N seconds,
# then while a build runs as root. Prints events/s by rule, so a policy that
# floods (e.g. a directory rule on /root) shows up before it pages anyone.
#   sudo bash scripts/policy-rate.sh                    # built-in default, 30 s idle, default build
#   sudo bash scripts/policy-rate.sh -d policies/ -s 60 -- make -C somewhere
# The default build compiles podwatch-common from scratch into
# /root/.cache/podwatch-rate (cargo reads ~/.cargo and writes under /root,
# like the `go build` of issue 8).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
SECS=30
POLICY_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    -s) SECS="$2"; shift 2 ;;
    -d) POLICY_ARGS=(--policy-dir "$2"); shift 2 ;;
    --) shift; break ;;
    *) echo "usage: $0 [-s SECONDS] [-d POLICY_DIR] [-- BUILD COMMAND...]" >&2; exit 2 ;;
  esac
done
BUILD=("$@")
if [ ${#BUILD[@]} -eq 0 ]; then
  rm -rf /root/.cache/podwatch-rate
  BUILD=(cargo build --quiet --offline -p podwatch-common --features user --target-dir /root/.cache/podwatch-rate)
fi
[ "$(id -u)" -eq 0 ] || { echo "policy-rate.sh: needs root (loads eBPF programs)" >&2; exit 1; }
[ -x target/debug/podwatch ] || cargo build --quiet -p podwatch

tmp="$(mktemp -d)"
trap 'kill "$agent" 2>/dev/null; wait "$agent" 2>/dev/null; rm -rf "$tmp"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
target/debug/podwatch run --listen "127.0.0.1:$port" --output file --output-file "$tmp/events.jsonl" \
  --log-level warn ${POLICY_ARGS[@]+"${POLICY_ARGS[@]}"} &
agent=$!
for _ in $(seq 300); do
  python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/readyz', timeout=1)" 2>/dev/null && break
  kill -0 "$agent" || { echo "agent exited" >&2; exit 1; }
  sleep 0.2
done

# phase NAME: lines written since the mark, by kind/policy/rule.
report() {
  python3 - "$tmp/events.jsonl" "$1" "$2" "$3" <<'PY'
import json, sys, collections
path, start, secs, name = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
with open(path, "rb") as f:
    f.seek(start)
    lines = f.read().splitlines()
by = collections.Counter()
for l in lines:
    try:
        e = json.loads(l)
    except ValueError:
        continue
    by[(e.get("kind"), e.get("policy") or "-", e.get("rule") or "-")] += 1
total = sum(by.values())
print(f"{name}: {total} events in {secs:.1f} s = {total / secs:.1f} events/s")
for (kind, pol, rule), n in by.most_common(8):
    print(f"  {n / secs:8.1f}/s  {kind:8} {pol}/{rule}")
PY
}
size() { stat -c %s "$tmp/events.jsonl" 2>/dev/null || echo 0; }

mark=$(size); sleep "$SECS"; report "$mark" "$SECS" "idle"
mark=$(size); t0=$EPOCHREALTIME
"${BUILD[@]}" >/dev/null 2>&1 || echo "(the build failed; figures still count what it did)"
t1=$EPOCHREALTIME; sleep 1
report "$mark" "$(python3 -c "print($t1 - $t0)")" "build (${BUILD[*]})"
