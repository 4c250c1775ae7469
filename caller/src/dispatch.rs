//! Choosing agents for a call, from the roster: pure, so every rule is unit-tested.
//!
//! Candidates are the online agents that offer the function *and* whose owners granted
//! this caller the mission: a grant the caller holds, issued by an owner the agent names
//! *and whose verified log adopts that agent* (both sides agree it is hers, see
//! `wtd_keys::adoption`), covering that agent. An agent that only claims an owner is never
//! a candidate for her grants, so Bob's arguments never reach Mallory's machine because it
//! says it is Alice's. The selector orders them; the caller tries them in order, moving on
//! only when that is safe (see `cmd::call`). An owner's own agents (named by them and
//! adopted in her log) are candidates for every mission they offer, without a grant.

use wtd_keys::{
    AdoptionBook, AgentId, FunctionName, Grant, MissionName, OwnerKey, PublicId, Timestamp, UserKey,
};
use wtd_wire::AgentInfo;

/// How to pick among candidates (Nanite's selectors, plus one for hot Pis).
///
/// A Pi that reports it is throttled *now* (too hot, or a weak power supply; the low bits
/// of its `get_throttled` word) runs everything slower. `LeastLoaded` and `Coolest` put
/// such agents after every unthrottled one: they are used only when no unthrottled agent
/// can serve (or as the last retries). Random, round-robin and all ignore temperature, as
/// asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selector {
    /// Lowest reported load first (the default), throttled agents last.
    LeastLoaded,
    Random,
    /// The next agent after the one used last time.
    RoundRobin,
    /// Every candidate, results gathered.
    All,
    /// Lowest reported temperature first, throttled agents last. Agents that report no
    /// temperature (laptops, VMs) come after those that do: nothing says they are cool.
    /// Ties go to the less loaded.
    Coolest,
}

/// Narrowing the candidates down.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only agents with this tag.
    pub tag: Option<String>,
    /// Only this agent: its name, or its id (or a prefix of the id, as `wtd ls` shows it).
    pub agent: Option<String>,
}

/// An agent a call may go to.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub id: AgentId,
    pub name: String,
    pub load: f32,
    pub cpu: f32,
    /// Its SoC temperature, if it reports one (a Pi does).
    pub temperature_c: Option<f32>,
    /// Slowed down right now by heat or power ([`wtd_wire::Load::throttled_now`]).
    pub throttled: bool,
    /// Safe to retry elsewhere if this agent vanishes mid-call.
    pub idempotent: bool,
}

/// Why there is no candidate, for an error the user can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoCandidate {
    /// No online agent offers the function at all.
    NobodyOffers,
    /// Some do, but the filter (tag, agent) excludes them all.
    Filtered,
    /// Some do, but none of their owners granted this caller the mission.
    NotGranted { owners: Vec<PublicId> },
    /// Some agents claim an owner who granted this caller the mission, but her log does not
    /// adopt them (never did, or disowned them at `disowned`): they are not hers, so her
    /// grant is not used on them.
    NotAdopted { agents: Vec<Unadopted> },
}

/// An agent that claims an owner whose log does not adopt it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unadopted {
    pub name: String,
    pub id: AgentId,
    pub owner: OwnerKey,
    /// When she disowned it, if she did.
    pub disowned: Option<Timestamp>,
}

