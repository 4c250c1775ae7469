//! Finding a proxy on the LAN without a ticket: mDNS / DNS-SD (`_wtd._udp.local.`).
//!
//! A proxy announces one service instance on the LAN. Its SRV record gives the QUIC port,
//! its A records the addresses of the interface the answer went out on, and its TXT record
//! holds `id=<the proxy's wtd1... id>`. That is exactly what a join ticket holds (an id and
//! addresses) and nothing more: no owners, no grants, no names of people.
//!
//! # Why an announced id is only a hint
//!
//! Anyone on the LAN can answer mDNS queries, and may claim any id at any address. That is
//! harmless here, because an id is never *believed*; it is *pinned*: [`crate::Client`]
//! connects to the announced address expecting that id's key, and the TLS 1.3 handshake
//! fails unless the peer proves it holds that key. So a spoofer that announces Alice's
//! proxy id at its own address cannot be joined (it cannot prove Alice's key), and one that
//! announces its own id is joined only by an agent whose config allows any proxy
//! ([`LanPolicy::AnyOnLan`], a classroom's choice). What a spoofer *can* do is make noise:
//! the browser keeps at most [`defaults::MAX_LAN_PROXIES`] sightings.
//!
//! # Layout
//! - [`LanPolicy`]: which proxies an agent may join (`proxy = "<id>"` or `"any-on-lan"`).
//! - [`read_announcement`]: the pure check of one resolved announcement.
//! - [`Announcer`]: the proxy's side; announces until dropped.
//! - [`Browser`]: the agent's and `wtd join --lan`'s side; collects sightings.
//!
//! mdns-sd runs its own thread (a small blocking event loop, no async runtime of its own);
//! both types own their daemon and shut it down when dropped, so no thread outlives them.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};
use wtd_keys::{ProxyId, ProxyInfo};

use crate::defaults;

/// The DNS-SD service type every wtd proxy announces.
pub const SERVICE_TYPE: &str = "_wtd._udp.local.";
/// The TXT key holding the proxy's id.
pub const TXT_ID: &str = "id";

/// Which proxies found on the LAN an agent may join.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LanPolicy {
    /// Only the proxy with this id (`proxy = "wtd1..."` in agent.toml): the owner copied
    /// it from `wtd proxy`'s output, so a look-alike on the LAN is never joined.
    Only(ProxyId),
    /// Any proxy announcing itself (`proxy = "any-on-lan"`): for a classroom of Pis flashed
    /// from one image. A rogue proxy on the same LAN could then be joined; it still cannot
    /// forge a grant, a call or a result (agents verify every record), but it can keep the
    /// agent from the real proxy. Prefer `Only` where the id is known.
    AnyOnLan,
}

/// The text for [`LanPolicy::AnyOnLan`] in agent.toml.
pub const ANY_ON_LAN: &str = "any-on-lan";

impl LanPolicy {
    /// Whether a proxy announcing `id` may be tried (its handshake still has to prove it).
    pub fn allows(&self, id: &ProxyId) -> bool {
        match self {
            LanPolicy::Only(want) => want == id,
            LanPolicy::AnyOnLan => true,
        }
    }
}

impl std::fmt::Display for LanPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LanPolicy::Only(id) => write!(f, "only {id}"),
            LanPolicy::AnyOnLan => f.write_str(ANY_ON_LAN),
        }
    }
}

/// Why an announcement was ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnouncementError {
    /// The TXT record has no `id=`: not a wtd proxy, or a broken one.
    #[error("it has no `id` in its TXT record")]
    NoId,
    /// The `id=` is not a wtd id (or its checksum is wrong): damaged, or not ours.
    #[error("its id `{0}` is not a valid wtd id")]
    BadId(String),
    /// Port 0 cannot be connected to.
    #[error("it announces port 0")]
    NoPort,
    /// No IPv4 address to connect to (wtd on a LAN uses IPv4; see [`read_announcement`]).
    #[error("it announces no IPv4 address")]
    NoAddress,
    /// More proxies than [`defaults::MAX_LAN_PROXIES`] are announcing: someone is flooding
    /// the LAN with fake announcements, and this one was not kept.
    #[error("too many proxies are announcing on this LAN; this one was not kept")]
    TooMany,
}

/// Reads one resolved announcement into what a ticket would hold. Pure, so every branch is
/// unit-tested.
///
/// Only IPv4 addresses are kept: a classroom LAN always has them, and the IPv6 addresses
/// mDNS reports there are link-local ones, which need an interface scope a `SocketAddr`
/// in a ticket does not carry. At most [`defaults::MAX_LAN_ADDRS`] are kept (sorted, so
/// the same announcement always gives the same order).
pub fn read_announcement(
    txt_id: Option<&str>,
    port: u16,
    addrs: impl IntoIterator<Item = IpAddr>,
) -> Result<ProxyInfo, AnnouncementError> {
    let text = txt_id.ok_or(AnnouncementError::NoId)?;
    let id: ProxyId = text.parse().map_err(|_| {
        // Bounded: the id goes into a log line, and a TXT value can be 255 bytes of anything.
        AnnouncementError::BadId(text.chars().take(64).collect())
    })?;
    if port == 0 {
        return Err(AnnouncementError::NoPort);
    }
    let mut v4: Vec<_> = addrs
        .into_iter()
        .filter_map(|a| match a {
            IpAddr::V4(v4) if !v4.is_unspecified() && !v4.is_multicast() && !v4.is_broadcast() => Some(v4),
            _ => None,
        })
        .collect();
    v4.sort();
    v4.dedup();
    v4.truncate(defaults::MAX_LAN_ADDRS);
    if v4.is_empty() {
        return Err(AnnouncementError::NoAddress);
    }
    Ok(ProxyInfo {
        id,
        addrs: v4
            .into_iter()
            .map(|a| SocketAddr::new(IpAddr::V4(a), port))
            .collect(),
    })
}

