//! Signed event logs: every rejecting branch of decoding, chaining and causal order.

use wtd_keys::event::{
    normalize_deps, Accepted, CausalError, CausalOrder, Chain, ChainError, Dep, Event, EventHash, EventLog,
    LogId, SignedEvent,
};
use wtd_keys::{AgentId, MissionName, SecretKey, Timestamp, TopicName};

fn key(n: u8) -> SecretKey {
    SecretKey::from_seed(&[n; 32])
}

fn log_of(k: &SecretKey, mission: &str) -> LogId {
    LogId {
        publisher: AgentId(k.public()),
        mission: MissionName::new(mission).unwrap(),
    }
}

/// `n` events of `mission` published by `k`, chained, with `deps` on the first.
fn events(k: &SecretKey, mission: &str, n: u64, deps: Vec<Dep>) -> Vec<SignedEvent> {
    let mut log = EventLog::new(log_of(k, mission));
    (1..=n)
        .map(|i| {
            let d = if i == 1 { deps.clone() } else { Vec::new() };
            let e = log
                .next(
                    k,
                    Timestamp(1_900_000_000_000 + i),
                    TopicName::new("t").unwrap(),
                    format!("{{\"n\":{i}}}"),
                    d,
                )
                .unwrap();
            log.appended(&e);
            e
        })
        .collect()
}

#[test]
fn an_event_round_trips_and_names_its_log_seq_and_deps() {
    let a = key(1);
    let b = key(2);
    let dep = Dep {
        log: log_of(&b, "social"),
        seq: 7,
    };
    let e = &events(&a, "photos", 1, vec![dep.clone()])[0];
    let back = SignedEvent::decode(e.bytes()).unwrap();
    assert_eq!(back, *e);
    assert_eq!(back.event().deps, vec![dep]);
    assert_eq!(back.event().seq, 1);
    assert_eq!(back.event().prev, EventHash::default());
}

#[test]
fn any_changed_byte_is_refused() {
    let e = &events(&key(1), "photos", 1, Vec::new())[0];
    for i in 0..e.bytes().len() {
        let mut b = e.bytes().to_vec();
        b[i] ^= 0x01;
        assert!(
            SignedEvent::decode(&b).is_err(),
            "byte {i} changed and still accepted"
        );
    }
}

#[test]
fn a_signature_by_anyone_but_the_publisher_is_refused() {
    let a = key(1);
    let e = &events(&a, "photos", 1, Vec::new())[0];
    // Put another agent's key in the publisher field, keeping a's signature.
    let mut b = e.bytes().to_vec();
    let other = key(3).public();
    let at = b.windows(32).position(|w| w == a.public().as_bytes()).unwrap();
    b[at..at + 32].copy_from_slice(other.as_bytes());
    let err = SignedEvent::decode(&b).unwrap_err();
    assert!(err.to_string().contains("signature"), "{err}");
}

#[test]
fn bad_values_are_refused_when_signing() {
    let a = key(1);
    let log = log_of(&a, "photos");
    let base = Event {
        log: log.clone(),
        seq: 1,
        prev: EventHash::default(),
        at: Timestamp(1),
        topic: TopicName::new("t").unwrap(),
        body: "{}".into(),
        deps: Vec::new(),
    };
    let seq0 = Event {
        seq: 0,
        ..base.clone()
    };
    assert!(SignedEvent::sign(seq0, &a)
        .unwrap_err()
        .to_string()
        .contains("seq"));
    let big = Event {
        body: "x".repeat(wtd_keys::defaults::MAX_EVENT_BODY + 1),
        ..base.clone()
    };
    assert!(SignedEvent::sign(big, &a)
        .unwrap_err()
        .to_string()
        .contains("body"));
    let b = log_of(&key(2), "social");
    let c = log_of(&key(3), "social");
    let (lo, hi) = if b < c { (b, c) } else { (c, b) };
    let unsorted = Event {
        deps: vec![Dep { log: hi, seq: 1 }, Dep { log: lo, seq: 1 }],
        ..base.clone()
    };
    assert!(SignedEvent::sign(unsorted, &a)
        .unwrap_err()
        .to_string()
        .contains("deps"));
    let on_itself = Event {
        deps: vec![Dep { log, seq: 1 }],
        ..base.clone()
    };
    assert!(SignedEvent::sign(on_itself, &a)
        .unwrap_err()
        .to_string()
        .contains("deps"));
    let too_many = Event {
        deps: (0..=wtd_keys::defaults::MAX_EVENT_DEPS as u8)
            .map(|n| Dep {
                log: log_of(&key(10 + n), "m"),
                seq: 1,
            })
            .collect(),
        ..base
    };
    let mut too_many = too_many;
    too_many.deps = normalize_deps(&too_many.log, too_many.deps.clone());
    assert!(SignedEvent::sign(too_many, &a)
        .unwrap_err()
        .to_string()
        .contains("deps"));
}

