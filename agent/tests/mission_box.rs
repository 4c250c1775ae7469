//! The mission box for real: handlers that try to escape, to eat the Pi's memory, or to
//! read the agent's key, run through `exec::run` in the `wtd-box` binary of this package.
//!
//! Each escape test runs in every mode this machine offers: the subreaper fallback always,
//! the cgroup mode where a writable cgroup v2 is found (otherwise the test says so and
//! skips that mode only). Whether a process is gone is checked by scanning `/proc` for
//! every pid the handler recorded. No test asserts how long anything took: waits are
//! bounds ([`HUNG`]), never measurements.
//!
//! # Index
//! - escapes: `setsid`, a double fork, a sleeping grandchild; after a timeout and after a
//!   cancellation, in each mode
//! - limits: a handler allocating past its memory limit, a fork bomb, in each mode
//! - the agent's key: unreadable by a handler when the agent runs as root
//! - set-up failures: a configured user that does not exist, a missing box program
#![cfg(unix)]
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with a backtrace

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wtd_agent::exec::{self, ExecEvent, ExecOutcome, ExecRequest, MissionUser, RunAs};
use wtd_agent::missions::Limits;
use wtd_agent::sandbox::{LimitHit, Mode, Sandbox};
use wtd_keys::{FunctionName, MissionName};

/// A bound on every call, far above anything a passing test needs.
const HUNG: Duration = Duration::from_secs(60);

/// The box binary built with these tests.
const BOX: &str = env!("CARGO_BIN_EXE_wtd-box");

/// The modes to test here: the subreaper always; the cgroup mode if this machine has one
/// we can write to (else a note says it was skipped).
fn modes(test: &str) -> Vec<Sandbox> {
    let mut modes = vec![Sandbox::subreaper(BOX, std::iter::empty::<&str>())];
    let probed = Sandbox::probe(BOX, std::iter::empty::<&str>());
    match probed.mode() {
        Mode::Cgroup { memory, pids } => {
            if !(memory && pids) {
                eprintln!(
                    "note: {test}: cgroup v2 without delegated memory/pids controllers here; \
                     in cgroup mode those limits are the watchdog's, not the kernel's"
                );
            }
            modes.push(probed)
        }
        Mode::Subreaper => {
            eprintln!("note: {test}: no writable cgroup v2 here; only the subreaper mode was tested")
        }
    }
    modes
}

/// Shell lines that try every way out of a call: a `setsid` child (a new session and
/// group), a double fork (a child whose parent exits at once, so it is orphaned), and a
/// grandchild that sleeps. Each records its pid in `$D/pids` (the handler's first), and the
/// handler goes on only once all are running.
const ESCAPES: &str = r#"echo $$ >> "$D/pids"
setsid sleep 100 & echo $! >> "$D/pids"
sh -c 'sleep 100 & echo $! >> "$1/pids"' sh "$D"
sh -c 'sh -c "sleep 100; :" & echo $! >> "$1/pids"; wait' sh "$D" & echo $! >> "$D/pids"
while [ "$(wc -l < "$D/pids")" -lt 5 ]; do sleep 0.01; done
echo ready >&2
wait"#;

struct Lab {
    dir: TempDir,
    mission: MissionName,
    function: FunctionName,
}

impl Lab {
    fn new() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        Lab {
            dir,
            mission: MissionName::new("boxtest").unwrap(),
            function: FunctionName::new("run").unwrap(),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }

    fn script(&self, name: &str, body: &str) -> String {
        let path = self.path(name);
        let dir = self.dir.path().display();
        fs::write(&path, format!("#!/bin/sh\nD='{dir}'\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Every pid the handler recorded; each must be gone.
    async fn assert_all_gone(&self) {
        let pids = fs::read_to_string(self.path("pids")).expect("the handler wrote $D/pids");
        let pids: Vec<i32> = pids.lines().map(|p| p.parse().unwrap()).collect();
        assert_eq!(pids.len(), 5, "{pids:?}");
        for pid in pids {
            for _ in 0..500 {
                if !alive(pid) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(!alive(pid), "process {pid} escaped the box: {:?}", stat(pid));
        }
    }
}

fn stat(pid: i32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/stat")).ok()
}

/// Whether `pid` is alive (a zombie is not).
fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| !matches!(rest.split_whitespace().next(), Some("Z" | "X")))
    })
}

