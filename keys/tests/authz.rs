//! Authorization with a fake clock: every "now" is a plain `Timestamp`, so each rule can
//! be driven to its exact edge.
//!
//! # Index
//! - who: holder binding, audience, mission, issuer
//! - when: the 60 s skew edges, the time floor
//! - revocations: by id (even before the grant), by subject+mission, all, re-granting
//! - limits: the token bucket to the millisecond, the concurrency cap, `evaluate` is free;
//!   buckets per issuer and grant id, so two owners never share one
//! - which deny: the grant closest to working is the one reported

mod common;

use common::*;
use wtd_keys::defaults::CLOCK_SKEW_MS;
use wtd_keys::{
    authorize, evaluate, AgentId, Audience, Decision, Deny, Evaluation, FunctionName, Grant, GrantStatus,
    OwnerKey, Permit, Policy, Rate, RateLimits, Request, Revocation, SecretKey, Target, TimeFloor, Timestamp,
};
use wtd_keys::{Action, Adoption, AdoptionBook};

/// One agent's view: whom it obeys, what it has verified, and its rate-limit state.
struct Agent {
    id: AgentId,
    owners: Vec<OwnerKey>,
    grants: Vec<Grant>,
    revocations: Vec<Revocation>,
    limits: RateLimits,
    floor: TimeFloor,
    /// Owners whose logs do *not* adopt this agent: never (`None`) or disowned at a time.
    /// Every other owner adopted it.
    not_adopted: Vec<(OwnerKey, Option<Timestamp>)>,
}

impl Agent {
    /// Pi 1, obeying Alice, knowing nothing yet.
    fn new() -> Self {
        Agent {
            id: pi(1),
            owners: vec![owner(&alice())],
            grants: vec![],
            revocations: vec![],
            limits: RateLimits::default(),
            floor: TimeFloor::default(),
            not_adopted: vec![],
        }
    }

    /// The adoptions the agent holds: every owner adopted it at T0 - 1 s, except those in
    /// `not_adopted` (who never did, or later disowned it).
    fn book(&self) -> AdoptionBook {
        let mut book = AdoptionBook::new();
        for o in &self.owners {
            let record = |action, issued_at| Adoption {
                issuer: *o,
                agent: self.id,
                action,
                token: None,
                issued_at,
            };
            match self.not_adopted.iter().find(|(n, _)| n == o) {
                None => book.add(&record(Action::Adopt, T0.minus_ms(1000))),
                Some((_, None)) => {}
                Some((_, Some(at))) => {
                    book.add(&record(Action::Adopt, T0.minus_ms(1000)));
                    book.add(&record(Action::Disown, *at));
                }
            }
        }
        book
    }

    fn with_grants(mut self, grants: impl IntoIterator<Item = Grant>) -> Self {
        self.grants.extend(grants);
        self
    }

    fn revoke(&mut self, issuer: &SecretKey, target: Target, issued_at: Timestamp) {
        self.revocations.push(Revocation {
            issuer: owner(issuer),
            target,
            issued_at,
        });
    }

    /// `caller` calls `mission/echo` on this agent at `now`.
    fn call(&mut self, caller: &SecretKey, mission_name: &str, now: Timestamp) -> Decision {
        let (caller, m, f) = (user(caller), mission(mission_name), function());
        let grants: Vec<&Grant> = self.grants.iter().collect();
        let revocations: Vec<&Revocation> = self.revocations.iter().collect();
        let book = self.book();
        let policy = Policy {
            owners: &self.owners,
            grants: &grants,
            revocations: &revocations,
            adoptions: &book,
        };
        let req = Request {
            caller: &caller,
            agent: &self.id,
            mission: &m,
            function: &f,
            now,
        };
        authorize(&req, &policy, &mut self.limits, self.floor)
    }

    /// What `wtd why` would show for the same call. Takes nothing.
    fn why(&self, caller: &SecretKey, mission_name: &str, now: Timestamp) -> Evaluation {
        let (caller, m, f) = (user(caller), mission(mission_name), function());
        let grants: Vec<&Grant> = self.grants.iter().collect();
        let revocations: Vec<&Revocation> = self.revocations.iter().collect();
        let book = self.book();
        let policy = Policy {
            owners: &self.owners,
            grants: &grants,
            revocations: &revocations,
            adoptions: &book,
        };
        let req = Request {
            caller: &caller,
            agent: &self.id,
            mission: &m,
            function: &f,
            now,
        };
        evaluate(&req, &policy, &self.limits, self.floor)
    }

