//! `wtd firstboot --grow-root`: the image's root partition grown to fill its card.
//!
//! The image is small (its root holds what it ships, plus a little room), and a card is
//! many times larger. At boot, `wtd-growroot.service` makes the root partition end where
//! the card ends, then grows its ext4 filesystem while it is mounted (ext4 grows online):
//! the space is then there for the agent's state, logs and missions.
//!
//! Only the simplest, safe case is handled, the one the image itself creates: an MBR
//! (what the Pi's boot ROM reads) whose root partition is the last one on the disk, with
//! free space after it. Anything else (GPT, a partition after the root, a root that is not
//! a partition) is left alone, with a line saying why. Growing is idempotent: once the
//! partition fills the card there is nothing to do, and a boot interrupted between the two
//! steps finishes the filesystem's part at the next boot.
//!
//! The partition table edit is a pure function of the MBR's 512 bytes ([`grown_mbr`]);
//! the kernel is told with util-linux's `resizepart`, the filesystem grown with
//! `resize2fs`.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// Sectors of 512 bytes: the unit of MBR entries and of sysfs's `size` and `start`.
const SECTOR: u64 = 512;
/// Partitions end on a MiB boundary (in sectors), as sfdisk and the image place them.
const ALIGN: u64 = 2048;
/// Less free space than this after the root (in sectors: 64 MiB) is not worth a resize.
const MIN_GAIN: u64 = 64 * 2048;
/// The MBR's four primary entries start here, 16 bytes each.
const ENTRIES: usize = 446;
/// A protective MBR's partition type: the disk is really GPT.
const GPT_PROTECTIVE: u8 = 0xee;
/// Extended partition types (CHS, LBA, Linux): logical partitions live inside them.
const EXTENDED: [u8; 3] = [0x05, 0x0f, 0x85];

/// What [`grown_mbr`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// The partition already fills the disk (or nearly): nothing to do.
    Fits,
    /// The new MBR, and the partition's new size in sectors.
    Grow { mbr: Box<[u8; 512]>, sectors: u64 },
}

fn entry(mbr: &[u8; 512], i: usize) -> (u8, u64, u64) {
    let e = &mbr[ENTRIES + 16 * i..ENTRIES + 16 * (i + 1)];
    let start = u32::from_le_bytes([e[8], e[9], e[10], e[11]]);
    let size = u32::from_le_bytes([e[12], e[13], e[14], e[15]]);
    (e[4], u64::from(start), u64::from(size))
}

/// The MBR with the partition that starts at `start` grown to the end of a disk of
/// `disk_sectors`, aligned down to a MiB. Refuses what it cannot grow safely.
pub fn grown_mbr(mbr: &[u8; 512], start: u64, disk_sectors: u64) -> anyhow::Result<Plan> {
    if mbr[510..] != [0x55, 0xaa] {
        bail!("the disk has no MBR partition table (no 0x55AA signature)");
    }
    let entries: Vec<_> = (0..4).map(|i| entry(mbr, i)).collect();
    if entries.iter().any(|&(kind, _, _)| kind == GPT_PROTECTIVE) {
        bail!("the disk has a GPT partition table; grow it with systemd-repart or growpart");
    }
    let Some(index) = entries.iter().position(|&(kind, s, _)| kind != 0 && s == start) else {
        bail!("the root is not a primary partition of this disk's MBR (a logical partition?)");
    };
    let (_, _, size) = entries[index];
    let end = start + size;
    for (i, &(kind, s, n)) in entries.iter().enumerate() {
        if i != index && kind != 0 && (s >= end || (EXTENDED.contains(&kind) && s + n > start)) {
            bail!(
                "partition {} lies after the root, which therefore cannot grow",
                i + 1
            );
        }
    }
    if end > disk_sectors {
        bail!("the root partition ends past the end of the disk ({end} > {disk_sectors} sectors): the table is damaged");
    }
    let new_end = disk_sectors / ALIGN * ALIGN;
    if new_end < end + MIN_GAIN {
        return Ok(Plan::Fits);
    }
    let sectors = new_end - start;
    let Ok(field) = u32::try_from(sectors) else {
        bail!("the card is larger than an MBR can address (2 TiB)");
    };
    let mut grown = Box::new(*mbr);
    let at = ENTRIES + 16 * index + 12;
    grown[at..at + 4].copy_from_slice(&field.to_le_bytes());
    Ok(Plan::Grow { mbr: grown, sectors })
}

/// The root filesystem's partition and its disk, from sysfs.
struct Root {
    /// `/dev/mmcblk0p2`
    partition: PathBuf,
    /// `/dev/mmcblk0`
    disk: PathBuf,
    /// The partition's number on its disk (2).
    number: u32,
    /// Where it starts and how long it is, in sectors.
    start: u64,
    size: u64,
    /// The whole disk, in sectors.
    disk_sectors: u64,
}

fn read_number(path: &Path) -> anyhow::Result<u64> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{} is not a number: {text:?}", path.display()))
}

