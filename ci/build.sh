#!/usr/bin/env bash
# Builds the host CLI (`keel`, and `keel-upload-ami` beside it, which `keel upload-ami` runs) and
# the static binaries that go into images (`keel-init`, `keel-update`, `keel-install`,
# `keel-cloudinit` from keel-cloudconfig, `keel-reboot-manager`).
# Prints nothing but cargo's own progress; the binaries land in target/.
# `ci/build.sh --no-ami` skips the host services the demo does not use: keel-upload-ami,
# keel-update-server (`keel serve`) and keel-reboot-manager (`keel lockd`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p keel
# Separate packages (the AWS SDK, an HTTP + database stack, an etcd client take minutes to
# compile): keel itself does not wait for them, and execs them for upload-ami, serve, lockd.
if [[ "${1:-}" != "--no-ami" ]]; then
  cargo build --release -p keel-ami
  cargo build --release -p keel-update-server -p keel-reboot-manager
fi
# keel-init runs as PID 1 before any library exists, keel-update and keel-install must not
# depend on the slot's libraries: all static glibc binaries.
CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --profile init --target x86_64-unknown-linux-gnu -p keel-init -p keel-update -p keel-install -p keel-cloudconfig
# keel-reboot-manager runs from the slot too, static like them; with the release profile, since
# LTO over its tokio and gRPC stack would add minutes.
CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --target x86_64-unknown-linux-gnu -p keel-reboot-manager
