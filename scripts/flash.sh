#!/usr/bin/env bash
# Flash the wtd image to SD cards, each with its own wtd.toml on the boot partition.
#
#   scripts/flash.sh IMAGE DEVICE --join TICKET [--hostname NAME] [--owner ID]
#                    [--wifi SSID --psk PASS --country XX] [--mission NAME]... [--tag TAG]...
#                    [--ssh-key "ssh-ed25519 ..."] [--count N] [--sheet DIR] [--yes] [--force]
#
# IMAGE is wtd-<version>-arm64.img or .img.zst (image/build.sh). DEVICE is the whole card
# (/dev/sdX, /dev/mmcblkN), or a regular file standing in for one.
#
# Safety: a block device is refused if it is not removable, if any of its partitions is
# mounted, or if it holds the running system (`/`, `/boot`, swap); --force overrides the first
# two, never the last. It shows the card's model and size and asks you to type "yes" (unless
# --yes). After writing it reads the whole image back and compares SHA-256 hashes, then
# writes wtd.toml with mtools (no mount) and reads that back too.
#
# Enrollment: each card gets a fresh one-time token from `wtd enroll new` (kept in your wtd
# home, `wtd enroll` lists them), so `wtd adopt --pending` adopts exactly these cards once
# they boot. --owner defaults to you (`wtd id`); the token needs your wtd home. With
# --no-enroll, cards carry no token (adopt them by name with `wtd adopt`).
#
# --count N flashes N cards one after another, named NAME-01 ... NAME-N (NAME defaults to
# "pi"), asking you to put in the next card each time. If DEVICE contains "{n}", it is
# replaced by the card's number instead (several card readers, or files for a test), and
# nothing is asked between cards. A sheet to stick on each Pi (hostname, token id, owner,
# with a QR code) is written as text and HTML to --sheet DIR (default: the wtd home's
# flash/ directory).
#
# Needs: wtd (on PATH, or WTD_BIN), mtools, sfdisk, zstd (for .zst), qrencode (for the
# sheet's QR codes; the sheet is written without them otherwise).
set -euo pipefail

say() { echo "flash: $*" >&2; }
die() { echo "flash: error: $*" >&2; exit 1; }
usage() { sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; }

image="" device="" join="" hostname="" owner="" ssid="" psk="" country="" ssh_key=""
count=1 yes=0 force=0 enroll=1 sheet_dir=""
missions=() tags=()
positional=()
while (($#)); do
    case $1 in
    --join) join=${2:?}; shift 2 ;;
    --hostname) hostname=${2:?}; shift 2 ;;
    --owner) owner=${2:?}; shift 2 ;;
    --wifi) ssid=${2:?}; shift 2 ;;
    --psk) psk=${2:?}; shift 2 ;;
    --country) country=${2:?}; shift 2 ;;
    --mission) missions+=("${2:?}"); shift 2 ;;
    --tag) tags+=("${2:?}"); shift 2 ;;
    --ssh-key) ssh_key=${2:?}; shift 2 ;;
    --count) count=${2:?}; shift 2 ;;
    --sheet) sheet_dir=${2:?}; shift 2 ;;
    --yes) yes=1; shift ;;
    --force) force=1; shift ;;
    --no-enroll) enroll=0; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) positional+=("$1"); shift ;;
    esac
