//! `scripts/flash.sh` against regular files standing in for SD cards (never a real disk).
//!
//! The image here is a small one laid out like image/build.sh's (an MBR, a FAT boot
//! partition at 4 MiB, a second partition), made with the same tools; the script only needs
//! that layout. What a real card would report about itself (removable, size, model, mounts)
//! comes from the script's named test seam, `WTD_FLASH_TEST_SYSFS` / `WTD_FLASH_TEST_MOUNTS`,
//! and a card that does not keep what was written from `WTD_FLASH_TEST_CORRUPT`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{wtd_bin, TestCluster, User};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/flash.sh")
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A 40 MiB image: MBR, FAT32 "WTD-BOOT" at 4 MiB (with a file on it), a Linux partition.
fn small_image(dir: &Path) -> PathBuf {
    let img = dir.join("wtd-test.img");
    let fat = dir.join("boot.vfat");
    sh(Command::new("truncate").args(["-s", "40M"]).arg(&img));
    sh(Command::new("mkfs.vfat")
        .args(["-C", "-F", "32", "-n", "WTD-BOOT"])
        .arg(&fat)
        .arg("33792"));
    let example = dir.join("wtd-example.toml");
    std::fs::write(&example, "# example\n").unwrap();
    sh(Command::new("mcopy")
        .arg("-i")
        .arg(&fat)
        .arg(&example)
        .arg("::/wtd-example.toml"));
    let mut sfdisk = Command::new("sfdisk")
        .arg("--quiet")
        .arg(&img)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\nstart=4MiB, size=33MiB, type=c, bootable\nstart=37MiB, type=83\n")
        .unwrap();
    assert!(sfdisk.wait().unwrap().success());
    sh(Command::new("dd")
        .arg(format!("if={}", fat.display()))
        .arg(format!("of={}", img.display()))
        .args(["bs=1M", "seek=4", "conv=notrunc", "status=none"]));
    // Some bytes in the root partition, so a corrupted write has something to spoil.
    sh(Command::new("dd")
        .arg("if=/dev/urandom")
        .arg(format!("of={}", img.display()))
        .args(["bs=1M", "seek=37", "count=2", "conv=notrunc", "status=none"]));
    img
}

struct Lab {
    lab: TestCluster,
    alice: User,
    alice_id: String,
    image: PathBuf,
    ticket: String,
}

fn lab() -> Lab {
    let lab = TestCluster::new();
    let image = small_image(lab.dir());
    let alice = lab.user("alice");
    let alice_id = alice.init();
    // A join ticket (the proxy need not run: flashing only writes it on the card).
    let ticket = wtd_keys::Ticket {
        proxy: Some(wtd_keys::ProxyInfo {
            id: wtd_keys::SecretKey::from_seed(&[7; 32]).public().into(),
            addrs: vec!["127.0.0.1:7788".parse().unwrap()],
        }),
        grants: vec![],
    }
    .to_text();
    Lab {
        lab,
        alice,
        alice_id,
        image,
        ticket,
    }
}

