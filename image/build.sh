#!/usr/bin/env bash
# Builds the wtd Raspberry Pi image (Pi 3, Pi 4, Zero 2 W; 64-bit) from Debian packages only:
#
#   bash image/build.sh [--out DIR] [--bin PATH] [--suite SUITE] [--no-compress]
#                       [--url-base URL] [--install-deps]
#
# Produces DIR/wtd-<version>-arm64.img.zst and DIR/wtd-<version>-arm64.img.zst.sha256
# (DIR defaults to image/out/, which git ignores), keeps the raw .img beside them for
# tests, and writes DIR/rpi-imager.json, image/rpi-imager.json filled in for this build (its
# URL is URL/wtd-<version>-arm64.img.zst, default a file:// URL of DIR). Needs root (the
# image's files belong to root), mmdebstrap, qemu-user-static (binfmt), mtools, dosfstools,
# e2fsprogs, fdisk, kmod and zstd: `--install-deps` installs them.
#
# Two stages:
#  1. the base root filesystem (mmdebstrap: systemd, the kernel, the Pi firmware, Wi-Fi
#     firmware and wpa_supplicant, no docs/man pages/locales, an initramfs of the listed
#     modules only), cached as a tarball in /var/cache/wtd-image/base-<hash>.tar, where the
#     hash covers image/packages, image/base.sh, image/base/ and the suite. About 10 minutes
#     cold here; skipped when cached.
#  2. the image: the base unpacked, unneeded kernel modules and device trees removed, the
#     static aarch64 `wtd` (scripts/build-aarch64.sh), its units and config from
#     image/rootfs/ and agent/wtd-agent.service; then a FAT boot partition (mkfs.vfat +
#     mcopy) and an ext4 root (mkfs.ext4 -d) put together with sfdisk. No loop devices, no
#     mounts. A minute or two.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
out="$here/out"
bin=""
suite=trixie
compress=1
url_base=""
install_deps=0
while (($#)); do
    case $1 in
    --out) out=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --suite) suite=$2; shift 2 ;;
    --no-compress) compress=0; shift ;;
    --url-base) url_base=$2; shift 2 ;;
    --install-deps) install_deps=1; shift ;;
    -h | --help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "image/build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