    /// Calls, expects Allow, and ends the call at once (giving the slot back).
    fn call_ok(&mut self, caller: &SecretKey, mission_name: &str, now: Timestamp) {
        let permit = allowed(self.call(caller, mission_name, now));
        self.limits.release(permit);
    }
}

fn function() -> FunctionName {
    FunctionName::new("echo").expect("canonical")
}

fn allowed(d: Decision) -> Permit {
    match d {
        Decision::Allow(p) => p,
        other => panic!("expected Allow under a grant, got {other:?}"),
    }
}

fn denied(d: Decision) -> Deny {
    match d {
        Decision::Deny(why) => why,
        other => panic!("expected Deny, got {other:?}"),
    }
}

/// Alice's grant to Bob for `demo`, with id `n` and lots of room in its limits so that
/// only the rule under test can refuse a call.
fn roomy(n: u8) -> Grant {
    Grant {
        id: gid(n),
        burst: 1000,
        concurrency: 1000,
        ..grant(&alice(), &bob(), "demo")
    }
}

// ---------------------------------------------------------------------------------------
// Who
// ---------------------------------------------------------------------------------------

#[test]
fn a_valid_grant_allows_the_call() {
    let mut agent = Agent::new().with_grants([roomy(1)]);
    assert_eq!(
        agent.call(&bob(), "demo", T0),
        Decision::Allow(Permit {
            issuer: owner(&alice()),
            grant: gid(1)
        })
    );
}

#[test]
fn with_no_grant_at_all_the_answer_is_no() {
    let mut agent = Agent::new();
    assert_eq!(denied(agent.call(&bob(), "demo", T0)), Deny::NoGrant);
}

#[test]
fn a_grant_is_bound_to_its_holder() {
    // Carol has seen Bob's grant (it is in his ticket), but her calls are signed by her
    // key, and the grant names Bob's. Holding the bytes gives her nothing.
    let mut agent = Agent::new().with_grants([roomy(1)]);
    assert_eq!(denied(agent.call(&carol(), "demo", T0)), Deny::NoGrant);
    agent.call_ok(&bob(), "demo", T0);
}

#[test]
fn a_grant_covers_only_its_audience() {
    let g = Grant {
        audience: Audience::agents(vec![pi(2), pi(3)]),
        ..roomy(1)
    };
    let mut agent = Agent::new().with_grants([g]);
    assert_eq!(
        denied(agent.call(&bob(), "demo", T0)),
        Deny::NotForThisAgent { grant: gid(1) }
    );
    agent.id = pi(2);
    agent.call_ok(&bob(), "demo", T0);
}

#[test]
fn a_grant_covers_only_its_mission() {
    let mut agent = Agent::new().with_grants([roomy(1)]);
    assert_eq!(denied(agent.call(&bob(), "sys", T0)), Deny::NoGrant);
}

#[test]
fn a_grant_from_a_key_the_agent_does_not_obey_is_refused() {
    let mallorys = Grant {
        issuer: owner(&mallory()),
        ..roomy(1)
    };
    let mut agent = Agent::new().with_grants([mallorys]);
    assert_eq!(
        denied(agent.call(&bob(), "demo", T0)),
        Deny::IssuerNotOwner { grant: gid(1) }
    );
    // The same grant works on an agent that does obey Mallory.
    agent.owners.push(owner(&mallory()));
    agent.call_ok(&bob(), "demo", T0);
}

// ---------------------------------------------------------------------------------------
// Adoption: both sides agree
// ---------------------------------------------------------------------------------------

#[test]
fn a_grant_reaches_only_agents_its_issuer_adopted() {
    // Pi 1 names Alice in its config, but her log never adopted it: her grant is not
    // honoured here (a stranger's machine claiming to be hers gets nothing of her grants).
    let mut agent = Agent::new().with_grants([roomy(1)]);
    agent.not_adopted.push((owner(&alice()), None));
    assert_eq!(
        denied(agent.call(&bob(), "demo", T0)),
        Deny::NotAdopted {
            grant: gid(1),
            issuer: owner(&alice()),
            disowned: None
        }
    );
    // Adopted, it is.
    agent.not_adopted.clear();
    agent.call_ok(&bob(), "demo", T0);
}

#[test]
fn a_disowned_agent_refuses_the_disowners_grants_and_says_when() {
    let mut agent = Agent::new().with_grants([roomy(1)]);
    agent.not_adopted.push((owner(&alice()), Some(T0.minus_ms(10))));
    assert_eq!(
        denied(agent.call(&bob(), "demo", T0)),
        Deny::NotAdopted {
            grant: gid(1),
            issuer: owner(&alice()),
            disowned: Some(T0.minus_ms(10))
        }
    );
}

