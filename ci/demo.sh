#!/usr/bin/env bash
# The main job: install what is needed, build the default image, boot it in QEMU and show the
# serial console until the demo service says hello.
set -euo pipefail
cd "$(dirname "$0")/.."
ci/install-deps.sh
ci/build.sh --no-ami
keel=target/release/keel
"$keel" build --out out/
"$keel" boot out/disk.raw --console --expect "Hello World" --timeout 300
