//! The `[mqtt]` section, the same in `proxy.toml` and `agent.toml`:
//!
//! ```toml
//! [mqtt]
//! url = "mqtts://broker.lan:8883"     # mqtt:// (plain) or mqtts:// (TLS, verified)
//! cluster = "home"                    # topics are wtd/<cluster>/...
//! username = "wtd"
//! password_file = "/etc/wtd/mqtt.password"
//! ca_file = "/etc/wtd/mqtt-ca.pem"    # mqtts:// without it trusts the system's CAs
//! ```
//!
//! Checked once at start ([`MqttConfig::from_file`]), so a typo or an unreadable password
//! file is one clear error before anything connects, not a reconnect loop.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::defaults;

/// The `[mqtt]` section as written. Every field has one doc line; see the module docs.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttFile {
    /// The broker: `mqtt://host[:port]` or `mqtts://host[:port]`.
    pub url: Option<String>,
    /// Topics are `wtd/<cluster>/...`: one name per cluster sharing a broker.
    pub cluster: Option<String>,
    /// Username for the broker, if it asks for one.
    pub username: Option<String>,
    /// A file holding the password (first line); or set `WTD_MQTT_PASSWORD`.
    pub password_file: Option<PathBuf>,
    /// The CA certificate (PEM) that signed the broker's certificate, for `mqtts://`.
    pub ca_file: Option<PathBuf>,
    /// Home Assistant's discovery prefix; `""` turns discovery off.
    pub discovery_prefix: Option<String>,
    /// The MQTT client id; default `wtd-proxy-<id>` or `wtd-agent-<id>`.
    pub client_id: Option<String>,
    /// At most one state message per agent this often (`"5s"`).
    pub state_interval: Option<String>,
    /// An agent offline this long is removed from Home Assistant (`"7d"`).
    pub forget_after: Option<String>,
    /// Events held while the broker is away; past it the oldest are dropped.
    pub queue: Option<usize>,
}

/// A checked MQTT configuration, ready for [`crate::Bridge`].
#[derive(Clone, PartialEq, Eq)]
pub struct MqttConfig {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub cluster: String,
    pub username: Option<String>,
    /// Never printed: see the `Debug` impl.
    pub password: Option<String>,
    /// The CA certificates, PEM, read at start.
    pub ca_pem: Option<Vec<u8>>,
    pub ca_file: Option<PathBuf>,
    /// Empty: no Home Assistant discovery.
    pub discovery_prefix: String,
    pub client_id: Option<String>,
    pub state_interval: Duration,
    pub forget_after: Duration,
    pub queue: usize,
}

impl fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttConfig")
            .field("url", &self.url())
            .field("cluster", &self.cluster)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<secret>"))
            .field("ca_file", &self.ca_file)
            .field("discovery_prefix", &self.discovery_prefix)
            .field("client_id", &self.client_id)
            .field("state_interval", &self.state_interval)
            .field("forget_after", &self.forget_after)
            .field("queue", &self.queue)
            .finish()
    }
}

/// What is wrong with an `[mqtt]` section.
#[derive(Debug, thiserror::Error)]
pub enum MqttConfigError {
    /// No `url`: the bridge would not know where the broker is.
    #[error("the MQTT broker URL is missing: set `url = \"mqtt://host:1883\"` in [mqtt] or pass --mqtt")]
    NoUrl,
    /// The URL is not `mqtt://host[:port]` or `mqtts://host[:port]`.
    #[error("`{url}` is not a broker URL: {why} (write mqtt://host:1883, or mqtts://host:8883 for TLS)")]
    BadUrl { url: String, why: &'static str },
    /// The cluster name would break the topic layout.
    #[error("cluster `{0}` must be 1 to 64 of a-z, 0-9, `-` and `_` (it becomes a topic level)")]
    BadCluster(String),
    /// The discovery prefix would break the topic layout.
    #[error(
        "discovery_prefix `{0}` must not contain `+`, `#` or spaces (Home Assistant's is `homeassistant`)"
    )]
    BadPrefix(String),
    /// A password without a username: brokers ignore it, so it is surely a mistake.
    #[error("a broker password is set but no `username`: add username = \"...\" to [mqtt]")]
    PasswordWithoutUser,
    /// The password file or CA file could not be read.
    #[error("could not read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A CA file was given for plain `mqtt://`, where it would do nothing.
    #[error("ca_file is set but the URL is mqtt:// (no TLS): use mqtts:// to verify the broker")]
    CaWithoutTls,
    /// The CA file holds no PEM certificate.
    #[error("{0} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate(PathBuf),
    /// A duration is not like `5s` or `7d`.
    #[error("`{key} = {text:?}` is not a duration (write e.g. \"5s\" or \"7d\")")]
    BadDuration { key: &'static str, text: String },
    /// The queue must hold at least one event.
    #[error("`queue` must be at least 1")]
    ZeroQueue,
}

