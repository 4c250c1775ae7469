//! Lesson grants, end to end: a teacher grants a whole roster at once, every student calls,
//! one record ends the lesson for everyone, and so does the lesson's end on the agents'
//! clock. Real `wtd proxy`, `wtd agent`s and CLI processes on 127.0.0.1. Also `wtd keys
//! add` with ids pasted as they come.
//!
//! # Index
//! - a bad roster grants nobody, and says which lines are wrong
//! - granted together (one expiry, one label), revoked together by label, in one record
//! - expired together: agents restarted on a fake clock past the lesson's end refuse every
//!   student as "expired", while a longer grant still works; the time floor keeps it so
//! - `--class` revocation of what still runs, `--until` refusing a time already past
//! - `wtd keys add` with `wtd id`'s whole output, a `name id` line, a `wtd:` URI, a typo
//!
//! The fake clock is `WTD_TEST_CLOCK_OFFSET` (see `wtd_agent::clock`): a signed duration
//! the agent adds to the system clock, read once at start. Only debug builds honour it,
//! which is what `cargo test` builds; a release build (and the Pi image) ignores it and
//! logs that it did. So no test here waits for a grant to run out.

mod common;

use std::time::Duration;

use common::{wait_for, TestCluster, User};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);

struct Class {
    lab: TestCluster,
    proxy: common::Proxy,
    teacher: User,
    students: Vec<User>,
    agents: Vec<common::Agent>,
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
            proxy,
            teacher,
            students,
            agents,
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