/// The candidates for `mission/function`, unordered. `adoptions` holds the verified logs of
/// the grants' issuers (the caller fetches them from the proxy and checks every entry).
pub fn candidates(
    roster: &[AgentInfo],
    me: &UserKey,
    grants: &[&Grant],
    adoptions: &AdoptionBook,
    mission: &MissionName,
    function: &FunctionName,
    filter: &Filter,
) -> Result<Vec<Candidate>, NoCandidate> {
    let offering: Vec<(&AgentInfo, bool)> = roster
        .iter()
        .filter_map(|a| {
            let m = a.advert.missions.iter().find(|m| m.name == mission.as_str())?;
            let f = m.functions.iter().find(|f| f.name == function.as_str())?;
            Some((a, f.idempotent))
        })
        .collect();
    if offering.is_empty() {
        return Err(NoCandidate::NobodyOffers);
    }
    let filtered: Vec<(&AgentInfo, bool, AgentId)> = offering
        .into_iter()
        .filter_map(|(a, idem)| Some((a, idem, AgentId(a.id.parse().ok()?))))
        .filter(|(a, _, id)| {
            filter.tag.as_ref().is_none_or(|t| a.advert.tags.contains(t))
                && filter
                    .agent
                    .as_ref()
                    .is_none_or(|want| a.advert.name == *want || id.to_string().starts_with(want.as_str()))
        })
        .collect();
    if filtered.is_empty() {
        return Err(NoCandidate::Filtered);
    }
    let mut owners_seen = Vec::new();
    let mut unadopted = Vec::new();
    let granted: Vec<Candidate> = filtered
        .into_iter()
        .filter(|(a, _, id)| {
            let owners: Vec<OwnerKey> = a.advert.claimed_owners().collect();
            owners_seen.extend(owners.iter().map(|o| *o.key()));
            let claimed_grants = grants.iter().filter(|g| {
                g.subject == *me
                    && g.mission == *mission
                    && owners.contains(&g.issuer)
                    && g.audience.covers(id)
            });
            // My own agent (I am an owner it names, and my log adopts it): no grant needed.
            let me_owner = OwnerKey(*me.key());
            let mut usable = owners.contains(&me_owner) && adoptions.adopts(&me_owner, id);
            for g in claimed_grants {
                match adoptions.status(&g.issuer, id) {
                    wtd_keys::adoption::Status::Adopted { .. } => usable = true,
                    wtd_keys::adoption::Status::Never => {
                        unadopted.push((a.advert.name.clone(), *id, g.issuer, None))
                    }
                    wtd_keys::adoption::Status::Disowned { at } => {
                        unadopted.push((a.advert.name.clone(), *id, g.issuer, Some(at)))
                    }
                }
            }
            usable
        })
        .map(|(a, idempotent, id)| Candidate {
            id,
            name: a.advert.name.clone(),
            load: a.load.load1,
            cpu: a.load.cpu_percent,
            // A NaN or absurd reading is no reading: it must not sort first.
            temperature_c: a.load.temperature_c.filter(|t| t.is_finite()),
            throttled: a.load.throttled_now(),
            idempotent,
        })
        .collect();
    if granted.is_empty() {
        if !unadopted.is_empty() {
            unadopted.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
            unadopted.dedup_by(|a, b| a.1 == b.1 && a.2 == b.2);
            let agents = unadopted
                .into_iter()
                .map(|(name, id, owner, disowned)| Unadopted {
                    name,
                    id,
                    owner,
                    disowned,
                })
                .collect();
            return Err(NoCandidate::NotAdopted { agents });
        }
        owners_seen.sort();
        owners_seen.dedup();
        return Err(NoCandidate::NotGranted { owners: owners_seen });
    }
    Ok(granted)
}

/// Orders candidates for `selector`. `turn` is the round-robin counter; `random` a random
/// number (both passed in, so this stays pure).
pub fn order(mut cands: Vec<Candidate>, selector: Selector, turn: u64, random: u64) -> Vec<Candidate> {
    // A stable base order, so round-robin and ties are deterministic.
    cands.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    let n = cands.len();
    if n == 0 {
        return cands;
    }
    match selector {
        Selector::LeastLoaded => {
            cands.sort_by(|a, b| {
                a.throttled
                    .cmp(&b.throttled)
                    .then(a.load.total_cmp(&b.load))
                    .then(a.cpu.total_cmp(&b.cpu))
            });
        }
        Selector::Coolest => {
            // `None` sorts after every reading: (false, t) < (true, _).
            let temp = |c: &Candidate| (c.temperature_c.is_none(), c.temperature_c.unwrap_or(0.0));
            cands.sort_by(|a, b| {
                let (ta, tb) = (temp(a), temp(b));
                a.throttled
                    .cmp(&b.throttled)
                    .then(ta.0.cmp(&tb.0))
                    .then(ta.1.total_cmp(&tb.1))
                    .then(a.load.total_cmp(&b.load))
            });
        }
        Selector::RoundRobin => cands.rotate_left((turn % n as u64) as usize),
        Selector::Random => {
            // Fisher-Yates with a small xorshift seeded by `random`.
            let mut x = random | 1;
            for i in (1..n).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                cands.swap(i, (x % (i as u64 + 1)) as usize);
            }
        }
        Selector::All => {}
    }
    cands
}

