//! What the proxy knows of each agent, as it travels: the agent's advert (who it is, what
//! it offers), its load, and when it was last heard from.

use serde::{Deserialize, Serialize};
use wtd_keys::{FunctionName, KeyError, MissionName, PublicId};

use crate::defaults::*;

/// A public key as raw bytes on the wire. Parse it with [`Key::parse`] before trusting it:
/// that refuses weak and non-canonical keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Key(pub [u8; 32]);

impl Key {
    pub fn parse(&self) -> Result<PublicId, KeyError> {
        PublicId::from_bytes(&self.0)
    }
}

impl From<PublicId> for Key {
    fn from(k: PublicId) -> Self {
        Key(*k.as_bytes())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionInfo {
    pub name: String,
    pub description: String,
    /// Safe to run twice: a caller may retry it on another agent if this one vanishes.
    pub idempotent: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MissionInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    pub functions: Vec<FunctionInfo>,
}

/// What an agent says about itself when it connects (and again when its missions change).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Advert {
    /// A name for people (`pi-kitchen`); ids are what count.
    pub name: String,
    /// The keys this agent obeys for grants and revocations.
    pub owners: Vec<Key>,
    pub missions: Vec<MissionInfo>,
    pub tags: Vec<String>,
    /// Hardware model (`Raspberry Pi 4 Model B Rev 1.4`), when known.
    pub model: Option<String>,
    /// The agent's software version.
    pub software: String,
    /// Problems the owner should see in `wtd ls`, such as a mission file that was skipped.
    pub warnings: Vec<String>,
    /// Proof that this agent holds an owner's one-time enrollment token (a MAC over its own
    /// id, never the token), so `wtd adopt --pending` can adopt a Pi its owner never saw.
    pub enrollment: Option<EnrollmentProof>,
}

/// An enrollment proof as it travels: `wtd_keys::enroll::EnrollProof` in bytes. Anyone may
/// see it; it proves the token only for the id of the agent whose advert carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentProof {
    pub token: [u8; 16],
    pub mac: [u8; 32],
}

impl From<wtd_keys::EnrollProof> for EnrollmentProof {
    fn from(p: wtd_keys::EnrollProof) -> Self {
        EnrollmentProof {
            token: p.token.0,
            mac: p.mac,
        }
    }
}

impl From<EnrollmentProof> for wtd_keys::EnrollProof {
    fn from(p: EnrollmentProof) -> Self {
        wtd_keys::EnrollProof {
            token: wtd_keys::TokenId(p.token),
            mac: p.mac,
        }
    }
}

/// A load report, sent with every heartbeat.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct Load {
    /// 1-minute load average.
    pub load1: f32,
    /// CPU busy, 0 to 100 (all cores together).
    pub cpu_percent: f32,
    pub mem_used_kb: u64,
    pub mem_total_kb: u64,
    /// SoC temperature, on a Pi.
    pub temperature_c: Option<f32>,
    /// The firmware's throttling bits (`get_throttled`), on a Pi.
    pub throttled: Option<u32>,
}

/// The low four bits of `get_throttled`: under-voltage, frequency capped, throttled, soft
/// temperature limit, each *now*. Bits 16-19 say the same happened since boot, which does
/// not make a Pi slow today, so dispatch looks only at these.
pub const THROTTLED_NOW_MASK: u32 = 0xF;

impl Load {
    /// Whether the Pi is slowed down right now (heat or a weak power supply). Unknown (not a
    /// Pi) counts as not throttled.
    pub fn throttled_now(&self) -> bool {
        self.throttled.is_some_and(|raw| raw & THROTTLED_NOW_MASK != 0)
    }
}

/// One agent in the roster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// Verified by TLS: the agent proved it holds this key.
    pub id: Key,
    pub advert: Advert,
    pub load: Load,
    /// When the proxy last heard from it, in ms since the epoch (proxy clock).
    pub last_seen_ms: u64,
}

/// Why an agent left the roster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaveReason {
    /// It said goodbye (SIGTERM, shutdown).
    Graceful,
    /// It went silent: killed, unplugged, or its network went away.
    Silent,
    /// It connected again, and the new connection replaced the old.
    Replaced,
}

/// A change to the roster, for watchers: a snapshot first, then deltas.
// Upsert is the big one (an advert); boxing it would cost an allocation per event and
// save little: events live briefly, and a watcher's buffer holds at most a few hundred.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RosterEvent {
    Snapshot(Vec<AgentInfo>),
    /// A new agent, or an agent whose advert changed.
    Upsert(AgentInfo),
    Load {
        id: Key,
        load: Load,
        last_seen_ms: u64,
    },
    Left {
        id: Key,
        reason: LeaveReason,
    },
}

/// Splits `agents` into runs that each encode to at most `budget` bytes, in order, so a
/// roster of any size fits in frames (an agent bigger than `budget` alone gets a run of
/// its own: it arrived in one frame, so it fits in one). Always at least one run, so an
/// empty roster is still one (empty) message.
pub fn chunk_agents(agents: Vec<AgentInfo>, budget: usize) -> Vec<Vec<AgentInfo>> {
    let mut out = vec![Vec::new()];
    let mut used = 0;
    for a in agents {
        let size = crate::encode(&a).len();
        let last = out.last_mut().expect("never empty");
        if !last.is_empty() && used + size > budget {
            out.push(Vec::new());
            used = 0;
        }
        used += size;
        out.last_mut().expect("never empty").push(a);
    }
    out
}

