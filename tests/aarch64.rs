//! The aarch64 build of `wtd`, as it runs on a Pi, run here under qemu-user as an agent
//! against the native x86_64 proxy and CLI on 127.0.0.1.
//!
//! Needs the static aarch64 binary, so it is `#[ignore]`d in a plain `cargo test`;
//! `scripts/test.sh` builds the binary and runs it with `--ignored`, passing the path in
//! `WTD_AARCH64_BIN`.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{wait_for, TestCluster};

fn aarch64_bin() -> PathBuf {
    let path = std::env::var_os("WTD_AARCH64_BIN")
        .map(PathBuf::from)
        .expect("set WTD_AARCH64_BIN to the aarch64 wtd (scripts/build-aarch64.sh prints it)");
    let kind = std::process::Command::new("file")
        .arg(&path)
        .output()
        .expect("file(1)");
    let kind = String::from_utf8_lossy(&kind.stdout);
    assert!(
        kind.contains("aarch64"),
        "{} is not an aarch64 binary: {kind}",
        path.display()
    );
    path
}

#[test]
#[ignore = "needs the aarch64 build; run by scripts/test.sh"]
fn the_aarch64_agent_registers_with_the_x86_proxy() {
    let bin = aarch64_bin();
    let lab = TestCluster::new();
    let proxy = lab.start_proxy();
    let alice = lab.user("alice");
    let alice_id = alice.init();
    alice.ok(["join", &proxy.ticket]);

    // Run it through qemu-user explicitly: binfmt_misc may not be registered in a container.
    let wrapper = lab.dir().join("wtd-aarch64");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec qemu-aarch64-static {} \"$@\"\n", bin.display()),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let pi = lab.add_agent_bin(
        &wrapper,
        &proxy.ticket,
        "pi-arm",
        &[&alice_id],
        "tags = [\"arm\"]",
    );
    alice.adopt(&pi);
    // Emulation is slow to start; the limit is generous.
    let took = wait_for("the aarch64 agent in `wtd ls`", Duration::from_secs(60), || {
        alice.agent_names() == ["pi-arm"]
    });
    println!("aarch64 agent registered after {took:?}");
    let a = &alice.ls()[0];
    assert_eq!(a["tags"], serde_json::json!(["arm"]));
    assert!(
        a["missions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "demo"),
        "{a}"
    );

    // A grant made now reaches it through the proxy, verified on the aarch64 side...
    let bob = lab.user("bob");
    let bob_id = bob.init();
    bob.ok(["join", &proxy.ticket]);
    let out: serde_json::Value =
        serde_json::from_str(&alice.ok(["grant", &bob_id, "--mission", "demo", "--json"])).unwrap();
    bob.ok(["grants", "import", out["ticket"].as_str().unwrap()]);
    let log = pi.dir.join("state").join("logs").join(format!("{alice_id}.log"));
    wait_for("the grant on the aarch64 agent", Duration::from_secs(60), || {
        std::fs::metadata(&log).map(|m| m.len() > 8).unwrap_or(false)
    });
    // ... and Bob's calls run there. A built-in, with a receipt: the session, the signed
    // call and the agent's signed result all work across the two architectures.
    let out: serde_json::Value =
        serde_json::from_str(&alice.ok(["grant", &bob_id, "--mission", "sys", "--json"])).unwrap();
    bob.ok(["grants", "import", out["ticket"].as_str().unwrap()]);
    wait_for(
        "the sys grant on the aarch64 agent",
        Duration::from_secs(60),
        || bob.cli(["call", "sys/ping", "--timeout", "60s"]).status.success(),
    );
    let out = bob.ok(["call", "sys/ping", "--timeout", "60s", "--receipt"]);
    assert!(out.contains("\"pong\":true"), "{out}");
    // An exec function runs in the mission box, which needs PR_SET_CHILD_SUBREAPER. qemu-user
    // does not emulate it, so here (and only under qemu-user) the box refuses to start rather
    // than run the function uncontained, and the caller is told why. On a Pi it runs.
    let echo = bob.cli(["call", "demo/echo", "{\"from\":\"x86\"}", "--timeout", "60s"]);
    let why = String::from_utf8_lossy(&echo.stderr);
    assert_eq!(echo.status.code(), Some(7), "{why}");
    assert!(why.contains("subreaper") || why.contains("mission box"), "{why}");
    // The receipt it kept checks out offline.
    let receipts: serde_json::Value = serde_json::from_str(&bob.ok(["receipts", "--json"])).unwrap();
    assert_eq!(receipts.as_array().unwrap().len(), 1, "{receipts}");
    assert_eq!(receipts[0]["valid"], true, "{receipts}");
    let out = bob.cli(["call", "sys/info", "--json", "--agent", "pi-arm"]);
    assert!(
        out.status.success(),
        "granted sys now: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!pi.daemon.output().contains("ERROR"), "{}", pi.daemon.output());
}