#[cfg(test)]
mod tests {
    use super::*;
    use wtd_keys::{Audience, GrantId, Rate, SecretKey, Timestamp};
    use wtd_wire::{Advert, FunctionInfo, Key, Load, MissionInfo};

    fn key(n: u8) -> PublicId {
        SecretKey::from_seed(&[n; 32]).public()
    }

    fn agent(n: u8, owner: u8, load: f32, tags: &[&str], idempotent: bool) -> AgentInfo {
        AgentInfo {
            id: Key::from(key(100 + n)),
            advert: Advert {
                name: format!("pi-{n}"),
                owners: vec![Key::from(key(owner))],
                missions: vec![MissionInfo {
                    name: "demo".into(),
                    version: "1".into(),
                    description: String::new(),
                    functions: vec![FunctionInfo {
                        name: "echo".into(),
                        description: String::new(),
                        idempotent,
                    }],
                }],
                tags: tags.iter().map(|t| t.to_string()).collect(),
                model: None,
                software: String::new(),
                warnings: vec![],
                enrollment: None,
            },
            load: Load {
                load1: load,
                ..Default::default()
            },
            last_seen_ms: 0,
        }
    }

    fn grant(owner: u8, me: u8, audience: Audience) -> Grant {
        Grant {
            id: GrantId([owner; 16]),
            issuer: OwnerKey(key(owner)),
            subject: UserKey(key(me)),
            audience,
            mission: "demo".parse().unwrap(),
            rate: Rate {
                calls: 1,
                period_ms: 1000,
            },
            burst: 1,
            concurrency: 1,
            not_before: Timestamp(0),
            expires: Timestamp(1),
            issued_at: Timestamp(0),
        }
    }

    /// Owner `owner` adopted Pis `agents` (the roster's `100 + n` keys).
    fn book(owner: u8, agents: &[u8]) -> AdoptionBook {
        let mut b = AdoptionBook::new();
        for n in agents {
            b.add(&wtd_keys::Adoption {
                issuer: OwnerKey(key(owner)),
                agent: AgentId(key(100 + n)),
                action: wtd_keys::Action::Adopt,
                token: None,
                issued_at: Timestamp(0),
            });
        }
        b
    }

