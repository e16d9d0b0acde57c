#!/usr/bin/env bash
# Kernel matrix: boots the kernels users run (Debian's cloud kernels 5.10, 6.1
# and 6.12) under qemu (TCG: no KVM needed) from an initramfs holding the
# release agent, the integration-test binary and what the tests exec, runs the
# focused kernel suite (tests/kernel/tests.txt) once per kernel, and reports
# per-test results and each kernel's wall time from the serial console.
# The host kernel is covered by the host suite (scripts/test.sh).
#
#   scripts/kernel-matrix.sh            # every kernel
#   PODWATCH_KERNELS="6.1 5.10+lsm" scripts/kernel-matrix.sh
#   PODWATCH_KERNEL_TESTS="exec::exec_of_cat_has_binary_args_parent_and_exit_codes" (a subset)
#
# Kernels are fetched once from Debian's archive by package name, with a
# private apt sources file and lists directory (the machine's apt setup is
# untouched), and cached under $PODWATCH_KERNEL_CACHE. Exit status 1 on any
# failure; closes with a libtest-style `test result:` line per kernel so
# scripts/test.sh can sum it into its totals.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PATH="$HOME/.cargo/bin:$PATH"
CACHE=${PODWATCH_KERNEL_CACHE:-/var/cache/podwatch/kernels}
# A series, or series+lsm: booted with BPF LSM added to the LSM list (5.10
# has it built in but not active by default, as on many distributions).
KERNELS=${PODWATCH_KERNELS-"5.10 5.10+lsm 6.1 6.12"} # empty: build and pack only
LSM_LIST=lockdown,capability,yama,apparmor,tomoyo,bpf
VM_SMP=${PODWATCH_VM_SMP:-1}
VM_MEM=${PODWATCH_VM_MEM:-1536}
VM_TIMEOUT=${PODWATCH_VM_TIMEOUT:-1200}
TEST_THREADS=${PODWATCH_VM_TEST_THREADS:-2}
WORK=$ROOT/target/kernel-matrix
log() { printf 'kernel-matrix: %s\n' "$*" >&2; }
mkdir -p "$WORK" "$CACHE"

# --- kernels ------------------------------------------------------------------
# series -> package-name pattern (newest match that downloads wins)
pattern() {
  case "$1" in
    5.10) echo '^linux-image-5\.10\.0-[0-9]+-cloud-amd64-unsigned$' ;;
    6.1) echo '^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$' ;;
    6.12) echo '^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64-unsigned$' ;;
    *) return 1 ;;
  esac
}
APT_DIR=$CACHE/apt
APT_OPTS=(-o "Dir::Etc::sourcelist=$APT_DIR/sources.list" -o Dir::Etc::sourceparts=-
          -o "Dir::State::Lists=$APT_DIR/lists" -o "Dir::Cache=$APT_DIR/cache"
          -o Dir::State::status=/dev/null -o APT::Sandbox::User=root)