#[test]
fn one_owner_disowning_does_not_affect_another_owners_grants() {
    let carols = Grant {
        issuer: owner(&carol()),
        ..roomy(2)
    };
    let mut agent = Agent::new().with_grants([roomy(1), carols]);
    agent.owners.push(owner(&carol()));
    agent.not_adopted.push((owner(&alice()), Some(T0)));
    let permit = allowed(agent.call(&bob(), "demo", T0));
    assert_eq!(permit.issuer, owner(&carol()), "Carol's grant is used");
    agent.limits.release(permit);
}

#[test]
fn an_adoption_by_a_key_the_agent_does_not_obey_counts_for_nothing() {
    // Mallory adopts Pi 1 in her own log and grants Bob: Pi 1 obeys only Alice.
    let mallorys = Grant {
        issuer: owner(&mallory()),
        ..roomy(1)
    };
    let mut agent = Agent::new().with_grants([mallorys]);
    assert_eq!(
        denied(agent.call(&bob(), "demo", T0)),
        Deny::IssuerNotOwner { grant: gid(1) }
    );
    // Nor may Mallory call it as an owner.
    assert_eq!(denied(agent.call(&mallory(), "demo", T0)), Deny::NoGrant);
}

#[test]
fn an_owner_who_adopted_an_agent_calls_it_without_a_grant() {
    let mut agent = Agent::new();
    assert_eq!(
        agent.call(&alice(), "sys", T0),
        Decision::AllowOwner(owner(&alice()))
    );
    let why = agent.why(&alice(), "demo", T0);
    assert_eq!((why.as_owner, why.deny), (Some(owner(&alice())), None));
}

#[test]
fn an_owner_who_has_not_adopted_or_disowned_an_agent_is_told_so() {
    let mut agent = Agent::new();
    agent.not_adopted.push((owner(&alice()), None));
    assert_eq!(
        denied(agent.call(&alice(), "sys", T0)),
        Deny::OwnerNotAdopted { disowned: None }
    );
    agent.not_adopted = vec![(owner(&alice()), Some(T0.minus_ms(5)))];
    assert_eq!(
        denied(agent.call(&alice(), "sys", T0)),
        Deny::OwnerNotAdopted {
            disowned: Some(T0.minus_ms(5))
        }
    );
    // A grant Alice gave herself does not get around her disowning either.
    let to_herself = Grant {
        subject: user(&alice()),
        ..roomy(1)
    };
    agent.grants.push(to_herself);
    assert!(matches!(
        denied(agent.call(&alice(), "demo", T0)),
        Deny::NotAdopted { .. }
    ));
}

// ---------------------------------------------------------------------------------------
// When
// ---------------------------------------------------------------------------------------

#[test]
fn expiry_allows_exactly_the_clock_skew() {
    // Valid until `expires + skew`, exclusive.
    let g = roomy(1);
    let end = g.expires.plus_ms(CLOCK_SKEW_MS);
    let mut agent = Agent::new().with_grants([g.clone()]);
    agent.call_ok(&bob(), "demo", g.expires);
    agent.call_ok(&bob(), "demo", end.minus_ms(1));
    assert_eq!(
        denied(agent.call(&bob(), "demo", end)),
        Deny::Expired {
            grant: gid(1),
            ago_ms: CLOCK_SKEW_MS
        }
    );
    assert_eq!(
        denied(agent.call(&bob(), "demo", end.plus_ms(1))),
        Deny::Expired {
            grant: gid(1),
            ago_ms: CLOCK_SKEW_MS + 1
        }
    );
}

#[test]
fn not_before_allows_exactly_the_clock_skew() {
    // Valid from `not_before - skew`, inclusive.
    let g = Grant {
        not_before: T0.plus_ms(HOUR),
        ..roomy(1)
    };
    let start = g.not_before.minus_ms(CLOCK_SKEW_MS);
    let mut agent = Agent::new().with_grants([g.clone()]);
    assert_eq!(
        denied(agent.call(&bob(), "demo", start.minus_ms(1))),
        Deny::NotYetValid {
            grant: gid(1),
            in_ms: CLOCK_SKEW_MS + 1
        }
    );
    agent.call_ok(&bob(), "demo", start);
    agent.call_ok(&bob(), "demo", g.not_before);
}

