//! The agent's configuration: `/etc/wtd/agent.toml`.
//!
//! A minimal file names the proxy to join and the owner to obey; everything else has a
//! default (see `agent/agent.example.toml` for every key, commented):
//!
//! ```toml
//! proxy = "wtdt1..."          # the join ticket printed by `wtd proxy`
//! owners = ["wtd1..."]        # printed by `wtd id` on the owner's laptop
//! ```
//!
//! Parsing is strict: an unknown key is an error naming the key (a typo such as `owner =`
//! would otherwise be silently ignored, and the agent would obey nobody), and every value
//! is checked here, before the agent starts, so a mistake is reported once with the fix.

use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use wtd_keys::enroll::TokenError;
use wtd_keys::names::NameError;
use wtd_keys::ticket::TicketError;
use wtd_keys::{EnrollmentToken, KeyError, MissionName, OwnerKey, ProxyId, ProxyInfo, Ticket};
use wtd_transport::lan::{LanPolicy, ANY_ON_LAN};
use wtd_wire::defaults::{MAX_OWNERS, MAX_TAGS};

use crate::defaults;
use crate::sensors::SensorPaths;

/// The longest agent name, in bytes (what the proxy accepts in an advert).
pub const MAX_NAME_LEN: usize = 64;

/// A checked agent configuration.
///
/// Build one from TOML with [`AgentConfig::from_toml`] or [`AgentConfig::load`], or in code
/// with [`AgentConfig::new`] and struct update syntax (tests do this):
///
/// ```
/// # use wtd_agent::AgentConfig;
/// # fn demo(proxy: wtd_keys::ProxyInfo, alice: wtd_keys::OwnerKey) {
/// let config = AgentConfig {
///     state_dir: "/tmp/agent-1".into(),
///     tags: vec!["lab".into()],
///     ..AgentConfig::new(proxy, vec![alice])
/// };
/// # }
/// ```
#[derive(Clone, PartialEq)]
pub struct AgentConfig {
    /// A name for people, shown in `wtd ls` (`pi-kitchen`). Defaults to the hostname.
    pub name: String,
    /// Where the identity key and the owners' logs are kept. Default `/var/lib/wtd`.
    pub state_dir: PathBuf,
    /// The proxy to connect to: from a join ticket (its pinned key and addresses), or found
    /// on the LAN (`proxy = "<proxy id>"` or `"any-on-lan"`).
    pub proxy: ProxySource,
    /// The keys whose grants and revocations this agent obeys (1 to 8).
    pub owners: Vec<OwnerKey>,
    /// Where mission files (`*.toml`) are read from. Default `/etc/wtd/missions`.
    pub missions_dir: PathBuf,
    /// Labels callers can select agents by (`wtd call --tag lab`), canonical like names.
    pub tags: Vec<String>,
    /// How often the load is reported to the proxy. Default 1 s, at most 2 s.
    pub heartbeat_interval: Duration,
    /// TEST ONLY: report this number as both the load average and the CPU percentage,
    /// whatever the machine's real load, so a test can decide which agent looks least
    /// loaded. Never set it on a real agent: callers would be routed on a made-up load.
    pub test_pinned_load: Option<f32>,
    /// TEST ONLY: read the Pi's sensor files (temperature, `get_throttled`, model) under
    /// this directory instead of `/`, and never run `vcgencmd`, so a test on a laptop can
    /// play a hot or throttled Pi. Never set it on a real agent: callers would avoid or
    /// prefer it on made-up readings.
    pub test_sensor_root: Option<PathBuf>,
    /// A one-time enrollment token from the owner (`wtd enroll new`), so she can adopt this
    /// agent with `wtd adopt --pending` without knowing its key. A secret: the agent shows
    /// only a proof made with it, and never logs it.
    pub enroll: Option<EnrollmentToken>,
    /// Missions whose handlers may publish events to MQTT (a stderr line starting
    /// `wtd-event:`). Default none: a mission publishes only if its owner lists it here.
    pub mission_events: Vec<String>,
    /// Publish this agent to an MQTT broker itself (`[mqtt]`), for a broker with no bridging
    /// proxy. Default none.
    pub mqtt: Option<wtd_telemetry::MqttConfig>,
    /// Serve this agent's Prometheus metrics here (`metrics = "127.0.0.1:9465"`). Default off.
    pub metrics: Option<std::net::SocketAddr>,
    /// Look for the proxy on these network interfaces only (`lan_interfaces = ["wlan0"]`),
    /// when `proxy` is found on the LAN (unused with a ticket). Default every interface.
    pub lan_interfaces: Vec<String>,
    /// Tell the proxy's dashboard about each call this agent answers (who called which
    /// function, how long it took, allowed or denied and why; never arguments or results).
    /// Default off: calls are end-to-end encrypted, and only the owner may decide that
    /// their details show on a projector.
    pub report_calls: bool,
}