apt_updated=0
fetch_kernel() {
  local series=$1 dir=$CACHE/$1 re pkg tmp
  [ -s "$dir/vmlinuz" ] && return 0
  re=$(pattern "$series") || { log "unknown kernel series $series"; return 1; }
  if [ "$apt_updated" = 0 ]; then
    mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial"
    cat >"$APT_DIR/sources.list" <<'EOF'
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian-security bookworm-security main
deb http://deb.debian.org/debian bullseye main
deb http://deb.debian.org/debian-security bullseye-security main
EOF
    apt-get -qq "${APT_OPTS[@]}" update || return 1
    apt_updated=1
  fi
  tmp=$(mktemp -d)
  # The lists can name a version the mirror no longer carries: try newest first.
  for pkg in $(apt-cache "${APT_OPTS[@]}" pkgnames linux-image- | grep -E "$re" | sort -rV); do
    if (cd "$tmp" && apt-get -qq "${APT_OPTS[@]}" download "$pkg" >/dev/null 2>&1); then
      mkdir -p "$dir"
      dpkg-deb -x "$tmp"/*.deb "$tmp/x"
      cp "$tmp"/x/boot/vmlinuz-* "$dir/vmlinuz.new" && mv "$dir/vmlinuz.new" "$dir/vmlinuz"
      cp "$tmp"/*.deb "$dir/"
      echo "$pkg" >"$dir/package"
      rm -rf "$tmp"
      log "kernel $series: $pkg"
      return 0
    fi
  done
  rm -rf "$tmp"
  log "no downloadable package matches $re"
  return 1
}

# --- binaries -----------------------------------------------------------------
log "building the release agent and the integration tests"
cargo build --quiet --release --bin podwatch
# The test binary runs `CARGO_BIN_EXE_podwatch`, a path baked in at compile
# time: the release agent is placed at that path inside the VM.
test_json=$(cargo test --quiet --no-run --test integration --message-format=json)
read -r TEST_BIN AGENT_PATH < <(python3 -c '
import json, sys
test = agent = None
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    if m["target"]["name"] == "integration" and m["profile"]["test"]:
        test = m["executable"]
    elif m["target"]["name"] == "podwatch" and "bin" in m["target"]["kind"]:
        agent = m["executable"]
print(test, agent)' <<<"$test_json")
[ -x "$TEST_BIN" ] && [ -n "$AGENT_PATH" ] || { log "could not find the test binary"; exit 1; }

# --- initramfs ----------------------------------------------------------------
R=$WORK/root
rm -rf "$R"
mkdir -p "$R"/{bin,sbin,usr/bin,usr/local/bin,etc,proc,sys,dev,tmp,root,run}
# Copies a binary (or shared object) and every library ldd lists.
add() {
  local src=$1 dst=${2:-$1} lib
  install -D -m 755 "$src" "$R$dst"
  for lib in $(ldd "$src" 2>/dev/null | grep -o '/[^ ]*'); do
    [ -e "$R$lib" ] || install -D -m 755 "$lib" "$R$lib"
  done
}
cp /usr/bin/busybox "$R/bin/busybox"
for a in $(/usr/bin/busybox --list); do
  [ -e "$R/bin/$a" ] || ln -s busybox "$R/bin/$a"
done
# What the chosen tests exec, as on the host: bash, coreutils, python3,
# util-linux's setpriv, unshare and nsenter.
for b in /bin/bash /bin/cat /bin/cp /bin/sleep /bin/mkdir /bin/touch /usr/bin/seq /usr/bin/python3 \
  /usr/bin/setpriv /usr/bin/unshare /usr/bin/nsenter; do
  rm -f "$R$b"
  add "$b"
done
# Python: Debian's /usr/bin/python3 (the one the tests run) with its standard
# library (without tests, GUI toolkits and caches) and the shared objects its
# extension modules link. (A `python3` earlier in PATH, pyenv's here, has
# another stdlib: listing modules with it left the VM's python without one.)
pylib=$(/usr/bin/python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')
mkdir -p "$R$pylib"
(cd "$pylib" && tar --exclude=test --exclude=idlelib --exclude=tkinter --exclude=turtledemo \
  --exclude=__pycache__ --exclude=ensurepip --exclude=lib2to3 -cf - .) | (cd "$R$pylib" && tar -xf -)
for f in "$R$pylib"/lib-dynload/*.so; do
  add "${f#"$R"}" >/dev/null 2>&1 || true
done
objcopy --strip-debug "$TEST_BIN" "$R/podwatch-tests"
add "$TEST_BIN" /podwatch-tests.libs >/dev/null && rm -f "$R/podwatch-tests.libs"
strip -o "$WORK/podwatch" "$ROOT/target/release/podwatch"
add "$WORK/podwatch" "$AGENT_PATH"
ln -sf "$AGENT_PATH" "$R/usr/local/bin/podwatch"
gcc -static -O2 -o "$R/usr/local/bin/workload" tests/integration/workload.c
printf 'root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$R/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$R/etc/group"
printf 'root:*:19000:0:99999:7:::\n' >"$R/etc/shadow" && chmod 640 "$R/etc/shadow"
printf 'vm\n' >"$R/etc/hostname"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$R/etc/hosts"
install -m 755 tests/kernel/init "$R/init"
# PODWATCH_KERNEL_TESTS="a::b c::d" runs those instead of the focused suite.
if [ -n "${PODWATCH_KERNEL_TESTS:-}" ]; then
  tr ' ' '\n' <<<"$PODWATCH_KERNEL_TESTS" | awk 'NF' >"$R/tests"
else
  grep -v '^#' tests/kernel/tests.txt | awk 'NF { print $1 }' >"$R/tests"
fi
echo "$TEST_THREADS" >"$R/threads"
(cd "$R" && find . | cpio -o -H newc --quiet) >"$WORK/initramfs.cpio"
log "initramfs: $(du -m "$WORK/initramfs.cpio" | cut -f1) MiB, $(wc -l <"$R/tests") tests"

# --- the host's digest ----------------------------------------------------------
# The same scenario on this host first: every kernel's events and counters
# must equal these (tests/integration/crosskernel.rs).
DIGEST_TEST=crosskernel::same_actions_same_events_and_counters
HOST_DIGEST=$WORK/host.digest
rm -f "$HOST_DIGEST"
if [ -n "$KERNELS" ]; then
  PODWATCH_DIGEST_OUT=$HOST_DIGEST "$TEST_BIN" --exact "$DIGEST_TEST" --test-threads 1 >"$WORK/host-digest.log" 2>&1 \
    || { log "the digest scenario failed on the host:"; tail -40 "$WORK/host-digest.log" >&2; }
fi
# Prints what differs between the host's digest and a kernel's (nothing when equal).
digest_diff() {
  python3 - "$HOST_DIGEST" "$1" <<'PY'
import json, sys
host = json.load(open(sys.argv[1]))
vm = json.load(open(sys.argv[2]))
for part in ("events", "counters"):
    h, v = set(host[part]), set(vm[part])
    for x in sorted(h - v):
        print(f"{part}: only on the host: {x}")
    for x in sorted(v - h):
        print(f"{part}: only on this kernel: {x}")
    if len(host[part]) != len(vm[part]):
        print(f"{part}: {len(host[part])} on the host, {len(vm[part])} on this kernel")
PY
}

# --- runs ---------------------------------------------------------------------
# Kernels boot side by side, one vCPU each, as many at once as the machine has
# cores (PODWATCH_VM_PARALLEL): TCG runs one guest vCPU per host thread.
failed=0
summary=()
boot_kernel() {
  local series=$1 label=$2 append=$3 out=$WORK/$2.log start
  start=$(date +%s)
  timeout "$VM_TIMEOUT" qemu-system-x86_64 -accel tcg -smp "$VM_SMP" -m "$VM_MEM" -nographic -no-reboot \
    -nic none -kernel "$CACHE/$series/vmlinuz" -initrd "$WORK/initramfs.cpio" \
    -append "console=ttyS0 quiet panic=-1 $append" </dev/null >"$out" 2>&1 || true
  echo $(($(date +%s) - start)) >"$out.secs"
}
report_kernel() {
  local label=$1 out=$WORK/$1.log secs p f s line
  secs=$(cat "$out.secs" 2>/dev/null || echo 0)
  tr -d '\r' <"$out" >"$out.txt"
  grep -E '^podwatch-vm: (kernel|lsm|probe)' "$out.txt" | sed "s/^podwatch-vm: /  [$label] /" || true
  grep -E '^test [^ ]+ \.\.\. ' "$out.txt" | sed "s/^/  [$label] /" || true
  line=$(grep -E '^test result: ' "$out.txt" | tail -1 || true)
  p=$(sed -nE 's/.* ([0-9]+) passed.*/\1/p' <<<"$line"); p=${p:-0}
  f=$(sed -nE 's/.* ([0-9]+) failed.*/\1/p' <<<"$line"); f=${f:-0}
  s=$(sed -nE 's/.* ([0-9]+) ignored.*/\1/p' <<<"$line"); s=${s:-0}
  # Every program whose hook the kernel has must load: the probe's summary
  # says so (hooks a kernel lacks — io_uring's request before 5.19, BPF LSM
  # outside the LSM list — are listed as not available, with the reason).
  if ! grep -qE '^podwatch-vm: probe summary +[0-9]+ of [0-9]+ programs attached, [0-9]+ not used on this kernel .*, 0 failed' "$out.txt"; then
    log "$label: a program this kernel has the hook for did not attach (see the probe lines above)"
    f=$((f + 1))
  fi
  # Where BPF LSM is meant to be active the deny test must have run there,
  # not skipped: the kernel's LSM list must name bpf.
  case "$label" in
    *+lsm | 6.1 | 6.12)
      if ! grep -qE '^podwatch-vm: lsm .*(^|[ ,])bpf(,|$)' "$out.txt"; then
        log "$label: BPF LSM is not active, so deny was not tested here"
        f=$((f + 1))
      fi
      ;;
  esac
  # The same actions, the same events and counters as on the host.
  if grep -q "$DIGEST_TEST" "$R/tests"; then
    sed -nE 's/^podwatch-vm: digest //p' "$out.txt" >"$out.digest"
    if [ ! -s "$HOST_DIGEST" ] || [ ! -s "$out.digest" ]; then
      log "$label: no digest to compare (host: $([ -s "$HOST_DIGEST" ] && echo yes || echo no), kernel: $([ -s "$out.digest" ] && echo yes || echo no))"
      f=$((f + 1))
    elif [ -n "$(digest_diff "$out.digest")" ]; then
      log "$label: events or counters differ from the host's:"
      digest_diff "$out.digest" | sed 's/^/    /' >&2
      f=$((f + 1))
    else
      log "$label: events and counters identical to the host's ($(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(len(d["events"]), "events,", len(d["counters"]), "counters")' "$out.digest"))"
    fi
  fi
  if [ -z "$line" ] || ! grep -q '^podwatch-vm: exit 0$' "$out.txt" || [ "$f" != 0 ]; then
    [ -n "$line" ] || f=$((f + 1)) # no result at all (boot failure, timeout): one failure
    failed=1
    log "$label FAILED; console output (last 60 lines of $out.txt):"
    tail -60 "$out.txt" | sed 's/^/    | /' >&2
  fi
  summary+=("$label: $p passed, $f failed, $s skipped, ${secs}s wall ($(sed -nE 's/^podwatch-vm: suite seconds //p' "$out.txt" | head -1)s suite)")
  echo "test result: $([ "$f" = 0 ] && echo ok || echo FAILED). $p passed; $f failed; $s ignored; kernel $label"
}
PARALLEL=${PODWATCH_VM_PARALLEL:-$(nproc)}
booted=()
for k in $KERNELS; do
  series=${k%+lsm}
  append=""
  [ "$series" = "$k" ] || append="lsm=$LSM_LIST"
  if ! fetch_kernel "$series"; then
    if [ "${PODWATCH_REQUIRE_KERNELS:-0}" = 1 ]; then
      echo "test result: FAILED. 0 passed; 1 failed; 0 ignored; kernel $k could not be fetched"
      failed=1
    else
      log "skipped: kernel $k could not be fetched (set PODWATCH_REQUIRE_KERNELS=1 to fail)"
      echo "test result: ok. 0 passed; 0 failed; 1 ignored; kernel $k not fetched"
    fi
    continue
  fi
  while [ "$(jobs -rp | wc -l)" -ge "$PARALLEL" ]; do wait -n || true; done
  log "booting $k ($(cat "$CACHE/$series/package"))${append:+ with $append}"
  boot_kernel "$series" "$k" "$append" &
  booted+=("$k")
done
wait
for k in "${booted[@]}"; do
  report_kernel "$k"
done
log "summary:"
for l in "${summary[@]}"; do log "  $l"; done
exit "$failed"
