//! The `wtd` key commands, run as real processes by two people, Alice (an owner) and Bob
//! (a friend), each with their own WTD_HOME.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::TestCluster;
use serde_json::Value;

fn status_of(grants: &[Value], id: &str, direction: &str) -> String {
    grants
        .iter()
        .find(|g| g["id"] == id && g["direction"] == direction)
        .unwrap_or_else(|| panic!("no {direction} grant {id} in {grants:?}"))["status"]
        .as_str()
        .unwrap()
        .to_string()
}

fn grant(alice: &common::User, args: &[&str]) -> (String, String) {
    let mut all = vec!["grant"];
    all.extend_from_slice(args);
    all.push("--json");
    let out: Value = serde_json::from_str(&alice.ok(all)).unwrap();
    (
        out["grant_id"].as_str().unwrap().to_string(),
        out["ticket"].as_str().unwrap().to_string(),
    )
}

#[test]
fn init_makes_a_private_identity_once() {
    let lab = TestCluster::new();
    let alice = lab.user("alice");
    let out = alice.ok(["init"]);
    assert!(out.contains("Your id: wtd1"), "{out}");
    let key = alice.home.join("identity.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let secret = std::fs::read_to_string(&key).unwrap();

    // A second init refuses, and leaves the key alone.
    let err = alice.fails(["init"]);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read_to_string(&key).unwrap(), secret);

    // `wtd id` prints the public id and fingerprint, never the secret.
    let id = alice.ok(["id"]);
    assert!(id.starts_with("wtd1") && id.contains("fingerprint: "), "{id}");
    let secret_body = secret.trim().trim_start_matches("wtdsecret1");
    for out in [&id, &out] {
        assert!(!out.contains(secret_body));
    }
}

#[test]
fn commands_before_init_say_what_to_do() {
    let lab = TestCluster::new();
    let bob = lab.user("bob");
    let err = bob.fails(["id"]);
    assert!(err.contains("run `wtd init` first"), "{err}");
}

#[test]
fn keyring_names_people_once() {
    let lab = TestCluster::new();
    let (alice, bob, carol) = (lab.user("alice"), lab.user("bob"), lab.user("carol"));
    alice.init();
    let bob_id = bob.init();
    let carol_id = carol.init();

    alice.ok(["keys", "add", "bob", &bob_id]);
    let ls = alice.ok(["keys", "ls"]);
    assert!(ls.contains("bob") && ls.contains(&bob_id), "{ls}");

    assert!(alice
        .fails(["keys", "add", "bob", &carol_id])
        .contains("already in your keyring"));
    assert!(alice
        .fails(["keys", "add", "bobby", &bob_id])
        .contains("already in your keyring as `bob`"));
    assert!(alice
        .fails(["keys", "add", "Carol", &carol_id])
        .contains("lowercase"));
    assert!(alice
        .fails(["keys", "add", "carol", "wtd1notanid"])
        .contains("damaged or incomplete"));
    let typo = format!("{}a", &carol_id[..carol_id.len() - 1]);
    let typo = if typo == carol_id {
        format!("{}b", &carol_id[..carol_id.len() - 1])
    } else {
        typo
    };
    assert!(alice.fails(["keys", "add", "carol", &typo]).contains("wtd id"));
    assert!(alice
        .fails(["keys", "rm", "dave"])
        .contains("no one called `dave`"));

    alice.ok(["keys", "rm", "bob"]);
    assert!(!alice.ok(["keys", "ls"]).contains(&bob_id));
}

