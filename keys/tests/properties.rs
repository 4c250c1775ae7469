//! Properties over generated inputs (proptest):
//! - every record type round-trips: what we sign, we decode, byte for byte;
//! - no decoder panics, whatever it is fed: random bytes, random fields behind a valid
//!   header, random text, and random mutations of valid records;
//! - a signed record that was changed in any way is refused.
//!
//! Case counts are kept modest (256) so the suite stays quick in debug builds; the fuzz
//! targets in `fuzz/` run the same decoders for as long as you let them.

mod common;

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::OnceLock;

use common::*;
use proptest::prelude::*;
use wtd_keys::defaults::{MAX_GRANT_TTL_MS, MAX_TICKET_ADDRS};
use wtd_keys::{
    grant, log, revocation, ticket, AgentId, Audience, Grant, GrantId, MissionName, OwnerKey, OwnerLog,
    ProxyId, ProxyInfo, PublicId, Rate, Record, Revocation, SecretKey, SignedEntry, SignedGrant,
    SignedRevocation, Target, Ticket, Timestamp, UserKey,
};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------

/// A key's seed; the key itself is made where it is needed (`SecretKey` is not `Clone`).
fn seed() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

fn public(seed: [u8; 32]) -> PublicId {
    SecretKey::from_seed(&seed).public()
}

fn mission_name() -> impl Strategy<Value = MissionName> {
    "[a-z0-9][a-z0-9_-]{0,63}".prop_map(|s| MissionName::new(&s).expect("the regex makes canonical names"))
}

fn audience() -> impl Strategy<Value = Audience> {
    prop_oneof![
        Just(Audience::AllAgents),
        prop::collection::vec(seed(), 1..4)
            .prop_map(|seeds| Audience::agents(seeds.into_iter().map(|s| AgentId(public(s))).collect())),
    ]
}

/// A valid grant, and the seed of its issuer's key (to sign it with).
fn any_grant() -> impl Strategy<Value = ([u8; 32], Grant)> {
    let who = (seed(), seed(), any::<[u8; 16]>(), audience(), mission_name());
    let limits = (1..=u32::MAX, 1000..=u64::MAX, 1..=u32::MAX, 1..=u32::MAX);
    let times = (
        0..=u64::MAX - MAX_GRANT_TTL_MS,
        1..=MAX_GRANT_TTL_MS,
        any::<u64>(),
    );
    (who, limits, times).prop_map(
        |(
            (issuer, subject, id, audience, mission),
            (calls, period_ms, burst, concurrency),
            (nb, ttl, at),
        )| {
            let g = Grant {
                id: GrantId(id),
                issuer: OwnerKey(public(issuer)),
                subject: UserKey(public(subject)),
                audience,
                mission,
                rate: Rate { calls, period_ms },
                burst,
                concurrency,
                not_before: Timestamp(nb),
                expires: Timestamp(nb + ttl),
                issued_at: Timestamp(at),
            };
            (issuer, g)
        },
    )
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        any::<[u8; 16]>().prop_map(|id| Target::Grant(GrantId(id))),
        (seed(), mission_name()).prop_map(|(s, m)| Target::SubjectMission(UserKey(public(s)), m)),
        seed().prop_map(|s| Target::SubjectAll(UserKey(public(s)))),
        (
            proptest::collection::btree_set(any::<[u8; 16]>(), 1..40),
            "[a-z0-9][a-z0-9 -]{0,30}[a-z0-9]"
        )
            .prop_map(|(ids, label)| Target::Grants {
                label,
                grants: ids.into_iter().map(GrantId).collect(),
            }),
    ]
}

/// A revocation, and the seed of its issuer's key.
fn any_revocation() -> impl Strategy<Value = ([u8; 32], Revocation)> {
    (seed(), target(), any::<u64>()).prop_map(|(issuer, target, at)| {
        (
            issuer,
            Revocation {
                issuer: OwnerKey(public(issuer)),
                target,
                issued_at: Timestamp(at),
            },
        )
    })
}

/// What one log entry will hold, before it is made out to the log's owner.
#[derive(Clone, Debug)]
enum Content {
    Grant(Grant),
    Revocation(Revocation),
}