fn find_root(sys: &Path) -> anyhow::Result<Root> {
    let dev = fs::metadata("/").context("stat /")?.dev();
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let node = sys.join(format!("dev/block/{major}:{minor}"));
    let part = fs::canonicalize(&node).with_context(|| format!("the root's device {}", node.display()))?;
    if !part.join("partition").exists() {
        bail!("the root ({}) is not a partition", part.display());
    }
    let disk = part.parent().context("a partition's disk")?;
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    Ok(Root {
        partition: Path::new("/dev").join(name(&part)),
        disk: Path::new("/dev").join(name(disk)),
        number: u32::try_from(read_number(&part.join("partition"))?)?,
        start: read_number(&part.join("start"))?,
        size: read_number(&part.join("size"))?,
        disk_sectors: read_number(&disk.join("size"))?,
    })
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Grows the root partition and filesystem to fill the card; returns what it did, for the
/// consoles. `Ok(None)`: nothing to do.
pub fn grow_root() -> anyhow::Result<Option<String>> {
    let root = find_root(Path::new("/sys"))?;
    let mib = |sectors: u64| sectors * SECTOR / (1 << 20);
    let mut disk = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&root.disk)
        .with_context(|| format!("opening {}", root.disk.display()))?;
    let mut mbr = [0u8; 512];
    disk.read_exact(&mut mbr)
        .with_context(|| format!("reading the partition table of {}", root.disk.display()))?;
    let grew = match grown_mbr(&mbr, root.start, root.disk_sectors)? {
        Plan::Fits => None,
        Plan::Grow { mbr, sectors } => {
            disk.seek(SeekFrom::Start(0))?;
            disk.write_all(&mbr[..])?;
            disk.sync_all()
                .with_context(|| format!("writing the partition table of {}", root.disk.display()))?;
            let (disk_path, number) = (root.disk.to_string_lossy(), root.number.to_string());
            run("resizepart", &[&disk_path, &number, &sectors.to_string()])?;
            Some((root.size, sectors))
        }
    };
    drop(disk);
    // Also when the partition was grown at an earlier boot that stopped before this step:
    // resize2fs does nothing on a filesystem that already fills its partition.
    run("resize2fs", &[&root.partition.to_string_lossy()])?;
    Ok(grew.map(|(from, to)| {
        format!(
            "grew the root partition {} from {} MiB to {} MiB to fill the card",
            root.partition.display(),
            mib(from),
            mib(to)
        )
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The image's own layout: boot (FAT) at 4 MiB, 256 MiB; root after it, 600 MiB.
    fn image_mbr() -> [u8; 512] {
        let mut mbr = [0u8; 512];
        let mut put = |i: usize, kind: u8, start: u32, size: u32| {
            let e = ENTRIES + 16 * i;
            mbr[e + 4] = kind;
            mbr[e + 8..e + 12].copy_from_slice(&start.to_le_bytes());
            mbr[e + 12..e + 16].copy_from_slice(&size.to_le_bytes());
        };
        put(0, 0x0c, 8192, 256 * 2048);
        put(1, 0x83, 8192 + 256 * 2048, 600 * 2048);
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        mbr
    }

    const ROOT_START: u64 = 8192 + 256 * 2048;
    const CARD: u64 = 16 * 1024 * 2048 - 777; // a 16 GiB card, not a whole number of MiB

    #[test]
    fn grows_the_last_partition_to_the_card_aligned() {
        let Plan::Grow { mbr, sectors } = grown_mbr(&image_mbr(), ROOT_START, CARD).unwrap() else {
            panic!("should grow");
        };
        assert_eq!((ROOT_START + sectors) % ALIGN, 0);
        assert!(ROOT_START + sectors <= CARD && ROOT_START + sectors + ALIGN > CARD);
        assert_eq!(entry(&mbr, 1), (0x83, ROOT_START, sectors));
        // Nothing else in the sector changed.
        let old = image_mbr();
        let changed: Vec<usize> = (0..512).filter(|&i| old[i] != mbr[i]).collect();
        assert!(
            changed.iter().all(|&i| (ENTRIES + 28..ENTRIES + 32).contains(&i)),
            "{changed:?}"
        );
        // And a second pass finds it fits.
        assert_eq!(grown_mbr(&mbr, ROOT_START, CARD).unwrap(), Plan::Fits);
    }

    #[test]
    fn a_little_slack_is_left_alone() {
        let end = ROOT_START + 600 * 2048;
        assert_eq!(
            grown_mbr(&image_mbr(), ROOT_START, end + MIN_GAIN - 1).unwrap(),
            Plan::Fits
        );
        assert_eq!(grown_mbr(&image_mbr(), ROOT_START, end).unwrap(), Plan::Fits);
    }

    fn refusal(mbr: &[u8; 512], start: u64, disk: u64) -> String {
        format!("{:#}", grown_mbr(mbr, start, disk).unwrap_err())
    }

    #[test]
    fn refuses_what_it_cannot_grow_safely() {
        let mut no_sig = image_mbr();
        no_sig[511] = 0;
        assert!(refusal(&no_sig, ROOT_START, CARD).contains("no MBR"));

        let mut gpt = image_mbr();
        gpt[ENTRIES + 4] = GPT_PROTECTIVE;
        assert!(refusal(&gpt, ROOT_START, CARD).contains("GPT"));

        assert!(refusal(&image_mbr(), 12345, CARD).contains("not a primary partition"));

        // A third partition after the root.
        let mut third = image_mbr();
        let e = ENTRIES + 32;
        third[e + 4] = 0x83;
        third[e + 8..e + 12].copy_from_slice(&((ROOT_START + 600 * 2048) as u32).to_le_bytes());
        third[e + 12..e + 16].copy_from_slice(&2048u32.to_le_bytes());
        assert!(refusal(&third, ROOT_START, CARD).contains("after the root"));

        // An extended partition enclosing space past the root's start.
        let mut extended = image_mbr();
        extended[e + 4] = 0x05;
        extended[e + 8..e + 12].copy_from_slice(&2048u32.to_le_bytes());
        extended[e + 12..e + 16].copy_from_slice(&((CARD - 4096) as u32).to_le_bytes());
        assert!(refusal(&extended, ROOT_START, CARD).contains("after the root"));

        assert!(refusal(&image_mbr(), ROOT_START, ROOT_START + 100).contains("damaged"));
        assert!(refusal(&image_mbr(), ROOT_START, 5 << 32).contains("2 TiB"));
    }
}
