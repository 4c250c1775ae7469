//! Authorization as one pure function: may this key call this function on this agent, now?
//!
//! [`evaluate`] looks at every grant the caller holds for the mission and says, for each,
//! why it does or does not apply; [`authorize`] does the same and, on Allow, takes a token
//! from the grant's bucket and a slot from its concurrency cap. Nothing here reads a
//! clock, a file or a socket, so every branch is tested with a fake clock.
//!
//! Default deny: the answer is Allow only when the caller is an owner this agent obeys who
//! adopted it (an owner needs no grant to call her own agents), or some grant
//! 1. was issued by a key this agent obeys, and that owner's log adopts this agent (both
//!    sides agree it is hers: see [`crate::adoption`]),
//! 2. names the caller as its subject (holder binding) and this mission,
//! 3. covers this agent,
//! 4. is valid now (with [`CLOCK_SKEW_MS`] of slack each way, and "now" never earlier than
//!    the persisted time floor),
//! 5. is not revoked,
//! 6. has a token in its bucket and a free concurrency slot (one bucket per issuer and
//!    grant id, so owners never share one; see [`RateLimits`]).

use std::collections::HashMap;

use crate::adoption::{AdoptionBook, Status};
use crate::defaults::CLOCK_SKEW_MS;
use crate::grant::{Grant, GrantId};
use crate::identity::{AgentId, OwnerKey, UserKey};
use crate::names::{FunctionName, MissionName};
use crate::revocation::{Revocation, Target};
use crate::time::{TimeFloor, Timestamp};

/// One call, as the agent sees it after checking the caller's signature.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    pub caller: &'a UserKey,
    pub agent: &'a AgentId,
    pub mission: &'a MissionName,
    pub function: &'a FunctionName,
    /// The agent's clock. It is raised to the time floor before use.
    pub now: Timestamp,
}

/// What the agent knows: whom it obeys, the grants and revocations it has verified, and
/// which of those owners adopted it.
#[derive(Clone, Copy, Debug)]
pub struct Policy<'a> {
    pub owners: &'a [OwnerKey],
    pub grants: &'a [&'a Grant],
    pub revocations: &'a [&'a Revocation],
    /// The adoptions in the owners' verified logs.
    pub adoptions: &'a AdoptionBook,
}

/// Why one grant does not let this call through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GrantStatus {
    /// It would allow the call.
    Usable,
    /// Signed by a key this agent does not obey.
    IssuerNotOwner,
    /// Signed by an owner this agent obeys, whose log does not adopt this agent (never did,
    /// or disowned it at `disowned`).
    NotAdopted { disowned: Option<Timestamp> },
    /// Covers other agents, not this one.
    NotForThisAgent,
    /// Starts later; `in_ms` from the effective now.
    NotYetValid { in_ms: u64 },
    /// Ended `ago_ms` before the effective now.
    Expired { ago_ms: u64 },
    /// Cancelled by this revocation.
    Revoked(Target),
    /// Its bucket is empty; a token is back in `retry_after_ms`.
    RateLimited { retry_after_ms: u64 },
    /// `limit` calls under it are already running on this agent.
    AtConcurrencyLimit { limit: u32 },
}

/// Why a call was refused, precise enough for `wtd why` and for an error a beginner can act
/// on. When several grants fail, the one closest to working is reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deny {
    /// The caller holds no grant for this mission from any key this agent obeys.
    NoGrant,
    /// The caller's grants for this mission are signed by keys this agent does not obey.
    IssuerNotOwner {
        grant: GrantId,
    },
    /// The grant's issuer has not adopted this agent, or disowned it: her grants do not
    /// reach agents that are not hers.
    NotAdopted {
        grant: GrantId,
        issuer: OwnerKey,
        disowned: Option<Timestamp>,
    },
    /// The caller is an owner this agent obeys, but her log does not adopt it, so she may
    /// not call it as its owner (`wtd adopt` it first).
    OwnerNotAdopted {
        disowned: Option<Timestamp>,
    },
    NotForThisAgent {
        grant: GrantId,
    },
    NotYetValid {
        grant: GrantId,
        in_ms: u64,
    },
    Expired {
        grant: GrantId,
        ago_ms: u64,
    },
    Revoked {
        grant: GrantId,
        by: Target,
    },
    RateLimited {
        grant: GrantId,
        retry_after_ms: u64,
    },
    AtConcurrencyLimit {
        grant: GrantId,
        limit: u32,
    },
}

