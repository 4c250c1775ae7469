//! Finding the proxy on the LAN, for an agent with no join ticket (`proxy = "<proxy id>"`
//! or `proxy = "any-on-lan"` in agent.toml).
//!
//! The agent browses mDNS for `_wtd._udp` announcements for its whole life (the proxy may
//! boot after the Pis, or move to another address) and, each time the link needs a proxy,
//! offers the next *allowed* sighting in turn. An allowed id is only a claim: the link
//! connects pinning it, so an impostor announcing the right id at its own address fails the
//! handshake, is logged, and the next sighting is tried. An id the config does not allow
//! is never tried, and the log says so once per id, with the fix.

use std::collections::HashSet;
use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;
use wtd_keys::{AgentId, ProxyInfo};
use wtd_transport::lan::{Browser, Change, LanError, LanPolicy, Sighting};

use crate::defaults;

/// The agent's side of LAN discovery: a browser and which ids it may join.
#[derive(Debug)]
pub(crate) struct LanFinder {
    policy: LanPolicy,
    browser: Browser,
    /// Ids already reported as not allowed (or broken announcements), so a proxy that
    /// re-announces every minute does not fill the journal.
    reported: HashSet<String>,
    /// How many proxies have been handed out; picks the next allowed sighting and address.
    turn: usize,
}

impl LanFinder {
    /// Starts browsing on every interface, or only on `interfaces`.
    pub fn start(policy: LanPolicy, interfaces: &[String]) -> Result<LanFinder, LanError> {
        Ok(LanFinder {
            policy,
            browser: Browser::start(interfaces)?,
            reported: HashSet::new(),
            turn: 0,
        })
    }

    /// The next proxy to try and the address to try it at, waiting until an allowed one is
    /// announced. `None` on shutdown (or if the mDNS thread died).
    pub async fn next(
        &mut self,
        agent: AgentId,
        shutdown: &CancellationToken,
    ) -> Option<(ProxyInfo, SocketAddr)> {
        let mut waiting_since = tokio::time::Instant::now();
        loop {
            for change in self.browser.drain() {
                self.report(agent, &change);
            }
            let allowed: Vec<(ProxyInfo, SocketAddr)> = self
                .browser
                .sightings()
                .into_iter()
                .filter(|s| self.policy.allows(&s.proxy.id))
                .flat_map(|s| {
                    let info = s.proxy;
                    info.addrs.clone().into_iter().map(move |a| (info.clone(), a))
                })
                .collect();
            if !allowed.is_empty() {
                let pick = allowed[self.turn % allowed.len()].clone();
                self.turn = self.turn.wrapping_add(1);
                return Some(pick);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                change = self.browser.next_change() => {
                    let change = change?;
                    self.report(agent, &change);
                }
                _ = tokio::time::sleep_until(waiting_since + defaults::LAN_STILL_LOOKING_EVERY) => {
                    log::warn!(
                        agent:% = agent;
                        "still looking for {} on the LAN (mDNS {}); is the proxy running with announcements on, on this network?",
                        self.wanted(),
                        wtd_transport::lan::SERVICE_TYPE
                    );
                    waiting_since = tokio::time::Instant::now();
                }
            }
        }
    }

    /// Which proxy we want, for log lines.
    fn wanted(&self) -> String {
        match self.policy {
            LanPolicy::Only(id) => format!("proxy {id}"),
            LanPolicy::AnyOnLan => "any wtd proxy".to_string(),
        }
    }

    fn report(&mut self, agent: AgentId, change: &Change) {
        match change {
            Change::Seen(Sighting { instance, proxy }) => {
                if self.policy.allows(&proxy.id) {
                    log::info!(
                        agent:% = agent, proxy:% = proxy.id;
                        "found proxy {} on the LAN at {} ({instance}); trying it (its handshake must prove that id)",
                        proxy.id,
                        addrs(&proxy.addrs)
                    );
                } else if self.reported.insert(proxy.id.to_string()) {
                    log::warn!(
                        agent:% = agent, proxy:% = proxy.id;
                        "found proxy {} on the LAN at {}, but this agent's config allows only {} (`proxy` in agent.toml); not joining it",
                        proxy.id,
                        addrs(&proxy.addrs),
                        self.wanted()
                    );
                }
            }
            Change::Ignored { instance, why } => {
                if self.reported.insert(instance.clone()) {
                    log::warn!(agent:% = agent; "ignored a wtd announcement on the LAN ({instance}): {why}");
                }
            }
            Change::Gone { instance } => {
                log::info!(agent:% = agent; "a proxy left the LAN ({instance})");
            }
        }
    }
}

fn addrs(list: &[SocketAddr]) -> String {
    list.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
}
