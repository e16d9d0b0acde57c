#!/usr/bin/env bash
# Builds podwatch's OCI image offline with buildah, from scratch: the release
# binary, exactly the shared libraries it links (and the dynamic loader), the
# CA bundle, the built-in policy and a one-line nsswitch.conf — nothing else:
# no shell, no package manager, no libc tools.
#
#   sudo bash scripts/image.sh                 # -> localhost/podwatch:<version>
#   sudo bash scripts/image.sh --tag my/podwatch:dev
#   PODWATCH_IMAGE_BIN=path/to/podwatch bash scripts/image.sh   # package a built binary
#
# Push it with `podman push localhost/podwatch:<version> REGISTRY/podwatch:<version>`
# and point deploy/kustomize at it (`kustomize edit set image podwatch=REGISTRY/podwatch:<version>`).
# Prints the image reference on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

version="$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n1)"
tag="localhost/podwatch:${version}"
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag="${2:?--tag needs a value}"; shift 2 ;;
    *) echo "image.sh: unknown option $1 (--tag NAME)" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" -ne 0 ]; then
  echo "image.sh: buildah needs root here; re-running with sudo" >&2
  exec sudo -E env "PATH=$PATH" bash "$0" "$@"
fi
log() { printf 'image: %s\n' "$*" >&2; }

bash scripts/setup.sh --image
export PATH="$HOME/.cargo/bin:$PATH"

bin="${PODWATCH_IMAGE_BIN:-}"
if [ -z "$bin" ]; then
  log "cargo build --release -p podwatch"
  cargo build --release --quiet -p podwatch
  bin=target/release/podwatch
fi
[ -x "$bin" ] || { echo "image.sh: $bin is not an executable" >&2; exit 1; }

ca=/etc/ssl/certs/ca-certificates.crt
[ -s "$ca" ] || { echo "image.sh: $ca is missing (Debian package ca-certificates)" >&2; exit 1; }

# Every shared object the binary loads, as the dynamic loader resolves it
# here: "libssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x…)" and the
# loader itself ("/lib64/ld-linux-x86-64.so.2 (0x…)"); vdso has no file.
mapfile -t libs < <(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)
if ldd "$bin" | grep -q 'not found'; then
  echo "image.sh: unresolved libraries:" >&2
  ldd "$bin" | grep 'not found' >&2
  exit 1
fi

# Everything the image holds is staged here first, so the file list is
# exactly what gets in (tests/integration/image.rs checks it).
stage="$(mktemp -d)"
ctr=""
cleanup() {
  rm -rf "$stage"
  [ -n "$ctr" ] && buildah rm "$ctr" >/dev/null 2>&1 || true
}
trap cleanup EXIT
install -D -m 0755 "$bin" "$stage/usr/bin/podwatch"
for lib in "${libs[@]}"; do
  # The path the loader asks for, with the content of the file it points to.
  install -D -m 0755 "$(readlink -f "$lib")" "$stage$lib"
done
install -D -m 0644 "$ca" "$stage/etc/ssl/certs/ca-certificates.crt"
install -D -m 0644 policies/builtin/default.yaml "$stage/usr/share/podwatch/policies/default.yaml"
# Without nsswitch.conf glibc asks DNS first and stops at its "no such name":
# /etc/hosts (hostAliases, the runtime's own entries) would never be read.
mkdir -p "$stage/etc"
printf 'hosts: files dns\n' >"$stage/etc/nsswitch.conf"

log "buildah from scratch -> $tag ($(du -sh "$stage" | cut -f1) staged, ${#libs[@]} shared objects)"
ctr="$(buildah from scratch)"
buildah copy --quiet "$ctr" "$stage" / >/dev/null
buildah config \
  --entrypoint '["/usr/bin/podwatch"]' \
  --cmd run \
  --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --port 9176/tcp \
  --label org.opencontainers.image.title=podwatch \
  --label "org.opencontainers.image.version=$version" \
  --label org.opencontainers.image.description="eBPF security observability agent for Kubernetes" \
  --label org.opencontainers.image.licenses=Apache-2.0 \
  "$ctr"
buildah commit --quiet --rm "$ctr" "$tag" >/dev/null
ctr=""
log "built $tag"
echo "$tag"
