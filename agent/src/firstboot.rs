//! `wtd firstboot`: applies the image's `wtd.toml`, on the FAT boot partition, to the Pi.
//!
//! The file is what a person edits from any laptop (or `scripts/flash.sh` writes):
//!
//! ```toml
//! hostname = "pi-01"
//! proxy = "wtdt1..."                 # the join ticket printed by `wtd proxy`
//! owners = ["wtd1..."]
//! enroll = "wtdenroll1..."           # optional: `wtd adopt --pending` adopts this card
//! tags = ["lab"]
//! missions = ["demo"]                # from /usr/share/wtd/missions/
//! ssh_keys = ["ssh-ed25519 AAAA..."]  # optional: SSH stays off without one
//! [wifi]                             # optional
//! ssid = "classroom"
//! psk = "passphrase"
//! country = "GB"
//! ```
//!
//! The unit `wtd-firstboot.service` runs it at every boot, before the agent. It checks the
//! whole file first (the agent part with the agent's own [`AgentConfig::from_toml`], so
//! the two can never disagree), and only then writes `/etc/hostname`, `/etc/wtd/agent.toml`
//! (mode 0600: it holds the enrollment token), the enabled missions, the Wi-Fi and SSH
//! settings, each atomically and only when changed. A file with a mistake changes nothing:
//! the exact error goes to the journal and to every console (HDMI and serial), and the file
//! is read again every `--retry` until it is right, so a fixed file is picked up without
//! reflashing. The agent's key is not touched here: the agent makes it on the device at its
//! first start, and it never leaves the Pi.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use wtd_keys::MissionName;

use crate::config::AgentConfig;
use crate::defaults;

/// Where the image keeps `wtd.toml`: the FAT boot partition.
pub const BOOT_CONFIG: &str = "/boot/firmware/wtd.toml";
/// The missions an image ships, enabled by name in `wtd.toml`.
pub const SHIPPED_MISSIONS: &str = "/usr/share/wtd/missions";
/// The list of mission files in the missions directory that firstboot put there (and so
/// may remove when they are no longer enabled). Not a `.toml`: the agent ignores it.
const MANAGED_LIST: &str = ".wtd-firstboot";
/// How often a mistaken file is shown again on the consoles while nothing changes, so a
/// screen plugged in later shows it too.
const REPEAT_ERROR: Duration = Duration::from_secs(60);

/// Apply `wtd.toml` from the boot partition: hostname, Wi-Fi, proxy, owners, enrollment
/// token, tags, missions and SSH keys. Waits, retrying, until the file is valid.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The settings file.
    #[arg(long, value_name = "PATH", default_value = BOOT_CONFIG)]
    pub file: PathBuf,
    /// Write below this directory instead of `/`, and start nothing (no hostname change, no
    /// services): to prepare a root filesystem offline, and for tests.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Where to show a mistake besides standard error. Default: every active console
    /// (`/sys/class/tty/console/active`: serial and HDMI).
    #[arg(long = "console", value_name = "PATH")]
    pub consoles: Vec<PathBuf>,
    /// How long to wait before reading a mistaken (or missing) file again.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub retry: Duration,
    /// Check the file once and exit (non-zero if it is wrong); change nothing.
    #[arg(long)]
    pub check: bool,
    /// Only grow the root partition and filesystem to fill the card, then exit (the
    /// image's `wtd-growroot.service`; see `growroot`). Does not read the file.
    #[arg(long, conflicts_with = "check")]
    pub grow_root: bool,
}

/// `wtd.toml` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BootFile {
    hostname: Option<String>,
    proxy: Option<String>,
    owners: Option<Vec<String>>,
    enroll: Option<String>,
    tags: Option<Vec<String>>,
    missions: Option<Vec<String>>,
    ssh_keys: Option<Vec<String>>,
    wifi: Option<WifiFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct WifiFile {
    ssid: String,
    psk: String,
    country: String,
}

/// The part of `agent.toml` firstboot writes.
#[derive(Debug, Serialize)]
struct AgentFile<'a> {
    name: &'a str,
    proxy: &'a str,
    owners: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    enroll: Option<&'a str>,
    tags: &'a [String],
}