/// Runs one call, cancelling it when the handler says `ready` if `cancel_on_ready`.
async fn run(req: ExecRequest<'_>, cancel_on_ready: bool) -> (ExecOutcome, Vec<String>) {
    let (events, mut rx) = mpsc::channel(4);
    let cancel = CancellationToken::new();
    let run = exec::run(req, events, cancel.clone());
    let listen = async {
        let mut lines = Vec::new();
        while let Some(ExecEvent::Progress(line)) = rx.recv().await {
            if cancel_on_ready && line == "ready" {
                cancel.cancel();
            }
            lines.push(line);
        }
        lines
    };
    tokio::time::timeout(HUNG, async { tokio::join!(run, listen) })
        .await
        .expect("the call hung")
}

fn request<'a>(lab: &'a Lab, argv: &'a [String], sandbox: &'a Sandbox, timeout: Duration) -> ExecRequest<'a> {
    ExecRequest {
        mission: &lab.mission,
        function: &lab.function,
        argv,
        args_json: b"",
        timeout,
        output_cap: 64 * 1024,
        run_as: RunAs::CurrentUser,
        mission_user: None,
        limits: Limits::default(),
        sandbox,
        cause: String::new(),
    }
}

// ---- escapes ----

#[tokio::test]
async fn escapes_are_gone_after_a_timeout_in_every_mode() {
    for sandbox in modes("timeout") {
        let lab = Lab::new();
        let argv = [lab.script("escaper", ESCAPES)];
        // Long enough for the family to start on a slow machine; the outcome shows it did.
        let timeout = Duration::from_secs(3);
        let (outcome, progress) = run(request(&lab, &argv, &sandbox, timeout), false).await;
        assert_eq!(
            outcome,
            ExecOutcome::TimedOut { after: timeout },
            "{:?}",
            sandbox.mode()
        );
        assert_eq!(progress, ["ready"], "every escape was running before the timeout");
        lab.assert_all_gone().await;
    }
}

#[tokio::test]
async fn escapes_are_gone_after_a_cancellation_in_every_mode() {
    for sandbox in modes("cancellation") {
        let lab = Lab::new();
        let argv = [lab.script("escaper", ESCAPES)];
        let (outcome, _) = run(request(&lab, &argv, &sandbox, HUNG / 2), true).await;
        assert_eq!(outcome, ExecOutcome::Cancelled, "{:?}", sandbox.mode());
        lab.assert_all_gone().await;
    }
}

#[tokio::test]
async fn escapes_are_gone_after_the_handler_exits_in_every_mode() {
    // No timeout, no cancel: the handler exits by itself, and the box empties behind it.
    for sandbox in modes("exit") {
        let lab = Lab::new();
        let body = ESCAPES.replace("\nwait", "\nprintf done");
        let argv = [lab.script("leaver", &body)];
        let (outcome, _) = run(request(&lab, &argv, &sandbox, HUNG / 2), false).await;
        assert_eq!(
            outcome,
            ExecOutcome::Ok {
                output: b"done".to_vec()
            }
        );
        lab.assert_all_gone().await;
    }
}

// ---- limits ----

#[tokio::test]
async fn a_handler_past_its_memory_limit_is_stopped_and_reported() {
    // `tail -c` of an endless pipe keeps the last 512 MiB it read: its memory grows until
    // something stops it. Without the limit this call would time out instead.
    for sandbox in modes("memory") {
        let lab = Lab::new();
        let argv = [lab.script("hog", "echo started >&2\ncat /dev/zero | tail -c 512M")];
        let mut req = request(&lab, &argv, &sandbox, HUNG / 2);
        req.limits.memory = 32 * 1024 * 1024;
        let (outcome, _) = run(req, false).await;
        assert_eq!(
            outcome,
            ExecOutcome::LimitExceeded {
                limit: LimitHit::Memory {
                    limit: 32 * 1024 * 1024
                }
            },
            "{:?}",
            sandbox.mode()
        );
        assert_eq!(outcome.to_string(), "used more than 32 MiB of memory");
    }
}