#[test]
fn grant_import_revoke_and_the_statuses_shown() {
    let lab = TestCluster::new();
    let (alice, bob, carol) = (lab.user("alice"), lab.user("bob"), lab.user("carol"));
    alice.init();
    let bob_id = bob.init();
    carol.init();
    alice.ok(["keys", "add", "bob", &bob_id]);

    let (demo, ticket) = grant(
        &alice,
        &["bob", "--mission", "demo", "--rate", "10/min", "--expires", "2h"],
    );
    assert!(ticket.starts_with("wtdt1"));
    let out = bob.ok(["grants", "import", &ticket]);
    assert!(out.contains("Imported") && out.contains("demo"), "{out}");
    // Importing twice is harmless.
    assert!(bob.ok(["grants", "import", &ticket]).contains("Already had"));
    assert_eq!(status_of(&bob.grants(), &demo, "received"), "active");
    assert_eq!(status_of(&alice.grants(), &demo, "issued"), "active");

    // The grant is holder-bound: Carol cannot import Bob's grant.
    let err = carol.fails(["grants", "import", &ticket]);
    assert!(err.contains("not for you"), "{err}");
    // A damaged ticket is refused with a clear message.
    let damaged = format!("{}x", &ticket[..ticket.len() - 3]);
    assert!(bob.fails(["grants", "import", &damaged]).contains("ticket"));

    // Revoke by mission; a later grant for the same mission still works.
    alice.ok(["revoke", "bob", "--mission", "demo"]);
    assert_eq!(status_of(&alice.grants(), &demo, "issued"), "revoked");
    let (demo2, _) = grant(&alice, &["bob", "--mission", "demo"]);
    assert_eq!(status_of(&alice.grants(), &demo2, "issued"), "active");

    // Revoke one grant by id.
    let (lab_grant, _) = grant(&alice, &["bob", "--mission", "lab1"]);
    alice.ok(["revoke", &lab_grant]);
    assert_eq!(status_of(&alice.grants(), &lab_grant, "issued"), "revoked");
    assert_eq!(status_of(&alice.grants(), &demo2, "issued"), "active");

    // Revoke everything of Bob's so far; a grant made afterwards is active.
    alice.ok(["revoke", "bob", "--all"]);
    assert_eq!(status_of(&alice.grants(), &demo2, "issued"), "revoked");
    let (after, _) = grant(&alice, &["bob", "--mission", "demo"]);
    assert_eq!(status_of(&alice.grants(), &after, "issued"), "active");

    // Mistakes get clear errors and write nothing.
    assert!(alice.fails(["revoke", "bob"]).contains("say what to revoke"));
    assert!(alice
        .fails(["revoke", "grant-aaaaaaaaaaaaaaaaaaaaaaaaaa"])
        .contains("no grant"));
    assert!(alice
        .fails(["grant", "dave", "--mission", "demo"])
        .contains("no one called `dave`"));
    assert!(alice
        .fails(["grant", "bob", "--mission", "Demo"])
        .contains("lowercase"));
    assert!(alice
        .fails(["grant", "bob", "--mission", "../etc"])
        .contains("not allowed"));
    assert!(alice
        .fails(["grant", "bob", "--mission", "demo", "--rate", "0/min"])
        .contains("revoke"));
    assert!(alice
        .fails(["grant", "bob", "--mission", "demo", "--expires", "400days"])
        .contains("at most a year"));
    assert!(alice
        .fails(["grant", "bob", "--mission", "demo", "--expires", "tomorrow"])
        .contains("neither"));
    assert_eq!(alice.grants().len(), 4, "failed commands wrote nothing");
}

#[test]
fn agent_lists_in_grants() {
    let lab = TestCluster::new();
    let (alice, bob, pi) = (lab.user("alice"), lab.user("bob"), lab.user("pi"));
    alice.init();
    let bob_id = bob.init();
    let pi_id = pi.init();
    let (id, _) = grant(&alice, &[&bob_id, "--mission", "demo", "--agents", &pi_id]);
    let g = alice
        .grants()
        .into_iter()
        .find(|g| g["id"] == id.as_str())
        .unwrap();
    assert_eq!(g["agents"], serde_json::json!([pi_id]));
    assert!(alice
        .fails(["grant", &bob_id, "--mission", "demo", "--agents", "wtd1zzz"])
        .contains("--agents"));
}

/// `wtd ... | head -1`: when the reader of its output goes away, a command stops quietly
/// with status 141 (as one killed by SIGPIPE), without a panic or a backtrace.
#[test]
fn a_closed_pipe_ends_a_command_quietly() {
    let lab = TestCluster::new();
    let alice = lab.user("alice");
    alice.init();
    let bob_id = lab.user("bob").init();
    alice.ok(["keys", "add", "bob", &bob_id]);
    for args in [&["id"][..], &["keys", "ls"], &["grants", "--json"], &["--help"]] {
        // The read end is closed before the command starts, so its first write fails.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = std::process::Command::new(common::wtd_bin())
            .args(args)
            .env("WTD_HOME", &alice.home)
            .env("RUST_BACKTRACE", "1")
            .stdout(writer)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // clap writes help itself and ignores the closed pipe (0); wtd's own output is 141.
        let quiet = if args == ["--help"] { 0 } else { 141 };
        assert_eq!(out.status.code(), Some(quiet), "wtd {args:?}: {stderr}");
        assert!(stderr.is_empty(), "wtd {args:?} printed: {stderr}");
    }
}