/// A checked `wtd.toml`: everything in it is known to be applicable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootConfig {
    /// The machine's hostname, also the agent's name.
    pub hostname: String,
    /// The `agent.toml` to write (valid: the agent parsed it).
    pub agent_toml: String,
    /// Mission names to enable, each shipped in the image.
    pub missions: Vec<String>,
    /// `authorized_keys` lines for root; SSH starts only if there is one.
    pub ssh_keys: Vec<String>,
    /// The `wpa_supplicant-wlan0.conf` to write, if Wi-Fi is configured.
    pub wpa_conf: Option<String>,
    /// The Wi-Fi network's name, for the summary.
    pub ssid: Option<String>,
}

/// The default hostname of an image whose `wtd.toml` names none.
pub const DEFAULT_HOSTNAME: &str = "wtd";

impl BootConfig {
    /// Parses and checks `text` (the content of `wtd.toml`); `shipped` is the directory of
    /// the missions the image ships. The error says exactly what to change.
    pub fn parse(text: &str, shipped: &Path) -> anyhow::Result<BootConfig> {
        let file: BootFile =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))?;
        let hostname = file.hostname.unwrap_or_else(|| DEFAULT_HOSTNAME.to_string());
        check_hostname(&hostname)?;
        let proxy = file.proxy.ok_or_else(|| {
            anyhow::anyhow!("`proxy` is missing: set it to the join ticket printed by `wtd proxy` (a line starting with `wtdt1`), the proxy's id to find it on the LAN, or \"any-on-lan\"")
        })?;
        let owners = file.owners.unwrap_or_default();
        let tags = file.tags.unwrap_or_default();
        let agent_toml = toml::to_string(&AgentFile {
            name: &hostname,
            proxy: &proxy,
            owners: &owners,
            enroll: file.enroll.as_deref(),
            tags: &tags,
        })
        .context("could not write agent.toml")?;
        // The agent's own parser: whatever it would refuse is refused here, in its words.
        AgentConfig::from_toml(&agent_toml).map_err(|e| anyhow::anyhow!("{e}"))?;

        let mut missions = Vec::new();
        for name in file.missions.unwrap_or_default() {
            MissionName::new(&name).map_err(|e| anyhow::anyhow!("mission `{name}`: {e}"))?;
            if !shipped.join(format!("{name}.toml")).is_file() {
                anyhow::bail!(
                    "mission `{name}` is not in this image; the image has: {}",
                    shipped_missions(shipped).join(", ")
                );
            }
            if missions.contains(&name) {
                anyhow::bail!("mission `{name}` is listed twice");
            }
            missions.push(name);
        }

        let ssh_keys = file.ssh_keys.unwrap_or_default();
        for (i, key) in ssh_keys.iter().enumerate() {
            check_ssh_key(key).with_context(|| format!("ssh_keys[{i}]"))?;
        }

        let (wpa_conf, ssid) = match file.wifi {
            None => (None, None),
            Some(wifi) => (Some(wpa_conf(&wifi)?), Some(wifi.ssid)),
        };
        Ok(BootConfig {
            hostname,
            agent_toml,
            missions,
            ssh_keys,
            wpa_conf,
            ssid,
        })
    }

    /// One line saying what this file sets up, for the journal and the console.
    pub fn summary(&self) -> String {
        let mut s = format!("hostname {}", self.hostname);
        let _ = write!(
            s,
            ", missions [{}], Wi-Fi {}, SSH {}",
            self.missions.join(", "),
            self.ssid
                .as_deref()
                .map_or("off".to_string(), |ssid| format!("{ssid:?}")),
            if self.ssh_keys.is_empty() {
                "off"
            } else {
                "on (keys only)"
            }
        );
        s
    }
}

fn check_hostname(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        anyhow::bail!(
            "`hostname = {name:?}` is not a hostname: use 1 to 63 letters, digits and `-` (not first or last), e.g. \"pi-01\""
        );
    }
    Ok(())
}

fn check_ssh_key(key: &str) -> anyhow::Result<()> {
    const TYPES: [&str; 6] = [
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
    ];
    let mut words = key.split_ascii_whitespace();
    let kind = words.next().unwrap_or("");
    if key.chars().any(char::is_control) || !TYPES.contains(&kind) || words.next().is_none() {
        anyhow::bail!(
            "is not an SSH public key: paste one line of your ~/.ssh/id_ed25519.pub (it starts with `ssh-ed25519 `)"
        );
    }
    Ok(())
}