#[test]
fn stepping_the_clock_back_does_not_revive_an_expired_grant() {
    // The Pi saw the grant expire, rebooted without a real-time clock, and now thinks it
    // is 1970 (or someone set the clock back on purpose). The persisted floor wins.
    let g = roomy(1);
    let after = g.expires.plus_ms(CLOCK_SKEW_MS + MINUTE);
    let mut agent = Agent::new().with_grants([g.clone()]);
    assert!(agent.floor.observe(after));
    for now in [Timestamp(0), T0, g.expires.minus_ms(1)] {
        assert_eq!(
            denied(agent.call(&bob(), "demo", now)),
            Deny::Expired {
                grant: gid(1),
                ago_ms: CLOCK_SKEW_MS + MINUTE
            },
            "clock at {now:?}"
        );
    }
    // Control: without the floor, the stepped-back clock would have let the call in.
    agent.floor = TimeFloor::default();
    agent.call_ok(&bob(), "demo", T0);
}

#[test]
fn the_floor_only_moves_forward() {
    let mut floor = TimeFloor::default();
    assert!(floor.observe(T0));
    assert!(!floor.observe(T0.minus_ms(1)));
    assert!(!floor.observe(T0));
    assert_eq!(floor.effective(Timestamp(0)), T0);
    assert_eq!(floor.effective(T0.plus_ms(1)), T0.plus_ms(1));
}

// ---------------------------------------------------------------------------------------
// Revocations
// ---------------------------------------------------------------------------------------

#[test]
fn a_revocation_by_id_bites_even_when_it_arrived_first() {
    // The proxy delivered Alice's revocation before the grant it cancels (or withheld the
    // grant until after). Grant-id revocations ignore time: the grant is dead on arrival,
    // even though it claims to be issued later than the revocation.
    let mut agent = Agent::new();
    agent.revoke(&alice(), Target::Grant(gid(1)), T0.minus_ms(HOUR));
    agent.grants.push(roomy(1));
    assert_eq!(
        denied(agent.call(&bob(), "demo", T0)),
        Deny::Revoked {
            grant: gid(1),
            by: Target::Grant(gid(1))
        }
    );
    // Another grant is untouched.
    agent.grants.push(roomy(2));
    agent.call_ok(&bob(), "demo", T0);
}

#[test]
fn revoking_a_subject_for_a_mission_spares_other_missions_and_people() {
    let target = Target::SubjectMission(user(&bob()), mission("demo"));
    let sys = Grant {
        mission: mission("sys"),
        ..roomy(2)
    };
    let carols = Grant {
        subject: user(&carol()),
        ..roomy(3)
    };
    let mut agent = Agent::new().with_grants([roomy(1), sys, carols]);
    agent.revoke(&alice(), target.clone(), T0);
    assert_eq!(
        denied(agent.call(&bob(), "demo", T0)),
        Deny::Revoked {
            grant: gid(1),
            by: target
        }
    );
    agent.call_ok(&bob(), "sys", T0);
    agent.call_ok(&carol(), "demo", T0);
}

#[test]
fn revoke_all_then_grant_again() {
    // `wtd revoke bob --all` at T1, then `wtd grant bob ...`: the new grant is issued
    // after the revocation, so it works; everything issued up to T1 stays dead.
    let t1 = T0.plus_ms(HOUR);
    let target = Target::SubjectAll(user(&bob()));
    let old = roomy(1);
    let same_instant = Grant {
        issued_at: t1,
        ..roomy(2)
    };
    let new = Grant {
        issued_at: t1.plus_ms(1),
        ..roomy(3)
    };
    let mut agent = Agent::new().with_grants([old, same_instant]);
    agent.revoke(&alice(), target.clone(), t1);
    let why = agent.why(&bob(), "demo", t1);
    assert_eq!(
        why.grants,
        vec![
            (gid(1), GrantStatus::Revoked(target.clone())),
            (gid(2), GrantStatus::Revoked(target.clone()))
        ]
    );
    assert!(matches!(
        denied(agent.call(&bob(), "demo", t1)),
        Deny::Revoked { .. }
    ));
    agent.grants.push(new);
    assert_eq!(
        agent.call(&bob(), "demo", t1),
        Decision::Allow(Permit {
            issuer: owner(&alice()),
            grant: gid(3)
        })
    );
}

#[test]
fn only_a_grants_issuer_can_revoke_it() {
    // Mallory signs a revocation of Alice's grant. Whether or not the agent also obeys
    // Mallory, she cannot cancel what Alice granted.
    let mut agent = Agent::new().with_grants([roomy(1)]);
    agent.revoke(&mallory(), Target::Grant(gid(1)), T0);
    agent.revoke(&mallory(), Target::SubjectAll(user(&bob())), T0.plus_ms(HOUR));
    agent.revoke(
        &mallory(),
        Target::SubjectMission(user(&bob()), mission("demo")),
        T0.plus_ms(HOUR),
    );
    agent.call_ok(&bob(), "demo", T0);
    agent.owners.push(owner(&mallory()));
    agent.call_ok(&bob(), "demo", T0);
}