#[tokio::test]
async fn a_fork_bomb_is_stopped_at_its_process_limit_and_reported() {
    for sandbox in modes("pids") {
        let lab = Lab::new();
        let argv = [lab.script(
            "bomb",
            "i=0; while [ $i -lt 40 ]; do sleep 100 & i=$((i + 1)); done; wait",
        )];
        let mut req = request(&lab, &argv, &sandbox, HUNG / 2);
        req.limits.pids = 8;
        let (outcome, _) = run(req, false).await;
        assert_eq!(
            outcome,
            ExecOutcome::LimitExceeded {
                limit: LimitHit::Pids { limit: 8 }
            },
            "{:?}",
            sandbox.mode()
        );
        assert_eq!(outcome.to_string(), "ran more than 8 processes at once");
    }
}

// ---- the agent's key ----

#[tokio::test]
async fn a_handler_cannot_read_the_agents_key_when_the_agent_runs_as_root() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("note: not root, so handlers run as the agent's own user; nothing to test");
        return;
    }
    // The agent's state directory as the systemd unit makes it: 0700 root, key 0600.
    let state = tempfile::tempdir().unwrap();
    let key = state.path().join("identity.key");
    fs::write(&key, "secret key").unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(state.path(), fs::Permissions::from_mode(0o700)).unwrap();
    let lab = Lab::new();
    let sandbox = Sandbox::probe(BOX, std::iter::empty::<&str>());
    let argv = ["/bin/cat".to_string(), key.to_str().unwrap().to_string()];

    // The control: as the agent's own user (root), the key is readable.
    let (outcome, _) = run(request(&lab, &argv, &sandbox, HUNG / 2), false).await;
    assert_eq!(
        outcome,
        ExecOutcome::Ok {
            output: b"secret key".to_vec()
        }
    );

    // As the mission's own user (created on demand), it is not.
    let mut req = request(&lab, &argv, &sandbox, HUNG / 2);
    req.run_as = RunAs::for_agent().unwrap();
    req.mission_user = Some(MissionUser::PerMission);
    let (outcome, _) = run(req, false).await;
    match outcome {
        ExecOutcome::Failed { stderr_tail, .. } => {
            assert!(stderr_tail.contains("Permission denied"), "{stderr_tail}")
        }
        other => panic!("the handler read the key, or failed otherwise: {other:?}"),
    }

    // And it ran as that user, not root.
    let id = ["/usr/bin/id".to_string(), "-u".to_string()];
    let mut req = request(&lab, &id, &sandbox, HUNG / 2);
    req.run_as = RunAs::for_agent().unwrap();
    req.mission_user = Some(MissionUser::PerMission);
    let (outcome, _) = run(req, false).await;
    let ExecOutcome::Ok { output } = outcome else {
        panic!("{outcome:?}");
    };
    let uid: u32 = String::from_utf8(output).unwrap().trim().parse().unwrap();
    let user = nix::unistd::User::from_uid(uid.into()).unwrap();
    assert_ne!(uid, 0);
    let name = user.map(|u| u.name).unwrap_or_default();
    if name != "wtd-boxtest" {
        // No `useradd` here: the shared user is the documented fallback.
        eprintln!("note: could not create wtd-boxtest; ran as the shared user {name}");
    }
}

#[tokio::test]
async fn a_configured_user_that_does_not_exist_is_a_clear_error() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("note: not root, so mission users are not used; nothing to test");
        return;
    }
    let lab = Lab::new();
    let sandbox = Sandbox::subreaper(BOX, std::iter::empty::<&str>());
    let argv = ["/bin/true".to_string()];
    let mut req = request(&lab, &argv, &sandbox, HUNG / 2);
    req.run_as = RunAs::for_agent().unwrap();
    req.mission_user = Some(MissionUser::Configured("wtd-no-such-user".into()));
    let (outcome, _) = run(req, false).await;
    match outcome {
        ExecOutcome::CouldNotStart { reason } => assert!(reason.contains("does not exist"), "{reason}"),
        other => panic!("expected CouldNotStart, got {other:?}"),
    }
}

#[tokio::test]
async fn a_missing_box_program_is_a_clear_error() {
    let lab = Lab::new();
    let sandbox = Sandbox::subreaper("/nonexistent/wtd", std::iter::empty::<&str>());
    let argv = ["/bin/true".to_string()];
    let (outcome, _) = run(request(&lab, &argv, &sandbox, HUNG / 2), false).await;
    match outcome {
        ExecOutcome::CouldNotStart { reason } => {
            assert!(
                reason.contains("cannot start the mission box (/nonexistent/wtd)"),
                "{reason}"
            )
        }
        other => panic!("expected CouldNotStart, got {other:?}"),
    }
}