fn wpa_conf(wifi: &WifiFile) -> anyhow::Result<String> {
    if wifi.ssid.is_empty() || wifi.ssid.len() > 32 {
        anyhow::bail!("wifi.ssid must be 1 to 32 bytes (got {})", wifi.ssid.len());
    }
    let psk = &wifi.psk;
    let psk_line = if psk.len() == 64 && psk.bytes().all(|b| b.is_ascii_hexdigit()) {
        format!("psk={psk}")
    } else if (8..=63).contains(&psk.len()) && psk.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        format!("psk=\"{psk}\"")
    } else {
        anyhow::bail!(
            "wifi.psk must be the network's passphrase, 8 to 63 printable ASCII characters (got {} characters)",
            psk.chars().count()
        );
    };
    let country = wifi.country.to_ascii_uppercase();
    if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
        anyhow::bail!(
            "wifi.country {:?} is not a two-letter country code (e.g. \"GB\", \"DE\", \"US\"): it sets which Wi-Fi channels are legal",
            wifi.country
        );
    }
    // The SSID in hex: any byte is safe there, quotes and newlines included.
    let ssid_hex: String = wifi.ssid.bytes().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "# Written by `wtd firstboot` from wtd.toml on the boot partition: edit that file instead.\n\
         ctrl_interface=DIR=/run/wpa_supplicant GROUP=root\n\
         update_config=0\n\
         country={country}\n\
         network={{\n\tssid={ssid_hex}\n\t{psk_line}\n\tkey_mgmt=WPA-PSK WPA-PSK-SHA256 SAE\n\tieee80211w=1\n}}\n"
    ))
}

fn shipped_missions(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".toml").map(str::to_string))
        .collect();
    names.sort();
    if names.is_empty() {
        names.push("(none)".into());
    }
    names
}

/// Reads `wtd.toml` (bounded) and checks it.
pub fn read(path: &Path, shipped: &Path) -> anyhow::Result<BootConfig> {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
            "there is no {}: put one on the boot partition (copy wtd-example.toml there to wtd.toml and fill it in, or flash the card with scripts/flash.sh)",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("could not read {}", path.display())),
    };
    let mut bytes = Vec::new();
    file.take(defaults::MAX_CONFIG_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("could not read {}", path.display()))?;
    if bytes.len() as u64 > defaults::MAX_CONFIG_FILE_BYTES {
        anyhow::bail!(
            "{} is over {} bytes: that is not a wtd.toml",
            path.display(),
            defaults::MAX_CONFIG_FILE_BYTES
        );
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{} is not UTF-8 text: save it as plain text", path.display()))?;
    BootConfig::parse(&text, shipped).with_context(|| format!("{} is wrong", path.display()))
}

/// Replaces `path` with `text` (atomically, with `mode`) unless it already holds it; notes
/// `what` in `changed` if it wrote.
fn put(changed: &mut Vec<String>, path: PathBuf, text: &str, mode: u32, what: &str) -> anyhow::Result<()> {
    if fs::read(&path).ok().as_deref() != Some(text.as_bytes()) {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))?;
        }
        wtd_store::atomic::write_atomic(&path, text.as_bytes(), mode)?;
        changed.push(what.to_string());
    }
    Ok(())
}

