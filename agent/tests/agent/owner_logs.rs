//! Owner logs relayed by the proxy: kept when the owner signed them in order, refused
//! otherwise, with everything good before a bad entry kept. The proxy can withhold, never
//! forge.

use log::Level;
use wtd_store::logfile::LogFile;
use wtd_wire::{LogHead, ToAgent};

use crate::fake_proxy::FakeProxy;
use crate::harness::*;

#[tokio::test]
async fn catch_up_entries_are_verified_and_persisted() {
    let mut proxy = FakeProxy::start().await;
    let dir = AgentDir::new();
    let mut agent = TestAgent::start(dir.config(proxy.info()));
    let session = proxy.next_session().await;
    let log = owner_log(&alice(), 4);
    session.send(ToAgent::Log {
        owner: key(&alice()),
        entries: wire(&log[..2]),
    });
    agent.wait_for_head(&owner(&alice()), 2).await;
    // Resending what the agent holds is harmless; the rest is added.
    session.send(ToAgent::Log {
        owner: key(&alice()),
        entries: wire(&log),
    });
    agent.wait_for_head(&owner(&alice()), 4).await;
    {
        let snapshot = agent.logs.borrow();
        assert_eq!(snapshot.grants().count(), 3);
        assert_eq!(snapshot.revocations().count(), 1);
    }
    agent.stop().await;

    // On disk, exactly what Alice signed.
    let (file, report) = LogFile::open(&dir.log_file(&owner(&alice())), owner(&alice())).unwrap();
    assert_eq!(report.torn_tail_bytes, 0);
    assert_eq!(file.log().entries(), &log[..]);
    drop(file);

    // Restarted, the agent tells the proxy where its copy ends.
    let agent = TestAgent::start(dir.config(proxy.info()));
    let session = proxy.next_session().await;
    assert_eq!(
        session.hello.heads,
        [LogHead {
            owner: key(&alice()),
            seq: 4
        }]
    );
    assert_eq!(agent.logs.borrow().head(&owner(&alice())), 4);
    agent.stop().await;
}

#[tokio::test]
async fn entries_not_signed_by_an_owner_are_refused() {
    let mut proxy = FakeProxy::start().await;
    let dir = AgentDir::new();
    let mut agent = TestAgent::start(dir.config(proxy.info()));
    let session = proxy.next_session().await;

    // Mallory's own log: she is not an owner of this agent.
    session.send(ToAgent::Log {
        owner: key(&mallory()),
        entries: wire(&owner_log(&mallory(), 1)),
    });
    agent
        .wait_for_log(Level::Error, "is not an owner of this agent")
        .await;
    // Mallory's entry passed off as Alice's.
    session.send(ToAgent::Log {
        owner: key(&alice()),
        entries: wire(&owner_log(&mallory(), 1)),
    });
    let line = agent.wait_for_log(Level::Error, "belongs to owner").await;
    assert!(line.starts_with("the proxy sent a bad owner log"), "{line}");

    // Nothing was stored for either, and the agent still takes Alice's real entries.
    assert!(!dir.log_file(&owner(&mallory())).exists());
    assert_eq!(agent.logs.borrow().head(&owner(&alice())), 0);
    session.send(ToAgent::Log {
        owner: key(&alice()),
        entries: wire(&owner_log(&alice(), 1)),
    });
    agent.wait_for_head(&owner(&alice()), 1).await;
    agent.stop().await;
}

#[tokio::test]
async fn altered_and_missing_entries_are_refused_and_good_ones_kept() {
    let mut proxy = FakeProxy::start().await;
    let dir = AgentDir::new();
    let mut agent = TestAgent::start(dir.config(proxy.info()));
    let session = proxy.next_session().await;
    let log = owner_log(&alice(), 3);

    // Entry 1 is fine; entry 2 has one flipped bit.
    let mut altered = wire(&log[..2]);
    let middle = altered[1].len() / 2;
    altered[1][middle] ^= 0x01;
    session.send(ToAgent::Log {
        owner: key(&alice()),
        entries: altered,
    });
    let line = agent.wait_for_log(Level::Error, "entry 2 of 2 refused").await;
    assert!(line.starts_with("the proxy sent a bad owner log"), "{line}");
    assert!(line.contains("1 good entries before it kept"), "{line}");
    agent.wait_for_head(&owner(&alice()), 1).await;

    // Entry 2 dropped on the way: 3 does not follow 1.
    session.send(ToAgent::Log {
        owner: key(&alice()),
        entries: wire(&[log[0].clone(), log[2].clone()]),
    });
    let line = agent.wait_for_log(Level::Error, "gap").await;
    assert!(line.contains("expected entry 2, got 3"), "{line}");
    assert_eq!(agent.logs.borrow().head(&owner(&alice())), 1);
    agent.stop().await;

    let (file, _) = LogFile::open(&dir.log_file(&owner(&alice())), owner(&alice())).unwrap();
    assert_eq!(file.log().entries(), &log[..1], "only the good entry is on disk");
}