impl Lab {
    /// Runs flash.sh as Alice with `args` after IMAGE DEVICE and extra environment.
    fn flash(&self, device: &Path, args: &[&str], env: &[(&str, String)]) -> Output {
        let mut cmd = Command::new("bash");
        cmd.arg(script())
            .arg(&self.image)
            .arg(device)
            .args(["--join", &self.ticket])
            .args(args)
            .env("WTD_HOME", &self.alice.home)
            .env("WTD_BIN", wtd_bin())
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    /// A pretend card's sysfs: removable or not, its size in bytes, its model.
    fn sysfs(&self, removable: bool, bytes: u64) -> PathBuf {
        let dir = self.lab.dir().join(format!("sys-{removable}-{bytes}"));
        std::fs::create_dir_all(dir.join("device")).unwrap();
        std::fs::write(dir.join("removable"), if removable { "1\n" } else { "0\n" }).unwrap();
        std::fs::write(dir.join("size"), format!("{}\n", bytes / 512)).unwrap();
        std::fs::write(dir.join("device/model"), "SD Reader    \n").unwrap();
        dir
    }

    fn card(&self, name: &str) -> PathBuf {
        self.lab.dir().join(name)
    }

    fn mounts(&self, name: &str, text: &str) -> PathBuf {
        let path = self.lab.dir().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn wtd_toml(card: &Path) -> String {
    sh(Command::new("mtype")
        .arg("-i")
        .arg(format!("{}@@4M", card.display()))
        .arg("::/wtd.toml"))
}

#[test]
fn a_card_that_is_not_removable_mounted_or_the_system_is_refused() {
    let l = lab();
    let card = l.card("card.img");
    std::fs::write(&card, b"").unwrap();
    let big = 64 << 20;
    let seam = |sys: &Path, mounts: &Path| {
        vec![
            ("WTD_FLASH_TEST_SYSFS", sys.display().to_string()),
            ("WTD_FLASH_TEST_MOUNTS", mounts.display().to_string()),
        ]
    };
    let none = l.mounts("mounts-none", "");

    let out = l.flash(&card, &["--yes"], &seam(&l.sysfs(false, big), &none));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not a removable disk: is it really the SD card?"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::metadata(&card).unwrap().len(),
        0,
        "written despite the refusal"
    );
    // --force overrides that one.
    let out = l.flash(
        &card,
        &["--yes", "--force", "--no-enroll"],
        &seam(&l.sysfs(false, big), &none),
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let removable = l.sysfs(true, big);
    let real = std::fs::canonicalize(&card).unwrap();
    let mounted = l.mounts(
        "mounts-media",
        &format!("{}1 /media/alice/WTD-BOOT vfat rw 0 0\n", real.display()),
    );
    let out = l.flash(&card, &["--yes"], &seam(&removable, &mounted));
    assert!(
        stderr(&out).contains("is mounted") && stderr(&out).contains("unmount it first"),
        "{}",
        stderr(&out)
    );
    assert!(!out.status.success());

    let system = l.mounts("mounts-root", &format!("{}2 / ext4 rw 0 0\n", real.display()));
    let out = l.flash(&card, &["--yes", "--force"], &seam(&removable, &system));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("holds the running system"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("even with --force"), "{}", stderr(&out));

    let small = l.sysfs(true, 8 << 20);
    let out = l.flash(&card, &["--yes"], &seam(&small, &none));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("smaller than the image"),
        "{}",
        stderr(&out)
    );

    // Without --yes and no terminal to ask on: nothing is written.
    let fresh = l.card("fresh.img");
    let out = l.flash(&fresh, &[], &seam(&removable, &none));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("about to ERASE") && stderr(&out).contains("SD Reader"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("add --yes"), "{}", stderr(&out));
    assert!(!fresh.exists());
}

#[test]
fn bad_arguments_are_refused_before_anything_is_written() {
    let l = lab();
    let card = l.card("card.img");
    for (args, want) in [
        (vec!["--wifi", "net"], "--wifi needs --psk and --country too"),
        (
            vec!["--wifi", "net", "--psk", "short", "--country", "GB"],
            "--psk must be 8 to 63",
        ),
        (
            vec!["--wifi", "net", "--psk", "longenough", "--country", "GBR"],
            "two-letter code",
        ),
        (vec!["--hostname", "pi_1"], "--hostname pi_1"),
        (vec!["--owner", "alice"], "is not a wtd id"),
        (vec!["--count", "0"], "--count must be 1 to 99"),
    ] {
        let mut all = vec!["--yes"];
        all.extend(args);
        let out = l.flash(&card, &all, &[]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(want), "want {want:?}: {}", stderr(&out));
        assert!(!card.exists());
    }
}

#[test]
fn a_corrupted_write_is_caught_by_reading_back() {
    let l = lab();
    let card = l.card("card.img");
    let out = l.flash(
        &card,
        &["--yes", "--no-enroll"],
        &[("WTD_FLASH_TEST_CORRUPT", (38u64 << 20).to_string())],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("verification failed"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("may be failing or fake"),
        "{}",
        stderr(&out)
    );
    // And the same write without the fault passes the same check.
    let out = l.flash(&card, &["--yes", "--no-enroll"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_classroom_set_of_three_gets_three_distinct_cards_and_a_sheet() {
    let l = lab();
    let sheet = l.lab.dir().join("sheet");
    let device = l.lab.dir().join("card-{n}.img");
    let out = l.flash(
        &device,
        &[
            "--yes",
            "--count",
            "3",
            "--sheet",
            sheet.to_str().unwrap(),
            "--wifi",
            "class \"room\"",
            "--psk",
            "passphrase",
            "--country",
            "gb",
            "--mission",
            "demo",
            "--tag",
            "lab",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let image_len = std::fs::metadata(&l.image).unwrap().len();
    let mut tomls = Vec::new();
    for n in 1..=3 {
        let card = l.card(&format!("card-{n}.img"));
        // Outside the boot partition, each card is the image, byte for byte.
        let data = std::fs::read(&card).unwrap();
        let img = std::fs::read(&l.image).unwrap();
        assert_eq!(data.len() as u64, image_len);
        assert!(
            data[..4 << 20] == img[..4 << 20],
            "card {n}'s partition table differs"
        );
        assert!(
            data[37 << 20..] == img[37 << 20..],
            "card {n}'s root partition differs"
        );
        tomls.push(wtd_toml(&card));
    }
    // The files differ only in the hostname and the enrollment token (and the date line).
    let strip = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.starts_with("hostname") && !l.starts_with("enroll") && !l.starts_with("# Written"))
            .map(str::to_string)
            .collect()
    };
    for t in &tomls[1..] {
        assert_eq!(strip(t), strip(&tomls[0]));
    }
    for (n, t) in tomls.iter().enumerate() {
        assert!(t.contains(&format!("hostname = \"pi-0{}\"\n", n + 1)), "{t}");
        assert!(t.contains(&format!("owners = [\"{}\"]\n", l.alice_id)), "{t}");
        assert!(t.contains("ssid = \"class \\\"room\\\"\"\n"), "{t}");
        assert!(t.contains("country = \"GB\""), "{t}");
    }
    let tokens: Vec<&str> = tomls
        .iter()
        .map(|t| t.lines().find(|l| l.starts_with("enroll = ")).expect("a token"))
        .collect();
    assert_ne!(tokens[0], tokens[1]);
    assert_ne!(tokens[1], tokens[2]);
    assert_ne!(tokens[0], tokens[2]);

    // Each card's wtd.toml is one the image's `wtd firstboot` accepts.
    let root = l.lab.dir().join("root");
    std::fs::create_dir_all(root.join("usr/share/wtd/missions")).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/missions/demo.toml"),
        root.join("usr/share/wtd/missions/demo.toml"),
    )
    .unwrap();
    let file = l.lab.dir().join("wtd.toml");
    std::fs::write(&file, &tomls[0]).unwrap();
    let check = sh(Command::new(wtd_bin())
        .args(["firstboot", "--check", "--file"])
        .arg(&file)
        .arg("--root")
        .arg(&root));
    assert!(check.contains("ok: hostname pi-01, missions [demo]"), "{check}");

    // The tokens are Alice's, kept in her home, labelled with the cards' names.
    let enrolled = l.alice.ok(["enroll"]);
    for n in 1..=3 {
        assert!(enrolled.contains(&format!("pi-0{n}")), "{enrolled}");
    }
    // The sheet: text and HTML, one entry per card, a QR code each, and no secret token.
    let files: Vec<PathBuf> = std::fs::read_dir(&sheet)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let txt = files
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "txt"))
        .expect("a text sheet");
    let html = files
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "html"))
        .expect("an HTML sheet");
    let txt = std::fs::read_to_string(txt).unwrap();
    let html = std::fs::read_to_string(html).unwrap();
    for n in 1..=3 {
        assert!(txt.contains(&format!("pi-0{n}")), "{txt}");
        assert!(
            html.contains(&format!("<div class=\"host\">pi-0{n}</div>")),
            "{html}"
        );
    }
    assert_eq!(html.matches("<svg").count(), 3, "one QR code per card");
    for token in &tokens {
        let secret = token.trim_start_matches("enroll = ").trim_matches('"');
        assert!(
            !txt.contains(secret) && !html.contains(secret),
            "the sheet shows a secret token"
        );
    }
}