/// Writes everything `config` sets below `root`; returns what changed (empty: nothing).
pub fn apply(config: &BootConfig, root: &Path) -> anyhow::Result<Vec<String>> {
    let mut changed = Vec::new();
    let at = |p: &str| root.join(p.trim_start_matches('/'));
    put(
        &mut changed,
        at("/etc/hostname"),
        &format!("{}\n", config.hostname),
        0o644,
        "hostname",
    )?;
    put(
        &mut changed,
        at("/etc/hosts"),
        &format!(
            "127.0.0.1\tlocalhost\n127.0.1.1\t{}\n::1\t\tlocalhost ip6-localhost ip6-loopback\n",
            config.hostname
        ),
        0o644,
        "hosts",
    )?;
    let agent = format!(
        "# Written by `wtd firstboot` from wtd.toml on the boot partition: edit that file instead.\n{}",
        config.agent_toml
    );
    put(
        &mut changed,
        at(defaults::CONFIG_PATH),
        &agent,
        0o600,
        "agent.toml",
    )?;

    // Missions: the enabled ones copied from the image; the ones firstboot added before and
    // that are no longer enabled removed. Files put there by hand are left alone.
    let missions_dir = at(defaults::MISSIONS_DIR);
    fs::create_dir_all(&missions_dir)
        .with_context(|| format!("could not create {}", missions_dir.display()))?;
    let list_path = missions_dir.join(MANAGED_LIST);
    let before: BTreeSet<String> = fs::read_to_string(&list_path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    for name in &config.missions {
        let text = fs::read_to_string(at(SHIPPED_MISSIONS).join(format!("{name}.toml")))
            .with_context(|| format!("could not read the image's mission {name}"))?;
        put(
            &mut changed,
            missions_dir.join(format!("{name}.toml")),
            &text,
            0o644,
            &format!("mission {name}"),
        )?;
    }
    for old in before.iter().filter(|n| !config.missions.contains(n)) {
        if MissionName::new(old).is_ok() && fs::remove_file(missions_dir.join(format!("{old}.toml"))).is_ok()
        {
            changed.push(format!("mission {old} removed"));
        }
    }
    let list: String = config.missions.iter().map(|n| format!("{n}\n")).collect();
    put(&mut changed, list_path, &list, 0o644, "missions list")?;

    // Wi-Fi and SSH: present in the file, or removed.
    let wpa = at("/etc/wpa_supplicant/wpa_supplicant-wlan0.conf");
    match &config.wpa_conf {
        Some(conf) => put(&mut changed, wpa, conf, 0o600, "Wi-Fi")?,
        None => {
            if fs::remove_file(&wpa).is_ok() {
                changed.push("Wi-Fi removed".into());
            }
        }
    }
    let keys = at("/root/.ssh/authorized_keys");
    if config.ssh_keys.is_empty() {
        if fs::remove_file(&keys).is_ok() {
            changed.push("SSH keys removed".into());
        }
    } else {
        let dir = at("/root/.ssh");
        fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
        fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .with_context(|| format!("could not protect {}", dir.display()))?;
        let text: String = config
            .ssh_keys
            .iter()
            .map(|k| format!("{}\n", k.trim()))
            .collect();
        put(&mut changed, keys, &text, 0o600, "SSH keys")?;
    }
    Ok(changed)
}

/// The live system's side: hostname now, Wi-Fi and SSH started (only when `root` is `/`).
fn start_services(config: &BootConfig) {
    if let Err(e) = fs::write("/proc/sys/kernel/hostname", &config.hostname) {
        log::warn!("could not set the hostname now (it applies at the next boot): {e}");
    }
    let mut units = Vec::new();
    if config.wpa_conf.is_some() {
        units.push("wpa_supplicant@wlan0.service");
    }
    if !config.ssh_keys.is_empty() {
        units.push("ssh.service");
    }
    for unit in units {
        let status = std::process::Command::new("systemctl")
            .args(["--no-block", "restart", unit])
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            log::warn!("could not start {unit}: {status:?}");
        }
    }
}

/// The consoles a message should reach: those given, else every active console.
fn consoles(given: &[PathBuf]) -> Vec<PathBuf> {
    if !given.is_empty() {
        return given.to_vec();
    }
    let active = fs::read_to_string("/sys/class/tty/console/active").unwrap_or_default();
    let mut found: Vec<PathBuf> = active
        .split_ascii_whitespace()
        .map(|name| Path::new("/dev").join(name))
        .collect();
    if found.is_empty() {
        found.push(PathBuf::from("/dev/console"));
    }
    found
}

/// Shows `text` on standard error (the journal, under the unit) and every console.
fn tell(consoles: &[PathBuf], text: &str) {
    eprintln!("{text}");
    for console in consoles {
        // Append: a console is a device, a test's console a file.
        if let Ok(mut f) = fs::OpenOptions::new().append(true).create(false).open(console) {
            let _ = f.write_all(format!("\r\n{}\r\n", text.replace('\n', "\r\n")).as_bytes());
        }
    }
}

