#!/usr/bin/env bash
# Installs everything Keel's build and tests need on a Debian 12 machine (run as root).
# Idempotent: quick when everything is already there.
set -euo pipefail

packages=(
  # building images
  mmdebstrap debian-archive-keyring dpkg-dev e2fsprogs erofs-utils dosfstools mtools
  binutils systemd-boot-efi cpio zstd xz-utils kmod
  # boot loaders for legacy BIOS (disk, ISO) and the ISO's UEFI entry; the ISO writer
  grub-common grub-pc-bin grub-efi-amd64-bin xorriso
  # independent checkers used by the tests
  gdisk fdisk cryptsetup-bin openssl libxml2-utils
  # the installer tests serve images over HTTP with python3 -m http.server
  python3
  # reboot coordination: a real etcd cluster for the tests; protoc + well-known types for the
  # etcd v3 client's generated gRPC code
  etcd-server etcd-client protobuf-compiler libprotobuf-dev
  # clusters: the discovery.etcd.io server the guests' etcd bootstraps from; DNS SRV records
  # from dnsmasq in a network namespace the test makes (iproute2)
  etcd-discovery curl dnsmasq-base iproute2
  # the update server's dashboard test loads the page in headless Chromium; office hours read
  # time zones from tzdata
  chromium tzdata
  # the update server's store tests start a throwaway PostgreSQL cluster (initdb, pg_ctl)
  postgresql
  # booting images
  qemu-system-x86 qemu-utils ovmf seabios ipxe-qemu
  # the container host's tests and demo: a real registry on loopback holding a busybox image
  # made with umoci (from busybox-static, fetched by apt-get download) and pushed with skopeo;
  # ssh logs in to the guest; nc carries each guest connection to the registry (a QEMU guestfwd)
  docker-registry umoci skopeo openssh-client netcat-openbsd
  # building the static PID 1 and crates with C parts
  build-essential pkg-config
)

missing_packages() {
  missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
}

export DEBIAN_FRONTEND=noninteractive
missing_packages
if ((${#missing[@]})); then
  echo "ci/install-deps.sh: installing ${missing[*]}" >&2
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # An install can remove a package that was there: a machine that came with qemu-utils from
  # bookworm-backports loses it when qemu-system-x86 comes from bookworm. Put those back.
  missing_packages
  if ((${#missing[@]})); then
    echo "ci/install-deps.sh: installing again what that install removed: ${missing[*]}" >&2
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    missing_packages
    if ((${#missing[@]})); then
      echo "ci/install-deps.sh: still not installed: ${missing[*]}" >&2
      exit 1
    fi
  fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  # Debian 12's rustc is too old for the workspace; rustup is the upstream toolchain installer.
  echo "ci/install-deps.sh: no cargo found; installing the stable Rust toolchain with rustup" >&2
  apt-get install -y -qq --no-install-recommends curl ca-certificates >/dev/null
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi

# moto_server: the EC2 and EBS direct APIs on loopback, for keel-upload-ami's tests.
# 5.x serves StartSnapshot/PutSnapshotBlock/CompleteSnapshot, ListSnapshotBlocks/GetSnapshotBlock
# and RegisterImage.
if ! command -v moto_server >/dev/null 2>&1; then
  echo "ci/install-deps.sh: installing moto[server] with pip" >&2
  if ! command -v pip3 >/dev/null 2>&1; then
    apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
  fi
  # Debian's own python3 refuses user pip installs (PEP 668); a pyenv or venv python does not.
  pip3 install --quiet 'moto[server]>=5,<6' 2>/dev/null \
    || pip3 install --quiet --break-system-packages 'moto[server]>=5,<6'
fi
