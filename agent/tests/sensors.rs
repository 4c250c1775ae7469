//! The Pi sensors, read from fake sysfs trees built in temporary directories.
//!
//! Each test builds the few files a real machine would have, points
//! [`SensorPaths::under`] at them, and checks what [`sensors::read`] makes of it. The
//! trees are built in code rather than checked in as fixtures so that each test's data
//! sits next to its assertions (and a checkout never contains `soc:firmware`, a file name
//! Windows refuses).
//!
//! What the real files hold (Raspberry Pi 4, Raspberry Pi OS):
//! ```text
//! /sys/class/thermal/thermal_zone0/type                 cpu-thermal\n
//! /sys/class/thermal/thermal_zone0/temp                 48300\n        (millidegrees C)
//! /sys/devices/platform/soc/soc:firmware/get_throttled  50005\n        (hex, no 0x)
//! /proc/device-tree/model                               Raspberry Pi 4 Model B Rev 1.4\0
//! ```
//!
//! # Index
//! - whole machines: a Pi 4, a laptop, an empty tree, a missing root
//! - temperature: choosing among zones, falling back, garbage, odd directory entries, a FIFO
//! - throttling: sysfs formats, the driver-directory fallback, garbage
//! - model: the `/sys` fallback, garbage
//! - `vcgencmd`: the fallback, its lookup, its failures and its timeout (the fake
//!   `vcgencmd` is a shell script)
//!
//! Unix only: the fake programs are shell scripts, and `soc:firmware` is not a valid file
//! name on Windows. (The module itself builds everywhere and reads nothing off Linux.)
#![cfg(unix)]
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with a backtrace

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use tempfile::TempDir;
use wtd_agent::sensors::{self, PiSensors, SensorPaths, ThrottleFlags, Vcgencmd, MAX_READ_BYTES};

const GET_THROTTLED: &str = "sys/devices/platform/soc/soc:firmware/get_throttled";
const PROC_MODEL: &str = "proc/device-tree/model";
const SYS_MODEL: &str = "sys/firmware/devicetree/base/model";
const PI4_MODEL: &str = "Raspberry Pi 4 Model B Rev 1.4";

/// A fake root file system in a temporary directory, deleted when dropped.
struct FakeTree {
    dir: TempDir,
}