#[test]
fn normalized_deps_keep_the_highest_seq_per_log_and_skip_the_own_log() {
    let own = log_of(&key(1), "photos");
    let other = log_of(&key(2), "social");
    let deps = normalize_deps(
        &own,
        [
            Dep {
                log: other.clone(),
                seq: 3,
            },
            Dep {
                log: other.clone(),
                seq: 5,
            },
            Dep {
                log: own.clone(),
                seq: 9,
            },
        ],
    );
    assert_eq!(deps, vec![Dep { log: other, seq: 5 }]);
}

#[test]
fn a_chain_takes_events_in_order_and_skips_replays() {
    let e = events(&key(1), "photos", 3, Vec::new());
    let mut chain = Chain::new();
    for x in &e {
        assert_eq!(chain.accept(x).unwrap(), Accepted::Next);
    }
    assert_eq!(
        chain.accept(&e[1]).unwrap(),
        Accepted::Duplicate,
        "a replay is skipped"
    );
    assert_eq!(chain.head(&e[0].event().log).unwrap().seq, 3);
}

#[test]
fn a_dropped_event_is_a_gap() {
    let e = events(&key(1), "photos", 3, Vec::new());
    let mut chain = Chain::new();
    chain.accept(&e[0]).unwrap();
    let err = chain.accept(&e[2]).unwrap_err();
    assert!(
        matches!(
            err,
            ChainError::Gap {
                expected: 2,
                found: 3,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("dropped"), "{err}");
}

#[test]
fn a_missing_first_event_is_a_gap_too() {
    let e = events(&key(1), "photos", 2, Vec::new());
    let err = Chain::new().accept(&e[1]).unwrap_err();
    assert!(
        matches!(
            err,
            ChainError::Gap {
                expected: 1,
                found: 2,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn an_event_of_another_branch_does_not_chain() {
    // Two logs with the same id but different contents: the publisher's key signed both
    // (a restored backup), so only the chain can tell.
    let a = key(1);
    let first = events(&a, "photos", 2, Vec::new());
    let mut other = EventLog::new(log_of(&a, "photos"));
    let x = other
        .next(
            &a,
            Timestamp(5),
            TopicName::new("other").unwrap(),
            "{}".into(),
            Vec::new(),
        )
        .unwrap();
    other.appended(&x);
    let y = other
        .next(
            &a,
            Timestamp(6),
            TopicName::new("other").unwrap(),
            "{}".into(),
            Vec::new(),
        )
        .unwrap();
    let mut chain = Chain::new();
    chain.accept(&first[0]).unwrap();
    let err = chain.accept(&y).unwrap_err();
    assert!(matches!(err, ChainError::BrokenChain { seq: 2, .. }), "{err}");
    // And an older event that differs from the one seen is a reorder or fork.
    chain.accept(&first[1]).unwrap();
    let err = chain.accept(&x).unwrap_err();
    assert!(
        matches!(err, ChainError::Reordered { seq: 1, head: 2, .. }),
        "{err}"
    );
}

#[test]
fn a_reader_started_in_the_middle_takes_the_next_event_on_its_signature() {
    let e = events(&key(1), "photos", 5, Vec::new());
    let mut chain = Chain::new();
    chain.start_at(e[0].event().log.clone(), 3, None);
    assert_eq!(chain.accept(&e[3]).unwrap(), Accepted::Next);
    assert!(chain.accept(&e[4]).is_ok());
    let mut chain = Chain::new();
    chain.start_at(e[0].event().log.clone(), 3, None);
    assert!(matches!(chain.accept(&e[4]), Err(ChainError::Gap { .. })));
    // With the hash known, the first event must chain to it.
    let mut chain = Chain::new();
    chain.start_at(e[0].event().log.clone(), 3, Some(e[1].hash()));
    assert!(matches!(chain.accept(&e[3]), Err(ChainError::BrokenChain { .. })));
}

#[test]
fn a_stored_log_reopens_and_an_edited_one_is_refused() {
    let a = key(1);
    let e = events(&a, "photos", 4, Vec::new());
    let bytes: Vec<&[u8]> = e.iter().map(|x| x.bytes()).collect();
    let log = EventLog::reopen(log_of(&a, "photos"), &bytes).unwrap();
    assert_eq!(log.head(), (4, e[3].hash()));
    // Trimmed at the start: still fine.
    let log = EventLog::reopen(log_of(&a, "photos"), &bytes[2..]).unwrap();
    assert_eq!(log.head().0, 4);
    // A missing middle event, another mission's log, or a changed byte: refused.
    let gap = [bytes[0], bytes[2]];
    assert_eq!(EventLog::reopen(log_of(&a, "photos"), &gap).unwrap_err().index, 1);
    assert!(EventLog::reopen(log_of(&a, "social"), &bytes).is_err());
    let mut changed = bytes[1].to_vec();
    changed[10] ^= 1;
    let edited = [bytes[0], &changed[..]];
    assert_eq!(
        EventLog::reopen(log_of(&a, "photos"), &edited).unwrap_err().index,
        1
    );
}

#[test]
fn causal_order_holds_an_event_until_what_it_depends_on_is_delivered() {
    let social = key(1);
    let photos = key(2);
    let unfriend = events(&social, "social", 1, Vec::new()).remove(0);
    let posted = events(&photos, "photos", 2, vec![unfriend.as_dep()]);
    let mut order = CausalOrder::new(|_| true);
    assert!(
        order.offer(posted[0].clone()).unwrap().is_empty(),
        "held: its dep has not come"
    );
    assert!(
        order.offer(posted[1].clone()).unwrap().is_empty(),
        "held behind its own log's earlier event"
    );
    assert_eq!(order.first_missing(), Some(unfriend.as_dep()));
    let out = order.offer(unfriend.clone()).unwrap();
    let seqs: Vec<(String, u64)> = out
        .iter()
        .map(|e| (e.event().log.mission.to_string(), e.event().seq))
        .collect();
    assert_eq!(
        seqs,
        vec![("social".into(), 1), ("photos".into(), 1), ("photos".into(), 2)]
    );
    assert_eq!(order.held(), 0);
}

#[test]
fn independent_events_are_not_held_back() {
    let mut order = CausalOrder::new(|_| true);
    let a = events(&key(1), "social", 1, Vec::new()).remove(0);
    let b = events(&key(2), "photos", 1, Vec::new()).remove(0);
    assert_eq!(order.offer(b).unwrap().len(), 1);
    assert_eq!(order.offer(a).unwrap().len(), 1);
}

#[test]
fn a_dependency_on_a_log_not_read_is_not_waited_for() {
    let other = events(&key(1), "secret", 1, Vec::new()).remove(0);
    let e = events(&key(2), "photos", 1, vec![other.as_dep()]).remove(0);
    let mut order = CausalOrder::new(|log| log.mission.as_str() != "secret");
    assert_eq!(order.offer(e).unwrap().len(), 1);
}

#[test]
fn a_resumed_reader_knows_what_it_delivered_before() {
    let unfriend = events(&key(1), "social", 1, Vec::new()).remove(0);
    let posted = events(&key(2), "photos", 1, vec![unfriend.as_dep()]).remove(0);
    let mut order = CausalOrder::new(|_| true);
    order.delivered_up_to(unfriend.event().log.clone(), 1);
    assert_eq!(order.offer(posted).unwrap().len(), 1);
}

#[test]
fn too_many_held_events_are_an_error_naming_what_is_missing() {
    let missing = events(&key(1), "social", 1, Vec::new()).remove(0);
    let held = events(
        &key(2),
        "photos",
        wtd_keys::defaults::MAX_HELD_EVENTS as u64 + 1,
        vec![missing.as_dep()],
    );
    let mut order = CausalOrder::new(|_| true);
    let mut result = Ok(Vec::new());
    for e in held {
        result = order.offer(e);
        if result.is_err() {
            break;
        }
    }
    let err = result.unwrap_err();
    let CausalError::TooManyHeld { waiting_for, .. } = &err;
    assert_eq!(*waiting_for, missing.as_dep());
    assert!(err.to_string().contains("has not delivered"), "{err}");
}
