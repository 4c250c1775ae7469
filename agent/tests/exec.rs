//! Running exec functions for real: `/bin/sh` handlers written to temporary directories,
//! real processes, real process groups, checked through `/proc`.
//!
//! Every handler is a small script (see [`Lab::script`]); the scrubbed environment hides the
//! test's variables from it, so each script starts with `D=<its lab directory>`, where it
//! leaves what the test checks afterwards. Handlers that must be stopped start a [`FAMILY`]
//! first (a child, and a child that has one of its own) and record who is in it.
//!
//! No test asserts how long anything took. Timeouts are short (300 ms) where a timeout is
//! the point, and long where it is only a bound: a call that should end by itself (or be
//! cancelled) but does not then fails as `TimedOut` instead of passing. Every call is also
//! wrapped in [`HUNG`], so a hang fails the test rather than the CI job.
//!
//! # Index
//! - arguments and output: stdin in, stdout out; `argv` untouched by any shell; a handler
//!   that ignores its arguments; the output cap, exactly at it and past it
//! - progress: live and in order; capped in length and number; nobody listening
//! - stopping: timeout, cancel, dropping the call, leftovers of a handler that exited; each
//!   kills the whole process group, grandchildren included
//! - failures: a crash (signal), a non-zero exit, programs that cannot start
//! - confinement: the exact environment and a private working directory; the unprivileged
//!   user, with no supplementary groups (root only)
//!
//! The mission box itself (escapes, limits, the agent's key) is tested in
//! `tests/mission_box.rs`.
#![cfg(unix)]
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with a backtrace

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wtd_agent::exec::{
    self, ExecEvent, ExecOutcome, ExecRequest, RunAs, HANDLER_HOME, HANDLER_LANG, HANDLER_PATH,
    MAX_PROGRESS_EVENTS, MAX_PROGRESS_LINE, STDERR_TAIL,
};
use wtd_agent::missions::{Builtin, Function, Limits, Run};
use wtd_agent::sandbox::Sandbox;
use wtd_keys::{FunctionName, MissionName};

/// A bound on every call, far above anything a passing test needs: reaching it means `run`
/// hung (or left a task holding the events channel open).
const HUNG: Duration = Duration::from_secs(60);

/// A timeout for calls that are meant to time out.
const SHORT: Duration = Duration::from_millis(300);

/// A timeout for calls that are meant to end some other way.
const LONG: Duration = Duration::from_secs(30);

/// Shell lines that start a family in the handler's process group: a `sleep` child, and a
/// `sh` child with a `sleep` child of its own. They record their pids in `$D/pids` (the
/// handler's first) and the handler's process group in `$D/pgid`, and go on only once all
/// four are running, so a test that then sees them gone knows they were there.
const FAMILY: &str = r#"echo $$ >> "$D/pids"
cut -d' ' -f5 /proc/$$/stat > "$D/pgid"
sleep 100 & echo $! >> "$D/pids"
sh -c 'sleep 100 & echo $! >> "$1/pids"; wait' sh "$D" & echo $! >> "$D/pids"
while [ "$(wc -l < "$D/pids")" -lt 4 ]; do sleep 0.01; done"#;

/// The box these tests run handlers in: the `wtd-box` binary of this package, in the best
/// mode this machine offers (the cgroup and subreaper modes have their own tests in
/// `tests/mission_box.rs`).
fn sandbox() -> &'static Sandbox {
    static SANDBOX: std::sync::OnceLock<Sandbox> = std::sync::OnceLock::new();
    SANDBOX.get_or_init(|| Sandbox::probe(env!("CARGO_BIN_EXE_wtd-box"), std::iter::empty::<&str>()))
}

/// A temporary directory for one test's handlers and what they leave behind.
struct Lab {
    dir: TempDir,
    mission: MissionName,
    function: FunctionName,
}

/// What a call produced.
#[derive(Debug)]
struct Ran {
    outcome: ExecOutcome,
    /// Every progress line, in the order they arrived.
    progress: Vec<String>,
}

/// A call being set up: defaults are `/bin/cat`-friendly (no arguments, a long timeout,
/// a 64 KiB cap, the test's own user).
struct Call<'a> {
    lab: &'a Lab,
    argv: Vec<String>,
    args: Vec<u8>,
    timeout: Duration,
    cap: usize,
    run_as: RunAs,
    cause: String,
}