fn content() -> impl Strategy<Value = Content> {
    prop_oneof![
        any_grant().prop_map(|(_, g)| Content::Grant(g)),
        any_revocation().prop_map(|(_, r)| Content::Revocation(r)),
    ]
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    // Scope ids and flow labels are left at zero: the text form of an address does not
    // carry a flow label, and tickets carry addresses as text.
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u16; 8]>(), any::<u16>())
            .prop_map(|(ip, port)| { SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0)) }),
    ]
}

fn any_ticket() -> impl Strategy<Value = Ticket> {
    let proxy = prop::option::of((seed(), prop::collection::vec(socket_addr(), 1..=MAX_TICKET_ADDRS)));
    (proxy, prop::collection::vec(any_grant(), 0..3)).prop_map(|(proxy, grants)| Ticket {
        proxy: proxy.map(|(s, addrs)| ProxyInfo {
            id: ProxyId(public(s)),
            addrs,
        }),
        grants: grants
            .into_iter()
            .map(|(s, g)| g.sign(&SecretKey::from_seed(&s)))
            .collect(),
    })
}

// ---------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn grants_round_trip((issuer, g) in any_grant()) {
        let signed = g.clone().sign(&SecretKey::from_seed(&issuer));
        let back = SignedGrant::decode(signed.bytes()).expect("what we sign, we decode");
        prop_assert_eq!(back.grant(), &g);
        prop_assert_eq!(back.bytes(), signed.bytes());
    }

    #[test]
    fn revocations_round_trip((issuer, r) in any_revocation()) {
        let signed = r.clone().sign(&SecretKey::from_seed(&issuer));
        let back = SignedRevocation::decode(signed.bytes()).expect("what we sign, we decode");
        prop_assert_eq!(back.revocation(), &r);
        prop_assert_eq!(back.bytes(), signed.bytes());
    }

    #[test]
    fn log_entries_round_trip(owner_seed in seed(), contents in prop::collection::vec(content(), 1..5)) {
        let key = SecretKey::from_seed(&owner_seed);
        let me = OwnerKey(key.public());
        let mut log = OwnerLog::new(me);
        for (i, c) in contents.into_iter().enumerate() {
            let record = match c {
                Content::Grant(mut g) => {
                    g.issuer = me;
                    g.id.0[0] = i as u8; // ids in one log are unique
                    Record::Grant(g.sign(&key))
                }
                Content::Revocation(mut r) => {
                    r.issuer = me;
                    Record::Revocation(r.sign(&key))
                }
            };
            let entry = log.next_entry(&key, record).expect("the next entry");
            let back = SignedEntry::decode(entry.bytes()).expect("what we sign, we decode");
            prop_assert_eq!(&back, &entry);
            prop_assert_eq!(back.hash(), entry.hash());
            log.append(back).expect("it chains");
        }
        // A reader replaying the decoded log ends at the same head.
        let mut reader = OwnerLog::new(me);
        let out = reader.sync(log.entries().to_vec()).expect("a good log syncs");
        prop_assert_eq!(out.added, log.entries().len());
        prop_assert_eq!(reader.head(), log.head());
    }

    #[test]
    fn tickets_round_trip(t in any_ticket()) {
        prop_assert_eq!(Ticket::decode(&t.encode()), Ok(t.clone()));
        prop_assert_eq!(Ticket::from_text(&t.to_text()), Ok(t));
    }

    #[test]
    fn text_ids_round_trip(s in seed(), id in any::<[u8; 16]>()) {
        let k = public(s);
        prop_assert_eq!(k.to_string().parse::<PublicId>(), Ok(k));
        prop_assert_eq!(GrantId(id).to_string().parse::<GrantId>(), Ok(GrantId(id)));
    }
}

// ---------------------------------------------------------------------------------------
// Never panic
// ---------------------------------------------------------------------------------------

/// Feeds `bytes` to every binary decoder and `text` to every text parser. The property is
/// simply that this returns: any panic fails the test.
fn feed_everything(bytes: &[u8]) {
    let _ = SignedGrant::decode(bytes);
    let _ = SignedRevocation::decode(bytes);
    let _ = SignedEntry::decode(bytes);
    let _ = Ticket::decode(bytes);
    let text = String::from_utf8_lossy(bytes);
    feed_text(&text);
}

fn feed_text(text: &str) {
    let _ = Ticket::from_text(text);
    let _ = text.parse::<PublicId>();
    let _ = text.parse::<GrantId>();
    let _ = text.parse::<MissionName>();
    let _ = wtd_keys::names::parse_target(text);
    let _ = SecretKey::from_text(text);
}

