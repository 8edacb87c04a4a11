#!/usr/bin/env bash
# The main job: install what is needed, build the default image, boot it in QEMU and show the
# serial console until the demo service's container says hello.
# hello.service runs `docker pull busybox`; with no network beyond the package registries, the
# pull goes to a registry on this machine's loopback (Debian's docker-registry, holding a busybox
# image made from busybox-static), which the guest reaches as the mirror 10.0.2.100:5000
# (docs/examples/local-registry.yml, handed over by fw_cfg).
set -euo pipefail
cd "$(dirname "$0")/.."
ci/install-deps.sh
ci/build.sh --no-ami
cargo build --release --quiet -p keel-testkit --example local-registry
keel=target/release/keel
"$keel" build --out out/

# The registry serves until its stdin closes: the coprocess ends with this script.
coproc REGISTRY { exec target/release/examples/local-registry; }
read -r port <&"${REGISTRY[0]}"
"$keel" boot out/disk.raw --console --expect "Hello World" --timeout 600 \
  --cloud-config docs/examples/local-registry.yml --guest-forward "10.0.2.100:5000=$port"