done
((${#positional[@]} == 2)) || { usage >&2; exit 2; }
image=${positional[0]} device=${positional[1]}

wtd=${WTD_BIN:-wtd}
command -v "$wtd" >/dev/null || die "wtd is not on PATH: build it (cargo build --release) or set WTD_BIN"
for tool in mcopy mtype sfdisk sha256sum dd; do
    command -v "$tool" >/dev/null || die "$tool is missing: apt-get install mtools fdisk coreutils"
done
[[ -f $image ]] || die "no image at $image: build one with image/build.sh"
[[ $count =~ ^[1-9][0-9]?$ ]] || die "--count must be 1 to 99 (got $count)"
[[ -n $join ]] || die "--join TICKET is needed: the join ticket \`wtd proxy\` printed (starts with wtdt1)"
[[ $join == wtdt1* ]] || die "--join $join is not a join ticket (it starts with wtdt1)"
if [[ -n $ssid || -n $psk || -n $country ]]; then
    [[ -n $ssid && -n $psk && -n $country ]] || die "--wifi needs --psk and --country too"
    ((${#psk} >= 8 && ${#psk} <= 63)) || die "--psk must be 8 to 63 characters (the Wi-Fi passphrase)"
    [[ $country =~ ^[A-Za-z]{2}$ ]] || die "--country must be a two-letter code such as GB, DE or US"
fi
if ((count > 1)); then
    hostname=${hostname:-pi}
fi
[[ -z $hostname || $hostname =~ ^[A-Za-z0-9]([A-Za-z0-9-]{0,58}[A-Za-z0-9])?$ ]] ||
    die "--hostname $hostname: use letters, digits and - (not first or last), up to 60"
if [[ -z $owner ]]; then
    owner=$("$wtd" id --quiet 2>/dev/null) || die "no --owner given and \`wtd id\` found no identity: run \`wtd init\` first"
fi
[[ $owner == wtd1* ]] || die "--owner $owner is not a wtd id (it starts with wtd1)"

# The image, uncompressed, once: its size and hash are what every card is checked against.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
raw=$image
if [[ $image == *.zst ]]; then
    command -v zstd >/dev/null || die "zstd is missing: apt-get install zstd"
    say "decompressing $image"
    raw="$work/image.img"
    zstd -q -d -c "$image" >"$raw"
fi
image_bytes=$(stat -c %s "$raw")
image_hash=$(sha256sum "$raw" | cut -d' ' -f1)
# Where the boot partition starts, from the image's partition table.
boot_start=$(sfdisk -d "$raw" 2>/dev/null | sed -n 's/.*start= *\([0-9]*\).*type=c.*/\1/p' | head -n1)
[[ -n $boot_start ]] || die "$image has no FAT boot partition: is it a wtd image?"
boot_offset=$((boot_start * 512))

# --- checks on the target ---------------------------------------------------------------------
# The test seam: WTD_FLASH_TEST_SYSFS names a directory describing a pretend card (files
# removable, size in 512-byte sectors, model) and WTD_FLASH_TEST_MOUNTS a mounts table, for a
# regular file standing in for a card in tests. Real devices are read from /sys/block and
# /proc/mounts.
describe() { # DEVICE -> sets dev_model dev_bytes; refuses what must not be written
    local dev=$1
    if [[ -b $dev ]]; then
        local name
        name=$(basename "$(readlink -f "$dev")")
        [[ -d /sys/block/$name ]] ||
            die "$dev is a partition: give the whole card (e.g. /dev/sdb, not /dev/sdb1)"
        check_device "$dev" "/sys/block/$name" /proc/mounts
    elif [[ -n ${WTD_FLASH_TEST_SYSFS:-} ]]; then
        check_device "$dev" "$WTD_FLASH_TEST_SYSFS" "${WTD_FLASH_TEST_MOUNTS:-/dev/null}"
    elif [[ -e $dev && ! -f $dev ]]; then
        die "$dev is neither a block device nor a regular file"
    else
        dev_model="a regular file (not a card)"
        dev_bytes=0
    fi
}

check_device() { # DEVICE SYSDIR MOUNTS
    local dev=$1 sys=$2 mounts=$3
    dev_model=$(tr -s ' ' <"$sys/device/model" 2>/dev/null || cat "$sys/model" 2>/dev/null || echo "unknown model")
    dev_model=${dev_model% }
    dev_bytes=$(($(cat "$sys/size") * 512))
    local real
    real=$(readlink -f "$dev")
    # Every mount whose source is this device or one of its partitions.
    local mounted
    mounted=$(awk -v d="$real" '$1 == d || index($1, d) == 1 { print $1 " on " $2 }' "$mounts")
    if grep -Eq ' on (/|/boot|/boot/efi|/boot/firmware|/usr|/var|/home)$' <<<"$mounted" ||
        grep -q "^$real" /proc/swaps 2>/dev/null; then
        die "$dev holds the running system ($(tr '\n' ' ' <<<"$mounted")): refusing, even with --force"
    fi
    if [[ -n $mounted ]] && ((!force)); then
        die "$dev is mounted ($(tr '\n' ' ' <<<"$mounted")): unmount it first (udisksctl unmount -b ...), or --force"
    fi
    if [[ $(cat "$sys/removable" 2>/dev/null || echo 0) != 1 ]] && ((!force)); then
        die "$dev ($dev_model) is not a removable disk: is it really the SD card? --force if you are sure"
    fi
    ((dev_bytes >= image_bytes)) ||
        die "$dev is $((dev_bytes / 1000000)) MB, smaller than the image ($((image_bytes / 1000000)) MB)"
}

confirm() { # DEVICE
    local size="size unknown"
    ((dev_bytes > 0)) && size="$(awk -v b="$dev_bytes" 'BEGIN { printf "%.1f GB", b / 1e9 }')"
    say "about to ERASE $1: $dev_model, $size"
    ((yes)) && return 0
    [[ -t 0 ]] || die "not asking without a terminal: add --yes to write $1"
    local answer
    read -r -p "Type yes to write $1: " answer
    [[ $answer == yes ]] || die "not written (you typed \"$answer\")"
}

# --- one card ---------------------------------------------------------------------------------
write_card() { # DEVICE HOSTNAME -> prints the token id
    local dev=$1 host=$2
    say "writing $image to $dev"
    local dd_flags=(bs=4M conv=fsync)
    [[ -b $dev ]] && dd_flags+=(oflag=direct)
    if [[ -f $dev || ! -e $dev ]]; then
        : >"$dev"
    fi
    if command -v pv >/dev/null && [[ -t 2 ]]; then
        pv -s "$image_bytes" "$raw" | dd of="$dev" "${dd_flags[@]}" status=none
    else
        dd if="$raw" of="$dev" "${dd_flags[@]}" status=progress
    fi
    sync
    # Test seam: WTD_FLASH_TEST_CORRUPT=OFFSET flips one byte after the write, standing in
    # for a card that does not keep what it was given.
    if [[ -n ${WTD_FLASH_TEST_CORRUPT:-} ]]; then
        printf '\xff' | dd of="$dev" bs=1 seek="$WTD_FLASH_TEST_CORRUPT" conv=notrunc status=none
    fi
    say "reading $dev back"
    local got
    got=$(head -c "$image_bytes" "$dev" | sha256sum | cut -d' ' -f1)
    [[ $got == "$image_hash" ]] ||
        die "verification failed: $dev reads back as sha256 $got, not the image's $image_hash. The card may be failing or fake: try another"

    # wtd.toml, built here, written with mtools, read back.
    local toml="$work/wtd.toml" token_line="" token_id=""
    if ((enroll)); then
        local out
        out=$("$wtd" enroll new --label "$host" --expires 14days) || die "wtd enroll new failed"
        token_line=$(grep '^enroll = ' <<<"$out") || die "wtd enroll new printed no token"
        token_id=$(sed -n 's/^Enrollment token \([^ ]*\).*/\1/p' <<<"$out")
    fi
    {
        echo "# Written by scripts/flash.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ). Edit freely; see wtd-example.toml."
        [[ -n $host ]] && echo "hostname = \"$host\""
        echo "proxy = \"$join\""
        echo "owners = [\"$owner\"]"
        [[ -n $token_line ]] && echo "$token_line"
        if ((${#tags[@]})); then printf 'tags = [%s]\n' "$(printf '"%s", ' "${tags[@]}" | sed 's/, $//')"; fi
        if ((${#missions[@]})); then printf 'missions = [%s]\n' "$(printf '"%s", ' "${missions[@]}" | sed 's/, $//')"; fi
        [[ -n $ssh_key ]] && echo "ssh_keys = [\"$ssh_key\"]"
        if [[ -n $ssid ]]; then
            echo "[wifi]"
            echo "ssid = $(toml_string "$ssid")"
            echo "psk = $(toml_string "$psk")"
            echo "country = \"${country^^}\""
        fi
    } >"$toml"
    local part="$dev@@$boot_offset"
    mcopy -o -i "$part" "$toml" ::/wtd.toml || die "could not write wtd.toml to $dev's boot partition"
    sync
    cmp -s "$toml" <(mtype -i "$part" ::/wtd.toml) || die "wtd.toml on $dev does not read back as written"
    say "card $dev ready: ${host:-wtd}${token_id:+, enrollment token $token_id}"
    echo "$token_id"
}

toml_string() { # a TOML basic string, escaped
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    printf '"%s"' "$s"
}

# --- the sheet --------------------------------------------------------------------------------
sheet_rows=()
write_sheet() {
    local dir=$sheet_dir
    if [[ -z $dir ]]; then
        local home=${WTD_HOME:-${XDG_CONFIG_HOME:-$HOME/.config}/wtd}
        dir="$home/flash"
    fi
    mkdir -p "$dir"
    local stamp
    stamp=$(date -u +%Y%m%d-%H%M%S)
    local txt="$dir/sheet-$stamp.txt" html="$dir/sheet-$stamp.html"
    {
        echo "wtd cards flashed $(date -u +%Y-%m-%dT%H:%M:%SZ) by owner $owner"
        echo "Once they are up: wtd adopt --pending   (then: wtd ls)"
        echo
        for row in "${sheet_rows[@]}"; do
            IFS='|' read -r host token <<<"$row"
            echo "----------------------------------------"
            echo "  $host"
            echo "  enrollment token: ${token:-none}"
            echo "  owner: $owner"
        done
        echo "----------------------------------------"
    } >"$txt"
    {
        echo '<!doctype html><html><head><meta charset="utf-8"><title>wtd cards</title>'
        echo '<style>body{font-family:sans-serif}.card{display:inline-block;border:1px dashed #888;padding:12px;margin:6px;width:220px;text-align:center}.host{font-size:28px;font-weight:bold}.small{font-size:11px;word-break:break-all}svg{width:140px;height:140px}</style></head><body>'
        echo "<p>Flashed $(date -u +%Y-%m-%dT%H:%M:%SZ) for owner <code>$owner</code>. Cut out and stick one on each Pi. Then run <code>wtd adopt --pending</code>.</p>"
        for row in "${sheet_rows[@]}"; do
            IFS='|' read -r host token <<<"$row"
            echo "<div class=\"card\"><div class=\"host\">$host</div>"
            if command -v qrencode >/dev/null; then
                qrencode -t SVG -o - "wtd card $host token ${token:-none} owner $owner" | sed '1{/^<?xml/d}'
            fi
            echo "<div class=\"small\">token ${token:-none}</div><div class=\"small\">owner $owner</div></div>"
        done
        echo '</body></html>'
    } >"$html"
    say "sheet: $txt and $html"
}

# --- go ---------------------------------------------------------------------------------------
for ((n = 1; n <= count; n++)); do
    dev=${device//\{n\}/$n}
    host=$hostname
    if ((count > 1)); then
        host=$(printf '%s-%02d' "$hostname" "$n")
        if [[ $device != *"{n}"* ]]; then
            if ((n > 1)) || ((!yes)); then
                [[ -t 0 ]] || die "card $n of $count: put it in and press Enter (needs a terminal; or use {n} in DEVICE)"
                read -r -p "Put in card $n of $count ($host) and press Enter: " _
            fi
        fi
    fi
    describe "$dev"
    confirm "$dev"
    token_id=$(write_card "$dev" "$host")
    sheet_rows+=("${host:-wtd}|$token_id")
done
write_sheet
say "done: $count card(s). Boot them, then: wtd adopt --pending"