fn text_ok(s: &str) -> bool {
    s.len() <= MAX_TEXT && !s.chars().any(char::is_control)
}

impl Advert {
    /// The owners this agent claims (only a claim: see `wtd_keys::adoption::ownership`).
    /// Keys that do not parse are skipped; `validate` refuses an advert with any.
    pub fn claimed_owners(&self) -> impl Iterator<Item = wtd_keys::OwnerKey> + '_ {
        self.owners
            .iter()
            .filter_map(|k| k.parse().ok())
            .map(wtd_keys::OwnerKey)
    }

    /// Checks every limit and name; the proxy refuses an advert that fails.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() || !text_ok(&self.name) || self.name.len() > 64 {
            return Err("the agent name must be 1 to 64 printable characters".into());
        }
        if self.owners.is_empty() || self.owners.len() > MAX_OWNERS {
            return Err(format!("an agent needs 1 to {MAX_OWNERS} owners"));
        }
        for o in &self.owners {
            o.parse().map_err(|e| format!("owner key: {e}"))?;
        }
        if self.missions.len() > MAX_MISSIONS {
            return Err(format!("at most {MAX_MISSIONS} missions"));
        }
        for m in &self.missions {
            MissionName::new(&m.name).map_err(|e| format!("mission `{}`: {e}", m.name.escape_debug()))?;
            if !text_ok(&m.version) || !text_ok(&m.description) {
                return Err(format!("mission `{}`: version or description too long", m.name));
            }
            if m.functions.is_empty() || m.functions.len() > MAX_FUNCTIONS {
                return Err(format!(
                    "mission `{}` needs 1 to {MAX_FUNCTIONS} functions",
                    m.name
                ));
            }
            for f in &m.functions {
                FunctionName::new(&f.name)
                    .map_err(|e| format!("function `{}/{}`: {e}", m.name, f.name.escape_debug()))?;
                if !text_ok(&f.description) {
                    return Err(format!("function `{}/{}`: description too long", m.name, f.name));
                }
            }
        }
        if self.tags.len() > MAX_TAGS {
            return Err(format!("at most {MAX_TAGS} tags"));
        }
        for t in &self.tags {
            MissionName::new(t).map_err(|e| format!("tag `{}`: {e}", t.escape_debug()))?;
        }
        if self.warnings.len() > MAX_WARNINGS || !self.warnings.iter().all(|w| w.len() <= MAX_TEXT) {
            return Err(format!("at most {MAX_WARNINGS} warnings of {MAX_TEXT} bytes"));
        }
        if !text_ok(&self.software) || self.model.as_deref().is_some_and(|m| !text_ok(m)) {
            return Err("software version or model too long".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, encode, Response};

    fn agent(i: u32) -> AgentInfo {
        let mut id = [0; 32];
        id[..4].copy_from_slice(&i.to_be_bytes());
        AgentInfo {
            id: Key(id),
            advert: Advert {
                name: format!("pi-{i:05}"),
                owners: vec![Key([7; 32])],
                missions: vec![MissionInfo {
                    name: "demo".into(),
                    version: "1".into(),
                    description: "x".repeat(100),
                    functions: vec![FunctionInfo {
                        name: "echo".into(),
                        description: "y".repeat(100),
                        idempotent: true,
                    }],
                }],
                tags: vec![],
                model: None,
                software: "wtd".into(),
                warnings: vec![],
                enrollment: None,
            },
            load: Load::default(),
            last_seen_ms: 1,
        }
    }

    #[test]
    fn a_roster_bigger_than_a_frame_is_split_into_frames_that_fit() {
        let all: Vec<AgentInfo> = (0..10_000).map(agent).collect();
        let whole = encode(&Response::Roster(all.clone())).len();
        assert!(
            whole > MAX_FRAME,
            "the test roster must not fit in one frame ({whole} bytes)"
        );
        let chunks = chunk_agents(all.clone(), ROSTER_CHUNK_BYTES);
        assert!(chunks.len() > 1);
        let mut back = Vec::new();
        for c in chunks {
            let bytes = encode(&Response::Roster(c));
            assert!(bytes.len() <= MAX_FRAME);
            match decode::<Response>(&bytes).unwrap() {
                Response::Roster(r) => back.extend(r),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(back, all, "every agent, once, in order");
    }

    #[test]
    fn small_and_empty_rosters_are_one_message() {
        assert_eq!(
            chunk_agents(vec![], ROSTER_CHUNK_BYTES),
            vec![Vec::<AgentInfo>::new()]
        );
        let few: Vec<AgentInfo> = (0..3).map(agent).collect();
        assert_eq!(chunk_agents(few.clone(), ROSTER_CHUNK_BYTES), vec![few.clone()]);
        // A budget smaller than one agent: one agent per run, none dropped.
        assert_eq!(chunk_agents(few, 1).len(), 3);
    }
}