    fn names(c: &[Candidate]) -> Vec<&str> {
        c.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn only_agents_whose_owner_granted_me_are_candidates() {
        let roster = vec![
            agent(1, 1, 0.5, &[], true),
            agent(2, 2, 0.1, &[], true),
            agent(3, 1, 0.9, &["lab"], true),
        ];
        let me = UserKey(key(50));
        let g = grant(1, 50, Audience::AllAgents);
        let b = book(1, &[1, 3]);
        let (m, f) = ("demo".parse().unwrap(), "echo".parse().unwrap());
        let c = candidates(&roster, &me, &[&g], &b, &m, &f, &Filter::default()).unwrap();
        assert_eq!(names(&order(c, Selector::LeastLoaded, 0, 0)), ["pi-1", "pi-3"]);

        // A grant for someone else, or from a stranger, gives nothing.
        let other = grant(1, 51, Audience::AllAgents);
        let stranger = grant(9, 50, Audience::AllAgents);
        assert!(matches!(
            candidates(&roster, &me, &[&other, &stranger], &b, &m, &f, &Filter::default()),
            Err(NoCandidate::NotGranted { .. })
        ));
        // An audience limits it to the agents it names.
        let only3 = grant(1, 50, Audience::agents(vec![AgentId(key(103))]));
        let c = candidates(&roster, &me, &[&only3], &b, &m, &f, &Filter::default()).unwrap();
        assert_eq!(names(&c), ["pi-3"]);
        // Filters.
        let tag = Filter {
            tag: Some("lab".into()),
            agent: None,
        };
        assert_eq!(
            names(&candidates(&roster, &me, &[&g], &b, &m, &f, &tag).unwrap()),
            ["pi-3"]
        );
        let by_name = Filter {
            tag: None,
            agent: Some("pi-1".into()),
        };
        assert_eq!(
            names(&candidates(&roster, &me, &[&g], &b, &m, &f, &by_name).unwrap()),
            ["pi-1"]
        );
        let by_id = Filter {
            tag: None,
            agent: Some(key(103).short()),
        };
        assert_eq!(
            names(&candidates(&roster, &me, &[&g], &b, &m, &f, &by_id).unwrap()),
            ["pi-3"]
        );
        let none = Filter {
            tag: Some("nope".into()),
            agent: None,
        };
        assert_eq!(
            candidates(&roster, &me, &[&g], &b, &m, &f, &none),
            Err(NoCandidate::Filtered)
        );
        let nobody: FunctionName = "nope".parse().unwrap();
        assert_eq!(
            candidates(&roster, &me, &[&g], &b, &m, &nobody, &Filter::default()),
            Err(NoCandidate::NobodyOffers)
        );
    }

    #[test]
    fn an_agent_that_only_claims_the_issuer_is_never_a_candidate() {
        // pi-1 is Alice's (owner 1) and adopted; pi-2 (Mallory's machine) claims owner 1 too.
        let roster = vec![agent(1, 1, 0.9, &[], true), agent(2, 1, 0.1, &[], true)];
        let me = UserKey(key(50));
        let g = grant(1, 50, Audience::AllAgents);
        let (m, f) = ("demo".parse().unwrap(), "echo".parse().unwrap());
        let b = book(1, &[1]);
        let c = candidates(&roster, &me, &[&g], &b, &m, &f, &Filter::default()).unwrap();
        assert_eq!(names(&c), ["pi-1"], "never the least-loaded impostor");
        let only2 = Filter {
            tag: None,
            agent: Some("pi-2".into()),
        };
        let Err(NoCandidate::NotAdopted { agents }) = candidates(&roster, &me, &[&g], &b, &m, &f, &only2)
        else {
            panic!("pi-2 must be refused as not adopted");
        };
        assert_eq!(agents.len(), 1);
        assert_eq!((agents[0].name.as_str(), agents[0].disowned), ("pi-2", None));
        // Disowned: said so, with when.
        let mut b = book(1, &[1, 2]);
        b.add(&wtd_keys::Adoption {
            issuer: OwnerKey(key(1)),
            agent: AgentId(key(101)),
            action: wtd_keys::Action::Disown,
            token: None,
            issued_at: Timestamp(7),
        });
        let only1 = Filter {
            tag: None,
            agent: Some("pi-1".into()),
        };
        let Err(NoCandidate::NotAdopted { agents }) = candidates(&roster, &me, &[&g], &b, &m, &f, &only1)
        else {
            panic!("pi-1 was disowned");
        };
        assert_eq!(agents[0].disowned, Some(Timestamp(7)));
        // The owner herself calls both of her agents without a grant, but not the impostor.
        let alice = UserKey(key(1));
        let b = book(1, &[1]);
        let c = candidates(&roster, &alice, &[], &b, &m, &f, &Filter::default()).unwrap();
        assert_eq!(names(&c), ["pi-1"]);
        // An adoption by someone else than the grant's issuer does not count.
        let b = book(9, &[1, 2]);
        assert!(matches!(
            candidates(&roster, &me, &[&g], &b, &m, &f, &Filter::default()),
            Err(NoCandidate::NotAdopted { .. })
        ));
    }

    #[test]
    fn selectors_order_candidates() {
        let c = |n: u8, load: f32| Candidate {
            id: AgentId(key(100 + n)),
            name: format!("pi-{n}"),
            load,
            cpu: 0.0,
            temperature_c: None,
            throttled: false,
            idempotent: true,
        };
        let all = vec![c(1, 0.7), c(2, 0.2), c(3, 0.5)];
        assert_eq!(
            names(&order(all.clone(), Selector::LeastLoaded, 0, 0)),
            ["pi-2", "pi-3", "pi-1"]
        );
        assert_eq!(
            names(&order(all.clone(), Selector::RoundRobin, 0, 0)),
            ["pi-1", "pi-2", "pi-3"]
        );
        assert_eq!(
            names(&order(all.clone(), Selector::RoundRobin, 1, 0)),
            ["pi-2", "pi-3", "pi-1"]
        );
        assert_eq!(
            names(&order(all.clone(), Selector::RoundRobin, 5, 0)),
            ["pi-3", "pi-1", "pi-2"]
        );
        let mut seen = std::collections::HashSet::new();
        for r in 0..50 {
            let o = order(all.clone(), Selector::Random, 0, r * 7919 + 1);
            assert_eq!(o.len(), 3);
            seen.insert(o[0].name.clone());
        }
        assert_eq!(seen.len(), 3, "random picks each agent first sometimes");
        assert_eq!(order(all, Selector::All, 0, 0).len(), 3);
    }

    fn hot(n: u8, load: f32, temp: Option<f32>, throttled: bool) -> Candidate {
        Candidate {
            id: AgentId(key(100 + n)),
            name: format!("pi-{n}"),
            load,
            cpu: 0.0,
            temperature_c: temp,
            throttled,
            idempotent: true,
        }
    }

    #[test]
    fn least_loaded_skips_throttled_agents_while_others_can_serve() {
        // pi-1 is idle but throttled; pi-2 and pi-3 are busier but run at full speed.
        let all = vec![
            hot(1, 0.1, Some(85.0), true),
            hot(2, 0.8, Some(50.0), false),
            hot(3, 0.4, None, false),
        ];
        assert_eq!(
            names(&order(all.clone(), Selector::LeastLoaded, 0, 0)),
            ["pi-3", "pi-2", "pi-1"],
            "the throttled one only as the last resort"
        );
        // Only throttled agents: still served, least loaded first.
        let only_hot = vec![hot(1, 0.9, Some(85.0), true), hot(2, 0.2, Some(86.0), true)];
        assert_eq!(
            names(&order(only_hot, Selector::LeastLoaded, 0, 0)),
            ["pi-2", "pi-1"]
        );
        // Random, round-robin and all do not look at temperature.
        assert_eq!(
            names(&order(all.clone(), Selector::RoundRobin, 0, 0)),
            ["pi-1", "pi-2", "pi-3"]
        );
        assert_eq!(order(all, Selector::All, 0, 0).len(), 3);
    }

    #[test]
    fn coolest_orders_by_temperature_throttled_and_unknown_last() {
        let all = vec![
            hot(1, 0.1, Some(70.0), false),
            hot(2, 0.9, Some(45.5), false),
            hot(3, 0.0, Some(30.0), true),
            hot(4, 0.0, None, false),
            hot(5, 0.5, Some(45.5), false),
        ];
        assert_eq!(
            names(&order(all, Selector::Coolest, 0, 0)),
            // 45.5 twice: the less loaded first. No reading after every reading; a throttled
            // Pi after all (it is slow now, however cool its sensor says it is).
            ["pi-5", "pi-2", "pi-1", "pi-4", "pi-3"]
        );
    }

    #[test]
    fn candidates_carry_temperature_and_throttling_from_the_load_report() {
        let mut a = agent(1, 1, 0.2, &[], true);
        a.load.temperature_c = Some(81.0);
        a.load.throttled = Some(0x50005); // under-voltage and throttled now
        let mut b = agent(2, 1, 0.3, &[], true);
        b.load.temperature_c = Some(f32::NAN);
        b.load.throttled = Some(0x50000); // only "has happened since boot": fine now
        let me = UserKey(key(50));
        let g = grant(1, 50, Audience::AllAgents);
        let book = book(1, &[1, 2]);
        let (m, f) = ("demo".parse().unwrap(), "echo".parse().unwrap());
        let c = candidates(&[a, b], &me, &[&g], &book, &m, &f, &Filter::default()).unwrap();
        let c1 = c.iter().find(|c| c.name == "pi-1").unwrap();
        let c2 = c.iter().find(|c| c.name == "pi-2").unwrap();
        assert_eq!((c1.temperature_c, c1.throttled), (Some(81.0), true));
        assert_eq!(
            (c2.temperature_c, c2.throttled),
            (None, false),
            "NaN is no reading"
        );
        assert_eq!(names(&order(c, Selector::LeastLoaded, 0, 0)), ["pi-2", "pi-1"]);
    }
}