impl FakeTree {
    fn new() -> Self {
        FakeTree {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Write `contents` to `path` (relative to the root), creating its directories.
    fn file(&self, path: &str, contents: impl AsRef<[u8]>) -> &Self {
        let path = self.root().join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
        self
    }

    /// Create a directory where a file might be expected.
    fn dir(&self, path: &str) -> &Self {
        fs::create_dir_all(self.root().join(path)).unwrap();
        self
    }

    /// A thermal zone with a `type` and a `temp`.
    fn zone(&self, n: u32, kind: &str, temp: &str) -> &Self {
        self.file(
            &format!("sys/class/thermal/thermal_zone{n}/type"),
            format!("{kind}\n"),
        )
        .file(&format!("sys/class/thermal/thermal_zone{n}/temp"), temp)
    }

    /// Sensor paths for this tree; `vcgencmd` is disabled.
    fn paths(&self) -> SensorPaths {
        SensorPaths::under(self.root())
    }

    fn read(&self) -> PiSensors {
        sensors::read(&self.paths())
    }
}

/// A Raspberry Pi 4 on a weak power supply, as Raspberry Pi OS shows it.
fn pi4() -> FakeTree {
    let tree = FakeTree::new();
    tree.zone(0, "cpu-thermal", "48300\n")
        .file(GET_THROTTLED, "50005\n")
        .file(PROC_MODEL, format!("{PI4_MODEL}\0"))
        .file(SYS_MODEL, format!("{PI4_MODEL}\0"));
    tree
}

#[track_caller]
fn assert_celsius(actual: Option<f32>, expected: f32) {
    let actual = actual.unwrap_or_else(|| panic!("expected {expected} °C, got no temperature"));
    assert!(
        (actual - expected).abs() < 1e-3,
        "expected {expected} °C, got {actual} °C"
    );
}

/// Held while writing and running fake programs. Tests run on parallel threads of one
/// process; if another thread forks while our script is still open for writing, the
/// child inherits that descriptor and exec fails with "text file busy". Every test that
/// starts a process takes this lock, so serializing them is enough.
fn spawn_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// More than any sensor file may hold.
fn huge() -> Vec<u8> {
    vec![b'4'; MAX_READ_BYTES + 1]
}

// --- whole machines --------------------------------------------------------------------------

#[test]
fn a_pi4_reads_everything() {
    let pi = pi4().read();
    assert_celsius(pi.temperature_c, 48.3);
    assert_eq!(pi.model.as_deref(), Some(PI4_MODEL));
    assert_eq!(
        pi.throttled,
        Some(ThrottleFlags {
            raw: 0x50005,
            under_voltage_now: true,
            freq_capped_now: false,
            throttled_now: true,
            soft_temp_limit_now: false,
            under_voltage_occurred: true,
            freq_capped_occurred: false,
            throttled_occurred: true,
            soft_temp_limit_occurred: false,
        })
    );
    let flags = pi.throttled.unwrap();
    assert!(flags.any_now() && flags.any_occurred());
}

#[test]
fn a_healthy_pi_reports_zero_flags_not_unknown() {
    let tree = pi4();
    tree.file(GET_THROTTLED, "0\n");
    let flags = tree.read().throttled.unwrap();
    assert_eq!(flags, ThrottleFlags::from_raw(0));
    assert!(!flags.any_occurred());
}

#[test]
fn a_laptop_has_a_temperature_but_no_pi_sensors() {
    let tree = FakeTree::new();
    tree.zone(0, "acpitz", "41000\n")
        .zone(1, "x86_pkg_temp", "55000\n")
        .zone(2, "iwlwifi_1", "38000\n")
        .file("sys/class/thermal/cooling_device0/type", "Processor\n");
    let laptop = tree.read();
    assert_celsius(laptop.temperature_c, 41.0); // no CPU-typed zone: zone 0
    assert_eq!(laptop.throttled, None);
    assert_eq!(laptop.model, None);
}

#[test]
fn an_empty_tree_knows_nothing() {
    assert_eq!(FakeTree::new().read(), PiSensors::default());
}

#[test]
fn a_missing_root_knows_nothing() {
    let tree = FakeTree::new();
    let paths = SensorPaths::under(tree.root().join("no/such/dir"));
    assert_eq!(sensors::read(&paths), PiSensors::default());
}

// --- temperature -----------------------------------------------------------------------------

#[test]
fn the_cpu_zone_wins_over_zone0() {
    for cpu in ["cpu-thermal", "cpu_thermal", "soc_thermal"] {
        let tree = FakeTree::new();
        tree.zone(0, "acpitz", "30000")
            .zone(1, "iwlwifi_1", "40000")
            .zone(2, cpu, "61000");
        assert_celsius(tree.read().temperature_c, 61.0);
    }
}

#[test]
fn the_lowest_numbered_cpu_zone_wins() {
    let tree = FakeTree::new();
    // Numeric order, not name order: "thermal_zone10" sorts before "thermal_zone2" as text.
    tree.zone(0, "acpitz", "30000")
        .zone(10, "cpu-thermal", "70000")
        .zone(2, "cpu-thermal", "50000");
    assert_celsius(tree.read().temperature_c, 50.0);
}

#[test]
fn an_unreadable_cpu_zone_falls_back_to_the_next_then_zone0() {
    let tree = FakeTree::new();
    tree.zone(0, "acpitz", "40000")
        .zone(1, "cpu-thermal", "hot")
        .zone(3, "cpu-thermal", "52000");
    assert_celsius(tree.read().temperature_c, 52.0);

    let tree = FakeTree::new();
    tree.zone(0, "acpitz", "40000").zone(1, "cpu-thermal", "hot");
    tree.file("sys/class/thermal/thermal_zone2/type", "cpu-thermal"); // no temp file at all
    assert_celsius(tree.read().temperature_c, 40.0);
}

#[test]
fn zones_without_a_type_are_not_preferred() {
    let tree = FakeTree::new();
    tree.file("sys/class/thermal/thermal_zone0/temp", "45000\n")
        .file("sys/class/thermal/thermal_zone1/temp", "65000\n");
    assert_celsius(tree.read().temperature_c, 45.0);
}

#[test]
fn a_temperature_without_zone0_or_a_cpu_zone_is_unknown() {
    let tree = FakeTree::new();
    tree.zone(1, "acpitz", "40000");
    assert_eq!(tree.read().temperature_c, None);
}

#[test]
fn garbage_temperatures_are_unknown() {
    let cases: [&[u8]; 8] = [
        b"warm",
        b"",
        b"48.3",
        b"999999999",
        b"0x1f",
        b"\xff\xfe",
        b"48300\n48300\n",
        &huge(),
    ];
    for contents in cases {
        let tree = FakeTree::new();
        tree.file("sys/class/thermal/thermal_zone0/type", "cpu-thermal\n")
            .file("sys/class/thermal/thermal_zone0/temp", contents);
        assert_eq!(
            tree.read(),
            PiSensors::default(),
            "temp = {:?}",
            String::from_utf8_lossy(contents)
        );
    }

    let tree = FakeTree::new();
    tree.file("sys/class/thermal/thermal_zone0/type", "cpu-thermal\n")
        .dir("sys/class/thermal/thermal_zone0/temp");
    assert_eq!(tree.read().temperature_c, None, "temp is a directory");
}

#[test]
fn a_garbage_zone_type_is_just_not_preferred() {
    let tree = FakeTree::new();
    tree.file("sys/class/thermal/thermal_zone0/temp", "45000\n")
        .file("sys/class/thermal/thermal_zone1/type", huge())
        .file("sys/class/thermal/thermal_zone1/temp", "65000\n")
        .file("sys/class/thermal/thermal_zone2/type", b"cpu-thermal\xff")
        .file("sys/class/thermal/thermal_zone2/temp", "66000\n");
    assert_celsius(tree.read().temperature_c, 45.0);
}

#[test]
fn odd_entries_in_the_thermal_directory_are_ignored() {
    let tree = FakeTree::new();
    tree.zone(0, "acpitz", "40000")
        .file("sys/class/thermal/thermal_zone/type", "cpu-thermal") // no number
        .file("sys/class/thermal/thermal_zone/temp", "90000")
        .file("sys/class/thermal/cooling_device0/type", "cpu-thermal") // not a zone
        .file("sys/class/thermal/cooling_device0/temp", "91000")
        .file("sys/class/thermal/thermal_zone7", "cpu-thermal"); // a file, not a directory
                                                                 // A name that is not UTF-8.
    let name = std::ffi::OsStr::from_bytes(b"thermal_zone\xff1");
    let zone = tree.root().join("sys/class/thermal").join(name);
    fs::create_dir_all(&zone).unwrap();
    fs::write(zone.join("type"), "cpu-thermal").unwrap();
    fs::write(zone.join("temp"), "92000").unwrap();
    assert_celsius(tree.read().temperature_c, 40.0);
}

#[test]
fn a_fifo_is_not_opened() {
    // Opening a FIFO blocks until someone writes to it; a sensor read must not.
    let _lock = spawn_lock();
    let tree = FakeTree::new();
    tree.zone(0, "cpu-thermal", "48300");
    let temp = tree.root().join("sys/class/thermal/thermal_zone0/temp");
    fs::remove_file(&temp).unwrap();
    let made = std::process::Command::new("mkfifo").arg(&temp).status().unwrap();
    assert!(made.success(), "mkfifo failed");
    assert_eq!(tree.read().temperature_c, None);
}

// --- throttling ------------------------------------------------------------------------------

#[test]
fn the_firmware_file_may_say_0x() {
    for text in ["0x50005\n", "0X50005", " 50005 \n"] {
        let tree = pi4();
        tree.file(GET_THROTTLED, text);
        assert_eq!(
            tree.read().throttled,
            Some(ThrottleFlags::from_raw(0x50005)),
            "{text:?}"
        );
    }
}

#[test]
fn bare_firmware_digits_are_hex_not_decimal() {
    let tree = pi4();
    tree.file(GET_THROTTLED, "80008\n");
    let flags = tree.read().throttled.unwrap();
    assert_eq!(flags.raw, 0x80008);
    assert!(flags.soft_temp_limit_now && flags.soft_temp_limit_occurred);
    assert!(!flags.under_voltage_now && !flags.throttled_now && !flags.freq_capped_now);
}

#[test]
fn garbage_throttled_is_unknown() {
    let cases: [&[u8]; 9] = [
        b"",
        b"\n",
        b"0x",
        b"zz",
        b"+5",
        b"-5",
        b"123456789",
        b"\xff50005",
        &huge(),
    ];
    for contents in cases {
        let tree = pi4();
        tree.file(GET_THROTTLED, contents);
        let pi = tree.read();
        assert_eq!(
            pi.throttled,
            None,
            "get_throttled = {:?}",
            String::from_utf8_lossy(contents)
        );
        assert_eq!(
            pi.model.as_deref(),
            Some(PI4_MODEL),
            "other sensors are unaffected"
        );
    }

    let tree = FakeTree::new();
    tree.dir(GET_THROTTLED);
    assert_eq!(tree.read().throttled, None, "get_throttled is a directory");
}

#[test]
fn the_firmware_device_is_found_through_its_driver() {
    // A board whose firmware node is not `soc:firmware` (the name comes from the device tree).
    let driver = "sys/bus/platform/drivers/raspberrypi-firmware";
    let tree = FakeTree::new();
    tree.file(&format!("{driver}/bind"), "")
        .file(&format!("{driver}/uevent"), "DRIVER=raspberrypi-firmware\n")
        .dir(&format!("{driver}/module"))
        .file(
            &format!("{driver}/soc@107c000000:firmware/get_throttled"),
            "50000\n",
        );
    assert_eq!(tree.read().throttled, Some(ThrottleFlags::from_raw(0x50000)));

    // The usual path wins when both exist.
    tree.file(GET_THROTTLED, "0\n");
    assert_eq!(tree.read().throttled, Some(ThrottleFlags::from_raw(0)));

    // A garbage usual path falls through to the driver's device.
    tree.file(GET_THROTTLED, "garbage\n");
    assert_eq!(tree.read().throttled, Some(ThrottleFlags::from_raw(0x50000)));

    // A driver directory with no device in it is unknown.
    let tree = FakeTree::new();
    tree.file(&format!("{driver}/bind"), "");
    assert_eq!(tree.read().throttled, None);
}

// --- model -----------------------------------------------------------------------------------

#[test]
fn the_model_falls_back_to_sys_firmware() {
    let tree = FakeTree::new();
    tree.file(SYS_MODEL, "Raspberry Pi 5 Model B Rev 1.0\0");
    assert_eq!(
        tree.read().model.as_deref(),
        Some("Raspberry Pi 5 Model B Rev 1.0")
    );

    // A garbage /proc copy falls through to /sys too.
    tree.file(PROC_MODEL, b"\xff\xff\0");
    assert_eq!(
        tree.read().model.as_deref(),
        Some("Raspberry Pi 5 Model B Rev 1.0")
    );

    // /proc wins when both are good.
    tree.file(PROC_MODEL, "Raspberry Pi Zero 2 W Rev 1.0\0");
    assert_eq!(
        tree.read().model.as_deref(),
        Some("Raspberry Pi Zero 2 W Rev 1.0")
    );
}

#[test]
fn garbage_models_are_unknown() {
    let cases: [&[u8]; 6] = [
        b"",
        b"\0",
        b" \n\0",
        b"\xffRaspberry Pi\0",
        b"Pi\x1b[2J\0",
        &huge(),
    ];
    for contents in cases {
        let tree = FakeTree::new();
        tree.file(PROC_MODEL, contents).file(SYS_MODEL, contents);
        assert_eq!(
            tree.read().model,
            None,
            "model = {:?}",
            String::from_utf8_lossy(contents)
        );
    }

    let tree = FakeTree::new();
    tree.dir(PROC_MODEL);
    assert_eq!(tree.read().model, None, "model is a directory");
}

// --- vcgencmd --------------------------------------------------------------------------------

mod vcgencmd {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, Instant};

    /// Install an executable `usr/bin/vcgencmd` shell script in `tree`.
    fn install(tree: &FakeTree, body: &str) -> PathBuf {
        let script = tree.root().join("usr/bin/vcgencmd");
        tree.file("usr/bin/vcgencmd", format!("#!/bin/sh\n{body}\n"));
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        script
    }

    /// `tree`'s paths, searching the tree's `usr/bin` for `vcgencmd`.
    fn searching(tree: &FakeTree) -> SensorPaths {
        tree.paths()
            .with_vcgencmd(Vcgencmd::Search(vec![tree.root().join("usr/bin")]))
    }

    #[test]
    fn vcgencmd_is_the_fallback_when_sysfs_has_nothing() {
        let _lock = spawn_lock();
        let tree = FakeTree::new();
        install(
            &tree,
            r#"[ "$1" = get_throttled ] || exit 2; echo throttled=0x50000"#,
        );
        let flags = sensors::read(&searching(&tree)).throttled.unwrap();
        assert_eq!(flags.raw, 0x50000);
        assert!(flags.under_voltage_occurred && flags.throttled_occurred && !flags.any_now());
    }

    #[test]
    fn sysfs_wins_over_vcgencmd() {
        let _lock = spawn_lock();
        let tree = FakeTree::new();
        tree.file(GET_THROTTLED, "0\n");
        install(&tree, "echo throttled=0x50005");
        assert_eq!(
            sensors::read(&searching(&tree)).throttled,
            Some(ThrottleFlags::from_raw(0))
        );
    }

    #[test]
    fn garbage_sysfs_falls_back_to_vcgencmd() {
        let _lock = spawn_lock();
        let tree = FakeTree::new();
        tree.file(GET_THROTTLED, "zz\n");
        install(&tree, "echo throttled=0x5");
        assert_eq!(
            sensors::read(&searching(&tree)).throttled,
            Some(ThrottleFlags::from_raw(0x5))
        );
    }

    #[test]
    fn a_disabled_vcgencmd_is_never_run() {
        let _lock = spawn_lock();
        let tree = FakeTree::new();
        install(&tree, r#"touch "$0.ran"; echo throttled=0x5"#);
        assert_eq!(
            tree.read().throttled,
            None,
            "SensorPaths::under disables vcgencmd"
        );
        assert_eq!(
            sensors::read(&tree.paths().with_vcgencmd(Vcgencmd::Disabled)).throttled,
            None
        );
        assert!(!tree.root().join("usr/bin/vcgencmd.ran").exists());

        // The same script does run once allowed (so the check above means something).
        assert!(sensors::read(&searching(&tree)).throttled.is_some());
        assert!(tree.root().join("usr/bin/vcgencmd.ran").exists());
    }

    #[test]
    fn the_search_skips_what_is_not_runnable() {
        let _lock = spawn_lock();
        let tree = FakeTree::new();
        let good = tree.root().join("good");
        let script = install(&tree, "echo throttled=0x5");
        fs::create_dir_all(&good).unwrap();
        fs::copy(&script, good.join("vcgencmd")).unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).unwrap(); // not executable
        tree.dir("dironly/vcgencmd"); // a directory, not a program

        let search =
            |dirs: Vec<PathBuf>| sensors::read(&tree.paths().with_vcgencmd(Vcgencmd::Search(dirs))).throttled;
        let bin = tree.root().join("usr/bin");
        let dironly = tree.root().join("dironly");
        let missing = tree.root().join("missing");
        assert_eq!(search(vec![]), None, "empty PATH");
        assert_eq!(search(vec![missing.clone()]), None, "no such directory");
        assert_eq!(search(vec![bin.clone()]), None, "not executable");
        assert_eq!(search(vec![dironly.clone()]), None, "a directory named vcgencmd");
        assert_eq!(
            search(vec![PathBuf::from("good")]),
            None,
            "relative directories are skipped"
        );
        // Search order: the first runnable one is used.
        assert_eq!(
            search(vec![missing, bin, dironly, good]),
            Some(ThrottleFlags::from_raw(0x5))
        );
    }

    #[test]
    fn vcgencmd_failures_are_unknown() {
        let _lock = spawn_lock();
        let big = "x".repeat(MAX_READ_BYTES);
        for body in [
            "echo throttled=0x50005; exit 1".to_owned(),
            "echo 'VCHI initialization failed'".to_owned(),
            "echo throttled=0xnope".to_owned(),
            "printf 'throttled=0x5\\377\\n'".to_owned(),
            format!("echo throttled=0x5; echo {big}"),
            "kill -9 $$".to_owned(),
        ] {
            let tree = FakeTree::new();
            install(&tree, &body);
            assert_eq!(sensors::read(&searching(&tree)).throttled, None, "{body:.60}");
        }
    }

    #[test]
    fn a_vcgencmd_that_cannot_start_is_unknown() {
        let _lock = spawn_lock();
        let tree = FakeTree::new();
        let script = install(&tree, "");
        fs::write(&script, b"\x7fELF\x02\x01\x01 not really a program").unwrap();
        assert_eq!(sensors::read(&searching(&tree)).throttled, None);
    }

    #[test]
    fn a_hanging_vcgencmd_times_out() {
        let _lock = spawn_lock();
        let tree = FakeTree::new();
        install(&tree, "exec sleep 30");
        let paths = searching(&tree).with_vcgencmd_timeout(Duration::from_millis(200));
        let started = Instant::now();
        assert_eq!(sensors::read(&paths).throttled, None);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "took {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_flood_of_output_times_out_instead_of_filling_memory() {
        let _lock = spawn_lock();
        let tree = FakeTree::new();
        // More than a pipe holds, so the script blocks writing until we kill it.
        install(&tree, "exec yes throttled=0x5");
        let paths = searching(&tree).with_vcgencmd_timeout(Duration::from_millis(200));
        assert_eq!(sensors::read(&paths).throttled, None);
    }
}
