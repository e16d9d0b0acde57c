#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and the privileged
# end-to-end tests that load the real kernel programs. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
export PATH="$HOME/.cargo/bin:$PATH"

if [ "$(id -u)" -ne 0 ]; then
  echo "test.sh: the integration tests load eBPF programs and need root; re-running with sudo" >&2
  exec sudo -E env "PATH=$PATH" bash "$0" "$@"
fi
# Never let a privileged or broker test skip itself quietly here.
export PODWATCH_REQUIRE_PRIVILEGED=1
export PODWATCH_REQUIRE_KAFKA=1
# The OTLP wire-format test's Python receiver (PyPI opentelemetry-proto, in setup's venv).
export PODWATCH_REQUIRE_OTLP_PYTHON=1
# Nor may a test that needs a tool: promtool, kubectl, kubernetes-validate, podman,
# buildah, node + @grafana/lezer-logql (setup.sh --test installs them all).
# A real Loki is required whenever ../shared/bin/loki.zst is there (CI) or
# PODWATCH_REQUIRE_LOKI=1; PODWATCH_LOKI_BIN points at another binary.
export PODWATCH_REQUIRE_TOOLS=1

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
# The kernel crate only builds for the BPF target, with the nightly toolchain.
(cd exporter-ebpf && cargo +nightly clippy --quiet --release --target bpfel-unknown-none -Z build-std=core -- -D warnings)
echo "== scripts/image.sh"
# The image tests (tests/integration/image.rs) run this image; building it
# once here keeps the release build out of the parallel test run. If it
# fails, those tests try again and report why.
if bash scripts/image.sh >/dev/null; then
  export PODWATCH_IMAGE_BUILT=1
fi
echo "== cargo test"
# Two at a time: each integration test runs its own agent, and every agent sees
# every process on the machine.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --quiet -- --test-threads 2 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# The focused kernel suite on Debian's 5.10, 6.1 and 6.12 under qemu (TCG),
# kernels side by side; its per-kernel `test result:` lines join the totals
# below. PODWATCH_KERNEL_MATRIX=0 leaves it out (README, Kernels).
if [ "${PODWATCH_KERNEL_MATRIX:-1}" = 1 ]; then
  echo "== kernel matrix"
  PODWATCH_REQUIRE_KERNELS=1 bash scripts/kernel-matrix.sh 2>&1 | tee -a "$log"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
fi
set -e
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
