#!/usr/bin/env bash
# Builds the host CLI (`keel`, and `keel-upload-ami` beside it, which `keel upload-ami` runs) and
# the static binaries that go into images (`keel-init`, `keel-update`, `keel-install`,
# `keel-cloudinit` from keel-cloudconfig, `keel-reboot-manager`).
# Prints nothing but cargo's own progress; the binaries land in target/.
# `ci/build.sh --no-ami` skips the host services the demo does not use: keel-upload-ami,
# keel-update-server (`keel serve`) and keel-reboot-manager (`keel lockd`).
# `ci/build.sh --tests` (what ci/test.sh runs) builds every host package but keel-ami, and their
# tests, in one cargo invocation: built package by package, shared dependencies are resolved
# with other features each time and compile two or three times over (minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-}"
case "$mode" in
--tests)
  # Without keel-ami: its tests (and the AWS SDK, 8 minutes of compiling here) are the full
  # tier's; resolved with the whole workspace its dependencies would also get other features.
  cargo test --release --workspace --exclude keel-ami --no-run
  ;;
--no-ami)
  cargo build --release -p keel
  ;;
"")
  cargo build --release -p keel
  # Separate packages (the AWS SDK, an HTTP + database stack, an etcd client take minutes to
  # compile): keel itself does not wait for them, and execs them for upload-ami, serve, lockd.
  cargo build --release -p keel-ami
  cargo build --release -p keel-update-server -p keel-reboot-manager -p keel-fleet
  ;;
*)
  echo "usage: ci/build.sh [--no-ami | --tests]" >&2
  exit 2
  ;;
esac
# keel-init runs as PID 1 before any library exists, keel-update and keel-install must not
# depend on the slot's libraries: all static glibc binaries.
CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --profile init --target x86_64-unknown-linux-gnu -p keel-init -p keel-update -p keel-install -p keel-cloudconfig
# keel-reboot-manager and keel-fleet (the fleet agent) run from the slot too, static like them;
# with the release profile, since LTO over their tokio and gRPC stack would add minutes.
CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --target x86_64-unknown-linux-gnu -p keel-reboot-manager -p keel-fleet
