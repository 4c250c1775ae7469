//! Raspberry Pi health: CPU temperature, power/thermal throttling, and the board's model.
//!
//! The agent reports these next to its load so the dashboard can say *why* a Pi is slow
//! ("under-voltage: use a better power supply") and which board it is. Every reading is an
//! `Option`: `None` means "unknown", never "fine". Nothing here panics, blocks for long, or
//! reads more than [`MAX_READ_BYTES`] from any file.
//!
//! # Where each reading comes from
//!
//! | reading | source | absent when |
//! |---|---|---|
//! | temperature | `/sys/class/thermal/thermal_zone*/temp` | containers without `/sys`, most VMs |
//! | throttling | `/sys/devices/platform/soc/soc:firmware/get_throttled`, else `vcgencmd get_throttled` | not a Pi, or a mainline kernel without `vcgencmd` |
//! | model | `/proc/device-tree/model`, else `/sys/firmware/devicetree/base/model` | x86 laptops and VMs (no device tree) |
//!
//! - **Thermal zones** are the kernel's generic temperature sensors. Each
//!   `thermal_zoneN/` directory holds a `type` (what it measures: `cpu-thermal` on a Pi 4/5,
//!   `x86_pkg_temp` or `acpitz` on a laptop) and a `temp` in millidegrees Celsius (`48312`
//!   means 48.312 °C). We prefer the CPU zone; failing that, zone 0, which on a Pi is the SoC.
//! - **`get_throttled`** is a 32-bit word from the Pi's VideoCore firmware, which watches
//!   the supply voltage and the SoC temperature and slows the CPU down to protect the board.
//!   The Raspberry Pi kernel (not mainline Linux) exposes it in sysfs as bare hex, e.g.
//!   `50005` followed by a newline: the driver prints it with `"%x\n"`. `vcgencmd`, the
//!   firmware's command-line tool from Raspberry Pi OS, prints the same word as
//!   `throttled=0x50005`. See [`ThrottleFlags`] for what the bits mean.
//! - **The model** comes from the device tree, the boot-time description of the board
//!   that the firmware hands the kernel. Its `model` property is a NUL-terminated string
//!   such as `Raspberry Pi 4 Model B Rev 1.4`.
//!
//! # The test seam
//!
//! A Pi's `/sys` cannot exist on a build machine, so every path is read relative to a
//! [`SensorPaths`] root: `/` in production, a temporary directory holding a fake tree in
//! tests. The `vcgencmd` fallback runs a program, so where to look for it is part of
//! [`SensorPaths`] too, and a fake tree never runs the real one.
//!
//! ```
//! use wtd_agent::sensors::{self, SensorPaths};
//!
//! # fn main() -> std::io::Result<()> {
//! // A fake Pi: one thermal zone and a model string.
//! let root = tempfile::tempdir()?;
//! let zone = root.path().join("sys/class/thermal/thermal_zone0");
//! std::fs::create_dir_all(&zone)?;
//! std::fs::write(zone.join("type"), "cpu-thermal\n")?;
//! std::fs::write(zone.join("temp"), "48312\n")?;
//! std::fs::create_dir_all(root.path().join("proc/device-tree"))?;
//! std::fs::write(root.path().join("proc/device-tree/model"), "Raspberry Pi 4 Model B Rev 1.4\0")?;
//!
//! let pi = sensors::read(&SensorPaths::under(root.path()));
//! assert_eq!(pi.temperature_c, Some(48.312));
//! assert_eq!(pi.model.as_deref(), Some("Raspberry Pi 4 Model B Rev 1.4"));
//! assert_eq!(pi.throttled, None); // no firmware file in this tree: unknown
//!
//! // In the agent: `sensors::read(&SensorPaths::system())`.
//! # Ok(())
//! # }
//! ```

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The most we read from any one file or command, in bytes.
/// A sysfs attribute can never be longer than one page (4 KiB), so anything longer is not
/// the file we think it is; refusing it keeps memory bounded whatever is mounted there.
pub const MAX_READ_BYTES: usize = 4096;

/// How long `vcgencmd get_throttled` may take before we give up on it.
/// It answers in tens of milliseconds; when the firmware interface is wedged it can hang,
/// and a sensor must never stall the agent's load reports.
pub const VCGENCMD_TIMEOUT: Duration = Duration::from_secs(2);

/// How often we check whether `vcgencmd` has finished. Short next to its run time, long
/// enough not to busy-loop a Pi Zero's single core.
const VCGENCMD_POLL: Duration = Duration::from_millis(5);