impl Lab {
    fn new() -> Lab {
        Lab {
            dir: tempfile::tempdir().unwrap(),
            mission: MissionName::new("demo").unwrap(),
            function: FunctionName::new("echo").unwrap(),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }

    /// Writes an executable `/bin/sh` script and returns its path.
    fn script(&self, name: &str, body: &str) -> String {
        let path = self.path(name);
        let dir = self.dir.path().display();
        fs::write(&path, format!("#!/bin/sh\nD='{dir}'\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn call(&self, argv: &[&str]) -> Call<'_> {
        Call {
            lab: self,
            argv: argv.iter().map(|a| a.to_string()).collect(),
            args: Vec::new(),
            timeout: LONG,
            cap: 64 * 1024,
            run_as: RunAs::CurrentUser,
            cause: String::new(),
        }
    }

    /// Checks that no process of the handler's [`FAMILY`], nor of its process group, is
    /// left. (The group is led by the mission box, which started the handler; the handler
    /// is in it, so the group id it recorded is the box's.)
    async fn assert_family_gone(&self) {
        let pids = fs::read_to_string(self.path("pids")).expect("the handler wrote $D/pids");
        let pids: Vec<&str> = pids.lines().collect();
        assert_eq!(pids.len(), 4, "{pids:?}");
        let pgid = fs::read_to_string(self.path("pgid")).expect("the handler wrote $D/pgid");
        let pgid: i32 = pgid.trim().parse().unwrap();
        assert_ne!(
            pgid.to_string(),
            pids[0],
            "the box, not the handler, leads the group"
        );
        assert_group_gone(pgid).await;
        for pid in pids {
            assert_gone(pid.parse().unwrap()).await;
        }
    }
}

impl Call<'_> {
    fn args(mut self, args: &[u8]) -> Self {
        self.args = args.to_vec();
        self
    }

    fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn cap(mut self, cap: usize) -> Self {
        self.cap = cap;
        self
    }

    fn cause(mut self, cause: &str) -> Self {
        self.cause = cause.to_string();
        self
    }

    fn run_as(mut self, run_as: RunAs) -> Self {
        self.run_as = run_as;
        self
    }

    fn request(&self) -> ExecRequest<'_> {
        ExecRequest {
            mission: &self.lab.mission,
            function: &self.lab.function,
            argv: &self.argv,
            args_json: &self.args,
            timeout: self.timeout,
            output_cap: self.cap,
            run_as: self.run_as,
            mission_user: None,
            limits: Limits::default(),
            sandbox: sandbox(),
            cause: self.cause.clone(),
        }
    }

    async fn run(self) -> Ran {
        self.run_reacting(|_, _| {}).await
    }

    /// Runs the call while reading its progress as it comes, calling `react` on each line
    /// with the call's cancellation token (to cancel it, or to let the handler go on).
    async fn run_reacting(self, mut react: impl FnMut(&str, &CancellationToken)) -> Ran {
        // A small queue, so a handler's progress really waits for us.
        let (events, mut rx) = mpsc::channel(2);
        let cancel = CancellationToken::new();
        let run = exec::run(self.request(), events, cancel.clone());
        let listen = async {
            let mut progress = Vec::new();
            // Ends when the channel closes: when `run` has returned and dropped its sender.
            while let Some(ExecEvent::Progress(line)) = rx.recv().await {
                react(&line, &cancel);
                progress.push(line);
            }
            progress
        };
        let (outcome, progress) = tokio::time::timeout(HUNG, async { tokio::join!(run, listen) })
            .await
            .expect("the call hung");
        Ran { outcome, progress }
    }
}

impl Ran {
    /// The output of a successful call, as text.
    fn ok(&self) -> String {
        match &self.outcome {
            ExecOutcome::Ok { output } => String::from_utf8(output.clone()).unwrap(),
            other => panic!("expected success, got {other:?} (progress {:?})", self.progress),
        }
    }
}

/// Processes of group `pgid` that are still alive (zombies are dead: they only wait for
/// their parent, or init, to collect their exit status).
fn survivors(pgid: i32) -> Vec<String> {
    let mut alive = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue; // not a process, or it just ended
        };
        // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(2) == Some(&pgid.to_string().as_str()) && !matches!(fields[0], "Z" | "X") {
            alive.push(stat);
        }
    }
    alive
}