impl Deny {
    /// Lower is closer to working.
    fn rank(&self) -> u8 {
        match self {
            Deny::RateLimited { .. } => 0,
            Deny::AtConcurrencyLimit { .. } => 1,
            Deny::NotYetValid { .. } => 2,
            Deny::Revoked { .. } => 3,
            Deny::Expired { .. } => 4,
            Deny::NotForThisAgent { .. } => 5,
            Deny::NotAdopted { .. } => 6,
            Deny::IssuerNotOwner { .. } => 7,
            Deny::OwnerNotAdopted { .. } => 8,
            Deny::NoGrant => 9,
        }
    }

    fn from_status(grant: &Grant, status: GrantStatus) -> Option<Deny> {
        let (issuer, grant) = (grant.issuer, grant.id);
        Some(match status {
            GrantStatus::Usable => return None,
            GrantStatus::IssuerNotOwner => Deny::IssuerNotOwner { grant },
            GrantStatus::NotAdopted { disowned } => Deny::NotAdopted {
                grant,
                issuer,
                disowned,
            },
            GrantStatus::NotForThisAgent => Deny::NotForThisAgent { grant },
            GrantStatus::NotYetValid { in_ms } => Deny::NotYetValid { grant, in_ms },
            GrantStatus::Expired { ago_ms } => Deny::Expired { grant, ago_ms },
            GrantStatus::Revoked(by) => Deny::Revoked { grant, by },
            GrantStatus::RateLimited { retry_after_ms } => Deny::RateLimited {
                grant,
                retry_after_ms,
            },
            GrantStatus::AtConcurrencyLimit { limit } => Deny::AtConcurrencyLimit { grant, limit },
        })
    }
}

/// A running call's hold on a concurrency slot. Hand it back with [`RateLimits::release`]
/// when the call ends, however it ends.
///
/// It names the grant by issuer *and* id, as the buckets are keyed: releasing it frees a
/// slot of that owner's grant and of no other, whatever ids other owners chose.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a permit must be released when the call ends, or its slot is lost"]
pub struct Permit {
    /// The owner who signed the grant the call runs under.
    pub issuer: OwnerKey,
    pub grant: GrantId,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Allow(Permit),
    /// The caller is an owner who adopted this agent: her own call, under no grant, so
    /// without a rate bucket or a slot to give back.
    AllowOwner(OwnerKey),
    Deny(Deny),
}

/// Every grant the caller holds for the mission, each with its status; and the decision
/// that would follow. Used by `wtd why`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evaluation {
    pub grants: Vec<(GrantId, GrantStatus)>,
    /// The grant that would be used, if any.
    pub usable: Option<GrantId>,
    /// The caller is an owner who adopted this agent, and so needs no grant.
    pub as_owner: Option<OwnerKey>,
    pub deny: Option<Deny>,
}

/// Token buckets and in-flight counts, one per grant, keyed by the grant's issuer and id.
///
/// Why not the id alone: a grant id is chosen by whoever signs the grant. An agent with two
/// owners, Alice and Carol, would otherwise let Carol pick the id of one of Alice's grants
/// (ids are not secret: they travel in tickets and revocations) for a grant of her own to
/// the same caller, and the two grants would share one bucket and one concurrency count:
/// Carol's caller could drain Alice's rate, or one call's release free the other's slot.
/// Keyed by (issuer, id), each owner's grants have their own limits, whatever ids they pick.
///
/// One token is stored as `period_ms` units and refills at `calls` units per millisecond,
/// so the arithmetic is exact in integers.
#[derive(Clone, Debug, Default)]
pub struct RateLimits {
    buckets: HashMap<BucketKey, Bucket>,
}

/// What a bucket belongs to: one owner's grant. Two owners' grants never share a key, even
/// with the same id; one owner signing two grants with one id gets one bucket, which is
/// her own choice to make.
type BucketKey = (OwnerKey, GrantId);