/// Starting mDNS failed.
#[derive(Debug, thiserror::Error)]
pub enum LanError {
    /// mdns-sd could not open its multicast sockets (UDP port 5353) or talk to its thread.
    /// Another mDNS responder usually shares the port fine; a firewall or a machine with no
    /// multicast-capable interface does not.
    #[error("could not start mDNS (UDP port 5353, multicast 224.0.0.251): {0}")]
    Mdns(#[from] mdns_sd::Error),
    /// `--lan-interface` named an interface that is not up on this machine.
    #[error("no network interface called `{0}` (see `ip link`)")]
    NoInterface(String),
}

/// Restricts a daemon to the named interfaces, or leaves it on every interface (mdns-sd's
/// default, loopback included) when the list is empty.
fn choose_interfaces(daemon: &ServiceDaemon, interfaces: &[String]) -> Result<(), LanError> {
    if interfaces.is_empty() {
        return Ok(());
    }
    for name in interfaces {
        let exists = std::fs::metadata(format!("/sys/class/net/{name}")).is_ok();
        if !exists && cfg!(target_os = "linux") {
            return Err(LanError::NoInterface(name.clone()));
        }
    }
    daemon.disable_interface(IfKind::All)?;
    daemon.enable_interface(
        interfaces
            .iter()
            .map(|n| IfKind::Name(n.clone()))
            .collect::<Vec<_>>(),
    )?;
    Ok(())
}

/// A proxy's announcement, withdrawn when dropped (a goodbye packet, so browsers forget it
/// at once rather than when its records expire).
pub struct Announcer {
    daemon: ServiceDaemon,
    fullname: String,
}

impl std::fmt::Debug for Announcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Announcer")
            .field("fullname", &self.fullname)
            .finish()
    }
}

impl Announcer {
    /// Announces the proxy `id` listening on UDP `port`, on every interface (or only on
    /// `interfaces`), with the addresses of the interface each answer goes out on.
    pub fn start(id: &ProxyId, port: u16, interfaces: &[String]) -> Result<Announcer, LanError> {
        let daemon = ServiceDaemon::new()?;
        choose_interfaces(&daemon, interfaces)?;
        // The instance name is what `avahi-browse` shows; the short id keeps two proxies on
        // one LAN apart. The host name is ours too, so we never claim the machine's own.
        let short = id.key().short();
        let info = ServiceInfo::new(
            SERVICE_TYPE,
            &format!("wtd proxy {short}"),
            &format!("{short}.local."),
            "",
            port,
            &[(TXT_ID, id.to_string().as_str())][..],
        )?
        .enable_addr_auto();
        let fullname = info.get_fullname().to_string();
        daemon.register(info)?;
        Ok(Announcer { daemon, fullname })
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        // Best effort, and never blocking the proxy's shutdown on the daemon's thread.
        let _ = self.daemon.unregister(&self.fullname);
        let _ = self.daemon.shutdown();
    }
}

/// One proxy seen on the LAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    /// The DNS-SD instance name (`wtd proxy wtd1abcdefgh._wtd._udp.local.`).
    pub instance: String,
    /// What the announcement claimed: its id (to be proved by the handshake) and addresses.
    pub proxy: ProxyInfo,
}

/// What one mDNS event changed, for a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A proxy appeared, or announced new addresses.
    Seen(Sighting),
    /// An announcement that [`read_announcement`] refused.
    Ignored {
        instance: String,
        why: AnnouncementError,
    },
    /// A proxy said goodbye (or its records expired).
    Gone { instance: String },
}

/// Browses for `_wtd._udp` proxies and keeps what it has seen, until dropped.
pub struct Browser {
    daemon: ServiceDaemon,
    events: mdns_sd::Receiver<ServiceEvent>,
    seen: BTreeMap<String, ProxyInfo>,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser").field("seen", &self.seen).finish()
    }
}

impl Browser {
    /// Starts browsing on every interface (or only on `interfaces`).
    pub fn start(interfaces: &[String]) -> Result<Browser, LanError> {
        let daemon = ServiceDaemon::new()?;
        choose_interfaces(&daemon, interfaces)?;
        let events = daemon.browse(SERVICE_TYPE)?;
        Ok(Browser {
            daemon,
            events,
            seen: BTreeMap::new(),
        })
    }