/// Checks that every process of group `pgid` is gone. A SIGKILLed process takes a moment to
/// die, so this looks again for a while before failing (a bound, not a timing assertion).
async fn assert_group_gone(pgid: i32) {
    assert!(pgid > 1, "pgid {pgid}");
    for _ in 0..500 {
        if survivors(pgid).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "processes of the handler's group {pgid} survived: {:?}",
        survivors(pgid)
    );
}

/// Whether process `pid` is alive (a zombie is not).
fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !matches!(rest.split_whitespace().next(), Some("Z" | "X"))),
        Err(_) => false,
    }
}

/// Checks that process `pid` is gone, looking again for a while (a bound, not a timing).
async fn assert_gone(pid: i32) {
    for _ in 0..500 {
        if !alive(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("process {pid} of the handler survived");
}

// ---- arguments and output ----

#[tokio::test]
async fn the_arguments_arrive_on_stdin_and_stdout_is_the_result() {
    let lab = Lab::new();
    let args = br#"{"msg":"hi","list":[1,2,3]}"#;
    let ran = lab.call(&["/bin/cat"]).args(args).run().await;
    assert_eq!(
        ran.outcome,
        ExecOutcome::Ok {
            output: args.to_vec()
        }
    );
}

#[tokio::test]
async fn argv_reaches_the_program_untouched_by_any_shell() {
    let lab = Lab::new();
    let pwned = lab.path("pwned");
    let sneaky = format!("$HOME; touch {pwned}");
    let ran = lab.call(&["/bin/echo", &sneaky, "*", "`id`"]).run().await;
    assert_eq!(ran.ok(), format!("{sneaky} * `id`\n"));
    assert!(!fs::exists(&pwned).unwrap(), "a shell ran the argument");
}

#[tokio::test]
async fn a_handler_that_ignores_its_arguments_still_succeeds() {
    // More than a pipe holds: writing it blocks until the handler exits, then fails (EPIPE).
    let lab = Lab::new();
    let args = vec![b'x'; 1024 * 1024];
    let ran = lab.call(&["/bin/echo", "hi"]).args(&args).run().await;
    assert_eq!(ran.ok(), "hi\n");
}

#[tokio::test]
async fn output_exactly_at_the_cap_is_kept_and_one_byte_more_is_too_large() {
    let lab = Lab::new();
    let handler = lab.script("thousand", "head -c 1000 /dev/zero");
    let ran = lab.call(&[&handler]).cap(1000).run().await;
    assert_eq!(
        ran.outcome,
        ExecOutcome::Ok {
            output: vec![0; 1000]
        }
    );
    let ran = lab.call(&[&handler]).cap(999).run().await;
    assert_eq!(ran.outcome, ExecOutcome::OutputTooLarge { cap: 999 });
}

#[tokio::test]
async fn endless_output_stops_the_handler_and_its_group() {
    // Without the cap this would run until its (long) timeout and report `TimedOut`.
    let lab = Lab::new();
    let handler = lab.script(
        "chatty",
        &format!("{FAMILY}\nwhile :; do echo 'all work and no play makes Jack a dull boy'; done"),
    );
    let ran = lab.call(&[&handler]).cap(4096).run().await;
    assert_eq!(ran.outcome, ExecOutcome::OutputTooLarge { cap: 4096 });
    lab.assert_family_gone().await;
}

// ---- progress ----

#[tokio::test]
async fn progress_arrives_line_by_line_in_order_while_the_handler_runs() {
    // The handler waits for `$D/go`, which the test creates only once it has seen "two".
    // If progress were delivered only at the end, the call would time out instead.
    let lab = Lab::new();
    let go = lab.path("go");
    let handler = lab.script(
        "steps",
        r#"echo one >&2
printf 'two\n\nthree' >&2
while [ ! -e "$D/go" ]; do sleep 0.01; done
echo ' four' >&2
printf done"#,
    );
    let ran = lab
        .call(&[&handler])
        .run_reacting(|line, _| {
            if line == "two" {
                fs::write(&go, "").unwrap();
            }
        })
        .await;
    assert_eq!(ran.ok(), "done");
    // Empty lines are skipped; a line split across writes is one line.
    assert_eq!(ran.progress, ["one", "two", "three four"]);
}

#[tokio::test]
async fn progress_is_capped_in_length_and_number_but_the_tail_sees_everything() {
    let lab = Lab::new();
    let total = MAX_PROGRESS_EVENTS + 500;
    let handler = lab.script(
        "noisy",
        &format!(
            r#"head -c 10000 /dev/zero | tr '\0' x >&2
echo >&2
i=2; while [ $i -le {total} ]; do echo "line $i" >&2; i=$((i + 1)); done
exit 3"#
        ),
    );
    let ran = lab.call(&[&handler]).run().await;
    assert_eq!(ran.progress.len(), MAX_PROGRESS_EVENTS);
    assert_eq!(ran.progress[0], format!("{}…", "x".repeat(MAX_PROGRESS_LINE)));
    assert_eq!(ran.progress[1], "line 2");
    assert_eq!(
        ran.progress.last().unwrap(),
        &format!("line {MAX_PROGRESS_EVENTS}")
    );
    match ran.outcome {
        ExecOutcome::Failed {
            code: Some(3),
            stderr_tail,
            ..
        } => {
            assert!(stderr_tail.ends_with(&format!("\nline {total}")), "{stderr_tail}");
            assert!(stderr_tail.len() <= STDERR_TAIL, "{}", stderr_tail.len());
        }
        other => panic!("expected exit code 3, got {other:?}"),
    }
}

#[tokio::test]
async fn a_call_nobody_listens_to_still_runs() {
    let lab = Lab::new();
    let handler = lab.script(
        "talker",
        "echo working >&2; echo working >&2; echo working >&2; printf ok",
    );
    let (events, rx) = mpsc::channel(1);
    drop(rx);
    let call = lab.call(&[&handler]);
    let outcome = tokio::time::timeout(HUNG, exec::run(call.request(), events, CancellationToken::new()))
        .await
        .unwrap();
    assert_eq!(
        outcome,
        ExecOutcome::Ok {
            output: b"ok".to_vec()
        }
    );
}

// ---- stopping ----

#[tokio::test]
async fn a_timeout_kills_the_whole_group_even_what_ignores_sigterm() {
    // The whole family ignores SIGTERM (an ignored signal stays ignored across fork and
    // exec), so only the SIGKILL that follows can stop it.
    let lab = Lab::new();
    let handler = lab.script(
        "stubborn",
        &format!("trap '' TERM\n{FAMILY}\necho ready >&2\nwait"),
    );
    let ran = lab.call(&[&handler]).timeout(SHORT).run().await;
    assert_eq!(ran.outcome, ExecOutcome::TimedOut { after: SHORT });
    assert_eq!(
        ran.progress,
        ["ready"],
        "the family was complete before the timeout"
    );
    lab.assert_family_gone().await;
}

#[tokio::test]
async fn cancelling_stops_the_whole_group() {
    let lab = Lab::new();
    let handler = lab.script("waiter", &format!("{FAMILY}\necho ready >&2\nwait"));
    let ran = lab
        .call(&[&handler])
        .run_reacting(|line, cancel| {
            if line == "ready" {
                cancel.cancel();
            }
        })
        .await;
    assert_eq!(ran.outcome, ExecOutcome::Cancelled);
    lab.assert_family_gone().await;
}

#[tokio::test]
async fn dropping_a_call_midway_kills_the_whole_group() {
    let lab = Lab::new();
    let handler = lab.script("abandoned", &format!("{FAMILY}\necho ready >&2\nwait"));
    let call = lab.call(&[&handler]);
    let (events, mut rx) = mpsc::channel(4);
    let run = exec::run(call.request(), events, CancellationToken::new());
    let ready = async {
        while let Some(ExecEvent::Progress(line)) = rx.recv().await {
            if line == "ready" {
                return;
            }
        }
        panic!("the handler never said it was ready");
    };
    tokio::time::timeout(HUNG, async {
        tokio::select! {
            outcome = run => panic!("the handler ended by itself: {outcome:?}"),
            () = ready => {} // `run` is dropped here, mid-call
        }
    })
    .await
    .unwrap();
    lab.assert_family_gone().await;
}

#[tokio::test]
async fn a_handler_that_exits_leaves_nothing_running() {
    // The family also holds stdout open: the answer must not wait for it.
    let lab = Lab::new();
    let handler = lab.script("daemonizer", &format!("{FAMILY}\nprintf done"));
    let ran = lab.call(&[&handler]).run().await;
    assert_eq!(ran.ok(), "done");
    lab.assert_family_gone().await;
}

// ---- failures ----

#[tokio::test]
async fn a_crash_is_a_failure_with_its_signal() {
    let lab = Lab::new();
    let handler = lab.script("crasher", "echo 'about to crash' >&2\nkill -SEGV $$");
    let ran = lab.call(&[&handler]).run().await;
    assert_eq!(
        ran.outcome,
        ExecOutcome::Failed {
            code: None,
            signal: Some(11), // SIGSEGV
            stderr_tail: "about to crash".into(),
            output: Vec::new(),
        }
    );
}

#[tokio::test]
async fn a_non_zero_exit_is_a_failure_with_its_code_output_and_stderr_tail() {
    let lab = Lab::new();
    let handler = lab.script(
        "failer",
        r#"printf partial
echo "copying..." >&2
echo "error: disk full" >&2
exit 3"#,
    );
    let ran = lab.call(&[&handler]).run().await;
    assert_eq!(
        ran.outcome,
        ExecOutcome::Failed {
            code: Some(3),
            signal: None,
            stderr_tail: "copying...\nerror: disk full".into(),
            output: b"partial".to_vec(),
        }
    );
}

#[tokio::test]
async fn programs_that_cannot_start_say_why() {
    let lab = Lab::new();
    let not_executable = lab.path("not-executable");
    fs::write(&not_executable, "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(&not_executable, fs::Permissions::from_mode(0o644)).unwrap();
    let bad_interpreter = lab.path("bad-interpreter");
    fs::write(&bad_interpreter, "#!/nonexistent/python\n").unwrap();
    fs::set_permissions(&bad_interpreter, fs::Permissions::from_mode(0o755)).unwrap();
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "missing",
            &["/nonexistent/program"],
            "/nonexistent/program does not exist",
        ),
        (
            "bad #! line",
            &[bad_interpreter.as_str()],
            "interpreter on its #! line",
        ),
        ("not executable", &[not_executable.as_str()], "chmod +x"),
        ("a directory", &["/"], "cannot be run"),
        ("relative", &["cat"], "`cat` is not an absolute path"),
        ("empty", &[], "no program"),
        ("NUL byte", &["/bin/echo", "a\0b"], "cannot start /bin/echo"),
    ];
    for (what, argv, expected) in cases {
        let ran = lab.call(argv).run().await;
        match ran.outcome {
            ExecOutcome::CouldNotStart { reason } => assert!(reason.contains(expected), "{what}: {reason}"),
            other => panic!("{what}: expected CouldNotStart, got {other:?}"),
        }
    }
}

// ---- confinement ----

/// A call made because of events hands them to the handler in `WTD_CAUSE` (so a `wtd call`
/// it makes carries them on); a call without a cause sets no such variable.
#[tokio::test]
async fn a_call_with_a_cause_gives_the_handler_wtd_cause() {
    let lab = Lab::new();
    let cause = "wtd1example:social:3";
    let env = lab.call(&["/usr/bin/env"]).cause(cause).run().await.ok();
    assert!(env.lines().any(|l| l == format!("WTD_CAUSE={cause}")), "{env}");
    let env = lab.call(&["/usr/bin/env"]).run().await.ok();
    assert!(!env.contains("WTD_CAUSE"), "{env}");
}

#[tokio::test]
async fn the_handler_sees_only_the_scrubbed_environment_and_runs_in_root() {
    // Not `std::env::set_var` of a made-up secret: changing the environment of this
    // multi-threaded test process would race with other tests (it is `unsafe` from Rust
    // 2024). Asserting the *exact* environment is stronger: any variable of ours that
    // leaked, secret or not, fails the test, and the check below shows there are some.
    let lab = Lab::new();
    // Each call has its own working directory, also its TMPDIR; the handler reports it.
    let pwd = lab.call(&["/bin/pwd"]).run().await.ok();
    let dir = pwd.trim().to_string();
    let expected = [
        format!("HOME={HANDLER_HOME}"),
        format!("LANG={HANDLER_LANG}"),
        format!("PATH={HANDLER_PATH}"),
        format!("TMPDIR={dir}"),
        "WTD_FUNCTION=echo".to_string(),
        "WTD_MISSION=demo".to_string(),
    ];
    let ours: Vec<String> = std::env::vars()
        .map(|(k, v)| format!("{k}={v}"))
        .filter(|kv| !expected.contains(kv))
        .collect();
    assert!(
        !ours.is_empty(),
        "the test process has variables a handler must not see"
    );

    let env = lab.call(&["/usr/bin/env"]).run().await.ok();
    let mut seen: Vec<String> = env.lines().map(str::to_string).collect();
    // This call's directory is another fresh one: compare the rest, then its name.
    let own = seen
        .iter()
        .find(|kv| kv.starts_with("TMPDIR="))
        .cloned()
        .unwrap_or_default();
    assert!(own.starts_with("TMPDIR=/tmp/wtd-call-"), "{own}");
    assert_ne!(
        own,
        format!("TMPDIR={dir}"),
        "every call has a directory of its own"
    );
    seen.retain(|kv| *kv != own);
    seen.push(format!("TMPDIR={dir}"));
    seen.sort();
    assert_eq!(seen, expected);
    assert!(dir.starts_with("/tmp/wtd-call-"), "{dir}");
    assert!(
        !fs::exists(&dir).unwrap(),
        "the call's directory is removed after it"
    );
}

/// The `Uid:`, `Gid:` and `Groups:` lines of a `/proc/<pid>/status`.
fn credentials(status: &str) -> (String, String, String) {
    let field = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        line[name.len()..]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    (field("Uid:"), field("Gid:"), field("Groups:"))
}

#[tokio::test]
async fn a_root_agent_runs_handlers_unprivileged_without_supplementary_groups() {
    let lab = Lab::new();
    if !nix::unistd::geteuid().is_root() {
        // The other side: an ordinary agent runs handlers as itself, and cannot switch.
        assert_eq!(RunAs::for_agent().unwrap(), RunAs::CurrentUser);
        let ran = lab
            .call(&["/usr/bin/id", "-u"])
            .run_as(RunAs::Unprivileged {
                uid: 65534,
                gid: 65534,
            })
            .run()
            .await;
        match ran.outcome {
            ExecOutcome::CouldNotStart { reason } => assert!(reason.contains("cannot switch"), "{reason}"),
            other => panic!("expected CouldNotStart, got {other:?}"),
        }
        eprintln!("note: not root, so the drop to an unprivileged user was not tested");
        return;
    }
    let run_as = RunAs::for_agent().unwrap();
    let RunAs::Unprivileged { uid, gid } = run_as else {
        panic!("a root agent must not run handlers as root: {run_as:?}");
    };
    assert!(uid != 0 && gid != 0, "{run_as:?}");

    let id = lab.call(&["/usr/bin/id", "-u"]).run_as(run_as).run().await.ok();
    assert_eq!(id.trim(), uid.to_string());

    // Give this process a supplementary group (root's), which the handler must not keep.
    // Harmless for the other tests: they run as root anyway.
    nix::unistd::setgroups(&[nix::unistd::Gid::from_raw(0)]).unwrap();
    // The control: a handler that keeps the agent's credentials shows the group.
    let kept = lab.call(&["/bin/cat", "/proc/self/status"]).run().await.ok();
    assert_eq!(credentials(&kept).2, "0", "the check sees supplementary groups");

    let status = lab
        .call(&["/bin/cat", "/proc/self/status"])
        .run_as(run_as)
        .run()
        .await
        .ok();
    let (uids, gids, groups) = credentials(&status);
    assert_eq!(
        uids,
        vec![uid.to_string(); 4].join(" "),
        "real, effective, saved, fs uid"
    );
    assert_eq!(
        gids,
        vec![gid.to_string(); 4].join(" "),
        "real, effective, saved, fs gid"
    );
    assert_eq!(groups, "", "no supplementary groups");
}

#[tokio::test]
async fn a_request_comes_from_the_catalogue_entry() {
    let lab = Lab::new();
    let mut function = Function {
        name: lab.function.clone(),
        description: String::new(),
        run: Run::Exec(vec!["/bin/cat".into()]),
        timeout: Duration::from_secs(5),
        output_cap: 1234,
        idempotent: true,
        limits: Limits {
            memory: 1 << 20,
            pids: 3,
            open_files: 20,
        },
        user: None,
        subscribe: Vec::new(),
    };
    let request = ExecRequest::new(&lab.mission, &function, b"{}", RunAs::CurrentUser).unwrap();
    assert_eq!(request.argv, ["/bin/cat"]);
    assert_eq!(
        (request.timeout, request.output_cap),
        (Duration::from_secs(5), 1234)
    );
    assert_eq!(request.function, &lab.function);
    assert_eq!(request.limits, function.limits);
    function.run = Run::Builtin(Builtin::Ping);
    assert!(ExecRequest::new(&lab.mission, &function, b"{}", RunAs::CurrentUser).is_none());
}
