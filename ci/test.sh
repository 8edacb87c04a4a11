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
cargo test --release --workspace --no-fail-fast -- --test-threads="${KEEL_TEST_THREADS:-2}"
