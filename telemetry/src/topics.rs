//! Every MQTT topic wtd publishes or reads, in one place.
//!
//! | topic | retained | payload |
//! |---|---|---|
//! | `wtd/<cluster>/bridge/status` | yes | `online` / `offline` (the proxy bridge's last will) |
//! | `wtd/<cluster>/agents/<agent id>/state` | yes | JSON: load, CPU, memory, temperature, throttling, missions, tags, online, last seen |
//! | `wtd/<cluster>/agents/<agent id>/availability` | yes | `online` / `offline` (an agent publishing itself: its last will) |
//! | `wtd/<cluster>/events` | no | JSON: one call session or grant event (metadata only) |
//! | `wtd/<cluster>/missions/<mission>/events` | no | JSON: an event a mission's handler emitted (only missions listed in the agent's `mission_events`) |
//! | `<prefix>/sensor/<node id>/<object>/config` | yes | Home Assistant discovery (load, cpu, temperature) |
//! | `<prefix>/binary_sensor/<node id>/<object>/config` | yes | Home Assistant discovery (throttled, online) |
//! | `<prefix>/status` (read) | - | Home Assistant's birth message: `online` makes us re-send discovery |
//!
//! Agents are named by their id (`wtd1...`), not their name: an agent chooses its own name,
//! so a stranger's Pi could call itself `pi-kitchen`, but only the real one holds its key.

use wtd_wire::Key;

use crate::defaults;

/// The topics of one cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics {
    /// `wtd/<cluster>`.
    root: String,
    /// Home Assistant's discovery prefix; empty when discovery is off.
    discovery_prefix: String,
}

impl Topics {
    pub fn new(cluster: &str, discovery_prefix: &str) -> Self {
        Topics {
            root: format!("{}/{cluster}", defaults::TOPIC_ROOT),
            discovery_prefix: discovery_prefix.to_string(),
        }
    }

    /// `wtd/<cluster>`.
    pub fn root(&self) -> &str {
        &self.root
    }

    pub fn bridge_status(&self) -> String {
        format!("{}/bridge/status", self.root)
    }

    pub fn agent_state(&self, id: &str) -> String {
        format!("{}/agents/{id}/state", self.root)
    }

    pub fn agent_availability(&self, id: &str) -> String {
        format!("{}/agents/{id}/availability", self.root)
    }

    pub fn events(&self) -> String {
        format!("{}/events", self.root)
    }

    pub fn mission_events(&self, mission: &str) -> String {
        format!("{}/missions/{mission}/events", self.root)
    }

    /// Whether Home Assistant discovery is on.
    pub fn discovery_enabled(&self) -> bool {
        !self.discovery_prefix.is_empty()
    }

    pub fn discovery_prefix(&self) -> &str {
        &self.discovery_prefix
    }

    /// Home Assistant's birth and last-will topic.
    pub fn ha_status(&self) -> String {
        format!("{}/status", self.discovery_prefix)
    }

    /// `<prefix>/<component>/<node_id>/<object_id>/config`, Home Assistant's layout.
    pub fn discovery(&self, component: &str, node_id: &str, object_id: &str) -> String {
        format!(
            "{}/{component}/{node_id}/{object_id}/config",
            self.discovery_prefix
        )
    }
}

/// An agent's id in the text form people see in `wtd ls` (`wtd1...`), or a hex form for
/// a key that does not parse (never used for a real agent: the proxy checked it).
pub fn agent_id_text(key: &Key) -> String {
    match key.parse() {
        Ok(id) => id.to_string(),
        Err(_) => format!("key-{}", hex(&key.0)),
    }
}

/// Home Assistant's node id for an agent: stable across restarts and renames because it
/// is made from the key, and only `[a-z0-9_]` as Home Assistant requires.
pub fn node_id(key: &Key) -> String {
    format!("wtd_{}", hex(&key.0[..8]))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_as_documented() {
        let t = Topics::new("home", "homeassistant");
        assert_eq!(t.bridge_status(), "wtd/home/bridge/status");
        assert_eq!(t.agent_state("wtd1abc"), "wtd/home/agents/wtd1abc/state");
        assert_eq!(
            t.agent_availability("wtd1abc"),
            "wtd/home/agents/wtd1abc/availability"
        );
        assert_eq!(t.events(), "wtd/home/events");
        assert_eq!(t.mission_events("demo"), "wtd/home/missions/demo/events");
        assert_eq!(t.ha_status(), "homeassistant/status");
        assert_eq!(
            t.discovery("sensor", "wtd_0102", "load"),
            "homeassistant/sensor/wtd_0102/load/config"
        );
        assert!(!Topics::new("home", "").discovery_enabled());
    }

    #[test]
    fn node_ids_are_stable_and_home_assistant_safe() {
        let k = Key([0xab; 32]);
        assert_eq!(node_id(&k), "wtd_abababababababab");
        assert_eq!(node_id(&k), node_id(&Key([0xab; 32])));
        assert!(node_id(&k).chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    }
}