fn key_of(grant: &Grant) -> BucketKey {
    (grant.issuer, grant.id)
}

#[derive(Clone, Debug)]
struct Bucket {
    level: u128,
    last: Timestamp,
    in_flight: u32,
}

impl Bucket {
    fn full(grant: &Grant, now: Timestamp) -> Self {
        Bucket {
            level: u128::from(grant.burst) * u128::from(grant.rate.period_ms),
            last: now,
            in_flight: 0,
        }
    }

    fn refill(&mut self, grant: &Grant, now: Timestamp) {
        let cap = u128::from(grant.burst) * u128::from(grant.rate.period_ms);
        let elapsed = u128::from(self.last.until(now));
        self.level = (self.level + elapsed * u128::from(grant.rate.calls)).min(cap);
        self.last = self.last.max(now);
    }

    fn retry_after_ms(&self, grant: &Grant) -> Option<u64> {
        let token = u128::from(grant.rate.period_ms);
        if self.level >= token {
            return None;
        }
        let missing = token - self.level;
        let calls = u128::from(grant.rate.calls);
        Some(u64::try_from(missing.div_ceil(calls)).unwrap_or(u64::MAX))
    }
}

impl RateLimits {
    /// Status of `grant`'s limits at `now`, without taking anything.
    fn status(&self, grant: &Grant, now: Timestamp) -> GrantStatus {
        let mut bucket = self
            .buckets
            .get(&key_of(grant))
            .cloned()
            .unwrap_or_else(|| Bucket::full(grant, now));
        bucket.refill(grant, now);
        if bucket.in_flight >= grant.concurrency {
            return GrantStatus::AtConcurrencyLimit {
                limit: grant.concurrency,
            };
        }
        match bucket.retry_after_ms(grant) {
            Some(retry_after_ms) => GrantStatus::RateLimited { retry_after_ms },
            None => GrantStatus::Usable,
        }
    }

    fn take(&mut self, grant: &Grant, now: Timestamp) -> Permit {
        let bucket = self
            .buckets
            .entry(key_of(grant))
            .or_insert_with(|| Bucket::full(grant, now));
        bucket.refill(grant, now);
        bucket.level -= u128::from(grant.rate.period_ms);
        bucket.in_flight += 1;
        Permit {
            issuer: grant.issuer,
            grant: grant.id,
        }
    }

    /// Gives a concurrency slot back: the slot of the permit's own grant (issuer and id).
    pub fn release(&mut self, permit: Permit) {
        if let Some(b) = self.buckets.get_mut(&(permit.issuer, permit.grant)) {
            b.in_flight = b.in_flight.saturating_sub(1);
        }
    }

    /// Calls running right now under the grant `issuer` signed with id `grant`.
    pub fn in_flight(&self, issuer: &OwnerKey, grant: &GrantId) -> u32 {
        self.buckets.get(&(*issuer, *grant)).map_or(0, |b| b.in_flight)
    }

    /// Drops state for grants no longer known (`keep(issuer, id)` is false), so memory stays
    /// bounded by the grant set. A bucket with calls still running is kept, so their
    /// releases are not lost.
    pub fn retain(&mut self, keep: impl Fn(&OwnerKey, &GrantId) -> bool) {
        self.buckets
            .retain(|(issuer, id), b| keep(issuer, id) || b.in_flight > 0);
    }
}

/// The status of one grant for `req`, ignoring rate limits.
fn grant_status(req: &Request<'_>, policy: &Policy<'_>, grant: &Grant, now: Timestamp) -> GrantStatus {
    if !policy.owners.contains(&grant.issuer) {
        return GrantStatus::IssuerNotOwner;
    }
    match policy.adoptions.status(&grant.issuer, req.agent) {
        Status::Adopted { .. } => {}
        Status::Never => return GrantStatus::NotAdopted { disowned: None },
        Status::Disowned { at } => return GrantStatus::NotAdopted { disowned: Some(at) },
    }
    if !grant.audience.covers(req.agent) {
        return GrantStatus::NotForThisAgent;
    }
    if let Some(r) = policy.revocations.iter().find(|r| r.revokes(grant)) {
        return GrantStatus::Revoked(r.target.clone());
    }
    // Valid on [not_before - skew, expires + skew).
    if now.plus_ms(CLOCK_SKEW_MS) < grant.not_before {
        return GrantStatus::NotYetValid {
            in_ms: now.until(grant.not_before),
        };
    }
    if now >= grant.expires.plus_ms(CLOCK_SKEW_MS) {
        return GrantStatus::Expired {
            ago_ms: grant.expires.until(now),
        };
    }
    GrantStatus::Usable
}

