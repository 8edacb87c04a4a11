#!/usr/bin/env bash
# The test suite: install what is needed, build the binaries, run every test (unit tests, format
# checks with independent tools, QEMU boots).
#
#   ci/test.sh          the CI tier (what .ci/run runs; fits CI's 90 minutes on 2 cores),
#                       then every fuzz target for 10 s under AFL (ci/fuzz.sh; cargo-afl's
#                       install and the instrumented build run beside the suite, niced)
#   ci/test.sh --full   the full tier: also the tests marked #[ignore = "full tier…"], the
#                       tier-sized ones at full size (KEEL_TIER=full: e.g. 100 power cuts),
#                       keel-ami's tests against moto_server (the AWS SDK's compile), and
#                       every fuzz target for 60 s
set -euo pipefail
cd "$(dirname "$0")/.."
tier=ci
case "${1:-}" in
--full) tier=full ;;
"") ;;
*)
    echo "usage: ci/test.sh [--full]" >&2
    exit 2
    ;;
esac
# Free space, MiB, on the file system holding $1.
free_mib() { df --output=avail -B1M "$1" | tail -n 1 | tr -d ' '; }
# The suite's images, guest overlays and loop-device disks beside a fresh build (measured:
# see the README's "Disk" line). Too little gives I/O errors far into the run, so say so now.
need_mib=$((24 * 1024))
free_at_start=$(free_mib .)
if [ "$free_at_start" -lt "$need_mib" ]; then
    echo "ci/test.sh: warning: $((free_at_start / 1024)) GiB free on $(df --output=target . | tail -n 1) where a run from a clean clone needs about $((need_mib / 1024)) GiB: expect I/O errors (EIO, ENOSPC, a guest QEMU stopped) in the tests" >&2
fi
ci/install-deps.sh
ci/build.sh --tests
export KEEL_TIER="$tier"
export KEEL_BIN="$PWD/target/release/keel"
export KEEL_INIT="$PWD/target/x86_64-unknown-linux-gnu/init/keel-init"
export KEEL_UPDATE="$PWD/target/x86_64-unknown-linux-gnu/init/keel-update"
export KEEL_INSTALL="$PWD/target/x86_64-unknown-linux-gnu/init/keel-install"
export KEEL_CLOUDINIT="$PWD/target/x86_64-unknown-linux-gnu/init/keel-cloudinit"
export KEEL_REBOOT_MANAGER="$PWD/target/x86_64-unknown-linux-gnu/release/keel-reboot-manager"
export KEEL_FLEET="$PWD/target/x86_64-unknown-linux-gnu/release/keel-fleet"
threads="${KEEL_TEST_THREADS:-2}"
# Two tests at a time on 2 cores: one vCPU per guest unless a test asks for more (two 2-vCPU TCG
# guests reached multi-user.target in 76 s here, two 1-vCPU guests in 53 s).
export KEEL_QEMU_SMP="${KEEL_QEMU_SMP:-1}"
harness=(--test-threads="$threads")
if [ "$tier" = full ]; then
    # inner_boot_on_masked_kvm is ignored for another reason: only its outer test runs it.
    harness+=(--include-ignored --skip inner_boot_on_masked_kvm)
fi
started=$SECONDS
status=0
# The least free space while the tests run (every 5 s, on the repository's file system and
# /tmp's), reported at the end: a disk that fills up fails tests in ways that look like bugs.
disk_log="$(mktemp /tmp/keel-disk.XXXXXX)"
while sleep 5; do echo "$(date +%T) $(free_mib .) $(free_mib /tmp)"; done >"$disk_log" &
disk_watch=$!
trap 'kill "$disk_watch" 2>/dev/null || true' EXIT
# cargo-afl's install and the fuzz targets' instrumented build (its own target directory) run
# beside the suite at the lowest CPU priority: the suite leaves about half of the 2 cores idle
# (single-threaded image builds, lone guests, waits), and this takes only what it leaves.
fuzz_build_log="$(mktemp /tmp/keel-fuzz-build.XXXXXX)"
nice -n 19 bash -c '{ cargo afl --version >/dev/null 2>&1 || cargo install --locked cargo-afl; } &&
    ci/fuzz.sh --build-only' >"$fuzz_build_log" 2>&1 &
fuzz_build=$!
cargo test --release --workspace --exclude keel-ami --no-fail-fast -- "${harness[@]}" || status=$?
if [ "$tier" = full ]; then
    # keel-ami on its own: resolved with the whole workspace, its dependencies get other
    # features (libc, rustls...) and the AWS SDK would be compiled twice. Full tier only: the
    # SDK alone is 8 minutes of compiling on 2 cores.
    cargo test --release -p keel-ami --no-fail-fast -- "${harness[@]}" || status=$?
fi
# Coverage-guided fuzzing of every untrusted-input parser (fuzz/, its own workspace and
# target directory): a crash on the corpus or near it fails the run.
fuzz_built=0
wait "$fuzz_build" || fuzz_built=$?
echo "ci/test.sh: fuzz build beside the suite (exit $fuzz_built), its last lines:"
tail -n 5 "$fuzz_build_log"
rm -f "$fuzz_build_log"
cargo afl --version >/dev/null 2>&1 || cargo install --locked cargo-afl || status=$?
ci/fuzz.sh --seconds "$( [ "$tier" = full ] && echo 60 || echo 10 )" || status=$?
kill "$disk_watch" 2>/dev/null || true
least=$(sort -n -k2 "$disk_log" | head -n 1)
least_tmp=$(sort -n -k3 "$disk_log" | head -n 1)
rm -f "$disk_log"
if [ -n "$least" ]; then
    echo "ci/test.sh: least free space during the tests: $(echo "$least" | cut -d' ' -f2) MiB on the repository's file system at $(echo "$least" | cut -d' ' -f1), $(echo "$least_tmp" | cut -d' ' -f3) MiB on /tmp's at $(echo "$least_tmp" | cut -d' ' -f1) ($((free_at_start)) MiB free before the build)"
    if [ "$(echo "$least" | cut -d' ' -f2)" -lt 512 ] || [ "$(echo "$least_tmp" | cut -d' ' -f3)" -lt 512 ]; then
        echo "ci/test.sh: the disk (nearly) filled up: failures with I/O errors, 'No space left on device' or a guest QEMU stopped on a host disk error come from that, not from the code under test" >&2
    fi
fi
echo "ci/test.sh: $tier tier, tests took $(((SECONDS - started) / 60)) min, exit $status"
exit "$status"