/// Most directory entries we look at in `/sys/class/thermal`. A laptop has a few dozen
/// (zones plus cooling devices); the cap only matters if something odd is mounted there.
const MAX_THERMAL_ENTRIES: usize = 512;

/// Thermal zone types that measure the CPU/SoC. `cpu-thermal` is what Pi 4 and Pi 5
/// kernels report; the others are spellings used by other ARM boards' drivers.
const CPU_ZONE_TYPES: [&str; 3] = ["cpu-thermal", "cpu_thermal", "soc_thermal"];

/// Temperatures outside this range (°C) are driver error codes, not measurements: no
/// running silicon is colder than -100 °C or hotter than 200 °C.
const PLAUSIBLE_TEMP_C: std::ops::RangeInclusive<f32> = -100.0..=200.0;

// Paths below are relative to `SensorPaths::root`.
const THERMAL_DIR: &str = "sys/class/thermal";
/// Where the Raspberry Pi kernel puts `get_throttled` on every Pi up to the Pi 4.
const GET_THROTTLED: &str = "sys/devices/platform/soc/soc:firmware/get_throttled";
/// Every device bound to the firmware driver, whatever its SoC calls its bus (the
/// firmware node is not under `soc/` on every board); we look here if the path above is missing.
const FIRMWARE_DRIVER_DIR: &str = "sys/bus/platform/drivers/raspberrypi-firmware";
/// The device tree's `model`; `/proc/device-tree` is a link into `/sys/firmware`, and
/// either may be missing (no procfs in a chroot, no sysfs in some containers).
const MODEL_FILES: [&str; 2] = ["proc/device-tree/model", "sys/firmware/devicetree/base/model"];

/// Where the sensor files live, and how to find `vcgencmd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SensorPaths {
    /// Prefix for every file we read: `/` on a real machine, a fake tree in tests.
    root: PathBuf,
    /// Where to look for `vcgencmd`, the fallback for throttling flags.
    vcgencmd: Vcgencmd,
    /// How long `vcgencmd` may run.
    vcgencmd_timeout: Duration,
}

/// Whether and where to look for the `vcgencmd` program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vcgencmd {
    /// Never run it: fake trees in tests, or machines known not to have it.
    Disabled,
    /// Look for an executable `vcgencmd` in these directories, in order, like a shell
    /// searching `$PATH`. Relative directories are skipped: they would make the agent run
    /// whatever `vcgencmd` happens to be in its working directory.
    Search(Vec<PathBuf>),
}

impl SensorPaths {
    /// The real machine: files under `/`, and `vcgencmd` found through `$PATH`.
    pub fn system() -> Self {
        let dirs = std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).collect())
            .unwrap_or_default();
        SensorPaths {
            root: PathBuf::from("/"),
            vcgencmd: Vcgencmd::Search(dirs),
            vcgencmd_timeout: VCGENCMD_TIMEOUT,
        }
    }

    /// A fake tree rooted at `root`, with `vcgencmd` disabled so that tests run on a real Pi
    /// cannot pick up the real one. Use [`SensorPaths::with_vcgencmd`] to test the fallback.
    pub fn under(root: impl Into<PathBuf>) -> Self {
        SensorPaths {
            root: root.into(),
            vcgencmd: Vcgencmd::Disabled,
            vcgencmd_timeout: VCGENCMD_TIMEOUT,
        }
    }

    /// Replace where `vcgencmd` is looked for.
    pub fn with_vcgencmd(mut self, vcgencmd: Vcgencmd) -> Self {
        self.vcgencmd = vcgencmd;
        self
    }

    /// Replace how long `vcgencmd` may run (default [`VCGENCMD_TIMEOUT`]).
    pub fn with_vcgencmd_timeout(mut self, timeout: Duration) -> Self {
        self.vcgencmd_timeout = timeout;
        self
    }

    /// The directory every sensor path is relative to.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where `vcgencmd` is looked for.
    pub fn vcgencmd(&self) -> &Vcgencmd {
        &self.vcgencmd
    }
}

impl Default for SensorPaths {
    /// Same as [`SensorPaths::system`].
    fn default() -> Self {
        SensorPaths::system()
    }
}