/// Looks at every grant the caller holds for the mission. Takes nothing.
pub fn evaluate(req: &Request<'_>, policy: &Policy<'_>, limits: &RateLimits, floor: TimeFloor) -> Evaluation {
    evaluate_and_choose(req, policy, limits, floor).0
}

/// [`evaluate`], also returning the grant it chose. [`authorize`] must charge that very
/// grant: another grant in the policy may carry the same id (ids are picked by whoever
/// signs, so a grant from a key we do not obey can copy one) with other limits.
fn evaluate_and_choose<'p>(
    req: &Request<'_>,
    policy: &Policy<'p>,
    limits: &RateLimits,
    floor: TimeFloor,
) -> (Evaluation, Option<&'p Grant>) {
    let now = floor.effective(req.now);
    let mut grants = Vec::new();
    let mut usable = None;
    let mut chosen: Option<&'p Grant> = None;
    let mut deny: Option<Deny> = None;
    let mine = policy
        .grants
        .iter()
        .filter(|g| g.subject == *req.caller && g.mission == *req.mission);
    for grant in mine {
        let mut status = grant_status(req, policy, grant, now);
        if status == GrantStatus::Usable {
            status = limits.status(grant, now);
        }
        if status == GrantStatus::Usable {
            if chosen.is_none() {
                chosen = Some(*grant);
                usable = Some(grant.id);
            }
        } else if let Some(d) = Deny::from_status(grant, status.clone()) {
            if deny.as_ref().is_none_or(|best| d.rank() < best.rank()) {
                deny = Some(d);
            }
        }
        grants.push((grant.id, status));
    }
    // The caller's own agent: an owner it obeys, who adopted it, needs no grant.
    let owner = OwnerKey(*req.caller.key());
    let mut as_owner = None;
    if policy.owners.contains(&owner) {
        match policy.adoptions.status(&owner, req.agent) {
            Status::Adopted { .. } => as_owner = Some(owner),
            Status::Never => {
                let d = Deny::OwnerNotAdopted { disowned: None };
                if deny.as_ref().is_none_or(|best| d.rank() < best.rank()) {
                    deny = Some(d);
                }
            }
            Status::Disowned { at } => {
                let d = Deny::OwnerNotAdopted { disowned: Some(at) };
                if deny.as_ref().is_none_or(|best| d.rank() < best.rank()) {
                    deny = Some(d);
                }
            }
        }
    }
    let deny = match (usable, as_owner) {
        (None, None) => Some(deny.unwrap_or(Deny::NoGrant)),
        _ => None,
    };
    (
        Evaluation {
            grants,
            usable,
            as_owner,
            deny,
        },
        chosen,
    )
}

/// Decides a call and, on Allow, charges the grant's bucket (its issuer's and id's, see
/// [`RateLimits`]) and takes a concurrency slot. An adopting owner's own call is allowed
/// first, charging nothing: her agents are hers to use.
pub fn authorize(
    req: &Request<'_>,
    policy: &Policy<'_>,
    limits: &mut RateLimits,
    floor: TimeFloor,
) -> Decision {
    match evaluate_and_choose(req, policy, limits, floor) {
        (
            Evaluation {
                as_owner: Some(owner),
                ..
            },
            _,
        ) => Decision::AllowOwner(owner),
        (_, Some(grant)) => Decision::Allow(limits.take(grant, floor.effective(req.now))),
        (eval, None) => Decision::Deny(eval.deny.unwrap_or(Deny::NoGrant)),
    }
}
