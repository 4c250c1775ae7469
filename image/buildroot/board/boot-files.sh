#!/usr/bin/env bash
# wtd's first post-image step, before the board's post-image.sh: every file in
# $BINARIES_DIR/rpi-firmware/ goes onto the boot partition, so wtd-example.toml goes there.
set -euo pipefail
BINARIES_DIR=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
install -m 0644 "$here/../../bootfs/wtd-example.toml" "$BINARIES_DIR/rpi-firmware/wtd-example.toml"