impl MqttConfig {
    /// Checks a section, reading the password and CA files. `password_env` is the value of
    /// `WTD_MQTT_PASSWORD`, used when no `password_file` is given.
    pub fn from_file(file: &MqttFile, password_env: Option<String>) -> Result<Self, MqttConfigError> {
        let url = file.url.as_deref().ok_or(MqttConfigError::NoUrl)?;
        let (tls, host, port) = parse_url(url)?;
        let cluster = file.cluster.clone().unwrap_or_else(|| defaults::CLUSTER.into());
        if cluster.is_empty()
            || cluster.len() > 64
            || !cluster
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            return Err(MqttConfigError::BadCluster(cluster));
        }
        let discovery_prefix = file
            .discovery_prefix
            .clone()
            .unwrap_or_else(|| defaults::DISCOVERY_PREFIX.into());
        if discovery_prefix.contains(['+', '#', ' ']) || discovery_prefix.ends_with('/') {
            return Err(MqttConfigError::BadPrefix(discovery_prefix));
        }
        let password = match &file.password_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| MqttConfigError::Read {
                    what: "the MQTT password file",
                    path: path.clone(),
                    source,
                })?;
                Some(text.lines().next().unwrap_or_default().to_string())
            }
            None => password_env.filter(|p| !p.is_empty()),
        };
        if password.is_some() && file.username.is_none() {
            return Err(MqttConfigError::PasswordWithoutUser);
        }
        let ca_pem = match &file.ca_file {
            Some(path) if !tls => {
                let _ = path;
                return Err(MqttConfigError::CaWithoutTls);
            }
            Some(path) => {
                let pem = std::fs::read(path).map_err(|source| MqttConfigError::Read {
                    what: "the MQTT CA file",
                    path: path.clone(),
                    source,
                })?;
                if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                    return Err(MqttConfigError::NoCertificate(path.clone()));
                }
                Some(pem)
            }
            None => None,
        };
        let duration = |key: &'static str, text: &Option<String>, default: Duration| match text {
            None => Ok(default),
            Some(t) => humantime::parse_duration(t)
                .map_err(|_| MqttConfigError::BadDuration { key, text: t.clone() }),
        };
        let queue = file.queue.unwrap_or(defaults::QUEUE);
        if queue == 0 {
            return Err(MqttConfigError::ZeroQueue);
        }
        Ok(MqttConfig {
            tls,
            host,
            port,
            cluster,
            username: file.username.clone(),
            password,
            ca_pem,
            ca_file: file.ca_file.clone(),
            discovery_prefix,
            client_id: file.client_id.clone(),
            state_interval: duration("state_interval", &file.state_interval, defaults::STATE_INTERVAL)?,
            forget_after: duration("forget_after", &file.forget_after, defaults::FORGET_AFTER)?,
            queue,
        })
    }

    /// The broker, as a URL (no credentials).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// `mqtt://host[:port]` or `mqtts://host[:port]` (IPv6 in brackets) to (tls, host, port).