/// One reading of every sensor. `None` means unknown: absent on this machine, or unreadable.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PiSensors {
    /// CPU (SoC) temperature in degrees Celsius. A Pi starts throttling at 80-85 °C.
    pub temperature_c: Option<f32>,
    /// The firmware's under-voltage and throttling flags; only Raspberry Pis have them.
    pub throttled: Option<ThrottleFlags>,
    /// The board, e.g. `Raspberry Pi 4 Model B Rev 1.4`; only device-tree machines have it.
    pub model: Option<String>,
}

/// The firmware's `get_throttled` word, decoded.
///
/// The low bits say what is happening *now*; bits 16-19 say the same thing *has happened*
/// since boot, so a brief brown-out is still visible after the voltage recovers.
/// `0x50005`, the classic reading from a Pi on a weak phone charger, means "under-voltage
/// and throttled now, and both have happened before".
///
/// | bit | meaning |
/// |---|---|
/// | 0 | under-voltage now (supply below about 4.63 V) |
/// | 1 | ARM frequency capped now |
/// | 2 | throttled now |
/// | 3 | soft temperature limit active now |
/// | 16-19 | the same four, at any time since boot |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ThrottleFlags {
    /// The word as the firmware reported it, including bits not decoded here.
    pub raw: u32,
    /// Bit 0: the supply voltage is too low right now. Use a better power supply or cable.
    pub under_voltage_now: bool,
    /// Bit 1: the ARM cores' top frequency is capped right now.
    pub freq_capped_now: bool,
    /// Bit 2: the CPU is being slowed down right now (heat or power).
    pub throttled_now: bool,
    /// Bit 3: the soft temperature limit (60 °C by default on a Pi 3B+) is active right now.
    pub soft_temp_limit_now: bool,
    /// Bit 16: under-voltage has happened since boot.
    pub under_voltage_occurred: bool,
    /// Bit 17: frequency capping has happened since boot.
    pub freq_capped_occurred: bool,
    /// Bit 18: throttling has happened since boot.
    pub throttled_occurred: bool,
    /// Bit 19: the soft temperature limit has been reached since boot.
    pub soft_temp_limit_occurred: bool,
}

impl ThrottleFlags {
    /// Decode a raw `get_throttled` word.
    pub fn from_raw(raw: u32) -> Self {
        let bit = |n: u32| raw & (1 << n) != 0;
        ThrottleFlags {
            raw,
            under_voltage_now: bit(0),
            freq_capped_now: bit(1),
            throttled_now: bit(2),
            soft_temp_limit_now: bit(3),
            under_voltage_occurred: bit(16),
            freq_capped_occurred: bit(17),
            throttled_occurred: bit(18),
            soft_temp_limit_occurred: bit(19),
        }
    }

    /// Whether any of the four problems is happening right now.
    pub fn any_now(&self) -> bool {
        self.under_voltage_now || self.freq_capped_now || self.throttled_now || self.soft_temp_limit_now
    }

    /// Whether any of the four problems has happened since boot (including now).
    pub fn any_occurred(&self) -> bool {
        self.any_now()
            || self.under_voltage_occurred
            || self.freq_capped_occurred
            || self.throttled_occurred
            || self.soft_temp_limit_occurred
    }
}

/// Read every sensor. Never fails: what cannot be read is `None`.
///
/// This blocks: it reads a handful of small files and may run `vcgencmd` for up to its
/// timeout ([`VCGENCMD_TIMEOUT`] by default). From async code, call it through
/// `tokio::task::spawn_blocking` so a slow firmware cannot stall other tasks.
pub fn read(paths: &SensorPaths) -> PiSensors {
    PiSensors {
        temperature_c: read_temperature_c(paths),
        throttled: read_throttled(paths),
        model: read_model(paths),
    }
}