// ---------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------

#[test]
fn an_exhausted_burst_says_exactly_when_to_retry() {
    // 10 calls a minute with a burst of 2: one token every 6 s.
    let g = Grant {
        concurrency: 100,
        ..grant(&alice(), &bob(), "demo")
    };
    let id = g.id;
    let mut agent = Agent::new().with_grants([g]);
    agent.call_ok(&bob(), "demo", T0);
    agent.call_ok(&bob(), "demo", T0);
    assert_eq!(
        denied(agent.call(&bob(), "demo", T0)),
        Deny::RateLimited {
            grant: id,
            retry_after_ms: 6000
        }
    );
    assert_eq!(
        denied(agent.call(&bob(), "demo", T0.plus_ms(5999))),
        Deny::RateLimited {
            grant: id,
            retry_after_ms: 1
        }
    );
    agent.call_ok(&bob(), "demo", T0.plus_ms(6000));
    assert_eq!(
        denied(agent.call(&bob(), "demo", T0.plus_ms(6000))),
        Deny::RateLimited {
            grant: id,
            retry_after_ms: 6000
        }
    );
    // A long idle refills the bucket to the burst, and no further.
    let later = T0.plus_ms(HOUR);
    agent.call_ok(&bob(), "demo", later);
    agent.call_ok(&bob(), "demo", later);
    assert!(matches!(
        denied(agent.call(&bob(), "demo", later)),
        Deny::RateLimited { .. }
    ));
}

#[test]
fn refill_arithmetic_is_exact_when_the_rate_does_not_divide() {
    // 3 calls per 10 s: a token every 3333.33 ms, so a retry rounds up to 3334 ms. With a
    // burst of 2 the bucket never overflows below, so no fraction of a token may be lost
    // or invented: calling as soon as allowed, the calls land at 3334, 6667, 10000 and
    // 13334 ms, exactly three per 10 s.
    let g = Grant {
        rate: Rate {
            calls: 3,
            period_ms: 10_000,
        },
        burst: 2,
        concurrency: 100,
        ..roomy(1)
    };
    let mut agent = Agent::new().with_grants([g]);
    agent.call_ok(&bob(), "demo", T0);
    agent.call_ok(&bob(), "demo", T0);
    assert_eq!(
        denied(agent.call(&bob(), "demo", T0)),
        Deny::RateLimited {
            grant: gid(1),
            retry_after_ms: 3334
        }
    );
    assert_eq!(
        denied(agent.call(&bob(), "demo", T0.plus_ms(3333))),
        Deny::RateLimited {
            grant: gid(1),
            retry_after_ms: 1
        }
    );
    let mut allowed_at = Vec::new();
    for ms in 1..=13_334 {
        if let Decision::Allow(p) = agent.call(&bob(), "demo", T0.plus_ms(ms)) {
            agent.limits.release(p);
            allowed_at.push(ms);
        }
    }
    assert_eq!(allowed_at, [3334, 6667, 10_000, 13_334]);
}

#[test]
fn a_full_bucket_does_not_store_more_than_the_burst() {
    // With a burst of 1, tokens that arrive while the bucket is full are not kept: a
    // caller who waits longer than needed gains nothing.
    let g = Grant {
        rate: Rate {
            calls: 3,
            period_ms: 10_000,
        },
        burst: 1,
        concurrency: 100,
        ..roomy(1)
    };
    let mut agent = Agent::new().with_grants([g]);
    agent.call_ok(&bob(), "demo", T0);
    agent.call_ok(&bob(), "demo", T0.plus_ms(3335)); // 1/3 token past full: dropped
    assert_eq!(
        denied(agent.call(&bob(), "demo", T0.plus_ms(6668))),
        Deny::RateLimited {
            grant: gid(1),
            retry_after_ms: 1
        }
    );
    agent.call_ok(&bob(), "demo", T0.plus_ms(6669));
}

#[test]
fn the_concurrency_cap_holds_until_a_call_ends() {
    let g = Grant {
        concurrency: 2,
        ..roomy(1)
    };
    let mut agent = Agent::new().with_grants([g]);
    let first = allowed(agent.call(&bob(), "demo", T0));
    let second = allowed(agent.call(&bob(), "demo", T0));
    assert_eq!(agent.limits.in_flight(&owner(&alice()), &gid(1)), 2);
    assert_eq!(
        denied(agent.call(&bob(), "demo", T0)),
        Deny::AtConcurrencyLimit {
            grant: gid(1),
            limit: 2
        }
    );
    agent.limits.release(first);
    assert_eq!(agent.limits.in_flight(&owner(&alice()), &gid(1)), 1);
    let third = allowed(agent.call(&bob(), "demo", T0));
    agent.limits.release(second);
    agent.limits.release(third);
    assert_eq!(agent.limits.in_flight(&owner(&alice()), &gid(1)), 0);
}