    /// The proxies seen so far, in a stable order (by instance name).
    pub fn sightings(&self) -> Vec<Sighting> {
        self.seen
            .iter()
            .map(|(instance, proxy)| Sighting {
                instance: instance.clone(),
                proxy: proxy.clone(),
            })
            .collect()
    }

    /// Waits for the next event that changes something. `None` if the daemon stopped.
    pub async fn next_change(&mut self) -> Option<Change> {
        loop {
            let event = self.events.recv_async().await.ok()?;
            if let Some(change) = self.apply(event) {
                return Some(change);
            }
        }
    }

    /// Applies whatever events are already waiting, without blocking.
    pub fn drain(&mut self) -> Vec<Change> {
        let mut changes = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            changes.extend(self.apply(event));
        }
        changes
    }

    /// Collects changes for `wait` (a person running `wtd join --lan` gives proxies a few
    /// seconds to answer), then returns the sightings.
    pub async fn collect_for(&mut self, wait: Duration) -> Vec<Sighting> {
        let deadline = tokio::time::Instant::now() + wait;
        while tokio::time::timeout_at(deadline, self.next_change())
            .await
            .is_ok_and(|c| c.is_some())
        {}
        self.sightings()
    }

    fn apply(&mut self, event: ServiceEvent) -> Option<Change> {
        match event {
            ServiceEvent::ServiceResolved(r) => {
                let instance = r.fullname.clone();
                let addrs = r.get_addresses().iter().map(|a| a.to_ip_addr());
                match read_announcement(r.get_property_val_str(TXT_ID), r.get_port(), addrs) {
                    Ok(proxy) => {
                        if self.seen.get(&instance) == Some(&proxy) {
                            return None;
                        }
                        if !self.seen.contains_key(&instance) && self.seen.len() >= defaults::MAX_LAN_PROXIES
                        {
                            return Some(Change::Ignored {
                                instance,
                                why: AnnouncementError::TooMany,
                            });
                        }
                        self.seen.insert(instance.clone(), proxy.clone());
                        Some(Change::Seen(Sighting { instance, proxy }))
                    }
                    Err(why) => {
                        self.seen.remove(&instance);
                        Some(Change::Ignored { instance, why })
                    }
                }
            }
            ServiceEvent::ServiceRemoved(_, instance) => {
                self.seen.remove(&instance)?;
                Some(Change::Gone { instance })
            }
            _ => None,
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.daemon.stop_browse(SERVICE_TYPE);
        let _ = self.daemon.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wtd_keys::SecretKey;

    fn id(n: u8) -> ProxyId {
        ProxyId(SecretKey::from_seed(&[n; 32]).public())
    }

    #[test]
    fn an_announcement_reads_like_a_ticket() {
        let text = id(1).to_string();
        let addrs = ["192.168.1.20", "10.0.0.5", "fe80::1", "192.168.1.20"].map(|a| a.parse().unwrap());
        let info = read_announcement(Some(&text), 4433, addrs).unwrap();
        assert_eq!(info.id, id(1));
        assert_eq!(
            info.addrs,
            ["10.0.0.5:4433", "192.168.1.20:4433"].map(|a| a.parse::<SocketAddr>().unwrap()),
            "IPv4 only, sorted, no duplicates"
        );
    }

    #[test]
    fn every_broken_announcement_is_refused_with_its_reason() {
        let text = id(1).to_string();
        let one = || ["10.0.0.5".parse::<IpAddr>().unwrap()];
        assert_eq!(read_announcement(None, 4433, one()), Err(AnnouncementError::NoId));
        let damaged = format!("{}x", &text[..text.len() - 1]);
        assert!(matches!(
            read_announcement(Some(&damaged), 4433, one()),
            Err(AnnouncementError::BadId(_))
        ));
        let long = "x".repeat(255);
        let Err(AnnouncementError::BadId(shown)) = read_announcement(Some(&long), 4433, one()) else {
            panic!("not an id");
        };
        assert_eq!(shown.len(), 64, "a hostile TXT value is cut before it is logged");
        assert_eq!(
            read_announcement(Some(&text), 0, one()),
            Err(AnnouncementError::NoPort)
        );
        assert_eq!(
            read_announcement(Some(&text), 4433, ["fe80::1".parse().unwrap()]),
            Err(AnnouncementError::NoAddress)
        );
        assert_eq!(
            read_announcement(
                Some(&text),
                4433,
                ["0.0.0.0", "224.0.0.251", "255.255.255.255"].map(|a| a.parse().unwrap())
            ),
            Err(AnnouncementError::NoAddress)
        );
        let many = (1..=50u8).map(|n| IpAddr::V4([10, 0, 0, n].into()));
        assert_eq!(
            read_announcement(Some(&text), 1, many).unwrap().addrs.len(),
            defaults::MAX_LAN_ADDRS
        );
    }

    #[test]
    fn a_policy_allows_its_proxy_or_any() {
        assert!(LanPolicy::Only(id(1)).allows(&id(1)));
        assert!(!LanPolicy::Only(id(1)).allows(&id(2)));
        assert!(LanPolicy::AnyOnLan.allows(&id(2)));
    }
}
