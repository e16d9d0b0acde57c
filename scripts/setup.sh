#!/usr/bin/env bash
# Installs everything podwatch needs to build and run on a fresh Debian 12
# machine; `setup.sh --test` adds what the test suite needs (Prometheus, a
# Kafka-protocol broker, a Kafka consumer, the container tools);
# `setup.sh --image` adds only what scripts/image.sh needs (buildah, podman,
# runc). Idempotent: every step checks first, so a second run takes a
# fraction of a second.
set -euo pipefail
WITH_TESTS=0
WITH_IMAGE=0
WITH_BENCH=0
for arg in "$@"; do
  case "$arg" in
    --test) WITH_TESTS=1; WITH_IMAGE=1 ;;
    --image) WITH_IMAGE=1 ;;
    # The benchmarks need everything the tests need, plus bpftrace as their baseline.
    --bench) WITH_TESTS=1; WITH_IMAGE=1; WITH_BENCH=1 ;;
    *) printf 'setup: unknown option %s (--test, --image, --bench)\n' "$arg" >&2; exit 2 ;;
  esac
done

log() { printf 'setup: %s\n' "$*" >&2; }
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# --- Debian packages -------------------------------------------------------
# llvm-22 + friends: bpf-linker links against the same LLVM as the nightly rustc.
# bpftool: cross-checks and feature probing. libssl-dev, zlib, zstd: librdkafka,
# which the rdkafka crate builds from source for the Kafka sink.
APT_PKGS=(llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev libxml2-dev libssl-dev
          bpftool pkg-config build-essential python3)
# Tests: a real Prometheus and promtool, pip for the Kafka consumer.
# Dashboards/rules tests: Node for Grafana's LogQL parser, zstd to unpack the
# test Loki, iproute2 + util-linux for an isolated network namespace.
[ "$WITH_TESTS" = 1 ] && APT_PKGS+=(prometheus python3-pip python3-venv openssl zstd iproute2 util-linux)
# Any Node with npm will do (some machines carry NodeSource's, which bundles npm).
[ "$WITH_TESTS" = 1 ] && ! { command -v node && command -v npm; } >/dev/null 2>&1 && APT_PKGS+=(nodejs npm)
# The agent's OCI image is built with buildah and run (in the tests) with
# podman on runc: crun refuses hybrid cgroup layouts such as this machine's.
[ "$WITH_IMAGE" = 1 ] && APT_PKGS+=(buildah podman runc)
[ "$WITH_BENCH" = 1 ] && APT_PKGS+=(bpftrace)
# Kernel matrix (scripts/kernel-matrix.sh): qemu boots Debian's kernels from a
# busybox initramfs packed with cpio.
[ "$WITH_TESTS" = 1 ] && APT_PKGS+=(qemu-system-x86 busybox-static cpio binutils)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian prometheus package starts a system service; tests run their own instance.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
  $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

# --- containers ---------------------------------------------------------------
# RLIMIT_NOFILE cannot be raised on every machine (not on ours): without
# `default_ulimits = []` podman fails to start any container there.
if [ "$WITH_IMAGE" = 1 ]; then
  conf=/etc/containers/containers.conf
  if ! grep -qs '^default_ulimits *= *\[\]' "$conf"; then
    log "setting default_ulimits = [] in $conf"
    $SUDO mkdir -p /etc/containers
    if grep -qs '^\[containers\]' "$conf"; then
      $SUDO sed -i -e '/^default_ulimits *=/d' -e 's/^\[containers\]$/[containers]\ndefault_ulimits = []/' "$conf"
    else
      printf '[containers]\ndefault_ulimits = []\n' | $SUDO tee -a "$conf" >/dev/null
    fi
  fi
fi

# --- Rust toolchains ----------------------------------------------------------
export PATH="$HOME/.cargo/bin:$PATH"
if ! rustup toolchain list | grep -q '^nightly'; then
  log "rustup toolchain install nightly"
  rustup toolchain install nightly --profile minimal
fi
if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
  log "rustup component add rust-src --toolchain nightly"
  rustup component add rust-src --toolchain nightly
fi
for c in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
done

# --- bpf-linker -----------------------------------------------------------------
BPF_LINKER_VERSION=0.13
if ! bpf-linker --version 2>/dev/null | grep -q "bpf-linker $BPF_LINKER_VERSION"; then
  log "cargo install bpf-linker $BPF_LINKER_VERSION (about a minute)"
  LLVM_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker --locked --version "~$BPF_LINKER_VERSION" \
    --no-default-features --features llvm-22
fi

# --- kernel filesystems -------------------------------------------------------
mountpoint -q /sys/kernel/tracing 2>/dev/null || \
  $SUDO mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || log "warning: could not mount tracefs"
mountpoint -q /sys/fs/bpf 2>/dev/null || \
  $SUDO mount -t bpf bpf /sys/fs/bpf 2>/dev/null || log "warning: could not mount bpffs"

# --- test components: Kafka broker and consumer ---------------------------------
# The Kafka sink tests use a real broker (tansu) and an independent consumer
# (librdkafka through PyPI's confluent-kafka; Debian's kcat is too old).
if [ "$WITH_TESTS" = 1 ]; then
if ! python3 -c "import confluent_kafka" 2>/dev/null; then
  log "pip install confluent-kafka"
  # Debian's python3 is "externally managed" (PEP 668); older pips lack the flag.
  python3 -m pip install --quiet confluent-kafka --break-system-packages 2>/dev/null \
    || python3 -m pip install --quiet confluent-kafka
fi
# The deployment tests validate every rendered object against the Kubernetes
# schemas offline; kubectl (with kustomize) renders them.
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  log "pip install kubernetes-validate"
  python3 -m pip install --quiet kubernetes-validate --break-system-packages 2>/dev/null \
    || python3 -m pip install --quiet kubernetes-validate
fi
command -v kubectl >/dev/null 2>&1 || log "warning: kubectl is missing; the deployment tests need it (kubectl kustomize)"
if ! tansu --version >/dev/null 2>&1; then
  log "cargo install tansu (Kafka-protocol broker for the sink tests; 10-15 minutes, once)"
  cargo install tansu --locked --features dynostore
fi
# The OTLP sink's independent receiver: PyPI's opentelemetry-proto (Python
# bindings of the official protos) in a venv of its own (tests/otlp/receiver.py).
OTLP_VENV=/var/cache/podwatch/otlp-venv
if ! "$OTLP_VENV/bin/python" -c "import opentelemetry.proto.collector.logs.v1.logs_service_pb2" 2>/dev/null; then
  log "python venv with opentelemetry-proto in $OTLP_VENV"
  $SUDO mkdir -p "$(dirname "$OTLP_VENV")"
  $SUDO python3 -m venv "$OTLP_VENV"
  $SUDO "$OTLP_VENV/bin/pip" install --quiet --disable-pip-version-check opentelemetry-proto
fi
# Grafana's LogQL parser (@grafana/lezer-logql, npm) for the dashboard and
# Loki-rule tests, installed from tests/logql/package-lock.json into that
# directory only.
LOGQL_DIR="$(cd "$(dirname "$0")/.." && pwd)/tests/logql"
if [ ! -f "$LOGQL_DIR/node_modules/@grafana/lezer-logql/package.json" ]; then
  log "npm ci in tests/logql (@grafana/lezer-logql)"
  (cd "$LOGQL_DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
fi

log "ready"