#[test]
fn evaluate_takes_nothing() {
    // `wtd why` may be run any number of times without using up Bob's calls.
    let mut agent = Agent::new().with_grants([grant(&alice(), &bob(), "demo")]);
    for _ in 0..100 {
        let why = agent.why(&bob(), "demo", T0);
        assert_eq!(why.usable, Some(gid(0x61)));
        assert_eq!(why.deny, None);
    }
    assert_eq!(agent.limits.in_flight(&owner(&alice()), &gid(0x61)), 0);
    // The burst of 2 is all still there (and the permit is the only concurrency slot).
    agent.call_ok(&bob(), "demo", T0);
    agent.call_ok(&bob(), "demo", T0);
    assert!(matches!(
        denied(agent.call(&bob(), "demo", T0)),
        Deny::RateLimited { .. }
    ));
}

#[test]
fn when_one_grant_is_spent_another_is_used() {
    let tight = Grant { burst: 1, ..roomy(1) };
    let mut agent = Agent::new().with_grants([tight, roomy(2)]);
    assert_eq!(
        agent.call(&bob(), "demo", T0),
        Decision::Allow(Permit {
            issuer: owner(&alice()),
            grant: gid(1)
        })
    );
    assert_eq!(
        agent.call(&bob(), "demo", T0),
        Decision::Allow(Permit {
            issuer: owner(&alice()),
            grant: gid(2)
        })
    );
}

#[test]
fn retain_keeps_buckets_of_running_calls() {
    let mut agent = Agent::new().with_grants([roomy(1)]);
    let running = allowed(agent.call(&bob(), "demo", T0));
    // The grant is forgotten (revoked, expired) while a call under it still runs: its
    // slot must not vanish, or the release would be lost.
    agent.limits.retain(|_, _| false);
    assert_eq!(agent.limits.in_flight(&owner(&alice()), &gid(1)), 1);
    agent.limits.release(running);
    agent.limits.retain(|_, _| false);
    assert_eq!(agent.limits.in_flight(&owner(&alice()), &gid(1)), 0);
}

#[test]
fn a_grant_id_reused_by_someone_else_does_not_change_the_limits() {
    // Grant ids are chosen by whoever signs. Mallory (whom this agent does not obey)
    // copies the id of Bob's grant into a grant of her own with other limits, and gets it
    // into the agent's policy (say, in a ticket Bob imported). The agent must charge Alice's
    // grant, by Alice's rules, and never Mallory's.
    let alices = Grant {
        rate: Rate {
            calls: 1,
            period_ms: 1000,
        },
        burst: 1,
        concurrency: 10,
        ..roomy(1)
    };
    let mallorys = Grant {
        issuer: owner(&mallory()),
        rate: Rate {
            calls: 1,
            period_ms: HOUR,
        },
        ..alices.clone()
    };
    let mut agent = Agent::new().with_grants([mallorys, alices]);
    agent.call_ok(&bob(), "demo", T0);
    agent.call_ok(&bob(), "demo", T0.plus_ms(1000));
    assert_eq!(
        denied(agent.call(&bob(), "demo", T0.plus_ms(1000))),
        Deny::RateLimited {
            grant: gid(1),
            retry_after_ms: 1000
        }
    );
    agent.call_ok(&bob(), "demo", T0.plus_ms(2000));
}