/// Where the agent's proxy comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxySource {
    /// A join ticket: the proxy's key and addresses, pinned.
    Ticket(ProxyInfo),
    /// Found on the LAN by mDNS, and joined only if the policy allows its id (which the
    /// handshake then proves, so an impostor announcing the same id is refused).
    Lan(LanPolicy),
}

impl From<ProxyInfo> for ProxySource {
    fn from(info: ProxyInfo) -> Self {
        ProxySource::Ticket(info)
    }
}

impl fmt::Display for ProxySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxySource::Ticket(info) => write!(f, "{} at {:?}", info.id, info.addrs),
            ProxySource::Lan(LanPolicy::Only(id)) => write!(f, "{id}, found on the LAN"),
            ProxySource::Lan(LanPolicy::AnyOnLan) => write!(f, "any proxy found on the LAN"),
        }
    }
}

impl fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Ids in their text form: a config dump should be pasteable into another config.
        f.debug_struct("AgentConfig")
            .field("name", &self.name)
            .field("state_dir", &self.state_dir)
            .field("proxy", &format_args!("{}", self.proxy))
            .field(
                "owners",
                &self.owners.iter().map(|o| o.to_string()).collect::<Vec<_>>(),
            )
            .field("missions_dir", &self.missions_dir)
            .field("tags", &self.tags)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("test_pinned_load", &self.test_pinned_load)
            .field("test_sensor_root", &self.test_sensor_root)
            // The token's Debug names its public id only.
            .field("enroll", &self.enroll)
            .field("mission_events", &self.mission_events)
            // MqttConfig's Debug never shows the password.
            .field("mqtt", &self.mqtt)
            .field("metrics", &self.metrics)
            .field("lan_interfaces", &self.lan_interfaces)
            .field("report_calls", &self.report_calls)
            .finish()
    }
}

/// The file as written, before checking. Every key is optional here so that a missing one
/// gets our own message rather than serde's "missing field".
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    name: Option<String>,
    state_dir: Option<PathBuf>,
    proxy: Option<String>,
    owners: Option<Vec<String>>,
    missions_dir: Option<PathBuf>,
    tags: Option<Vec<String>>,
    heartbeat_interval: Option<String>,
    test_pinned_load: Option<f32>,
    test_sensor_root: Option<PathBuf>,
    enroll: Option<String>,
    mission_events: Option<Vec<String>>,
    mqtt: Option<wtd_telemetry::config::MqttFile>,
    metrics: Option<std::net::SocketAddr>,
    lan_interfaces: Option<Vec<String>>,
    report_calls: Option<bool>,
}