    /// Stops both agents, waits until the proxy lists neither (so no call reaches an old
    /// process), and starts them again with `env`, the same state on disk; then waits
    /// until both are back.
    fn restart_agents(&mut self, env: &[(&str, &str)]) {
        for a in &mut self.agents {
            a.daemon.stop();
        }
        wait_for("both agents offline", LIMIT, || {
            self.students[0].agent_names().is_empty()
        });
        for a in &mut self.agents {
            a.restart_with_env(env);
        }
        wait_for("both agents back", LIMIT, || {
            self.students[0].agent_names().len() == 2
        });
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

/// `call` on the agent named `agent` only.
fn call_on(user: &User, agent: &str) -> std::process::Output {
    user.cli(["call", "--agent", agent, "demo/echo", "{\"hi\":1}"])
}

/// What `wtd call` printed on stderr.
fn said(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `--until` two hours from now on this machine's clock, as a teacher would type it
/// (`14:05`, or `tomorrow 00:30` late in the evening).
fn two_hours_from_now() -> String {
    let later = std::process::Command::new("date")
        .args(["-d", "+2 hours", "+%H:%M %d"])
        .output()
        .unwrap();
    let later = String::from_utf8(later.stdout).unwrap();
    let today = std::process::Command::new("date").arg("+%d").output().unwrap();
    let (clock, day) = later.trim().split_once(' ').unwrap();
    if day == String::from_utf8(today.stdout).unwrap().trim() {
        clock.to_string()
    } else {
        format!("tomorrow {clock}")
    }
}

/// A `WTD_TEST_CLOCK_OFFSET` that puts an agent's clock at `at` (`+7385s`). Computed when
/// the agent is about to start: the real clock keeps running after, so an offset meant to
/// land before an end leaves minutes of room, and one meant to land after an end only
/// moves further past it.
fn offset_to(at: std::time::SystemTime) -> String {
    let ahead = at
        .duration_since(std::time::SystemTime::now())
        .expect("the lesson ends in the future");
    format!("+{}s", ahead.as_secs())
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

/// Expired together, on a fake clock. The lesson ends at `--until`; each agent allows
/// 60 s of clock skew past a grant's end (`wtd_keys::defaults::CLOCK_SKEW_MS`). Restarted
/// with their clocks 10 min before the end, the agents still serve every student; with
/// their clocks two minutes past the end, every student is refused as "expired", while
/// the teaching assistant's day-long grant still works. Nothing but the agents' clock
/// changed between those two runs. Set back to the real clock afterwards, they still
/// refuse: the time floor each agent saved remembers how late it has been.
#[test]
fn a_class_expires_together_on_the_agents_clock() {
    let mut class = Class::new();
    let roster = class.good_roster();
    let lesson: Value = serde_json::from_str(&class.teacher.ok([
        "grant",
        "--class",
        &roster,
        "--mission",
        "demo",
        "--until",
        &two_hours_from_now(),
        "--label",
        "lesson-3",
        "--json",
    ]))
    .unwrap();
    let end = humantime::parse_rfc3339(lesson["expires"].as_str().unwrap()).unwrap();
    let grants = lesson["grants"].as_array().unwrap().clone();
    // A teaching assistant, outside the roster, whose grant outlasts the lesson. (Not the
    // teacher: she owns the agents, and an owner's own calls need no grant.)
    let ta = class.lab.user("ta");
    let ta_id = ta.init();
    ta.ok(["join", &class.proxy.ticket]);
    let ta_grant: Value = serde_json::from_str(&class.teacher.ok([
        "grant",
        &ta_id,
        "--mission",
        "demo",
        "--expires",
        "1day",
        "--json",
    ]))
    .unwrap();
    ta.ok(["grants", "import", ta_grant["ticket"].as_str().unwrap()]);
    for (student, g) in class.students.iter().zip(&grants) {
        student.ok(["grants", "import", g["ticket"].as_str().unwrap()]);
    }
    // Each on every agent by name: each agent decides by its own clock and floor, and the
    // selector alone might never pick one of them.
    let everyone_calls = |class: &Class| {
        for (user, a) in class
            .students
            .iter()
            .chain([&ta])
            .flat_map(|u| class.agents.iter().map(move |a| (u, a)))
        {
            wait_for(
                &format!("{}'s call on {} to work", user.name, a.name),
                LIMIT,
                || call_on(user, &a.name).status.success(),
            );
        }
    };
    everyone_calls(&class);

    // Ten minutes before the end, by the agents' clocks: still the lesson.
    let before = offset_to(end - Duration::from_secs(600));
    class.restart_agents(&[("WTD_TEST_CLOCK_OFFSET", &before)]);
    for a in &class.agents {
        let log = a.daemon.output();
        assert!(log.contains("this agent's clock is moved"), "{}: {log}", a.name);
    }
    everyone_calls(&class);

    // Two minutes past the end: one minute past the skew allowance.
    let after = offset_to(end + Duration::from_secs(120));
    class.restart_agents(&[("WTD_TEST_CLOCK_OFFSET", &after)]);
    let every_student_expired = |class: &Class| {
        for a in &class.agents {
            for (student, g) in class.students.iter().zip(&grants) {
                let out = call_on(student, &a.name);
                let what = format!("{} on {}: {}", student.name, a.name, said(&out));
                assert_eq!(out.status.code(), Some(3), "{what}");
                let expected = format!(
                    "{} refused the call: your grant {} for `demo` expired",
                    a.name,
                    g["grant_id"].as_str().unwrap()
                );
                assert!(said(&out).contains(&expected), "{what}");
                assert!(said(&out).contains("ask the owner to renew it"), "{what}");
            }
        }
    };
    let the_longer_grant_works = |class: &Class| {
        for a in &class.agents {
            let out = call_on(&ta, &a.name);
            assert!(
                out.status.success(),
                "the longer grant on {}: {}",
                a.name,
                said(&out)
            );
        }
    };
    every_student_expired(&class);
    the_longer_grant_works(&class);
    // The teacher's list is by her own (real) clock: to her the lesson still runs.
    assert!(class.issued().iter().all(|g| g["status"] == "active"));

    // The real clock again: the agents' time floors (saved while they ran late) stop a
    // clock that went back from reviving the lesson.
    class.restart_agents(&[]);
    every_student_expired(&class);
    the_longer_grant_works(&class);
}

/// A fake clock the agent cannot read stops it at start, saying how to write one, rather
/// than leaving it on the real clock for a test to pass or fail for the wrong reason.
#[test]
fn an_unreadable_test_clock_stops_the_agent_at_start() {
    let lab = TestCluster::new();
    let proxy = lab.start_proxy();
    let teacher = lab.user("teacher");
    let teacher_id = teacher.init();
    let mut pi = lab.add_agent(&proxy.ticket, "pi-1", &[&teacher_id], "");
    pi.restart_with_env(&[("WTD_TEST_CLOCK_OFFSET", "after lunch")]);
    let mut status = None;
    wait_for("the agent to refuse to start", LIMIT, || {
        status = pi.daemon.child.try_wait().unwrap();
        status.is_some()
    });
    assert!(!status.unwrap().success());
    let log = pi.daemon.output();
    assert!(
        log.contains("WTD_TEST_CLOCK_OFFSET=\"after lunch\" is not a clock offset"),
        "{log}"
    );
    assert!(log.contains("like `+3h`"), "{log}");
}

#[test]
fn revoke_by_roster_ends_what_still_runs_and_until_sets_one_end() {
    let class = Class::new();
    let roster = class.good_roster();
    let until = two_hours_from_now();
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