#[test]
fn two_owners_grants_with_one_id_have_separate_buckets_and_slots() {
    // The Pi obeys Alice and Oscar. Each grants Bob `demo` and, by chance or on purpose
    // (ids are chosen by whoever signs, and travel in tickets), both pick the same id. Each
    // grant allows one call at a time and a burst of one. Were the limits keyed by id
    // alone, the two grants would share one bucket and one slot.
    let alices = Grant {
        burst: 1,
        concurrency: 1,
        ..roomy(1)
    };
    let oscars = Grant {
        issuer: owner(&oscar()),
        ..alices.clone()
    };
    let (a, o) = (owner(&alice()), owner(&oscar()));
    let mut agent = Agent::new().with_grants([alices.clone(), oscars.clone()]);
    agent.owners.push(o);

    // Draining Alice's bucket leaves Oscar's full: the next call runs under his grant.
    let under_alice = allowed(agent.call(&bob(), "demo", T0));
    assert_eq!((under_alice.issuer, under_alice.grant), (a, gid(1)));
    let under_oscar = allowed(agent.call(&bob(), "demo", T0));
    assert_eq!((under_oscar.issuer, under_oscar.grant), (o, gid(1)));
    assert_eq!(agent.limits.in_flight(&a, &gid(1)), 1);
    assert_eq!(agent.limits.in_flight(&o, &gid(1)), 1);

    // Releasing Oscar's call frees Oscar's slot, never Alice's.
    agent.limits.release(under_oscar);
    assert_eq!(agent.limits.in_flight(&a, &gid(1)), 1, "Alice's call still runs");
    assert_eq!(agent.limits.in_flight(&o, &gid(1)), 0);
    // Both buckets are empty now, and both refill on their own schedule.
    let later = T0.plus_ms(MINUTE);
    let again = allowed(agent.call(&bob(), "demo", later));
    assert_eq!(
        again.issuer, o,
        "Alice's grant is still at its concurrency limit, so Oscar's is used"
    );
    assert_eq!(
        denied(agent.call(&bob(), "demo", later)),
        Deny::AtConcurrencyLimit {
            grant: gid(1),
            limit: 1
        }
    );
    agent.limits.release(under_alice);
    agent.limits.release(again);

    // The other way round, with only one owner's grant known at a time: Oscar's caller
    // spending his grant's token leaves Alice's untouched.
    let mut agent = Agent::new().with_grants([oscars]);
    agent.owners.push(o);
    agent.call_ok(&bob(), "demo", T0);
    assert!(matches!(
        denied(agent.call(&bob(), "demo", T0)),
        Deny::RateLimited { .. }
    ));
    agent.grants = vec![alices];
    let fresh = allowed(agent.call(&bob(), "demo", T0));
    assert_eq!(fresh.issuer, a, "Alice's bucket was never touched");
    agent.limits.release(fresh);
}

// ---------------------------------------------------------------------------------------
// Which deny
// ---------------------------------------------------------------------------------------

#[test]
fn the_deny_reported_is_the_grant_closest_to_working() {
    // Bob holds five grants for `demo`, each broken in a different way. Peel off the one
    // closest to working, one at a time, and the reason reported moves down the ladder.
    let expired = Grant {
        not_before: T0.minus_ms(3 * HOUR),
        expires: T0.minus_ms(2 * HOUR),
        ..roomy(1)
    };
    let future = Grant {
        not_before: T0.plus_ms(HOUR),
        expires: T0.plus_ms(2 * HOUR),
        ..roomy(2)
    };
    let revoked = roomy(3);
    let elsewhere = Grant {
        audience: Audience::agents(vec![pi(2)]),
        ..roomy(4)
    };
    let foreign = Grant {
        issuer: owner(&mallory()),
        ..roomy(5)
    };
    let unadopted = Grant {
        issuer: owner(&carol()),
        ..roomy(6)
    };
    let all = [foreign, elsewhere, expired, revoked, future, unadopted];
    let ladder = [
        Deny::NotYetValid {
            grant: gid(2),
            in_ms: HOUR,
        },
        Deny::Revoked {
            grant: gid(3),
            by: Target::Grant(gid(3)),
        },
        Deny::Expired {
            grant: gid(1),
            ago_ms: 2 * HOUR,
        },
        Deny::NotForThisAgent { grant: gid(4) },
        Deny::NotAdopted {
            grant: gid(6),
            issuer: owner(&carol()),
            disowned: None,
        },
        Deny::IssuerNotOwner { grant: gid(5) },
        Deny::NoGrant,
    ];
    for (peeled, expected) in ladder.iter().enumerate() {
        let ids_left: Vec<_> = [2, 3, 1, 4, 6, 5][peeled..].iter().map(|&n| gid(n)).collect();
        let grants: Vec<Grant> = all.iter().filter(|g| ids_left.contains(&g.id)).cloned().collect();
        // The order grants are listed in must not matter.
        for order in [grants.clone(), grants.iter().rev().cloned().collect()] {
            let mut agent = Agent::new().with_grants(order);
            // Pi 1 obeys Carol too, but she has not adopted it.
            agent.owners.push(owner(&carol()));
            agent.not_adopted.push((owner(&carol()), None));
            agent.revoke(&alice(), Target::Grant(gid(3)), T0);
            assert_eq!(
                &denied(agent.call(&bob(), "demo", T0)),
                expected,
                "{peeled} peeled"
            );
        }
    }
}