fn parse_url(url: &str) -> Result<(bool, String, u16), MqttConfigError> {
    let bad = |why| MqttConfigError::BadUrl {
        url: url.to_string(),
        why,
    };
    let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("mqtt://") {
        (false, r)
    } else {
        return Err(bad("it must start with mqtt:// or mqtts://"));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('@') {
        return Err(bad(
            "credentials do not go in the URL; use `username` and `password_file`",
        ));
    }
    if rest.contains('/') {
        return Err(bad("a broker URL has no path"));
    }
    let default_port = if tls {
        defaults::MQTTS_PORT
    } else {
        defaults::MQTT_PORT
    };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or(bad("an IPv6 address needs its closing `]`"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad("the port is not a number"))?,
            None if after.is_empty() => default_port,
            None => return Err(bad("unexpected text after the address")),
        };
        (host.to_string(), port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse().map_err(|_| bad("the port is not a number"))?,
            ),
            None => (rest.to_string(), default_port),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if port == 0 {
        return Err(bad("port 0"));
    }
    Ok((tls, host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_url(url: &str) -> MqttFile {
        MqttFile {
            url: Some(url.into()),
            ..MqttFile::default()
        }
    }

    #[test]
    fn urls_parse_with_default_ports() {
        let c = MqttConfig::from_file(&with_url("mqtt://broker.lan"), None).unwrap();
        assert_eq!((c.tls, c.host.as_str(), c.port), (false, "broker.lan", 1883));
        let c = MqttConfig::from_file(&with_url("mqtts://10.0.0.2:9999/"), None).unwrap();
        assert_eq!((c.tls, c.host.as_str(), c.port), (true, "10.0.0.2", 9999));
        let c = MqttConfig::from_file(&with_url("mqtt://[::1]:1884"), None).unwrap();
        assert_eq!((c.host.as_str(), c.port), ("::1", 1884));
        assert_eq!(c.url(), "mqtt://[::1]:1884");
        assert_eq!(c.cluster, "home");
        assert_eq!(c.discovery_prefix, "homeassistant");
    }

    #[test]
    fn bad_urls_say_why() {
        for (url, needle) in [
            ("http://x", "mqtt://"),
            ("mqtt://u:p@x", "username"),
            ("mqtt://x:port", "not a number"),
            ("mqtt://", "no host"),
            ("mqtt://x/topic", "no path"),
            ("mqtt://[::1", "closing"),
        ] {
            let err = MqttConfig::from_file(&with_url(url), None).unwrap_err();
            assert!(matches!(err, MqttConfigError::BadUrl { .. }), "{url}");
            assert!(err.to_string().contains(needle), "{url}: {err}");
        }
        assert!(matches!(
            MqttConfig::from_file(&MqttFile::default(), None),
            Err(MqttConfigError::NoUrl)
        ));
    }

    #[test]
    fn cluster_prefix_queue_and_durations_are_checked() {
        let mut f = with_url("mqtt://x");
        f.cluster = Some("Home/1".into());
        assert!(matches!(
            MqttConfig::from_file(&f, None),
            Err(MqttConfigError::BadCluster(_))
        ));
        let mut f = with_url("mqtt://x");
        f.discovery_prefix = Some("home#".into());
        assert!(matches!(
            MqttConfig::from_file(&f, None),
            Err(MqttConfigError::BadPrefix(_))
        ));
        let mut f = with_url("mqtt://x");
        f.queue = Some(0);
        assert!(matches!(
            MqttConfig::from_file(&f, None),
            Err(MqttConfigError::ZeroQueue)
        ));
        let mut f = with_url("mqtt://x");
        f.forget_after = Some("soon".into());
        assert!(matches!(
            MqttConfig::from_file(&f, None),
            Err(MqttConfigError::BadDuration {
                key: "forget_after",
                ..
            })
        ));
        f.forget_after = Some("3s".into());
        assert_eq!(
            MqttConfig::from_file(&f, None).unwrap().forget_after,
            Duration::from_secs(3)
        );
    }

    #[test]
    fn passwords_come_from_a_file_or_the_environment_and_never_print() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let mut f = with_url("mqtt://x");
        f.username = Some("wtd".into());
        f.password_file = Some(pw);
        let c = MqttConfig::from_file(&f, Some("ignored".into())).unwrap();
        assert_eq!(c.password.as_deref(), Some("s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"));
        f.password_file = None;
        let c = MqttConfig::from_file(&f, Some("fromenv".into())).unwrap();
        assert_eq!(c.password.as_deref(), Some("fromenv"));
        f.username = None;
        assert!(matches!(
            MqttConfig::from_file(&f, Some("p".into())),
            Err(MqttConfigError::PasswordWithoutUser)
        ));
        f.password_file = Some(dir.path().join("missing"));
        assert!(matches!(
            MqttConfig::from_file(&f, None),
            Err(MqttConfigError::Read { .. })
        ));
    }

    #[test]
    fn ca_files_need_tls_and_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a cert").unwrap();
        let mut f = with_url("mqtt://x");
        f.ca_file = Some(ca.clone());
        assert!(matches!(
            MqttConfig::from_file(&f, None),
            Err(MqttConfigError::CaWithoutTls)
        ));
        f.url = Some("mqtts://x".into());
        assert!(matches!(
            MqttConfig::from_file(&f, None),
            Err(MqttConfigError::NoCertificate(_))
        ));
    }
}