/// What is wrong with a configuration's content.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not valid TOML, an unknown key, or a value of the wrong type. The message says
    /// which line and key.
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    /// No `proxy` key: the agent would not know where to connect.
    #[error(
        "`proxy` is missing: set it to the join ticket printed by `wtd proxy` (a line starting with `wtdt1`), to the proxy's id (`wtd1...`) to find it on the LAN, or to \"any-on-lan\""
    )]
    NoProxy,
    /// The `proxy` ticket does not decode.
    #[error("`proxy` is not a usable ticket: {0}")]
    BadTicket(#[source] TicketError),
    /// `proxy` looks like an id (`wtd1...`) but is not a valid one.
    #[error(
        "`proxy` is not a valid proxy id ({0}); copy the id `wtd proxy` prints again, or use its join ticket"
    )]
    BadProxyId(#[source] KeyError),
    /// `proxy` is neither a ticket, an id, nor `any-on-lan`.
    #[error(
        "`proxy` must be a join ticket (`wtdt1...`), a proxy id (`wtd1...`) or \"any-on-lan\"; got `{0}`"
    )]
    BadProxy(String),

    /// The ticket decodes but names no proxy (it is a grant ticket, for a person).
    #[error("the `proxy` ticket names no proxy (it may be a grant ticket meant for a person); use the join ticket printed by `wtd proxy`")]
    TicketWithoutProxy,
    /// The proxy has no address to connect to (only possible in a config built in code:
    /// a ticket always carries at least one).
    #[error("the proxy has no address to connect to")]
    NoProxyAddress,
    /// No owners: the agent would accept no grants at all, so nobody could use it.
    #[error("`owners` is missing or empty: list at least one owner id, e.g. owners = [\"wtd1...\"] (run `wtd id` on the owner's machine)")]
    NoOwners,
    /// More owners than the protocol carries.
    #[error("{0} owners listed; an agent obeys at most {MAX_OWNERS}")]
    TooManyOwners(usize),
    /// An owner id does not parse.
    #[error("owner `{text}` is not a wtd id: {source}")]
    BadOwner {
        text: String,
        #[source]
        source: KeyError,
    },
    /// The same owner twice: probably a copy-paste slip where another owner was meant.
    #[error("owner {0} is listed twice")]
    DuplicateOwner(String),
    /// The agent name is empty, too long, or has control characters.
    #[error("`name` must be 1 to {MAX_NAME_LEN} bytes of printable text (got {0:?})")]
    BadName(String),
    /// A tag is not canonical (lowercase letters, digits, `-`, `_`).
    #[error("tag `{tag}`: {source}")]
    BadTag {
        tag: String,
        #[source]
        source: NameError,
    },
    /// More tags than the protocol carries.
    #[error("{0} tags listed; at most {MAX_TAGS}")]
    TooManyTags(usize),
    /// The heartbeat interval is not a duration like `1s` or `500ms`.
    #[error("`heartbeat_interval = {text:?}` is not a duration (write e.g. \"1s\" or \"500ms\"): {source}")]
    BadDuration {
        text: String,
        #[source]
        source: humantime::DurationError,
    },
    /// The heartbeat interval is outside what the proxy tolerates.
    #[error("`heartbeat_interval` is {}, but must be between {} and {} (the proxy drops agents it has not heard from in about 3 s)",
        humantime::format_duration(*.0),
        humantime::format_duration(defaults::MIN_HEARTBEAT_INTERVAL),
        humantime::format_duration(defaults::MAX_HEARTBEAT_INTERVAL))]
    HeartbeatOutOfRange(Duration),
    /// The `enroll` token is damaged or is not an enrollment token. (The message never
    /// repeats the token: it is a secret.)
    #[error("`enroll`: {0}")]
    BadEnrollToken(#[source] TokenError),
    /// A `mission_events` entry is not a mission name.
    #[error("mission_events: `{mission}` is not a mission name: {source}")]
    BadEventMission {
        mission: String,
        #[source]
        source: NameError,
    },
    /// The `[mqtt]` section is wrong; the message says what to fix.
    #[error("[mqtt]: {0}")]
    Mqtt(#[from] wtd_telemetry::MqttConfigError),
    /// The test seam was given a negative or non-finite number.
    #[error("`test_pinned_load` must be a finite number >= 0 (got {0})")]
    BadPinnedLoad(f32),
}

/// The `proxy` key: a join ticket, a proxy id to find on the LAN, or `any-on-lan`.
fn parse_proxy(text: &str) -> Result<ProxySource, ConfigError> {
    let text = text.trim();
    if text == ANY_ON_LAN {
        return Ok(ProxySource::Lan(LanPolicy::AnyOnLan));
    }
    if text.starts_with(wtd_keys::ticket::PREFIX) {
        let info = Ticket::from_text(text)
            .map_err(ConfigError::BadTicket)?
            .proxy
            .ok_or(ConfigError::TicketWithoutProxy)?;
        return Ok(ProxySource::Ticket(info));
    }
    if text.starts_with(wtd_keys::identity::PUBLIC_PREFIX) {
        let id = text.parse::<ProxyId>().map_err(ConfigError::BadProxyId)?;
        return Ok(ProxySource::Lan(LanPolicy::Only(id)));
    }
    Err(ConfigError::BadProxy(text.chars().take(40).collect()))
}

/// Reading the configuration file failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadConfigError {
    /// The file is missing or unreadable. Create it (see `agent.example.toml`) or pass
    /// `--config`.
    #[error("could not read the agent config {path}: {source} (see agent.example.toml, or pass --config)")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is far bigger than any config: probably the wrong file.
    #[error("{path} is over {max} bytes: that is not an agent config")]
    TooLarge { path: PathBuf, max: u64 },
    /// The file was read but its content is wrong.
    #[error("{path}: {source}")]
    Invalid {
        path: PathBuf,
        #[source]
        source: ConfigError,
    },
}

