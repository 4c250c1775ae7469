//! Owner-signed records and the texts people paste.

use wtd_keys::names::parse_target;
use wtd_keys::{
    check_call, EnrollmentToken, GrantId, MissionName, OwnerLog, PublicId, ReplayGuard, RequestId, SecretKey,
    SignedAdoption, SignedCall, SignedEntry, SignedGrant, SignedResult, SignedRevocation, Ticket,
};

/// `SignedGrant::decode`: what it accepts is valid and is exactly these bytes.
pub fn decode_grant(data: &[u8]) {
    if let Ok(g) = SignedGrant::decode(data) {
        assert_eq!(g.bytes(), data);
        assert!(g.grant().validate().is_ok(), "decode accepted an invalid grant");
        assert_eq!(SignedGrant::decode(g.bytes()).as_ref(), Ok(&g));
    }
}

/// `SignedRevocation::decode`.
pub fn decode_revocation(data: &[u8]) {
    if let Ok(r) = SignedRevocation::decode(data) {
        assert_eq!(r.bytes(), data);
        assert_eq!(SignedRevocation::decode(r.bytes()).as_ref(), Ok(&r));
    }
}

/// `SignedEntry::decode`, then `OwnerLog::sync` and `append` with it.
pub fn decode_log_entry(data: &[u8]) {
    if let Ok(e) = SignedEntry::decode(data) {
        assert_eq!(e.bytes(), data);
        let mut log = OwnerLog::new(e.owner);
        let _ = log.sync([e.clone()]);
        let _ = log.append(e);
    }
}

/// `Ticket::decode` and `Ticket::from_text`.
pub fn decode_ticket(data: &[u8]) {
    if let Ok(t) = Ticket::decode(data) {
        assert_eq!(Ticket::decode(&t.encode()).as_ref(), Ok(&t));
        assert_eq!(Ticket::from_text(&t.to_text()).as_ref(), Ok(&t));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Ticket::from_text(text);
    }
}

/// `SignedCall::decode` and the agent's checks after it, `SignedResult::decode`, request ids,
/// and a queued call: `SignedJob::decode` and the agent's `check_job` after it.
pub fn decode_call(data: &[u8]) {
    if let Ok(j) = wtd_keys::job::SignedJob::decode(data) {
        assert_eq!(j.bytes(), data);
        assert_eq!(wtd_keys::job::SignedJob::decode(j.bytes()).as_ref(), Ok(&j));
        let job = j.job();
        let me = job.agent.unwrap_or(wtd_keys::AgentId(*job.caller.key()));
        // With the job's own tag, and without: both tag branches run.
        let tags: Vec<String> = job.selector.tag.iter().map(|t| t.to_string()).collect();
        let _ = wtd_keys::job::check_job(data, data, &me, &tags, job.issued_at);
        let _ = wtd_keys::job::check_job(data, data, &me, &[], job.issued_at);
    }
    if let Ok(c) = SignedCall::decode(data) {
        assert_eq!(c.bytes(), data);
        assert_eq!(SignedCall::decode(c.bytes()).as_ref(), Ok(&c));
        // Past the signature, drive the agent's other checks with the call's own fields, so
        // only the arguments (the input again) and the time can make it refuse.
        let call = c.call();
        let mut guard = ReplayGuard::with_limit(1);
        for _ in 0..2 {
            let _ = check_call(
                data,
                &call.caller,
                &call.agent,
                &call.session,
                data,
                call.issued_at,
                &mut guard,
            );
        }
    }
    if let Ok(r) = SignedResult::decode(data) {
        assert_eq!(r.bytes(), data);
        assert_eq!(SignedResult::decode(r.bytes()).as_ref(), Ok(&r));
    }
    // The text form of a request id (as pasted into `wtd` commands).
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(id) = s.parse::<RequestId>() {
            assert_eq!(id.to_string().parse::<RequestId>(), Ok(id));
        }
    }
}

/// Ids, mission names, `mission/function` targets and secret keys in their text forms.
pub fn parse_ids(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = s.parse::<PublicId>() {
        assert_eq!(id.to_string(), s.trim());
    }
    if let Ok(id) = s.parse::<GrantId>() {
        assert_eq!(id.to_string(), s.trim());
    }
    if let Ok(m) = s.parse::<MissionName>() {
        assert_eq!(m.as_str(), s);
    }
    if let Ok((m, f)) = parse_target(s) {
        assert_eq!(format!("{m}/{f}"), s);
    }
    let _ = SecretKey::from_text(s);
}

/// `SignedAdoption::decode` and `EnrollmentToken::from_text`.
pub fn decode_adoption(data: &[u8]) {
    if let Ok(a) = SignedAdoption::decode(data) {
        assert_eq!(a.bytes(), data);
        assert_eq!(SignedAdoption::decode(a.bytes()).as_ref(), Ok(&a));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(t) = EnrollmentToken::from_text(text) {
            assert_eq!(EnrollmentToken::from_text(&t.to_text()), Ok(t));
        }
    }
}

/// `SignedEvent::decode`, then a reader's `Chain` and `CausalOrder`: signed events.
pub fn decode_event(data: &[u8]) {
    use wtd_keys::event::{CausalOrder, Chain, SignedEvent};
    if let Ok(e) = SignedEvent::decode(data) {
        assert_eq!(e.bytes(), data);
        assert_eq!(SignedEvent::decode(e.bytes()).as_ref(), Ok(&e));
        let mut chain = Chain::new();
        let _ = chain.accept(&e);
        let _ = chain.accept(&e);
        let mut order = CausalOrder::new(|_| true);
        let _ = order.offer(e);
    }
}
