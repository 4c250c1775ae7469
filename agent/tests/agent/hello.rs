//! The hello: who the agent says it is and what it offers, and what it does when the
//! proxy says no.

use std::os::unix::fs::PermissionsExt;

use log::Level;
use wtd_wire::{LogHead, Refusal, ToAgent, PROTOCOL_VERSION};

use crate::fake_proxy::FakeProxy;
use crate::harness::*;

#[tokio::test]
async fn the_hello_carries_the_advert_missions_and_warnings() {
    let mut proxy = FakeProxy::start().await;
    let dir = AgentDir::new()
        .mission("demo.toml", DEMO_MISSION)
        .mission("broken.toml", "name = \"broken\"\nversion = 1.0 = 2\n");
    let config = wtd_agent::AgentConfig {
        tags: vec!["lab".into(), "room-2".into()],
        ..dir.config(proxy.info())
    };
    let agent = TestAgent::start(config);

    let session = proxy.next_session().await;
    assert_eq!(session.agent, *agent.id.key(), "TLS proved the agent's own key");
    let hello = &session.hello;
    assert_eq!(hello.version, PROTOCOL_VERSION);
    assert_eq!(
        hello.heads,
        [LogHead {
            owner: key(&alice()),
            seq: 0
        }]
    );
    let advert = &hello.advert;
    assert_eq!(advert.name, "test-pi");
    assert_eq!(advert.owners, [key(&alice())]);
    assert_eq!(advert.tags, ["lab", "room-2"]);
    assert!(advert.software.starts_with("wtd-agent "), "{}", advert.software);
    assert_eq!(advert.validate(), Ok(()), "the real proxy would accept it");

    let missions: Vec<&str> = advert.missions.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(missions, ["sys", "demo"], "the broken file is skipped");
    let sys: Vec<&str> = advert.missions[0]
        .functions
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(sys, ["info", "ping"]);
    let demo = &advert.missions[1];
    assert_eq!(
        (demo.version.as_str(), demo.functions[0].name.as_str()),
        ("1.0", "echo")
    );
    assert!(demo.functions[0].idempotent);

    assert_eq!(advert.warnings.len(), 1, "{:?}", advert.warnings);
    assert!(
        advert.warnings[0].contains("broken.toml"),
        "{:?}",
        advert.warnings
    );
    agent.wait_for_log(Level::Info, "agent ready").await;

    let key_file = dir.state().join("identity.key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the identity is created private");
    let id = agent.id;
    agent.stop().await;

    // The same state directory is the same agent.
    let again = TestAgent::start(dir.config(proxy.info()));
    assert_eq!(again.id, id, "the identity is kept across restarts");
    assert_eq!(proxy.next_session().await.agent, *id.key());
    again.stop().await;
}

#[tokio::test]
async fn a_refusal_is_logged_and_retried() {
    let mut proxy = FakeProxy::start().await;
    proxy.refuse_next(Refusal::OwnerNotAllowed);
    let dir = AgentDir::new();
    let agent = TestAgent::start(dir.config(proxy.info()));

    let refused = proxy.next_session().await;
    assert_eq!(refused.reply, ToAgent::Refused(Refusal::OwnerNotAllowed));
    // The refusal's own explanation reaches the agent's log, at error level.
    let line = agent
        .wait_for_log(Level::Error, &Refusal::OwnerNotAllowed.to_string())
        .await;
    assert!(line.contains("refused"), "{line}");

    // And the agent tries again, and gets in.
    let mut admitted = proxy.next_session().await;
    assert_eq!(admitted.agent, *agent.id.key());
    assert!(matches!(admitted.reply, ToAgent::Welcome { .. }));
    admitted.next_heartbeat().await;
    agent.stop().await;
}

#[tokio::test]
async fn a_proxy_with_another_key_is_not_trusted() {
    let impostor = FakeProxy::start_at(secret(66), "127.0.0.1:0".parse().unwrap()).await;
    let dir = AgentDir::new();
    let mut info = impostor.info();
    info.id = secret(9).public().into(); // the ticket pins the real proxy's key
    let agent = TestAgent::start(dir.config(info));
    let line = agent.wait_for_log(Level::Warn, "impostor").await;
    assert!(
        line.contains(&secret(66).public().to_string()),
        "names the key it saw: {line}"
    );
    agent.stop().await;
}

#[tokio::test]
async fn an_older_proxy_is_spoken_to_in_its_version_a_too_old_one_is_not() {
    let mut proxy = FakeProxy::start().await;
    proxy.refuse_next(Refusal::VersionMismatch {
        proxy: wtd_wire::MIN_PROTOCOL_VERSION,
    });
    let dir = AgentDir::new();
    let agent = TestAgent::start(dir.config(proxy.info()));
    let refused = proxy.next_session().await;
    assert_eq!(refused.hello.version, PROTOCOL_VERSION);
    let mut again = proxy.next_session().await;
    assert_eq!(
        again.hello.version,
        wtd_wire::MIN_PROTOCOL_VERSION,
        "the same hello, in the proxy's version (no mission events through it)"
    );
    again.next_heartbeat().await;
    agent.stop().await;

    let mut proxy = FakeProxy::start().await;
    proxy.refuse_next(Refusal::VersionMismatch {
        proxy: wtd_wire::MIN_PROTOCOL_VERSION - 1,
    });
    let agent = TestAgent::start(AgentDir::new().config(proxy.info()));
    proxy.next_session().await;
    agent.wait_for_log(Level::Error, "upgrade the older one").await;
    assert_eq!(proxy.next_session().await.hello.version, PROTOCOL_VERSION);
    agent.stop().await;
}

#[tokio::test]
async fn a_taken_metrics_port_is_a_clear_error_at_start() {
    let proxy = FakeProxy::start().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let config = wtd_agent::AgentConfig {
        metrics: Some(addr),
        ..AgentDir::new().config(proxy.info())
    };
    let agent = wtd_agent::Agent::new(config).unwrap();
    let err = agent
        .run(tokio_util::sync::CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, wtd_agent::AgentError::Metrics { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&addr.to_string()) && text.contains("metrics"),
        "{text}"
    );
}
