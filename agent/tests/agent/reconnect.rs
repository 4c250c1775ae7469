//! The proxy goes away and comes back: the agent reconnects by itself.

use crate::fake_proxy::FakeProxy;
use crate::harness::*;

#[tokio::test]
async fn the_agent_comes_back_after_a_proxy_restart() {
    let mut proxy = FakeProxy::start().await;
    let dir = AgentDir::new();
    let mut agent = TestAgent::start(dir.config(proxy.info()));
    let session = proxy.next_session().await;
    session.send(wtd_wire::ToAgent::Log {
        owner: key(&alice()),
        entries: wire(&owner_log(&alice(), 2)),
    });
    agent.wait_for_head(&owner(&alice()), 2).await;
    drop(session);

    // Restart: same key, same port, nothing remembered.
    let (key_back, addr) = proxy.shutdown().await;
    let mut proxy = FakeProxy::start_at(key_back, addr).await;
    let mut session = proxy.next_session().await;
    assert_eq!(session.agent, *agent.id.key());
    assert_eq!(session.hello.heads[0].seq, 2, "it asks only for what is new");
    session.next_heartbeat().await;
    agent.stop().await;
}
