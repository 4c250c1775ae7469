//! Lesson grants, end to end: a teacher grants a whole roster at once, every student calls,
//! and one record ends the lesson for everyone. Real `wtd proxy`, `wtd agent`s and CLI
//! processes on 127.0.0.1. Also `wtd keys add` with ids pasted as they come.
//!
//! # Index
//! - a bad roster grants nobody, and says which lines are wrong
//! - granted together (one expiry, one label), revoked together by label, in one record
//! - `--class` revocation of what still runs, `--until` refusing a time already past
//! - `wtd keys add` with `wtd id`'s whole output, a `name id` line, a `wtd:` URI, a typo
//!
//! Expiry together is shown here by the grants' one expiry; their *expiring* together, to
//! the millisecond, is tested on a fake clock in keys/tests/authz.rs (agents use the real
//! clock, and the 60 s skew allowance makes a real wait slow).

mod common;

use std::time::Duration;

use common::{wait_for, TestCluster, User};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);

struct Class {
    lab: TestCluster,
    _proxy: common::Proxy,
    teacher: User,
    students: Vec<User>,
    _agents: Vec<common::Agent>,
}

impl Class {
    /// A teacher with two adopted agents, and three students who joined the proxy.
    fn new() -> Class {
        let lab = TestCluster::new();
        let proxy = lab.start_proxy();
        let teacher = lab.user("teacher");
        let teacher_id = teacher.init();
        teacher.ok(["join", &proxy.ticket]);
        let students: Vec<User> = ["ada", "grace", "alan"]
            .iter()
            .map(|n| {
                let s = lab.user(n);
                s.init();
                s.ok(["join", &proxy.ticket]);
                s
            })
            .collect();
        let agents: Vec<common::Agent> = ["pi-1", "pi-2"]
            .iter()
            .map(|n| {
                let a = lab.add_agent(&proxy.ticket, n, &[&teacher_id], "");
                teacher.adopt(&a);
                a
            })
            .collect();
        wait_for("both agents online", LIMIT, || {
            students[0].agent_names().len() == 2
        });
        Class {
            lab,
            _proxy: proxy,
            teacher,
            students,
            _agents: agents,
        }
    }

    /// A roster file of `lines`, in the lab directory.
    fn roster(&self, file: &str, lines: &str) -> String {
        let path = self.lab.dir().join(file);
        std::fs::write(&path, lines).unwrap();
        path.display().to_string()
    }

    /// The roster of the three students, with a comment and the ids pasted in two ways.
    fn good_roster(&self) -> String {
        let ids: Vec<String> = self.students.iter().map(|s| s.id()).collect();
        self.roster(
            "roster.txt",
            &format!(
                "# Year 9, room 2\n\nada {}\ngrace wtd:{}   # back row\nalan {}\n",
                ids[0],
                ids[1],
                ids[2].to_uppercase()
            ),
        )
    }

    fn issued(&self) -> Vec<Value> {
        self.teacher
            .grants()
            .into_iter()
            .filter(|g| g["direction"] == "issued")
            .collect()
    }
}

fn call(student: &User) -> std::process::Output {
    student.cli(["call", "demo/echo", "{\"hi\":1}"])
}

#[test]
fn a_bad_roster_grants_nobody_and_names_its_bad_lines() {
    let class = Class::new();
    let ada = class.students[0].id();
    let roster = class.roster(
        "bad.txt",
        &format!(
            "ada {ada}\njust-a-name\ngrace {ada}\nada {}\n",
            class.students[1].id()
        ),
    );
    let err = class.teacher.fails([
        "grant",
        "--class",
        &roster,
        "--mission",
        "demo",
        "--expires",
        "1h",
    ]);
    assert!(err.contains("nothing was done"), "{err}");
    for line in ["line 2:", "line 3:", "line 4:"] {
        assert!(err.contains(line), "{line} in:\n{err}");
    }
    assert!(class.issued().is_empty(), "not one grant was made");
    // A lesson needs an end.
    let good = class.good_roster();
    let err = class
        .teacher
        .fails(["grant", "--class", &good, "--mission", "demo"]);
    assert!(err.contains("--until"), "{err}");
    // A time today that has passed is refused, not moved to tomorrow.
    let err = class
        .teacher
        .fails(["grant", "--class", &good, "--mission", "demo", "--until", "00:00"]);
    assert!(err.contains("already passed"), "{err}");
    let err = class.teacher.fails([
        "grant",
        "--class",
        &good,
        "--mission",
        "demo",
        "--until",
        "3:45pm",
    ]);
    assert!(err.contains("24-hour"), "{err}");
    assert!(class.issued().is_empty());
}

