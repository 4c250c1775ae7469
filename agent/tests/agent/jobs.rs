//! Jobs at the agent's check: a proxy (here the fake one) that delivers a job signed for
//! agents with a tag this agent does not have is refused by the agent itself, with the
//! reason, and nothing runs. A job whose tag the agent has passes that check (and is then
//! authorized as any job: here the caller holds no grant, so it is refused for that).

use wtd_keys::job::{Job, JobSelector, Order};
use wtd_keys::{FunctionName, MissionName, Timestamp, UserKey};
use wtd_wire::jobs::{JobDelivery, JobOutcome, JobUpdate};
use wtd_wire::{FromAgent, ToAgent};

use crate::fake_proxy::{FakeProxy, Session};
use crate::harness::*;

fn now() -> Timestamp {
    Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
    )
}

/// A job for demo/echo from Mallory under Alice's authority, with `tag`.
fn tagged_job(tag: &str) -> JobDelivery {
    let caller = mallory();
    let now = now();
    let job = Job::new(
        UserKey(caller.public()),
        None,
        MissionName::new("demo").unwrap(),
        FunctionName::new("echo").unwrap(),
        b"{}",
        now,
        now.plus_ms(3_600_000),
        true,
        owner(&alice()),
    )
    .with_selector(JobSelector {
        tag: Some(MissionName::new(tag).unwrap()),
        order: Order::LeastLoaded,
    })
    .sign(&caller);
    JobDelivery {
        job: job.bytes().to_vec(),
        args: b"{}".to_vec(),
    }
}

/// The next job update, skipping heartbeats and anything else.
async fn next_update(session: &mut Session) -> JobUpdate {
    loop {
        match session.next().await {
            Some(FromAgent::JobUpdate(u)) => return u,
            Some(_) => continue,
            None => panic!("the agent closed the session before answering the job"),
        }
    }
}

#[tokio::test]
async fn a_job_signed_for_a_tag_this_agent_lacks_is_refused_by_the_agent() {
    let mut proxy = FakeProxy::start().await;
    let dir = AgentDir::new().mission("demo.toml", DEMO_MISSION);
    let config = wtd_agent::AgentConfig {
        tags: vec!["lab".into()],
        ..dir.config(proxy.info())
    };
    let agent = TestAgent::start(config);
    let mut session = proxy.next_session().await;
    assert_eq!(session.hello.version, wtd_wire::PROTOCOL_VERSION);

    session.send(ToAgent::Job(tagged_job("gpu")));
    let update = next_update(&mut session).await;
    let Some(JobOutcome::Refused(r)) = update.outcome else {
        panic!("expected a refusal, got {:?}", update.outcome);
    };
    assert_eq!(r.kind, "not_for_this_agent", "{}", r.message);
    assert!(r.message.contains("tagged `gpu`"), "{}", r.message);
    assert!(r.message.contains("wrong agent"), "{}", r.message);
    // Refused before the seen-set: nothing was recorded as run.
    let seen = wtd_agent::jobs::SeenJobs::open(&dir.state().join("jobs"), 16, now()).unwrap();
    assert!(seen.is_empty());

    // Its own tag passes the tag check; the job is then refused for another reason (the
    // caller holds no grant), never for the tag.
    session.send(ToAgent::Job(tagged_job("lab")));
    let update = next_update(&mut session).await;
    let Some(JobOutcome::Refused(r)) = update.outcome else {
        panic!("expected a refusal, got {:?}", update.outcome);
    };
    assert_ne!(r.kind, "not_for_this_agent", "{}", r.message);
    agent.stop().await;
}
