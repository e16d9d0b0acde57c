#!/usr/bin/env bash
# Builds podwatch and runs it on this host with the built-in defaults:
# events as JSON lines on stdout, /metrics /healthz /readyz /stats /events on 127.0.0.1:9176.
# Extra arguments go to `podwatch run` (see `podwatch run --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --quiet -p podwatch
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
exec $SUDO ./target/release/podwatch run "$@"
