//! Heartbeats: the load goes out every interval; on shutdown, a goodbye.

use wtd_wire::FromAgent;

use crate::fake_proxy::FakeProxy;
use crate::harness::*;

#[tokio::test]
async fn heartbeats_carry_the_pinned_test_load() {
    let mut proxy = FakeProxy::start().await;
    let dir = AgentDir::new();
    let config = wtd_agent::AgentConfig {
        test_pinned_load: Some(0.25),
        ..dir.config(proxy.info())
    };
    let agent = TestAgent::start(config);
    let mut session = proxy.next_session().await;
    for _ in 0..3 {
        let load = session.next_heartbeat().await;
        assert_eq!((load.load1, load.cpu_percent), (0.25, 0.25), "pinned");
        assert!(
            load.mem_total_kb > 0 && load.mem_used_kb <= load.mem_total_kb,
            "memory is real: {load:?}"
        );
    }
    agent.stop().await;
}

#[tokio::test]
async fn shutdown_says_leaving_then_ends_the_stream() {
    let mut proxy = FakeProxy::start().await;
    let dir = AgentDir::new();
    let agent = TestAgent::start(dir.config(proxy.info()));
    let mut session = proxy.next_session().await;
    let load = session.next_heartbeat().await;
    assert!(
        load.mem_total_kb > 0,
        "an unpinned agent reports its real memory: {load:?}"
    );

    agent.stop().await;
    // Heartbeats may still be in flight; the last message must be the goodbye.
    let mut last = None;
    while let Some(message) = session.next().await {
        assert!(
            matches!(message, FromAgent::Heartbeat(_) | FromAgent::Leaving),
            "{message:?}"
        );
        last = Some(message);
    }
    assert_eq!(last, Some(FromAgent::Leaving));
}
