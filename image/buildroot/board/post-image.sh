#!/usr/bin/env bash
# wtd's last post-image step, after the board's post-image.sh made sdcard.img: compresses
# the card and writes its sha256, as image/build.sh does for the Debian image.
set -euo pipefail
BINARIES_DIR=$1
img="$BINARIES_DIR/sdcard.img"
[[ -f $img ]] || { echo "wtd post-image: no $img (run after the board's post-image.sh)" >&2; exit 1; }
zstd -q -f -T0 -12 "$img" -o "$BINARIES_DIR/wtd-buildroot.img.zst"
(cd "$BINARIES_DIR" && sha256sum wtd-buildroot.img.zst >wtd-buildroot.img.zst.sha256)