/// Random fields behind a valid header of some record kind, so decoders get past the
/// first check and into the fields.
fn structured_garbage() -> impl Strategy<Value = Vec<u8>> {
    let kind = prop::sample::select(vec![grant::KIND, revocation::KIND, log::KIND, ticket::KIND]);
    let tag = prop_oneof![0u8..=13, Just(0xff), any::<u8>()];
    let value = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        prop::collection::vec(any::<u8>(), 32..=32),
        prop::collection::vec(any::<u8>(), 64..=64),
        Just(vec![0]),
        Just(vec![1]),
    ];
    (kind, prop::collection::vec((tag, value), 0..14)).prop_map(|(kind, mut fields)| {
        // Mostly in increasing order, as a real record would be, to get deeper.
        fields.sort_by_key(|f| f.0);
        encode_fields(kind, 1, &fields)
    })
}

/// Text that starts like one of our text forms.
fn text_like_ours() -> impl Strategy<Value = String> {
    let prefix = prop::sample::select(vec!["wtd1", "grant-", "wtdt1", "wtdsecret1", ""]);
    (prefix, "[a-z2-7]{0,80}|[ -~]{0,40}|\\PC{0,20}").prop_map(|(p, body)| format!("{p}{body}"))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        feed_everything(&bytes);
    }

    #[test]
    fn random_fields_never_panic(bytes in structured_garbage()) {
        feed_everything(&bytes);
    }

    #[test]
    fn random_text_never_panics(text in text_like_ours()) {
        feed_text(&text);
    }
}

// ---------------------------------------------------------------------------------------
// Mutations of valid records
// ---------------------------------------------------------------------------------------

/// A few valid records, signed once and shared by every case (signing is the slow part).
struct Samples {
    grant: Vec<u8>,
    revocation: Vec<u8>,
    entry: Vec<u8>,
    ticket: Vec<u8>,
}

fn samples() -> &'static Samples {
    static SAMPLES: OnceLock<Samples> = OnceLock::new();
    SAMPLES.get_or_init(|| {
        let g = Grant {
            audience: Audience::agents(vec![pi(1), pi(2)]),
            ..grant(&alice(), &bob(), "demo")
        }
        .sign(&alice());
        let r = Revocation {
            issuer: owner(&alice()),
            target: Target::SubjectMission(user(&bob()), mission("demo")),
            issued_at: T0,
        }
        .sign(&alice());
        let entry = OwnerLog::new(owner(&alice()))
            .next_entry(&alice(), Record::Revocation(r.clone()))
            .expect("first entry");
        let t = Ticket {
            proxy: Some(ProxyInfo {
                id: ProxyId(secret(50).public()),
                addrs: vec!["10.0.0.1:4433".parse().expect("addr")],
            }),
            grants: vec![g.clone()],
        };
        Samples {
            grant: g.bytes().to_vec(),
            revocation: r.bytes().to_vec(),
            entry: entry.bytes().to_vec(),
            ticket: t.encode(),
        }
    })
}

/// One small change to a byte string.
#[derive(Clone, Debug)]
enum Mutation {
    Flip { at: usize, mask: u8 },
    Set { at: usize, value: u8 },
    Insert { at: usize, value: u8 },
    Remove { at: usize },
    Truncate { at: usize },
    Append { bytes: Vec<u8> },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = any::<prop::sample::Index>();
    prop_oneof![
        (at.clone(), 1..=255u8).prop_map(|(i, mask)| Mutation::Flip {
            at: i.index(usize::MAX),
            mask
        }),
        (at.clone(), any::<u8>()).prop_map(|(i, value)| Mutation::Set {
            at: i.index(usize::MAX),
            value
        }),
        (at.clone(), any::<u8>()).prop_map(|(i, value)| Mutation::Insert {
            at: i.index(usize::MAX),
            value
        }),
        at.clone().prop_map(|i| Mutation::Remove {
            at: i.index(usize::MAX)
        }),
        at.prop_map(|i| Mutation::Truncate {
            at: i.index(usize::MAX)
        }),
        prop::collection::vec(any::<u8>(), 1..8).prop_map(|bytes| Mutation::Append { bytes }),
    ]
}

