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
echo "ci/test.sh: $tier tier, tests took $(((SECONDS - started) / 60)) min, exit $status"
exit "$status"