/// The CPU temperature in °C: the lowest-numbered zone whose type is a CPU type, else
/// zone 0. If a preferred zone's `temp` is unreadable, the next candidate is tried.
pub fn read_temperature_c(paths: &SensorPaths) -> Option<f32> {
    let thermal = paths.root.join(THERMAL_DIR);
    let mut cpu_zones: Vec<(u32, PathBuf)> = match fs::read_dir(&thermal) {
        Ok(entries) => entries
            .take(MAX_THERMAL_ENTRIES)
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let index = zone_index(entry.file_name().to_str()?)?;
                let zone = entry.path();
                let kind = read_text(&zone.join("type"))?;
                CPU_ZONE_TYPES.contains(&kind.trim()).then_some((index, zone))
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    // Directory order is arbitrary; numeric order makes the choice stable (zone2 before zone10).
    cpu_zones.sort();
    let zone0 = thermal.join("thermal_zone0");
    cpu_zones
        .into_iter()
        .map(|(_, zone)| zone)
        .chain(std::iter::once(zone0))
        .find_map(|zone| parse_millidegrees(&read_text(&zone.join("temp"))?))
}

/// `thermal_zone12` -> `Some(12)`; anything else (`cooling_device0`, `thermal_zone`) -> `None`.
fn zone_index(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("thermal_zone")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Parse a thermal zone's `temp` file (millidegrees Celsius, e.g. `"48312\n"`) into °C.
/// Returns `None` for anything that is not a whole number of millidegrees in a plausible range.
pub fn parse_millidegrees(text: &str) -> Option<f32> {
    let text = text.trim();
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let millidegrees: i64 = text.parse().ok()?;
    // Divide in f64: an i64 of millidegrees can be too big for f32 to hold exactly.
    let celsius = (millidegrees as f64 / 1000.0) as f32;
    PLAUSIBLE_TEMP_C.contains(&celsius).then_some(celsius)
}

/// The firmware's throttling flags: from sysfs if the kernel exposes them, else from
/// `vcgencmd get_throttled` if [`SensorPaths`] allows running it and it is installed.
pub fn read_throttled(paths: &SensorPaths) -> Option<ThrottleFlags> {
    read_throttled_sysfs(paths)
        .or_else(|| read_throttled_vcgencmd(paths))
        .map(ThrottleFlags::from_raw)
}

fn read_throttled_sysfs(paths: &SensorPaths) -> Option<u32> {
    let from_file = |file: &Path| parse_sysfs_throttled(&read_text(file)?);
    if let Some(raw) = from_file(&paths.root.join(GET_THROTTLED)) {
        return Some(raw);
    }
    // The driver directory holds `bind`, `unbind`, `uevent`, `module` and one link per
    // bound device (normally exactly one); only the device has a `get_throttled`. Sixteen
    // entries is several times what a real one holds, and bounds the work if it is odd.
    fs::read_dir(paths.root.join(FIRMWARE_DRIVER_DIR))
        .ok()?
        .take(16)
        .filter_map(Result::ok)
        .find_map(|entry| from_file(&entry.path().join("get_throttled")))
}

/// Parse the sysfs `get_throttled` attribute. The kernel prints bare hex (`"50005\n"`);
/// a `0x` prefix is accepted too. Bare digits are hex, never decimal: `50005` is 0x50005.
pub fn parse_sysfs_throttled(text: &str) -> Option<u32> {
    parse_hex_u32(text.trim())
}

/// Parse `vcgencmd get_throttled` output, e.g. `"throttled=0x50005\n"`.
/// Anything else, such as `VCHI initialization failed`, is `None`.
pub fn parse_vcgencmd_throttled(output: &str) -> Option<u32> {
    parse_hex_u32(output.trim().strip_prefix("throttled=")?)
}

/// Hex digits with an optional `0x`/`0X`, nothing else (no sign, no spaces), fitting in 32 bits.
fn parse_hex_u32(text: &str) -> Option<u32> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

fn read_throttled_vcgencmd(paths: &SensorPaths) -> Option<u32> {
    let Vcgencmd::Search(dirs) = &paths.vcgencmd else {
        return None;
    };
    let program = dirs
        .iter()
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join("vcgencmd"))
        .find(|p| is_executable(p))?;
    let output = run_bounded(&program, &["get_throttled"], paths.vcgencmd_timeout)?;
    parse_vcgencmd_throttled(&output)
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

/// Run `program args`, and return its stdout if it exits successfully within `timeout`
/// with at most [`MAX_READ_BYTES`] of UTF-8 output. Otherwise kill it and return `None`.
///
/// Output is read only after the program exits. That is safe here because a pipe buffers
/// far more than [`MAX_READ_BYTES`]: a program that prints more blocks, hits the timeout
/// and is killed. (A program that exits but leaves a child holding stdout open would
/// still block the read; `vcgencmd` does not do that.)
fn run_bounded(program: &Path, args: &[&str], timeout: Duration) -> Option<String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(VCGENCMD_POLL),
            // Timed out, or waiting failed: don't leave the process running or unreaped.
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    };
    if !status.success() {
        return None;
    }
    let bytes = read_bounded(child.stdout.take()?)?;
    String::from_utf8(bytes).ok()
}

/// The board's model from the device tree, or `None` (no device tree, or garbage in it).
pub fn read_model(paths: &SensorPaths) -> Option<String> {
    MODEL_FILES
        .iter()
        .find_map(|file| parse_model(&read_file_bounded(&paths.root.join(file))?))
}