fn mutate(original: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut b = original.to_vec();
    for m in mutations {
        // Positions are drawn over all of usize and wrapped onto the current length.
        let pos = |at: usize, len: usize| if len == 0 { 0 } else { at % len };
        match m {
            Mutation::Flip { at, mask } if !b.is_empty() => {
                let i = pos(*at, b.len());
                b[i] ^= mask;
            }
            Mutation::Set { at, value } if !b.is_empty() => {
                let i = pos(*at, b.len());
                b[i] = *value;
            }
            Mutation::Insert { at, value } => {
                let i = pos(*at, b.len() + 1);
                b.insert(i, *value);
            }
            Mutation::Remove { at } if !b.is_empty() => {
                let i = pos(*at, b.len());
                b.remove(i);
            }
            Mutation::Truncate { at } => {
                let i = pos(*at, b.len() + 1);
                b.truncate(i);
            }
            Mutation::Append { bytes } => b.extend_from_slice(bytes),
            _ => {}
        }
    }
    b
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_changed_signed_record_is_always_refused(mutations in prop::collection::vec(mutation(), 1..4)) {
        // The signature covers every byte, and the encoding is canonical: any change at all
        // must be refused. (Mutations can cancel out; then the record is the original.)
        let s = samples();
        for original in [&s.grant, &s.revocation, &s.entry] {
            let changed = mutate(original, &mutations);
            feed_everything(&changed);
            if &changed != original {
                prop_assert!(SignedGrant::decode(&changed).is_err());
                prop_assert!(SignedRevocation::decode(&changed).is_err());
                prop_assert!(SignedEntry::decode(&changed).is_err());
            }
        }
    }

    #[test]
    fn a_changed_ticket_never_panics_and_never_forges_a_grant(
        mutations in prop::collection::vec(mutation(), 1..4)
    ) {
        // A ticket is not signed as a whole, so some changes still decode (another port,
        // a dropped field). But every grant that comes out of it is the genuine one.
        let changed = mutate(&samples().ticket, &mutations);
        feed_everything(&changed);
        if let Ok(t) = Ticket::decode(&changed) {
            for g in &t.grants {
                prop_assert_eq!(g.bytes(), &samples().grant[..]);
            }
        }
    }

    #[test]
    fn a_changed_ticket_text_is_refused(at in any::<prop::sample::Index>(), c in "[a-z2-7]") {
        // The text form has a checksum: any one-character change is refused.
        let t = Ticket::decode(&samples().ticket).expect("the sample decodes");
        let text = t.to_text();
        let i = ticket::PREFIX.len() + at.index(text.len() - ticket::PREFIX.len());
        let changed = format!("{}{}{}", &text[..i], c, &text[i + 1..]);
        if changed != text {
            prop_assert!(Ticket::from_text(&changed).is_err());
        }
    }
}

/// Not a test but a tool: writes the sample records as seed inputs for the fuzz targets,
/// one directory per target, so fuzzing starts from valid records. Run with
/// `WTD_FUZZ_SEEDS=fuzz/corpus cargo test -p wtd-keys --test properties -- --ignored`.
#[test]
#[ignore = "a tool: writes fuzz seeds to $WTD_FUZZ_SEEDS"]
fn write_fuzz_seeds() {
    let Some(dir) = std::env::var_os("WTD_FUZZ_SEEDS") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let s = samples();
    let ticket = Ticket::decode(&s.ticket).expect("the sample decodes");
    let seeds: [(&str, &str, Vec<u8>); 8] = [
        ("decode_grant", "grant", s.grant.clone()),
        ("decode_revocation", "revocation", s.revocation.clone()),
        ("decode_log_entry", "entry", s.entry.clone()),
        ("decode_ticket", "ticket", s.ticket.clone()),
        ("decode_ticket", "ticket_text", ticket.to_text().into_bytes()),
        ("parse_ids", "public_id", bob().public().to_string().into_bytes()),
        ("parse_ids", "grant_id", gid(7).to_string().into_bytes()),
        ("parse_ids", "target", b"demo/echo".to_vec()),
    ];
    for (target, name, bytes) in seeds {
        let d = dir.join(target);
        std::fs::create_dir_all(&d).expect("create the corpus directory");
        std::fs::write(d.join(name), bytes).expect("write a seed");
    }
}
