#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and the privileged
# end-to-end tests that load the real kernel programs. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

if [ "$(id -u)" -ne 0 ]; then
  echo "test.sh: the integration tests load eBPF programs and need root; re-running with sudo" >&2
  exec sudo -E env "PATH=$PATH" bash "$0" "$@"
fi
# Never let a privileged test skip itself quietly here.
export PODWATCH_REQUIRE_PRIVILEGED=1

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo test"
# Two at a time: each integration test runs its own agent, and every agent sees
# every process on the machine.
cargo test --quiet -- --test-threads 2