say() { echo "image/build.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }
t0=$(date +%s)
elapsed() { echo "$(($(date +%s) - t0)) s"; }

[[ $(id -u) == 0 ]] || die "run as root: the image's files must belong to root (sudo bash image/build.sh)"

if ((install_deps)); then
    need=()
    for pkg in mmdebstrap qemu-user-static binfmt-support mtools dosfstools e2fsprogs fdisk zstd kmod; do
        dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
    done
    if ((${#need[@]})); then
        say "installing ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
fi
for tool in mmdebstrap mcopy mkfs.vfat mkfs.ext4 sfdisk zstd depmod; do
    command -v "$tool" >/dev/null || die "$tool is missing (run with --install-deps)"
done

version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n1)
name="wtd-$version-arm64"
mkdir -p "$out"

# --- stage 1: the cached base ------------------------------------------------------------------
cache=/var/cache/wtd-image
mkdir -p "$cache"
hash=$( {
    echo "suite=$suite"
    cat "$here/packages" "$here/base.sh"
    (cd "$here/base" && find . -type f | LC_ALL=C sort | while read -r f; do echo "$f"; cat "$f"; done)
} | sha256sum | cut -c1-16)
base="$cache/base-$hash.tar"
if [[ -f $base ]]; then
    say "base root filesystem cached: $base"
else
    say "building the base root filesystem ($suite, arm64; about 10 minutes under emulation)"
    "$here/base.sh" "$base.partial" "$suite" >&2
    mv "$base.partial" "$base"
    say "base built in $(elapsed): $base"
fi

# --- the agent binary --------------------------------------------------------------------------
if [[ -z $bin ]]; then
    bin=$(bash "$repo/scripts/build-aarch64.sh" --locked | tail -n1)
fi
[[ -x $bin ]] || die "no wtd binary at $bin"

# --- stage 2: the image ------------------------------------------------------------------------
# Room for the unpacked root, the two filesystems, the image and its compressed copy.
for dir in /var/tmp "$out"; do
    free_mib=$(df -Pm "$dir" | awk 'NR == 2 { print $4 }')
    ((free_mib > 3000)) || die "only $free_mib MiB free in $dir; the build needs about 3000 MiB"
done
work=$(mktemp -d /var/tmp/wtd-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir "$root"
tar --numeric-owner -xpf "$base" -C "$root"
kver=$(basename "$(ls -d "$root"/usr/lib/modules/*)")

# Only the kernel modules a Pi (and the qemu test machine) needs: no GPUs but the Pi's, no
# PCIe network or storage cards, no media, InfiniBand, RAID, FireWire, SATA or staging.
mods="$root/usr/lib/modules/$kver/kernel"
for d in drivers/media drivers/infiniband drivers/iio drivers/md drivers/target drivers/staging \
    drivers/firewire drivers/ata drivers/isdn drivers/net/can drivers/scsi/qla2xxx \
    drivers/scsi/lpfc drivers/scsi/mpt3sas drivers/scsi/megaraid drivers/scsi/aacraid \
    drivers/scsi/bfa drivers/scsi/be2iscsi drivers/scsi/qedi drivers/scsi/qedf \
    drivers/scsi/smartpqi drivers/scsi/hisi_sas drivers/gpu/drm/amd drivers/gpu/drm/radeon \
    drivers/gpu/drm/nouveau drivers/gpu/drm/xe drivers/gpu/drm/msm drivers/gpu/drm/panel \
    drivers/gpu/drm/bridge drivers/gpu/drm/etnaviv drivers/gpu/drm/panfrost drivers/gpu/drm/lima \
    drivers/gpu/drm/tegra drivers/gpu/drm/rockchip drivers/gpu/drm/sun4i drivers/gpu/drm/meson \
    drivers/gpu/drm/imx drivers/gpu/drm/mediatek drivers/gpu/drm/hisilicon drivers/gpu/drm/nova \
    drivers/gpu/drm/ast drivers/gpu/drm/mgag200 drivers/gpu/drm/exynos drivers/gpu/drm/panthor \
    drivers/gpu/drm/imagination sound; do
    rm -rf "${mods:?}/$d"
done
# Network cards: keep the Pi's (Broadcom GENET; USB ones live in drivers/net/usb).
find "$mods/drivers/net/ethernet" -mindepth 1 -maxdepth 1 ! -name broadcom -exec rm -rf {} +
find "$mods/drivers/net/wireless" -mindepth 1 -maxdepth 1 ! -name broadcom -exec rm -rf {} +
depmod -b "$root" "$kver"
# Device trees: the Pi's only (the firmware copies its own set to the boot partition).
find "$root/usr/lib/linux-image-$kver" -mindepth 1 -maxdepth 1 ! -name broadcom -exec rm -rf {} +
# The boot partition has the kernel and initramfs; the root filesystem needs no second copy.
rm -f "$root/boot/vmlinuz-$kver" "$root/boot/initrd.img-$kver"

# The agent, its units, network and first-boot config.
install -m 0755 "$bin" "$root/usr/bin/wtd"
cp -a "$here/rootfs/." "$root/"
install -m 0644 "$repo/agent/wtd-agent.service" "$root/etc/systemd/system/wtd-agent.service"
install -d -m 0755 "$root/usr/share/wtd/missions" "$root/etc/wtd" "$root/etc/wtd/missions"
install -m 0644 "$repo"/examples/missions/*.toml "$root/usr/share/wtd/missions/"
echo wtd >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\twtd\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
ln -sf ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"
# No identity, machine id or SSH host key is baked in: each card makes its own at first boot.
rm -rf "$root/var/lib/wtd"
: >"$root/etc/machine-id"
rm -f "$root"/etc/ssh/ssh_host_*
systemctl --root="$root" enable wtd-agent.service wtd-firstboot.service wtd-growroot.service systemd-networkd.service \
    systemd-resolved.service systemd-timesyncd.service getty@tty1.service >/dev/null 2>&1
# SSH only when wtd.toml gives a key (`wtd firstboot` starts it); the D-Bus flavour of
# wpa_supplicant is unused (there is no D-Bus): firstboot starts wpa_supplicant@wlan0.
systemctl --root="$root" disable ssh.service wpa_supplicant.service >/dev/null 2>&1
systemctl --root="$root" mask ssh.socket >/dev/null 2>&1 || true
# /etc and /var are up to date with /usr: no ldconfig or catalog rebuild at first boot
# (ConditionNeedsUpdate=), which costs seconds on a Pi.
touch "$root/etc/.updated" "$root/var/.updated"
[[ -L $root/etc/systemd/system/multi-user.target.wants/wtd-agent.service ]] ||
    die "wtd-agent.service was not enabled"

# The boot partition: firmware, kernel, initramfs, device trees, config.txt and cmdline.txt.
boot="$work/boot"
mv "$root/boot/firmware" "$boot"
mkdir -m 0755 "$root/boot/firmware"
cp "$here/bootfs/wtd-example.toml" "$boot/"
# Root by label (a card in a USB reader is not mmcblk0); serial console on the Pi 3/4/Zero 2 W
# mini UART (ttyS1, `enable_uart=1`) and HDMI (tty0, last, so it is /dev/console).
echo "console=ttyS1,115200 console=tty0 root=LABEL=wtd-root rootfstype=ext4 rw rootwait fsck.repair=yes net.ifnames=0 cma=64M" >"$boot/cmdline.txt"

boot_mib=256
vfat="$work/boot.vfat"
mkfs.vfat -C -F 32 -n WTD-BOOT "$vfat" $((boot_mib * 1024)) >/dev/null
(cd "$boot" && mcopy -s -p -m -i "$vfat" ./* ::/)

# The root filesystem, sized to its content plus room for state, logs and missions.
used_mib=$(du -sm --apparent-size "$root" | cut -f1)
root_mib=$((used_mib + used_mib / 4 + 160))
ext4="$work/root.ext4"
mkfs.ext4 -q -L wtd-root -d "$root" -E root_owner=0:0 -O ^metadata_csum_seed -m 1 "$ext4" "${root_mib}M"

# The disk: MBR (what the Pi's boot ROM reads), boot at 4 MiB, root after it.
img="$out/$name.img"
start_mib=4
total_mib=$((start_mib + boot_mib + root_mib))
rm -f "$img"
truncate -s "${total_mib}M" "$img"
sfdisk --quiet "$img" <<EOF
label: dos
label-id: 0x77746431
start=${start_mib}MiB, size=${boot_mib}MiB, type=c, bootable
start=$((start_mib + boot_mib))MiB, size=${root_mib}MiB, type=83
EOF
dd if="$vfat" of="$img" bs=1M seek=$start_mib conv=notrunc,sparse status=none
dd if="$ext4" of="$img" bs=1M seek=$((start_mib + boot_mib)) conv=notrunc,sparse status=none
say "image: $img ($total_mib MiB) after $(elapsed)"

if ((compress)); then
    zstd -q -f -T0 -12 "$img" -o "$img.zst"
    (cd "$out" && sha256sum "$name.img.zst" >"$name.img.zst.sha256")
    say "compressed: $img.zst ($(($(stat -c %s "$img.zst") / 1048576)) MiB), sha256 in $name.img.zst.sha256"
    # Raspberry Pi Imager's os_list entry for this build (rpi-imager --repo DIR/rpi-imager.json).
    sed -e "s|@VERSION@|$version|" -e "s|@URL@|${url_base:-file://$out}/$name.img.zst|" \
        -e "s|@RELEASE_DATE@|$(date -u +%Y-%m-%d)|" \
        -e "s|@EXTRACT_SIZE@|$(stat -c %s "$img")|" -e "s|@EXTRACT_SHA256@|$(sha256sum "$img" | cut -d' ' -f1)|" \
        -e "s|@DOWNLOAD_SIZE@|$(stat -c %s "$img.zst")|" -e "s|@DOWNLOAD_SHA256@|$(cut -d' ' -f1 "$out/$name.img.zst.sha256")|" \
        "$here/rpi-imager.json" >"$out/rpi-imager.json"
    say "Raspberry Pi Imager entry: $out/rpi-imager.json"
fi
say "done in $(elapsed)"
echo "$img"