#[test]
fn limits_rank_above_every_other_reason() {
    // A grant that is merely busy or out of tokens is closer to working than any grant
    // that is invalid: "wait 6 s" beats "ask Alice for a new grant".
    let expired = Grant {
        not_before: T0.minus_ms(3 * HOUR),
        expires: T0.minus_ms(2 * HOUR),
        ..roomy(1)
    };
    let future = Grant {
        not_before: T0.plus_ms(HOUR),
        ..roomy(2)
    };
    let busy = Grant {
        concurrency: 1,
        ..roomy(3)
    };
    let spent = Grant {
        burst: 1,
        concurrency: 100,
        ..roomy(4)
    };
    let mut agent = Agent::new().with_grants([busy.clone()]);
    let running = allowed(agent.call(&bob(), "demo", T0));
    agent.grants = vec![expired.clone(), future.clone(), busy.clone()];
    assert_eq!(
        denied(agent.call(&bob(), "demo", T0)),
        Deny::AtConcurrencyLimit {
            grant: gid(3),
            limit: 1
        }
    );
    agent.grants.push(spent.clone());
    agent.call_ok(&bob(), "demo", T0); // uses `spent`'s only token
    let deny = denied(agent.call(&bob(), "demo", T0));
    assert!(
        matches!(deny, Deny::RateLimited { grant, .. } if grant == gid(4)),
        "{deny:?}"
    );
    // `wtd why` lists every grant with its own reason, in policy order.
    let why = agent.why(&bob(), "demo", T0);
    assert_eq!(
        why.grants,
        vec![
            (gid(1), GrantStatus::Expired { ago_ms: 2 * HOUR }),
            (gid(2), GrantStatus::NotYetValid { in_ms: HOUR }),
            (gid(3), GrantStatus::AtConcurrencyLimit { limit: 1 }),
            (gid(4), GrantStatus::RateLimited { retry_after_ms: 6000 }),
        ]
    );
    assert_eq!(why.usable, None);
    agent.limits.release(running);
}

// ---------------------------------------------------------------------------------------
// Lessons: a class granted together, expiring together, revoked in one record
// ---------------------------------------------------------------------------------------

/// Alice's lesson: one grant each for Bob, Carol and Oscar, ids 1 to 3, all with one expiry.
fn class_of_three(expires: Timestamp) -> Vec<Grant> {
    [bob(), carol(), oscar()]
        .iter()
        .enumerate()
        .map(|(i, student)| Grant {
            id: gid(i as u8 + 1),
            expires,
            burst: 1000,
            concurrency: 1000,
            ..grant(&alice(), student, "demo")
        })
        .collect()
}

#[test]
fn a_class_expires_together_on_the_clock() {
    let end = T0.plus_ms(45 * MINUTE);
    let mut agent = Agent::new().with_grants(class_of_three(end));
    // The last instant the skew still allows: everyone in; one millisecond later: everyone out.
    let last = end.plus_ms(CLOCK_SKEW_MS - 1);
    for s in [bob(), carol(), oscar()] {
        agent.call_ok(&s, "demo", last);
    }
    for s in [bob(), carol(), oscar()] {
        assert!(matches!(
            denied(agent.call(&s, "demo", last.plus_ms(1))),
            Deny::Expired { .. }
        ));
    }
}

#[test]
fn one_set_revocation_ends_the_whole_lesson_and_nothing_else() {
    let lesson = Target::Grants {
        label: "roster-2026-12-03".into(),
        grants: vec![gid(1), gid(2), gid(3)],
    };
    // Bob also holds an older grant outside the lesson (id 9); it survives.
    let outside = Grant {
        id: gid(9),
        mission: mission("sys"),
        ..roomy(9)
    };
    let mut agent = Agent::new().with_grants(class_of_three(T0.plus_ms(HOUR)));
    agent.grants.push(outside);
    agent.revoke(&alice(), lesson.clone(), T0);
    for s in [bob(), carol(), oscar()] {
        assert!(matches!(
            denied(agent.call(&s, "demo", T0.plus_ms(MINUTE))),
            Deny::Revoked { .. }
        ));
    }
    assert!(agent
        .why(&carol(), "demo", T0)
        .grants
        .contains(&(gid(2), GrantStatus::Revoked(lesson.clone()))));
    agent.call_ok(&bob(), "sys", T0.plus_ms(MINUTE));
    // Mallory's copy of the same set, even from an owner the agent obeys, ends nothing of Alice's.
    let mut other = Agent::new().with_grants(class_of_three(T0.plus_ms(HOUR)));
    other.owners.push(owner(&mallory()));
    other.revoke(&mallory(), lesson, T0);
    other.call_ok(&carol(), "demo", T0.plus_ms(MINUTE));
}