/// Runs `wtd firstboot`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let live = args.root == Path::new("/");
    let shipped = args.root.join(SHIPPED_MISSIONS.trim_start_matches('/'));
    if args.check {
        let config = read(&args.file, &shipped)?;
        println!("{}: ok: {}", args.file.display(), config.summary());
        return Ok(());
    }
    let consoles = consoles(&args.consoles);
    if args.grow_root {
        // Never fatal: a card that cannot grow still works, with the image's own room.
        match crate::growroot::grow_root() {
            Ok(Some(done)) => tell(&consoles, &format!("wtd: {done}")),
            Ok(None) => eprintln!("wtd: the root filesystem already fills the card"),
            Err(e) => tell(
                &consoles,
                &format!("wtd: the root filesystem was not grown to fill the card ({e:#}); the Pi works, with the image's own free space"),
            ),
        }
        return Ok(());
    }
    let mut last: Option<(String, Instant)> = None;
    let config = loop {
        match read(&args.file, &shipped) {
            Ok(config) => break config,
            Err(e) => {
                let text = format!(
                    "wtd: {e:#}\nwtd: the agent waits until this is fixed; reading the file again every {}.",
                    humantime::format_duration(args.retry)
                );
                let repeat = match &last {
                    Some((prev, at)) => *prev != text || at.elapsed() >= REPEAT_ERROR,
                    None => true,
                };
                if repeat {
                    tell(&consoles, &text);
                    last = Some((text, Instant::now()));
                }
                std::thread::sleep(args.retry);
            }
        }
    };
    let changed = apply(&config, &args.root)?;
    if live {
        start_services(&config);
    }
    let what = if changed.is_empty() {
        "unchanged".to_string()
    } else {
        format!("changed: {}", changed.join(", "))
    };
    tell(
        &consoles,
        &format!(
            "wtd: applied {}: {} ({what})",
            args.file.display(),
            config.summary()
        ),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use wtd_keys::{ProxyInfo, SecretKey, Ticket};

    fn ticket() -> String {
        Ticket {
            proxy: Some(ProxyInfo {
                id: SecretKey::from_seed(&[9; 32]).public().into(),
                addrs: vec!["10.0.2.2:7788".parse().unwrap()],
            }),
            grants: vec![],
        }
        .to_text()
    }

    fn owner() -> String {
        wtd_keys::OwnerKey::from(SecretKey::from_seed(&[1; 32]).public()).to_string()
    }

    fn shipped() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("demo.toml"), "name = \"demo\"\n").unwrap();
        fs::write(dir.path().join("files.toml"), "name = \"files\"\n").unwrap();
        dir
    }

    fn good() -> String {
        format!(
            "hostname = \"pi-01\"\nproxy = \"{}\"\nowners = [\"{}\"]\ntags = [\"lab\"]\nmissions = [\"demo\"]\n\
             [wifi]\nssid = \"class\\\"room\"\npsk = \"secret-passphrase\"\ncountry = \"gb\"\n",
            ticket(),
            owner()
        )
    }

    fn err(text: &str) -> String {
        format!("{:#}", BootConfig::parse(text, shipped().path()).unwrap_err())
    }

    #[test]
    fn a_good_file_makes_the_agent_config_and_wifi() {
        let c = BootConfig::parse(&good(), shipped().path()).unwrap();
        assert_eq!(c.hostname, "pi-01");
        let agent = AgentConfig::from_toml(&c.agent_toml).unwrap();
        assert_eq!(agent.name, "pi-01");
        assert_eq!(agent.tags, ["lab"]);
        assert_eq!(c.missions, ["demo"]);
        let wpa = c.wpa_conf.unwrap();
        // The SSID (with its quote) in hex, the country upper-cased.
        assert!(wpa.contains("ssid=636c61737322726f6f6d\n"), "{wpa}");
        assert!(wpa.contains("country=GB\n"));
        assert!(wpa.contains("psk=\"secret-passphrase\""));
    }

    #[test]
    fn every_mistake_is_named() {
        let base = good();
        let cases: Vec<(String, &str)> = vec![
            (
                "hostname = \"pi 01\"\n".to_string() + &base.replace("hostname = \"pi-01\"\n", ""),
                "is not a hostname",
            ),
            (base.replace("proxy = ", "proxxy = "), "unknown field `proxxy`"),
            (
                base.replace(&format!("proxy = \"{}\"\n", ticket()), ""),
                "`proxy` is missing",
            ),
            (
                base.replace(&ticket(), "wtdt1garbage"),
                "`proxy` is not a usable ticket",
            ),
            (
                base.replace(&format!("owners = [\"{}\"]\n", owner()), ""),
                "`owners` is missing or empty",
            ),
            (
                base.replace("owners = [", "enroll = \"wtdenroll1xyz\"\nowners = ["),
                "`enroll`",
            ),
            (base.replace("[\"lab\"]", "[\"Lab!\"]"), "tag `Lab!`"),
            (
                base.replace("[\"demo\"]", "[\"nosuch\"]"),
                "mission `nosuch` is not in this image; the image has: demo, files",
            ),
            (
                base.replace("[\"demo\"]", "[\"demo\", \"demo\"]"),
                "mission `demo` is listed twice",
            ),
            (base.replace("secret-passphrase", "short"), "wifi.psk must be"),
            (base.replace("\"gb\"", "\"GBR\""), "not a two-letter country code"),
            (
                base.replace("ssid = \"class\\\"room\"", "ssid = \"\""),
                "wifi.ssid must be 1 to 32 bytes",
            ),
            (base.replace("country = \"gb\"\n", ""), "missing field `country`"),
            (
                base.clone() + "\nssh_keys = [\"hello\"]\n",
                "unknown field `ssh_keys`",
            ),
            (
                base.replace("tags =", "ssh_keys = [\"hello\"]\ntags ="),
                "ssh_keys[0]: is not an SSH public key",
            ),
            ("hostname = 3\n".to_string(), "invalid type"),
        ];
        for (text, want) in cases {
            let got = err(&text);
            assert!(got.contains(want), "want {want:?} in {got:?}\nfor:\n{text}");
        }
    }

    #[test]
    fn apply_writes_each_file_and_only_when_changed() {
        let root = tempfile::tempdir().unwrap();
        let c = BootConfig::parse(&good(), shipped().path()).unwrap();
        let shipped_dir = root.path().join("usr/share/wtd/missions");
        fs::create_dir_all(&shipped_dir).unwrap();
        fs::write(shipped_dir.join("demo.toml"), "name = \"demo\"\n").unwrap();
        fs::write(shipped_dir.join("files.toml"), "name = \"files\"\n").unwrap();
        let changed = apply(&c, root.path()).unwrap();
        assert!(changed.contains(&"agent.toml".to_string()), "{changed:?}");
        let at = |p: &str| root.path().join(p);
        assert_eq!(fs::read_to_string(at("etc/hostname")).unwrap(), "pi-01\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(at("etc/wtd/agent.toml"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let wpa_mode = fs::metadata(at("etc/wpa_supplicant/wpa_supplicant-wlan0.conf"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(wpa_mode & 0o777, 0o600);
        assert!(at("etc/wtd/missions/demo.toml").is_file());
        assert!(!at("root/.ssh/authorized_keys").exists());
        // The same file again changes nothing.
        assert_eq!(apply(&c, root.path()).unwrap(), Vec::<String>::new());
        // A file placed by hand survives; a mission no longer enabled goes.
        fs::write(at("etc/wtd/missions/mine.toml"), "x").unwrap();
        let mut c2 = c.clone();
        c2.missions = vec!["files".into()];
        c2.wpa_conf = None;
        c2.ssh_keys = vec!["ssh-ed25519 AAAAC3Nza me@laptop".into()];
        let changed = apply(&c2, root.path()).unwrap();
        assert!(
            changed.contains(&"mission demo removed".to_string()),
            "{changed:?}"
        );
        assert!(changed.contains(&"Wi-Fi removed".to_string()), "{changed:?}");
        assert!(!at("etc/wtd/missions/demo.toml").exists());
        assert!(at("etc/wtd/missions/files.toml").is_file());
        assert!(at("etc/wtd/missions/mine.toml").is_file());
        assert!(!at("etc/wpa_supplicant/wpa_supplicant-wlan0.conf").exists());
        assert_eq!(
            fs::read_to_string(at("root/.ssh/authorized_keys")).unwrap(),
            "ssh-ed25519 AAAAC3Nza me@laptop\n"
        );
    }

    #[test]
    fn a_missing_or_huge_file_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let missing = format!(
            "{:#}",
            read(&dir.path().join("wtd.toml"), shipped().path()).unwrap_err()
        );
        assert!(
            missing.contains("copy wtd-example.toml there to wtd.toml"),
            "{missing}"
        );
        let huge = dir.path().join("big.toml");
        fs::write(&huge, vec![b'#'; 70 * 1024]).unwrap();
        let got = format!("{:#}", read(&huge, shipped().path()).unwrap_err());
        assert!(got.contains("that is not a wtd.toml"), "{got}");
    }
}
