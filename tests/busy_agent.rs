//! An agent busy with many callers keeps heartbeating.
//!
//! Exec calls do file-system work for their box (a private directory, a cgroup, a look at
//! `/proc`) that can take seconds on a busy machine. The agent has one async thread; when
//! that work ran on it, heartbeats stopped while calls were answered, and the proxy dropped
//! the agent as silent, taking every caller's session with it (`benches/callers.rs` found
//! it). This lab runs many concurrent sessions of exec calls against one agent, for a
//! bounded number of calls, and checks that the proxy never dropped it.
//!
//! No timing is asserted: the only clock is the proxy's own liveness rule (two missed
//! heartbeats), which is what users see.

mod common;

use std::time::Duration;

use common::{wait_for, TestCluster};
use serde_json::Value;

/// Concurrent callers, each `wtd call` its own session to the agent: most of the 32
/// sessions an agent takes.
const CALLERS: usize = 24;
/// Calls each caller makes, one after another.
const CALLS_EACH: usize = 4;

#[test]
fn an_agent_busy_with_exec_calls_is_not_dropped() {
    let lab = TestCluster::new();
    let proxy = lab.start_proxy();
    let alice = lab.user("alice");
    let alice_id = alice.init();
    alice.ok(["join", &proxy.ticket]);
    let bob = lab.user("bob");
    let bob_id = bob.init();
    bob.ok(["join", &proxy.ticket]);
    alice.ok(["keys", "add", "bob", &bob_id]);
    let agent = lab.add_agent(&proxy.ticket, "busy", &[&alice_id], "");
    alice.adopt(&agent);
    wait_for("the agent online", Duration::from_secs(30), || {
        alice.agent_names() == ["busy"]
    });
    let granted: Value = serde_json::from_str(&alice.ok([
        "grant",
        "bob",
        "--mission",
        "demo",
        "--rate",
        "100000/min",
        "--burst",
        "100000",
        "--concurrency",
        "64",
        "--expires",
        "1h",
        "--json",
    ]))
    .unwrap();
    bob.ok(["grants", "import", granted["ticket"].as_str().unwrap()]);

    // Every caller at once, each its own `wtd call` process and session.
    let failures: Vec<String> = std::thread::scope(|s| {
        let callers: Vec<_> = (0..CALLERS)
            .map(|c| {
                let bob = &bob;
                s.spawn(move || {
                    let mut failed = Vec::new();
                    for n in 0..CALLS_EACH {
                        let args = format!("{{\"caller\":{c},\"n\":{n}}}");
                        let out = bob.cli(["call", "demo/echo", &args]);
                        let text = String::from_utf8_lossy(&out.stdout);
                        if !out.status.success() || !text.contains(&format!("\"caller\":{c}")) {
                            failed.push(format!(
                                "caller {c} call {n}: {}",
                                String::from_utf8_lossy(&out.stderr).trim()
                            ));
                        }
                    }
                    failed
                })
            })
            .collect();
        callers.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });

    let proxy_log = proxy.daemon.output();
    let agent_log = agent.daemon.output();
    assert!(
        !proxy_log.contains("dropping silent agent"),
        "the proxy dropped the busy agent as silent:\n{proxy_log}"
    );
    assert!(
        !agent_log.contains("silent for too long"),
        "the agent was told it was silent:\n{agent_log}"
    );
    assert!(
        failures.is_empty(),
        "calls failed: {failures:#?}\nagent log:\n{agent_log}"
    );
    assert_eq!(alice.agent_names(), ["busy"], "still online");
}