#[test]
fn a_class_is_granted_together_and_revoked_in_one_record() {
    let class = Class::new();
    let roster = class.good_roster();
    let out: Value = serde_json::from_str(&class.teacher.ok([
        "grant",
        "--class",
        &roster,
        "--mission",
        "demo",
        "--expires",
        "1h",
        "--label",
        "lesson-1",
        "--json",
    ]))
    .unwrap();
    assert_eq!(out["label"], "lesson-1");
    let grants = out["grants"].as_array().unwrap();
    assert_eq!(grants.len(), 3);
    // One expiry for all, and the names went into the teacher's keyring.
    let issued = class.issued();
    assert_eq!(issued.len(), 3);
    assert!(issued.iter().all(|g| g["expires"] == issued[0]["expires"]));
    let mut names: Vec<&str> = issued
        .iter()
        .map(|g| g["subject_name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["ada", "alan", "grace"]);

    // Every student imports their own ticket and calls.
    for (student, g) in class.students.iter().zip(grants) {
        assert_eq!(g["name"], student.name.as_str());
        student.ok(["grants", "import", g["ticket"].as_str().unwrap()]);
        let out = call(student);
        assert!(
            out.status.success(),
            "{}: {}",
            student.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The lesson ends: one record for the three.
    let said = class.teacher.ok(["revoke", "--label", "lesson-1"]);
    assert!(said.contains("3 grant(s), in 1 record(s)"), "{said}");
    let issued = class.issued();
    assert!(issued.iter().all(|g| g["status"] == "revoked"), "{issued:?}");
    for student in &class.students {
        wait_for("the agents to refuse the revoked lesson", LIMIT, || {
            call(student).status.code() == Some(3)
        });
        let out = call(student);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("revoked"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A label that names no lesson says which exist.
    let err = class.teacher.fails(["revoke", "--label", "lesson-2"]);
    assert!(err.contains("lesson-1"), "{err}");
    // Nothing still running: said so, and nothing written.
    let err = class.teacher.fails(["revoke", "--class", &roster]);
    assert!(err.contains("nothing to revoke"), "{err}");
}

#[test]
fn revoke_by_roster_ends_what_still_runs_and_until_sets_one_end() {
    let class = Class::new();
    let roster = class.good_roster();
    // Two hours from now on this machine's clock, as the teacher would type it.
    let later = std::process::Command::new("date")
        .args(["-d", "+2 hours", "+%H:%M %d"])
        .output()
        .unwrap();
    let later = String::from_utf8(later.stdout).unwrap();
    let today = std::process::Command::new("date").arg("+%d").output().unwrap();
    let (clock, day) = later.trim().split_once(' ').unwrap();
    let until = if day == String::from_utf8(today.stdout).unwrap().trim() {
        clock.to_string()
    } else {
        format!("tomorrow {clock}")
    };
    let said = class.teacher.ok([
        "grant",
        "--class",
        &roster,
        "--mission",
        "demo",
        "--until",
        &until,
    ]);
    assert!(said.contains("Granted 3 students"), "{said}");
    assert!(said.contains("wtd grants import"), "{said}");
    let issued = class.issued();
    assert!(issued.iter().all(|g| g["expires"] == issued[0]["expires"]));
    // And one grant outside the roster (the teacher's own), which must survive.
    let teacher_id = class.teacher.id();
    class
        .teacher
        .ok(["grant", &teacher_id, "--mission", "demo", "--expires", "1h"]);
    let said = class.teacher.ok(["revoke", "--class", &roster]);
    assert!(said.contains("3 grant(s), in 1 record(s)"), "{said}");
    let statuses: Vec<String> = class
        .issued()
        .iter()
        .map(|g| {
            format!(
                "{} {}",
                g["subject"].as_str().unwrap(),
                g["status"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| s.ends_with("revoked")).count(),
        3,
        "{statuses:?}"
    );
    assert!(statuses.contains(&format!("{teacher_id} active")), "{statuses:?}");
}

#[test]
fn keys_add_takes_ids_as_people_paste_them() {
    let lab = TestCluster::new();
    let me = lab.user("me");
    me.init();
    let bob = lab.user("bob");
    bob.init();
    let bob_id = bob.id();
    // The whole output of `wtd id`, fingerprint and all.
    let whole = bob.ok(["id"]);
    me.ok(["keys", "add", "bob", &whole]);
    // One `name id` line from a class list; a QR code's `wtd:` URI in capitals.
    let carol = lab.user("carol");
    carol.init();
    me.ok(["keys", "add", &format!("carol {}", carol.id())]);
    let dan = lab.user("dan");
    dan.init();
    me.ok(["keys", "add", "dan", &format!("WTD:{}", dan.id().to_uppercase())]);
    // An id wrapped over two lines, split by the shell into two words.
    let erin = lab.user("erin");
    erin.init();
    let erin_id = erin.id();
    me.ok(["keys", "add", "erin", &erin_id[..30], &erin_id[30..]]);
    let keys: Value = serde_json::from_str(&me.ok(["keys", "ls", "--json"])).unwrap();
    assert_eq!(keys["bob"], bob_id.as_str());
    assert_eq!(keys["carol"], carol.id().as_str());
    assert_eq!(keys["dan"], dan.id().as_str());
    assert_eq!(keys["erin"], erin_id.as_str());
    // A typo is caught by the checksum, a wrong fingerprint by its check.
    let last = bob_id.chars().last().unwrap();
    let typo = format!(
        "{}{}",
        &bob_id[..bob_id.len() - 1],
        if last == 'a' { 'b' } else { 'a' }
    );
    let err = me.fails(["keys", "add", "typo", &typo]);
    assert!(err.contains("typo") || err.contains("damaged"), "{err}");
    let err = me.fails([
        "keys",
        "add",
        "mixed",
        &format!(
            "{}\nfingerprint: {}",
            carol.id(),
            bob.ok(["id"]).lines().nth(1).unwrap().split(' ').nth(1).unwrap()
        ),
    ]);
    assert!(err.contains("fingerprint"), "{err}");
    let err = me.fails(["keys", "add", &bob_id]);
    assert!(err.contains("name before the id"), "{err}");
}