impl AgentConfig {
    /// A configuration with every default: named after the hostname, state in
    /// `/var/lib/wtd`, missions from `/etc/wtd/missions`, a 1 s heartbeat, no tags.
    pub fn new(proxy: impl Into<ProxySource>, owners: Vec<OwnerKey>) -> Self {
        AgentConfig {
            name: default_name(),
            state_dir: PathBuf::from(defaults::STATE_DIR),
            proxy: proxy.into(),
            owners,
            missions_dir: PathBuf::from(defaults::MISSIONS_DIR),
            tags: Vec::new(),
            heartbeat_interval: defaults::HEARTBEAT_INTERVAL,
            test_pinned_load: None,
            test_sensor_root: None,
            enroll: None,
            mission_events: Vec::new(),
            mqtt: None,
            metrics: None,
            lan_interfaces: Vec::new(),
            report_calls: false,
        }
    }

    /// Parses and checks a configuration.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let file: ConfigFile = toml::from_str(text)?;
        let proxy = parse_proxy(&file.proxy.ok_or(ConfigError::NoProxy)?)?;
        let owners = file
            .owners
            .unwrap_or_default()
            .iter()
            .map(|text| {
                text.parse::<OwnerKey>().map_err(|source| ConfigError::BadOwner {
                    text: text.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut config = AgentConfig::new(proxy, owners);
        if let Some(name) = file.name {
            config.name = name;
        }
        if let Some(dir) = file.state_dir {
            config.state_dir = dir;
        }
        if let Some(dir) = file.missions_dir {
            config.missions_dir = dir;
        }
        if let Some(tags) = file.tags {
            config.tags = tags;
        }
        if let Some(text) = file.heartbeat_interval {
            config.heartbeat_interval = humantime::parse_duration(&text)
                .map_err(|source| ConfigError::BadDuration { text, source })?;
        }
        config.test_pinned_load = file.test_pinned_load;
        config.test_sensor_root = file.test_sensor_root;
        config.lan_interfaces = file.lan_interfaces.unwrap_or_default();
        if let Some(text) = file.enroll {
            config.enroll = Some(EnrollmentToken::from_text(&text).map_err(ConfigError::BadEnrollToken)?);
        }
        config.mission_events = file.mission_events.unwrap_or_default();
        config.report_calls = file.report_calls.unwrap_or(false);
        if let Some(m) = &file.mqtt {
            config.mqtt = Some(wtd_telemetry::MqttConfig::from_file(
                m,
                std::env::var("WTD_MQTT_PASSWORD").ok(),
            )?);
        }
        config.metrics = file.metrics;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and checks the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Self, LoadConfigError> {
        let read = |source| LoadConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = fs::File::open(path).map_err(read)?;
        let mut text = String::new();
        file.take(defaults::MAX_CONFIG_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(read)?;
        if text.len() as u64 > defaults::MAX_CONFIG_FILE_BYTES {
            return Err(LoadConfigError::TooLarge {
                path: path.to_path_buf(),
                max: defaults::MAX_CONFIG_FILE_BYTES,
            });
        }
        AgentConfig::from_toml(&text).map_err(|source| LoadConfigError::Invalid {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Checks every value; [`AgentConfig::from_toml`] calls it, and so does the agent on
    /// start, so a configuration built in code is held to the same rules.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.name.is_empty() || self.name.len() > MAX_NAME_LEN || self.name.chars().any(char::is_control) {
            return Err(ConfigError::BadName(self.name.clone()));
        }
        if matches!(&self.proxy, ProxySource::Ticket(info) if info.addrs.is_empty()) {
            return Err(ConfigError::NoProxyAddress);
        }
        if self.owners.is_empty() {
            return Err(ConfigError::NoOwners);
        }
        if self.owners.len() > MAX_OWNERS {
            return Err(ConfigError::TooManyOwners(self.owners.len()));
        }
        for (i, owner) in self.owners.iter().enumerate() {
            if self.owners[..i].contains(owner) {
                return Err(ConfigError::DuplicateOwner(owner.to_string()));
            }
        }
        if self.tags.len() > MAX_TAGS {
            return Err(ConfigError::TooManyTags(self.tags.len()));
        }
        for tag in &self.tags {
            MissionName::new(tag).map_err(|source| ConfigError::BadTag {
                tag: tag.clone(),
                source,
            })?;
        }
        for mission in &self.mission_events {
            MissionName::new(mission).map_err(|source| ConfigError::BadEventMission {
                mission: mission.clone(),
                source,
            })?;
        }
        if !(defaults::MIN_HEARTBEAT_INTERVAL..=defaults::MAX_HEARTBEAT_INTERVAL)
            .contains(&self.heartbeat_interval)
        {
            return Err(ConfigError::HeartbeatOutOfRange(self.heartbeat_interval));
        }
        if let Some(load) = self.test_pinned_load {
            if !load.is_finite() || load < 0.0 {
                return Err(ConfigError::BadPinnedLoad(load));
            }
        }
        Ok(())
    }

    /// Where the Pi sensors are read: the real machine, or the test seam's fake tree.
    pub fn sensor_paths(&self) -> SensorPaths {
        match &self.test_sensor_root {
            Some(root) => SensorPaths::under(root),
            None => SensorPaths::system(),
        }
    }

    /// Where the agent's secret key lives: `<state_dir>/identity.key`.
    pub fn identity_path(&self) -> PathBuf {
        self.state_dir.join("identity.key")
    }

    /// The directory of the owners' logs: `<state_dir>/logs`.
    pub fn logs_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }
}

/// The machine's hostname if it makes a valid agent name, else `wtd-agent`.
fn default_name() -> String {
    sysinfo::System::host_name()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && h.len() <= MAX_NAME_LEN && !h.chars().any(char::is_control))
        .unwrap_or_else(|| "wtd-agent".to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use wtd_keys::SecretKey;

    fn ticket() -> (ProxyInfo, String) {
        let info = ProxyInfo {
            id: SecretKey::from_seed(&[9; 32]).public().into(),
            addrs: vec!["192.168.1.10:7788".parse().unwrap()],
        };
        let text = Ticket {
            proxy: Some(info.clone()),
            grants: vec![],
        }
        .to_text();
        (info, text)
    }

    fn alice() -> OwnerKey {
        SecretKey::from_seed(&[1; 32]).public().into()
    }

    fn minimal() -> String {
        format!("proxy = \"{}\"\nowners = [\"{}\"]\n", ticket().1, alice())
    }

    #[test]
    fn the_proxy_may_be_found_on_the_lan_by_id_or_any() {
        let owners = format!("owners = [\"{}\"]\n", alice());
        let id = ticket().0.id;
        let by_id = AgentConfig::from_toml(&format!("proxy = \"{id}\"\n{owners}")).unwrap();
        assert_eq!(by_id.proxy, ProxySource::Lan(LanPolicy::Only(id)));
        let any = AgentConfig::from_toml(&format!(
            "proxy = \"any-on-lan\"\nlan_interfaces = [\"wlan0\"]\n{owners}"
        ))
        .unwrap();
        assert_eq!(any.proxy, ProxySource::Lan(LanPolicy::AnyOnLan));
        assert_eq!(any.lan_interfaces, ["wlan0"]);
        // Each wrong spelling says what a right one looks like.
        let text = id.to_string();
        let typo = format!(
            "{}{}",
            &text[..text.len() - 1],
            if text.ends_with('a') { 'b' } else { 'a' }
        );
        let err = AgentConfig::from_toml(&format!("proxy = \"{typo}\"\n{owners}")).unwrap_err();
        assert!(matches!(err, ConfigError::BadProxyId(_)), "{err}");
        let err = AgentConfig::from_toml(&format!("proxy = \"any\"\n{owners}")).unwrap_err();
        assert!(err.to_string().contains("any-on-lan"), "{err}");
        // With a ticket the LAN is never searched: the key is kept (so switching `proxy`
        // back and forth needs no other edit) and the agent says at start it is unused.
        let with_ticket = AgentConfig::from_toml(&format!(
            "proxy = \"{}\"\nlan_interfaces = [\"wlan0\"]\n{owners}",
            ticket().1
        ))
        .unwrap();
        assert!(matches!(with_ticket.proxy, ProxySource::Ticket(_)));
    }

    #[test]
    fn a_minimal_file_gets_every_default() {
        let config = AgentConfig::from_toml(&minimal()).unwrap();
        assert_eq!(config.proxy, ProxySource::Ticket(ticket().0));
        assert_eq!(config.owners, vec![alice()]);
        assert_eq!(config.state_dir, Path::new("/var/lib/wtd"));
        assert_eq!(config.missions_dir, Path::new("/etc/wtd/missions"));
        assert_eq!(config.heartbeat_interval, Duration::from_secs(1));
        assert!(config.tags.is_empty());
        assert_eq!(config.test_pinned_load, None);
        assert!(!config.name.is_empty());
        assert_eq!(config.identity_path(), Path::new("/var/lib/wtd/identity.key"));
        // Off unless asked for: no mission publishes, no broker, no metrics port.
        assert!(config.mission_events.is_empty());
        assert_eq!((config.mqtt, config.metrics), (None, None));
    }

    #[test]
    fn every_key_is_read() {
        let text = format!(
            "{}name = \"pi-kitchen\"\nstate_dir = \"/tmp/s\"\nmissions_dir = \"/tmp/m\"\n\
             tags = [\"lab\", \"room-2\"]\nheartbeat_interval = \"500ms\"\ntest_pinned_load = 0.25\n",
            minimal()
        );
        let config = AgentConfig::from_toml(&text).unwrap();
        assert_eq!(config.name, "pi-kitchen");
        assert_eq!(config.state_dir, Path::new("/tmp/s"));
        assert_eq!(config.missions_dir, Path::new("/tmp/m"));
        assert_eq!(config.tags, ["lab", "room-2"]);
        assert_eq!(config.heartbeat_interval, Duration::from_millis(500));
        assert_eq!(config.test_pinned_load, Some(0.25));
    }

    #[test]
    fn the_example_file_parses() {
        // The example ships with placeholders; swap in real values and it must parse, so
        // the documentation cannot drift from the parser.
        let example = include_str!("../agent.example.toml")
            .replace("\"wtdt1...\"", &format!("\"{}\"", ticket().1))
            .replace("\"wtd1...\"", &format!("\"{}\"", alice()));
        let config = AgentConfig::from_toml(&example).unwrap();
        assert_eq!(config.owners, vec![alice()]);
        assert_eq!(
            config.tags,
            Vec::<String>::new(),
            "optional keys are commented out"
        );
        // Every commented-out key is a real key with a valid value.
        let uncommented: String = example
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest) if rest.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')) => rest,
                _ => line,
            })
            .map(|line| format!("{line}\n"))
            .collect();
        let config = AgentConfig::from_toml(&uncommented).unwrap();
        assert_eq!(config.name, "pi-kitchen");
        assert_eq!(config.tags, ["lab", "room-2"]);
        assert_eq!(config.test_pinned_load, Some(0.5));
        assert!(config.enroll.is_some());
        assert_eq!(config.mission_events, ["door"]);
        assert_eq!(config.metrics, Some("127.0.0.1:9465".parse().unwrap()));
        assert_eq!(config.lan_interfaces, ["wlan0"]);
        assert_eq!(config.test_sensor_root, Some(PathBuf::from("/tmp/fake-pi")));
        // The [mqtt] block, uncommented (without the files it names, which do not exist here).
        let mqtt: String = example
            .lines()
            .skip_while(|l| *l != "# [mqtt]")
            .filter_map(|l| {
                l.strip_prefix("# [mqtt]")
                    .map(|_| "[mqtt]")
                    .or(l.strip_prefix("#   "))
            })
            .filter(|l| !l.starts_with("password_file") && !l.starts_with("ca_file"))
            .map(|l| format!("{l}\n"))
            .collect();
        let config = AgentConfig::from_toml(&format!("{}{mqtt}", minimal())).unwrap();
        let m = config.mqtt.expect("the [mqtt] section");
        assert_eq!(
            (m.host.as_str(), m.port, m.cluster.as_str()),
            ("broker.lan", 1883, "home")
        );
    }

    #[test]
    fn mission_events_name_missions_and_mqtt_errors_are_named() {
        let err =
            AgentConfig::from_toml(&format!("{}mission_events = [\"Door!\"]\n", minimal())).unwrap_err();
        assert!(matches!(err, ConfigError::BadEventMission { .. }), "{err}");
        let err = AgentConfig::from_toml(&format!("{}[mqtt]\nurl = \"http://x\"\n", minimal())).unwrap_err();
        assert!(err.to_string().starts_with("[mqtt]: "), "{err}");
    }

    #[test]
    fn an_enrollment_token_is_read_and_never_shown() {
        let token = wtd_keys::EnrollmentToken::generate();
        let text = token.to_text();
        let config = AgentConfig::from_toml(&format!("{}enroll = \"{}\"\n", minimal(), &*text)).unwrap();
        assert_eq!(config.enroll.as_ref(), Some(&token));
        let debug = format!("{config:?}");
        assert!(!debug.contains(&text[12..]), "{debug}");
        // A damaged token: refused, and the message does not repeat it.
        let damaged = format!("{}x", &text[..text.len() - 1]);
        let err = AgentConfig::from_toml(&format!("{}enroll = \"{damaged}\"\n", minimal())).unwrap_err();
        assert!(matches!(err, ConfigError::BadEnrollToken(_)), "{err}");
        assert!(!err.to_string().contains(&damaged[12..]), "{err}");
        let err = AgentConfig::from_toml(&format!("{}enroll = \"wtd1abc\"\n", minimal())).unwrap_err();
        assert!(err.to_string().contains("not an enrollment token"), "{err}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = AgentConfig::from_toml(&format!("{}owner = \"x\"\n", minimal())).unwrap_err();
        assert!(matches!(err, ConfigError::Toml(_)));
        assert!(err.to_string().contains("unknown field `owner`"), "{err}");
    }

    #[test]
    fn missing_or_empty_owners_are_refused() {
        let no_owners = format!("proxy = \"{}\"\n", ticket().1);
        assert!(matches!(
            AgentConfig::from_toml(&no_owners),
            Err(ConfigError::NoOwners)
        ));
        let empty = format!("{no_owners}owners = []\n");
        assert!(matches!(
            AgentConfig::from_toml(&empty),
            Err(ConfigError::NoOwners)
        ));
    }

    #[test]
    fn bad_and_duplicate_owners_are_refused() {
        let bad = format!("proxy = \"{}\"\nowners = [\"wtd1nope\"]\n", ticket().1);
        assert!(matches!(
            AgentConfig::from_toml(&bad),
            Err(ConfigError::BadOwner { .. })
        ));
        let twice = format!(
            "proxy = \"{}\"\nowners = [\"{a}\", \"{a}\"]\n",
            ticket().1,
            a = alice()
        );
        assert!(matches!(
            AgentConfig::from_toml(&twice),
            Err(ConfigError::DuplicateOwner(_))
        ));
    }

    #[test]
    fn proxy_tickets_are_checked() {
        let owners = format!("owners = [\"{}\"]\n", alice());
        assert!(matches!(
            AgentConfig::from_toml(&owners),
            Err(ConfigError::NoProxy)
        ));
        let bad = format!("proxy = \"wtdt1aaaa\"\n{owners}");
        assert!(matches!(
            AgentConfig::from_toml(&bad),
            Err(ConfigError::BadTicket(_))
        ));
        let not_a_ticket = format!("proxy = \"192.168.1.10:7788\"\n{owners}");
        // An address is not enough: the key to pin comes from a ticket (or the LAN).
        let err = AgentConfig::from_toml(&not_a_ticket).unwrap_err();
        assert!(matches!(err, ConfigError::BadProxy(_)), "{err}");
        assert!(err.to_string().contains("join ticket"), "{err}");
        let empty_ticket = Ticket::default().to_text();
        let no_proxy = format!("proxy = \"{empty_ticket}\"\n{owners}");
        assert!(matches!(
            AgentConfig::from_toml(&no_proxy),
            Err(ConfigError::TicketWithoutProxy)
        ));
    }

    #[test]
    fn heartbeats_must_fit_the_proxys_patience() {
        let with = |v: &str| AgentConfig::from_toml(&format!("{}heartbeat_interval = \"{v}\"\n", minimal()));
        assert!(with("2s").is_ok());
        assert!(matches!(with("3s"), Err(ConfigError::HeartbeatOutOfRange(_))));
        assert!(matches!(with("1ms"), Err(ConfigError::HeartbeatOutOfRange(_))));
        assert!(matches!(with("soon"), Err(ConfigError::BadDuration { .. })));
    }

    #[test]
    fn names_tags_and_the_test_seam_are_checked() {
        let with = |extra: &str| AgentConfig::from_toml(&format!("{}{extra}\n", minimal()));
        assert!(matches!(with("name = \"\""), Err(ConfigError::BadName(_))));
        assert!(matches!(
            with("name = \"a\\u001b[2J\""),
            Err(ConfigError::BadName(_))
        ));
        assert!(matches!(
            with(&format!("name = \"{}\"", "x".repeat(65))),
            Err(ConfigError::BadName(_))
        ));
        assert!(matches!(
            with("tags = [\"Lab\"]"),
            Err(ConfigError::BadTag { .. })
        ));
        let many: Vec<String> = (0..17).map(|i| format!("\"t{i}\"")).collect();
        assert!(matches!(
            with(&format!("tags = [{}]", many.join(","))),
            Err(ConfigError::TooManyTags(17))
        ));
        assert!(matches!(
            with("test_pinned_load = -1.0"),
            Err(ConfigError::BadPinnedLoad(_))
        ));
        assert!(matches!(
            with("test_pinned_load = nan"),
            Err(ConfigError::BadPinnedLoad(_))
        ));
        assert!(
            matches!(with("heartbeat_interval = 5"), Err(ConfigError::Toml(_))),
            "a number, not a string"
        );
    }

    #[test]
    fn files_are_read_with_their_path_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        let err = AgentConfig::load(&path).unwrap_err();
        assert!(matches!(err, LoadConfigError::Read { .. }));
        assert!(err.to_string().contains("agent.toml"), "{err}");
        fs::write(&path, "owners = 3").unwrap();
        assert!(matches!(
            AgentConfig::load(&path),
            Err(LoadConfigError::Invalid { .. })
        ));
        fs::write(&path, minimal()).unwrap();
        assert_eq!(AgentConfig::load(&path).unwrap().owners, vec![alice()]);
        fs::write(&path, "#".repeat(70_000)).unwrap();
        assert!(matches!(
            AgentConfig::load(&path),
            Err(LoadConfigError::TooLarge { .. })
        ));
    }
}