/// Parse a device-tree `model` property: text up to the first NUL, with surrounding
/// whitespace trimmed. Empty text, invalid UTF-8 or control characters give `None`:
/// this string ends up on a dashboard, so we show nothing rather than garbage.
pub fn parse_model(bytes: &[u8]) -> Option<String> {
    let text = bytes.split(|&b| b == 0).next().unwrap_or_default();
    let text = std::str::from_utf8(text).ok()?.trim();
    if text.is_empty() || text.chars().any(char::is_control) {
        return None;
    }
    Some(text.to_owned())
}

/// A small text file, or `None` if missing, unreadable, too big or not UTF-8.
fn read_text(path: &Path) -> Option<String> {
    String::from_utf8(read_file_bounded(path)?).ok()
}

/// At most [`MAX_READ_BYTES`] of a regular file; `None` if it is missing, unreadable, bigger
/// than that, or not a regular file (a FIFO in a fake tree would block `open` forever).
fn read_file_bounded(path: &Path) -> Option<Vec<u8>> {
    if !fs::metadata(path).ok()?.is_file() {
        return None;
    }
    read_bounded(File::open(path).ok()?)
}

/// At most [`MAX_READ_BYTES`] from `source`; `None` if there is more, or reading fails.
/// sysfs files report a size of 4096 whatever their content, so we cannot check the size
/// first: we read one byte past the limit and see whether it arrived.
fn read_bounded(source: impl Read) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    source
        .take(MAX_READ_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    (bytes.len() <= MAX_READ_BYTES).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millidegrees_parse_as_celsius() {
        assert_eq!(parse_millidegrees("48312\n"), Some(48.312));
        assert_eq!(parse_millidegrees("48300"), Some(48.3));
        assert_eq!(parse_millidegrees("  0 "), Some(0.0));
        assert_eq!(parse_millidegrees("-5500\n"), Some(-5.5));
        assert_eq!(parse_millidegrees("200000"), Some(200.0));
        assert_eq!(parse_millidegrees("-100000"), Some(-100.0));
    }

    #[test]
    fn garbage_temperatures_are_unknown() {
        for text in [
            "",
            "\n",
            "-",
            "warm",
            "48.3",
            "+48300",
            "48 300",
            "0x1f",
            "--5",
            "200001",
            "-100001",
            "99999999999",
            "99999999999999999999999",
            "-273150",
        ] {
            assert_eq!(parse_millidegrees(text), None, "{text:?}");
        }
    }

    #[test]
    fn zone_names() {
        assert_eq!(zone_index("thermal_zone0"), Some(0));
        assert_eq!(zone_index("thermal_zone12"), Some(12));
        for name in [
            "thermal_zone",
            "thermal_zone-1",
            "thermal_zone1a",
            "cooling_device0",
            "Thermal_zone0",
        ] {
            assert_eq!(zone_index(name), None, "{name:?}");
        }
        assert_eq!(zone_index("thermal_zone99999999999"), None, "overflows u32");
    }

    #[test]
    fn sysfs_throttled_is_hex() {
        // What the Raspberry Pi kernel prints: "%x\n".
        assert_eq!(parse_sysfs_throttled("50005\n"), Some(0x50005));
        assert_eq!(parse_sysfs_throttled("0\n"), Some(0));
        assert_eq!(parse_sysfs_throttled("e0008"), Some(0xe0008));
        assert_eq!(parse_sysfs_throttled("0x50005"), Some(0x50005));
        assert_eq!(parse_sysfs_throttled("0X8000F\n"), Some(0x8000f));
        assert_eq!(parse_sysfs_throttled("ffffffff"), Some(u32::MAX));
    }

    #[test]
    fn garbage_sysfs_throttled_is_unknown() {
        for text in [
            "",
            "\n",
            "0x",
            "zz",
            "5000g",
            "+5",
            "-5",
            "0x-5",
            "50 005",
            "100000000",
            "throttled=0x5",
        ] {
            assert_eq!(parse_sysfs_throttled(text), None, "{text:?}");
        }
    }

    #[test]
    fn vcgencmd_output_parses() {
        assert_eq!(parse_vcgencmd_throttled("throttled=0x50005\n"), Some(0x50005));
        assert_eq!(parse_vcgencmd_throttled("throttled=0x0"), Some(0));
        assert_eq!(parse_vcgencmd_throttled("  throttled=0x80008  \n"), Some(0x80008));
        assert_eq!(parse_vcgencmd_throttled("throttled=50005"), Some(0x50005));
    }

    #[test]
    fn vcgencmd_errors_are_unknown() {
        for output in [
            "",
            "VCHI initialization failed\n",
            "throttled=",
            "throttled=0x",
            "throttled=0xzz",
            "throttled=0x100000000",
            "temp=48.3'C",
            "0x50005",
            "throttled = 0x50005",
            "Throttled=0x50005",
        ] {
            assert_eq!(parse_vcgencmd_throttled(output), None, "{output:?}");
        }
    }

    #[test]
    fn flags_decode_every_documented_bit() {
        let none = ThrottleFlags::from_raw(0);
        assert!(!none.any_now() && !none.any_occurred());

        /// Reads the field that one bit should set.
        type Field = fn(&ThrottleFlags) -> bool;
        let fields: [(u32, Field); 8] = [
            (0, |f| f.under_voltage_now),
            (1, |f| f.freq_capped_now),
            (2, |f| f.throttled_now),
            (3, |f| f.soft_temp_limit_now),
            (16, |f| f.under_voltage_occurred),
            (17, |f| f.freq_capped_occurred),
            (18, |f| f.throttled_occurred),
            (19, |f| f.soft_temp_limit_occurred),
        ];
        for (bit, _) in fields {
            let flags = ThrottleFlags::from_raw(1 << bit);
            assert_eq!(flags.raw, 1 << bit);
            // This bit sets its own field and no other.
            for (other, field) in fields {
                assert_eq!(field(&flags), other == bit, "bit {bit}, field for bit {other}");
            }
            assert_eq!(flags.any_now(), bit < 16, "bit {bit}");
            assert!(flags.any_occurred(), "bit {bit}");
        }
    }

    #[test]
    fn undocumented_bits_are_kept_in_raw_only() {
        let flags = ThrottleFlags::from_raw(0xfff0_fff0);
        assert_eq!(flags.raw, 0xfff0_fff0);
        assert!(!flags.any_occurred());
    }

    #[test]
    fn model_strings() {
        assert_eq!(
            parse_model(b"Raspberry Pi 4 Model B Rev 1.4\0").as_deref(),
            Some("Raspberry Pi 4 Model B Rev 1.4")
        );
        assert_eq!(
            parse_model(b"Raspberry Pi 5 Model B Rev 1.0").as_deref(),
            Some("Raspberry Pi 5 Model B Rev 1.0")
        );
        assert_eq!(
            parse_model(b"  Pine64 RockPro64 \n\0\0").as_deref(),
            Some("Pine64 RockPro64")
        );
        assert_eq!(
            parse_model(b"first\0second\0").as_deref(),
            Some("first"),
            "a string list: the first"
        );
    }

    #[test]
    fn garbage_models_are_unknown() {
        let cases: [&[u8]; 7] = [
            b"",
            b"\0",
            b"\0Raspberry Pi",
            b"  \n\0",
            b"\xff\xfe model",
            b"Pi\x1b[31m",
            b"Pi\tZero",
        ];
        for bytes in cases {
            assert_eq!(parse_model(bytes), None, "{bytes:?}");
        }
    }

    #[test]
    fn reads_are_bounded() {
        assert_eq!(
            read_bounded(&[b'1'; MAX_READ_BYTES][..]).map(|b| b.len()),
            Some(MAX_READ_BYTES)
        );
        assert_eq!(read_bounded(&[b'1'; MAX_READ_BYTES + 1][..]), None);
        assert_eq!(
            read_bounded(std::io::repeat(b'1')),
            None,
            "an endless source stops at the limit"
        );
    }

    #[test]
    fn paths_constructors() {
        let system = SensorPaths::system();
        assert_eq!(system.root(), Path::new("/"));
        assert!(matches!(system.vcgencmd(), Vcgencmd::Search(_)));
        assert_eq!(SensorPaths::default(), system);

        let fake = SensorPaths::under("/tmp/fake");
        assert_eq!(fake.root(), Path::new("/tmp/fake"));
        assert_eq!(
            fake.vcgencmd(),
            &Vcgencmd::Disabled,
            "a fake tree never runs the real vcgencmd"
        );
        let searched = fake.with_vcgencmd(Vcgencmd::Search(vec!["/opt/vc/bin".into()]));
        assert_eq!(searched.vcgencmd(), &Vcgencmd::Search(vec!["/opt/vc/bin".into()]));
    }
}
