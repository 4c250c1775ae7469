#!/usr/bin/env bash
# Runs every wtd test on a fresh Debian machine, installing what the tests need first.
#
#   bash scripts/test.sh
#
# Safe to run again: installs are skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

say "Installing what the tests need"
need_apt=()
# file(1) checks the aarch64 build; procps gives kill(1) to the test harness; tests/mqtt.rs
# runs a real mosquitto broker and its command-line clients; python3-venv for the parser below;
# jq reads the CLI's JSON in scripts/soak.sh (tests/soak.rs).
# The Pi image: mmdebstrap (under qemu-user's binfmt), mkfs/mtools/sfdisk/zstd/kmod to build it
# (image/build.sh) and flash it (tests/flash.rs, with qrencode for the sheet), and
# qemu-system-arm to boot it and openssh-client to log in to it (tests/image.rs). iproute2's
# `ip netns` gives tests/lan.rs a network namespace of its own for mDNS, so nothing it
# announces reaches the real network. chromium and chromium-driver: tests/dashboard.rs
# drives the dashboard in a real headless browser over WebDriver.
for pkg in gcc-aarch64-linux-gnu qemu-user-static file procps iproute2 mosquitto mosquitto-clients python3-venv jq \
  mmdebstrap binfmt-support mtools dosfstools e2fsprogs fdisk zstd kmod qrencode qemu-system-arm openssh-client \
  chromium chromium-driver; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# Python's prometheus_client parses the /metrics text in tests/mqtt.rs (target/pyvenv).
if ! target/pyvenv/bin/python -c 'import prometheus_client' 2>/dev/null; then
  python3 -m venv target/pyvenv
  target/pyvenv/bin/pip install -q prometheus_client
fi
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
rustup target list --installed | grep -q aarch64-unknown-linux-musl || rustup target add aarch64-unknown-linux-musl

say "Unit, property and end-to-end tests (x86_64)"
cargo test --workspace --locked

say "Every fuzz target for a few seconds (nightly and cargo-fuzz are installed if missing)"
bash scripts/fuzz.sh 5

say "The aarch64 build, run as an agent under qemu-user against the x86_64 proxy"
bin=$(bash scripts/build-aarch64.sh --locked | tail -n 1)
WTD_AARCH64_BIN="$bin" cargo test --locked --test aarch64 -- --ignored

say "The Pi image (image/build.sh; the base root filesystem is cached in /var/cache/wtd-image), booted under qemu-system-aarch64"
img=$(bash image/build.sh --bin "$bin" | tail -n 1)
WTD_IMAGE="$img" cargo test --locked --test image -- --ignored
