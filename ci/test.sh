#!/usr/bin/env bash
# The test suite: install what is needed, build the binaries, run every test (unit tests, format
# checks with independent tools, QEMU boots).
set -euo pipefail
cd "$(dirname "$0")/.."
ci/install-deps.sh
ci/build.sh
export KEEL_BIN="$PWD/target/release/keel"
export KEEL_INIT="$PWD/target/x86_64-unknown-linux-gnu/init/keel-init"
export KEEL_UPDATE="$PWD/target/x86_64-unknown-linux-gnu/init/keel-update"
export KEEL_INSTALL="$PWD/target/x86_64-unknown-linux-gnu/init/keel-install"
export KEEL_CLOUDINIT="$PWD/target/x86_64-unknown-linux-gnu/init/keel-cloudinit"
threads="${KEEL_TEST_THREADS:-2}"
# keel-ami's tests run on their own: resolved with the whole workspace, its dependencies get
# other features (libc, rustls...) and the AWS SDK would be compiled a second time (minutes);
# `-p keel-ami` reuses what ci/build.sh built.
status=0
cargo test --release --workspace --exclude keel-ami --no-fail-fast -- --test-threads="$threads" || status=$?
cargo test --release -p keel-ami --no-fail-fast -- --test-threads="$threads" || status=$?
exit "$status"
