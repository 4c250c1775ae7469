//! How grants are shown: one status word, a table for people, JSON for scripts.

use serde::Serialize;
use wtd_keys::defaults::CLOCK_SKEW_MS;
use wtd_keys::{Audience, Grant, PublicId, Revocation, Timestamp};
use wtd_store::keyring::Keyring;

use crate::parse::format_time;

/// Where a grant stands, as far as this machine knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Active,
    NotYetValid,
    Expired,
    Revoked,
}

impl Status {
    pub fn word(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::NotYetValid => "not yet valid",
            Status::Expired => "expired",
            Status::Revoked => "revoked",
        }
    }
}

/// The status of `grant` at `now`, given the revocations known here. Uses the same skew
/// allowance as agents, so the CLI and the agents agree.
pub fn status(grant: &Grant, revocations: &[&Revocation], now: Timestamp) -> Status {
    if revocations.iter().any(|r| r.revokes(grant)) {
        Status::Revoked
    } else if now >= grant.expires.plus_ms(CLOCK_SKEW_MS) {
        Status::Expired
    } else if now.plus_ms(CLOCK_SKEW_MS) < grant.not_before {
        Status::NotYetValid
    } else {
        Status::Active
    }
}

/// A key as people know it: their keyring name if there is one, else the short id.
pub fn who(keyring: &Keyring, key: &PublicId) -> String {
    keyring
        .name_of(key)
        .map_or_else(|| key.short(), |n| n.to_string())
}

/// One row of `wtd grants`.
#[derive(Debug, Serialize)]
pub struct GrantRow {
    /// `issued` (you granted it) or `received` (it was granted to you).
    pub direction: &'static str,
    pub id: String,
    pub issuer: String,
    pub issuer_name: Option<String>,
    pub subject: String,
    pub subject_name: Option<String>,
    pub mission: String,
    /// `all` or the list of agent ids.
    pub agents: Vec<String>,
    pub rate: String,
    pub burst: u32,
    pub concurrency: u32,
    pub not_before: String,
    pub expires: String,
    pub issued_at: String,
    pub status: Status,
}

impl GrantRow {
    pub fn new(direction: &'static str, g: &Grant, status: Status, keyring: &Keyring) -> Self {
        GrantRow {
            direction,
            id: g.id.to_string(),
            issuer: g.issuer.to_string(),
            issuer_name: keyring.name_of(g.issuer.key()).map(|n| n.to_string()),
            subject: g.subject.to_string(),
            subject_name: keyring.name_of(g.subject.key()).map(|n| n.to_string()),
            mission: g.mission.to_string(),
            agents: match &g.audience {
                Audience::AllAgents => vec!["all".to_string()],
                Audience::Agents(list) => list.iter().map(|a| a.to_string()).collect(),
            },
            rate: g.rate.to_string(),
            burst: g.burst,
            concurrency: g.concurrency,
            not_before: format_time(g.not_before),
            expires: format_time(g.expires),
            issued_at: format_time(g.issued_at),
            status,
        }
    }
}

/// Prints rows as an aligned table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  ", w = *w));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use wtd_keys::{GrantId, OwnerKey, Rate, SecretKey, Target, UserKey};

    #[test]
    fn status_words_follow_the_agents_rules() {
        let alice = SecretKey::from_seed(&[1; 32]);
        let bob = UserKey(SecretKey::from_seed(&[2; 32]).public());
        let g = Grant {
            id: GrantId([9; 16]),
            issuer: OwnerKey(alice.public()),
            subject: bob,
            audience: Audience::AllAgents,
            mission: "demo".parse().unwrap(),
            rate: Rate {
                calls: 1,
                period_ms: 1000,
            },
            burst: 1,
            concurrency: 1,
            not_before: Timestamp(100_000),
            expires: Timestamp(200_000),
            issued_at: Timestamp(100_000),
        };
        let skew = CLOCK_SKEW_MS;
        assert_eq!(
            status(&g, &[], Timestamp(100_000 - skew - 1)),
            Status::NotYetValid
        );
        assert_eq!(status(&g, &[], Timestamp(100_000 - skew)), Status::Active);
        assert_eq!(status(&g, &[], Timestamp(200_000 + skew - 1)), Status::Active);
        assert_eq!(status(&g, &[], Timestamp(200_000 + skew)), Status::Expired);
        let r = Revocation {
            issuer: g.issuer,
            target: Target::Grant(g.id),
            issued_at: Timestamp(0),
        };
        assert_eq!(status(&g, &[&r], Timestamp(150_000)), Status::Revoked);
    }
}
