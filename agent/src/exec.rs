//! Running one call of an exec function: a program from a mission file, started safely.
//!
//! A mission file says `exec = ["/usr/local/bin/blink", "--fast"]`; a caller, who may be a
//! near-stranger holding a grant, sends `{"times": 3}`. [`run`] starts the program, hands it
//! the arguments, reports its progress, collects its answer, and makes sure that nothing it
//! started outlives the call, whatever the program does.
//!
//! ```text
//!  agent                                   handler, in the mission box (see `sandbox`)
//!  ─────                                   ───────────────────────────────────────────
//!  spawn the box + argv, no shell ───────► a fresh private dir, scrubbed env, its user, limits
//!  args JSON ──► stdin, then closed ─────► reads its arguments
//!  stderr, line by line ◄───────────────── "50% done"     ──► ExecEvent::Progress
//!                       ◄───────────────── "wtd-event: {..}" ──► ExecEvent::Mission (MQTT)
//!                       ◄───────────── "wtd-emit: topic {..}" ──► ExecEvent::Emit (signed log)
//!  stdout, up to output_cap ◄───────────── {"ok": true}   ──► ExecOutcome::Ok
//!  over its memory or process limit ─────► killed           ──► ExecOutcome::LimitExceeded
//!  timeout / cancel / too much output ───► SIGTERM to the box, a short grace, SIGKILL to all
//!  handler exits ────────────────────────► the box kills whatever it left behind
//! ```
//!
//! # Why each precaution
//!
//! - **No shell.** `argv` goes straight to `execve`, so nothing in it is re-parsed: a `;` or
//!   a `$HOME` is just text, never a second command.
//! - **Arguments on stdin, not in `argv`.** The caller's JSON is data from an only-partly
//!   trusted person. On the command line it would be visible to every user in `ps`, limited
//!   to the kernel's argument size, and one quoting mistake away from being parsed as an
//!   option (`--delete`). On stdin it is a stream of bytes the handler parses as JSON.
//! - **A scrubbed environment.** The agent's own variables (a proxy address, a debugging
//!   token, `LD_PRELOAD`) are none of the handler's business, and some would change how it
//!   behaves. A handler sees exactly `PATH`, `HOME`, `LANG`, `TMPDIR`, `WTD_MISSION` and
//!   `WTD_FUNCTION`, the same on every Pi, so a mission behaves the same everywhere, and
//!   `WTD_CAUSE` when it runs because of events (`wtd_keys::cause`).
//! - **A box that nothing leaves.** A handler is often a script that starts other programs,
//!   which may start others, and some (a daemon, a `setsid`, a double fork) try to leave.
//!   Killing only the program we started would leave them running, orphaned. The mission
//!   box ([`sandbox`](crate::sandbox)) holds the call in a cgroup of its own where the
//!   machine offers one, and always under a subreaper, so every process of the call is
//!   found and killed when the call ends, however it ends.
//! - **Limits.** Memory, processes and open files are limited per call (from the mission
//!   file, see [`Limits`]); a call over its memory or process limit is stopped and reported
//!   as [`ExecOutcome::LimitExceeded`], so its caller reads "used more than 64 MiB".
//! - **An unprivileged user of its own.** When the agent runs as root, a mission's
//!   handlers run as that mission's user (`wtd-<mission>`, created on demand, or the
//!   `user` its file names), else a shared one (see [`HANDLER_USERS`]), with no
//!   supplementary groups: a buggy or abused handler cannot read the agent's key, change
//!   the system, kill the agent, or signal another mission's calls.
//! - **A private working directory.** Each call starts in a fresh `0700` directory of its
//!   own (also `TMPDIR`), removed when the call ends: no call sees another's files.
//! - **Bounded everything.** The output is capped (a handler that prints forever is
//!   stopped), progress lines are capped in length and number, only a short tail of stderr
//!   is kept, every wait has a timeout, and [`run`] spawns no task: all its work happens in
//!   the future it returns, so when [`run`] returns (or is dropped) nothing of the call is
//!   left behind but, at worst, a zombie that tokio reaps.
//!
//! # What this does not protect against
//!
//! - Calls of the *same* mission share its user, so they can signal or read each other
//!   (and its `RLIMIT_NPROC`); when no per-mission user can be made they share `nobody`
//!   with other missions; when the agent is not root, handlers run as the agent's own user
//!   and can read whatever the agent can.
//! - CPU time, disk space and network use are not limited; see also the limits of the
//!   box itself in [`sandbox`](crate::sandbox).
//!
//! # Example
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use wtd_agent::exec::{self, ExecEvent, ExecOutcome, ExecRequest, RunAs};
//! use wtd_keys::{FunctionName, MissionName};
//!
//! let (mission, function) = (MissionName::new("demo")?, FunctionName::new("echo")?);
//! let argv = ["/bin/cat".to_string()];
//! let request = ExecRequest {
//!     mission: &mission,
//!     function: &function,
//!     argv: &argv,
//!     args_json: br#"{"msg":"hi"}"#,
//!     timeout: Duration::from_secs(5),
//!     output_cap: 64 * 1024,
//!     run_as: RunAs::for_agent()?,
//!     mission_user: None,
//!     limits: Default::default(),
//!     sandbox: wtd_agent::sandbox::Sandbox::global(),
//!     cause: String::new(),
//! };
//! let (events, mut progress) = tokio::sync::mpsc::channel(16);
//! let cancel = tokio_util::sync::CancellationToken::new();
//! let (outcome, ()) = tokio::join!(exec::run(request, events, cancel), async {
//!     while let Some(ExecEvent::Progress(line)) = progress.recv().await {
//!         println!("progress: {line}");
//!     }
//! });
//! assert_eq!(outcome, ExecOutcome::Ok { output: br#"{"msg":"hi"}"#.to_vec() });
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::pin::pin;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::{Pid, User};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wtd_keys::{FunctionName, MissionName};

use crate::missions::{Function, Limits, Run};
use crate::sandbox::{
    off_thread, CallBox, LimitHit, Sandbox, EXEC_FAILED, EXEC_FAILED_PROGRAM, EXEC_FAILED_STATUS, OVER_MEMORY,
};

// Numbers with a reason, each a candidate for `defaults.rs` (kept here while this module is new).

/// `PATH` for handlers: the system's program directories, nothing from the agent's own
/// environment. `exec` itself is an absolute path, but scripts run `date` or `python3` by
/// name and must find the system's, the same on every Pi.
pub const HANDLER_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// `HOME` for handlers: a directory that does not exist (`nobody`'s home on Debian), so a
/// handler neither reads the agent's dotfiles nor leaves its own behind.
pub const HANDLER_HOME: &str = "/nonexistent";

/// `LANG` for handlers: UTF-8 without locale surprises (decimal commas, translated error
/// messages), and present on every Debian and Raspberry Pi OS system.
pub const HANDLER_LANG: &str = "C.UTF-8";

/// Users a root agent runs handlers as, the first that exists winning. An image may create
/// a dedicated `wtd-mission` user so handlers do not share `nobody` with other daemons.
/// Never `wtd`: under `User=wtd` that user owns `/var/lib/wtd`, the agent's secret key.
pub const HANDLER_USERS: [&str; 2] = ["wtd-mission", "nobody"];

/// Longest progress line forwarded, in bytes; the rest of the line is cut. Progress is a
/// sentence for a human ("copied 3 of 10 files"); a longer line is a data dump that belongs
/// in the output, and each line crosses the proxy to the caller.
pub const MAX_PROGRESS_LINE: usize = 4096;

/// Most progress lines forwarded per call; later lines only reach the stderr tail. That is
/// more than one a second for the longest allowed call (600 s), and it stops a handler that
/// logs chattily to stderr from flooding the caller's link and the proxy.
pub const MAX_PROGRESS_EVENTS: usize = 1000;

/// Bytes of stderr kept for the report of a failed call: the last lines, where a Python
/// traceback or a shell's error message is.
pub const STDERR_TAIL: usize = 2048;

/// How long a handler being stopped has between SIGTERM and SIGKILL: long enough to delete
/// a temporary file or switch off an LED it turned on, short enough that a revoked grant
/// still bites within a second.
pub const TERM_GRACE: Duration = Duration::from_millis(500);

/// How long we wait for a SIGKILLed handler to be gone. The kernel ends it at once unless it
/// is stuck in uninterruptible I/O (a dying SD card, a hung network mount); then we give up
/// waiting rather than hang the call, and tokio reaps it whenever it does end.
pub const REAP_TIMEOUT: Duration = Duration::from_secs(5);

/// After a handler exits, how long we keep reading what it already wrote. Its pipes close as
/// soon as its box is emptied; only a process that somehow escaped the box (a kernel stuck
/// killing it) keeps them open, and it must not hold the call's answer back.
pub const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// Bytes read from a pipe at a time: a pipe holds 64 KiB, and 8 KiB reads keep the buffer
/// small on a Pi Zero while costing few wake-ups.
const READ_CHUNK: usize = 8 * 1024;

/// One call of an exec function: everything [`run`] needs.
pub struct ExecRequest<'a> {
    /// The mission and function called, given to the handler as `WTD_MISSION` and
    /// `WTD_FUNCTION` (one script may serve several functions).
    pub mission: &'a MissionName,
    pub function: &'a FunctionName,
    /// The program (an absolute path) and its arguments, from the mission file.
    pub argv: &'a [String],
    /// The caller's arguments, written to the handler's stdin.
    pub args_json: &'a [u8],
    /// The handler is stopped after this long.
    pub timeout: Duration,
    /// Bytes of stdout accepted; a handler that writes more is stopped.
    pub output_cap: usize,
    /// Who the handler runs as: the agent's user, or (root agent) the shared unprivileged
    /// user, which `mission_user` may replace by one of the mission's own.
    pub run_as: RunAs,
    /// For a root agent: run as the mission's own user instead of `run_as`'s.
    pub mission_user: Option<MissionUser>,
    /// What the call may use.
    pub limits: Limits,
    /// The box it runs in.
    pub sandbox: &'a Sandbox,
    /// The events this call runs because of (`wtd_keys::cause::format`), given to the
    /// handler as `WTD_CAUSE` so a `wtd call` it makes carries them on; empty: none, and
    /// the variable is not set.
    pub cause: String,
}

/// Which user of its own a mission's handlers run as, when the agent runs as root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MissionUser {
    /// The user its mission file names (`user = "..."`); it must exist.
    Configured(String),
    /// `wtd-<mission>`, created with `useradd` the first time it is needed. Where it cannot
    /// be created (no `useradd`, a read-only `/etc`), the shared user is used, with a warning.
    PerMission,
}

impl<'a> ExecRequest<'a> {
    /// The request for calling `function` of `mission`, or `None` if it is a built-in the
    /// agent answers itself.
    pub fn new(
        mission: &'a MissionName,
        function: &'a Function,
        args_json: &'a [u8],
        run_as: RunAs,
    ) -> Option<ExecRequest<'a>> {
        match &function.run {
            Run::Exec(argv) => Some(ExecRequest {
                mission,
                function: &function.name,
                argv,
                args_json,
                timeout: function.timeout,
                output_cap: function.output_cap,
                run_as,
                mission_user: match run_as {
                    RunAs::CurrentUser => None,
                    RunAs::Unprivileged { .. } => Some(match &function.user {
                        Some(user) => MissionUser::Configured(user.clone()),
                        None => MissionUser::PerMission,
                    }),
                },
                limits: function.limits,
                sandbox: Sandbox::global(),
                cause: String::new(),
            }),
            Run::Builtin(_) => None,
        }
    }
}

/// The arguments are the caller's data: logs show their size, not their content.
impl fmt::Debug for ExecRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecRequest")
            .field("mission", &self.mission.as_str())
            .field("function", &self.function.as_str())
            .field("argv", &self.argv)
            .field("args_json_bytes", &self.args_json.len())
            .field("timeout", &self.timeout)
            .field("output_cap", &self.output_cap)
            .field("run_as", &self.run_as)
            .field("mission_user", &self.mission_user)
            .field("limits", &self.limits)
            .field("mode", &self.sandbox.mode())
            .finish()
    }
}

/// Who a handler runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunAs {
    /// The agent's own user: the only choice when the agent is not root.
    CurrentUser,
    /// This user and group, with no supplementary groups. The program (and a script's
    /// interpreter, and whatever it reads) must then be readable and executable by that
    /// user: `chmod 755`, in directories it can enter.
    Unprivileged { uid: u32, gid: u32 },
}

/// Why [`RunAs::for_agent`] found no user to run handlers as.
#[derive(Debug, thiserror::Error)]
pub enum RunAsError {
    /// The agent runs as root and none of [`HANDLER_USERS`] exists. Running handlers as
    /// root is never the fallback: create one (`useradd --system --no-create-home
    /// wtd-mission`) or run the agent as an ordinary user.
    #[error(
        "the agent runs as root but none of the users {HANDLER_USERS:?} exists to run functions as; \
         create one (useradd --system --no-create-home wtd-mission)"
    )]
    NoUser,
    /// The user exists but is root, or its group is: not a way to drop privileges.
    #[error("user `{0}` has uid or gid 0; functions must run as an unprivileged user")]
    Privileged(&'static str),
    /// The user database could not be read (a broken NSS setup).
    #[error("cannot look up user `{user}`: {source}")]
    Lookup {
        user: &'static str,
        #[source]
        source: io::Error,
    },
}

impl RunAs {
    /// Who this agent should run handlers as: when it runs as root (effective uid 0), the
    /// first of [`HANDLER_USERS`] that exists; otherwise its own user, the only choice.
    pub fn for_agent() -> Result<RunAs, RunAsError> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(RunAs::CurrentUser);
        }
        for user in HANDLER_USERS {
            match User::from_name(user) {
                Ok(Some(found)) if found.uid.is_root() || found.gid.as_raw() == 0 => {
                    return Err(RunAsError::Privileged(user));
                }
                Ok(Some(found)) => {
                    return Ok(RunAs::Unprivileged {
                        uid: found.uid.as_raw(),
                        gid: found.gid.as_raw(),
                    });
                }
                Ok(None) => continue,
                Err(e) => {
                    return Err(RunAsError::Lookup {
                        user,
                        source: e.into(),
                    })
                }
            }
        }
        Err(RunAsError::NoUser)
    }
}

/// What a handler reports while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    /// One line the handler wrote to stderr: at most [`MAX_PROGRESS_LINE`] bytes (a cut line
    /// ends in `…`), control characters replaced by `�`, empty lines skipped.
    Progress(String),
    /// A mission event: a stderr line that started with [`EVENT_PREFIX`], the prefix and
    /// surrounding spaces removed. It goes to MQTT (if the owner lets this mission publish),
    /// never to the caller, and does not count against [`MAX_PROGRESS_EVENTS`].
    Mission(String),
    /// A signed event: a stderr line that started with [`crate::defaults::EMIT_PREFIX`],
    /// the prefix removed (`<topic> <json>`). The agent appends it to its event log.
    Emit(String),
}

/// How a handler marks a stderr line as a mission event rather than progress:
/// `echo 'wtd-event: {"door": "open"}' >&2`.
pub const EVENT_PREFIX: &str = "wtd-event:";

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutcome {
    /// The handler exited with status 0; `output` is everything it wrote to stdout.
    Ok { output: Vec<u8> },
    /// The handler exited with another status (`code`), or was killed by a signal it did not
    /// get from us (`signal`: it crashed, or something else on the machine killed it).
    /// `stderr_tail` is the end of what it wrote to stderr, usually the reason.
    Failed {
        code: Option<i32>,
        signal: Option<i32>,
        stderr_tail: String,
        output: Vec<u8>,
    },
    /// It ran longer than its timeout and was stopped, with everything it started.
    TimedOut { after: Duration },
    /// The cancellation token fired (a revoked grant, a caller who went away, a shutdown)
    /// and it was stopped, with everything it started.
    Cancelled,
    /// It wrote more than `cap` bytes to stdout and was stopped; its output is discarded.
    OutputTooLarge { cap: usize },
    /// It went past one of its limits (memory, processes) and was stopped, with everything
    /// it started.
    LimitExceeded { limit: LimitHit },
    /// It could not be started; `reason` says why, for the mission's owner.
    CouldNotStart { reason: String },
}

impl fmt::Display for ExecOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecOutcome::Ok { output } => write!(f, "succeeded with {} bytes of output", output.len()),
            ExecOutcome::Failed { code: Some(code), .. } => write!(f, "failed with exit code {code}"),
            ExecOutcome::Failed {
                signal: Some(signal), ..
            } => match Signal::try_from(*signal) {
                Ok(name) => write!(f, "crashed ({name})"),
                Err(_) => write!(f, "crashed (signal {signal})"),
            },
            ExecOutcome::Failed { .. } => write!(f, "failed"),
            ExecOutcome::TimedOut { after } => {
                write!(f, "timed out after {}", humantime::format_duration(*after))
            }
            ExecOutcome::Cancelled => write!(f, "was cancelled"),
            ExecOutcome::OutputTooLarge { cap } => write!(f, "wrote more than its {cap}-byte output cap"),
            ExecOutcome::LimitExceeded { limit } => write!(f, "{limit}"),
            ExecOutcome::CouldNotStart { reason } => write!(f, "could not start: {reason}"),
        }
    }
}

/// Runs one call of an exec function and reports how it ended.
///
/// Each line the handler writes to stderr is sent on `events` as it arrives, in order, and
/// all of them before `run` returns. Sending waits when the channel is full, so a slow
/// reader slows the handler down rather than growing a buffer; a dropped receiver is fine
/// (the lines are then only kept for the stderr tail). Firing `cancel` stops the handler.
///
/// Never panics and never waits unboundedly: the handler is stopped at its timeout, and
/// every wait after that has its own bound. Dropping the returned future kills the
/// handler's whole box, every process of the call.
pub async fn run(
    req: ExecRequest<'_>,
    events: mpsc::Sender<ExecEvent>,
    cancel: CancellationToken,
) -> ExecOutcome {
    let run_as = match resolve_user(&req).await {
        Ok(run_as) => run_as,
        Err(reason) => return ExecOutcome::CouldNotStart { reason },
    };
    let (mut handler, pipes) = match Handler::start(&req, run_as).await {
        Ok(started) => started,
        Err(reason) => return ExecOutcome::CouldNotStart { reason },
    };
    log::debug!(mission:% = req.mission, function:% = req.function, pgid = handler.group.id.as_raw();
        "handler started");
    let mut gathered = Gathered::default();
    let ending = handler
        .supervise(pipes, &req, &events, &cancel, &mut gathered)
        .await;
    handler.close().await;
    let Gathered { output, tail } = gathered;
    let tail = tail.into_string();
    match ending {
        Ending::Exited(status)
            if status.code() == Some(EXEC_FAILED_STATUS) && exec_errno(&tail).is_some() =>
        {
            let (errno, program) = exec_errno(&tail).unwrap_or_default();
            ExecOutcome::CouldNotStart {
                reason: spawn_failure(&req, run_as, &io::Error::from_raw_os_error(errno), program),
            }
        }
        // The box saw a process of the call go past its memory limit (one the watchdog
        // missed between two looks, or stopped by the address-space limit).
        Ending::Exited(_) if tail.lines().last().is_some_and(|l| l.starts_with(OVER_MEMORY)) => {
            ExecOutcome::LimitExceeded {
                limit: LimitHit::Memory {
                    limit: req.limits.memory,
                },
            }
        }
        Ending::Exited(status) if status.success() => ExecOutcome::Ok { output },
        Ending::Exited(status) => ExecOutcome::Failed {
            code: status.code(),
            signal: status.signal(),
            stderr_tail: tail,
            output,
        },
        Ending::Lost(e) => {
            // Unreachable unless something else in the agent reaps children behind tokio's back.
            log::error!(mission:% = req.mission, function:% = req.function; "lost track of a handler: {e}");
            ExecOutcome::Failed {
                code: None,
                signal: None,
                stderr_tail: tail,
                output,
            }
        }
        Ending::Limit(limit) => ExecOutcome::LimitExceeded { limit },
        Ending::TooLarge => ExecOutcome::OutputTooLarge { cap: req.output_cap },
        Ending::TimedOut => ExecOutcome::TimedOut { after: req.timeout },
        Ending::Cancelled => ExecOutcome::Cancelled,
    }
}

/// How the supervision of a handler ended.
#[derive(Debug)]
enum Ending {
    /// It exited (by itself, or killed by a signal that was not ours).
    Exited(ExitStatus),
    /// Waiting for it failed: someone else reaped it.
    Lost(io::Error),
    /// It went past a limit.
    Limit(LimitHit),
    TooLarge,
    TimedOut,
    Cancelled,
}

/// What a handler wrote: its output (at most the cap) and the end of its stderr.
#[derive(Debug, Default)]
struct Gathered {
    output: Vec<u8>,
    tail: Tail,
}

/// The handler's end of its three pipes, as we hold them.
#[derive(Debug)]
struct Pipes {
    stdin: ChildStdin,
    stdout: ChildStdout,
    stderr: ChildStderr,
}

/// A started handler: its box, and the box's first stage, the program we started (which
/// leads the call's process group and has every other process of the call below it).
#[derive(Debug)]
struct Handler {
    /// Declared first, so dropped first: an abandoned call kills the whole box, then
    /// tokio's `kill_on_drop` kills the leader again and reaps it in the background.
    group: Group,
    child: Child,
}

impl Handler {
    async fn start(req: &ExecRequest<'_>, run_as: Resolved) -> Result<(Handler, Pipes), String> {
        let (program, _) = check_argv(req)?;
        let owner = match run_as.user {
            RunAs::CurrentUser => None,
            RunAs::Unprivileged { uid, gid } => Some((uid, gid)),
        };
        // Its directory and cgroup, made off the agent's async thread (see `off_thread`).
        let (sandbox, limits) = (req.sandbox.clone(), req.limits);
        let call_box = off_thread(move || sandbox.open(limits, owner))
            .await
            .ok_or("the agent is stopping")?
            .map_err(|e| format!("cannot make a private directory for the call: {e}"))?;
        let child = command(req, &call_box, run_as)
            .spawn()
            .map_err(|e| box_failure(program, req.sandbox, &e));
        let child = match child {
            Ok(child) => child,
            Err(reason) => {
                // Nothing ran: only the directory (and cgroup) to remove.
                call_box.close_now();
                return Err(reason);
            }
        };
        // `process_group(0)` made the box the leader of a new group whose id is its pid.
        // Only a child that was already waited for has no pid: this cannot fail.
        let Some(leader) = child.id().and_then(|pid| i32::try_from(pid).ok()) else {
            return Err("the handler vanished as it started".into());
        };
        let mut handler = Handler {
            group: Group {
                id: Pid::from_raw(leader),
                armed: true,
                call_box: Some(call_box),
            },
            child,
        };
        let child = &mut handler.child;
        match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
            (Some(stdin), Some(stdout), Some(stderr)) => Ok((
                handler,
                Pipes {
                    stdin,
                    stdout,
                    stderr,
                },
            )),
            // Unreachable: `command` asks for all three. Dropping `handler` kills it.
            _ => Err("the handler's pipes could not be opened".into()),
        }
    }

    /// Feeds, reads and watches the handler until it has exited or been stopped, and its
    /// group is dead. Reading stdout and stderr *while* it runs matters: a pipe holds 64 KiB,
    /// and a handler writing to a full pipe would block forever.
    ///
    /// The three pipe jobs are futures polled right here by `select!`, not spawned tasks, so
    /// none of them can outlive this function.
    async fn supervise(
        &mut self,
        pipes: Pipes,
        req: &ExecRequest<'_>,
        events: &mpsc::Sender<ExecEvent>,
        cancel: &CancellationToken,
        gathered: &mut Gathered,
    ) -> Ending {
        let mut feed = pin!(feed_stdin(pipes.stdin, req.args_json));
        let mut collect = pin!(collect_output(pipes.stdout, req.output_cap, &mut gathered.output));
        let mut report = pin!(report_progress(pipes.stderr, events, &mut gathered.tail));
        // A finished future must not be polled again; these remember which ones are done.
        let (mut fed, mut collected, mut reported) = (false, false, false);
        let mut deadline = pin!(tokio::time::sleep(req.timeout));
        let mut watchdog = tokio::time::interval(crate::defaults::WATCHDOG_INTERVAL);
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        // While it runs.
        let ending = loop {
            tokio::select! {
                status = self.child.wait() => break match status {
                    // A handler the kernel stopped at its cgroup limit just looks killed:
                    // the cgroup's count says why.
                    Ok(status) if !status.success() => match self.group.limit_hit().await {
                        Some(hit) => Ending::Limit(hit),
                        None => Ending::Exited(status),
                    },
                    Ok(status) => Ending::Exited(status),
                    Err(e) => Ending::Lost(e),
                },
                _ = watchdog.tick() => if let Some(hit) = self.group.limit_hit().await {
                    break Ending::Limit(hit);
                },
                () = &mut feed, if !fed => fed = true,
                result = &mut collect, if !collected => {
                    collected = true;
                    if result.is_err() {
                        break Ending::TooLarge;
                    }
                }
                () = &mut report, if !reported => reported = true,
                () = &mut deadline => break Ending::TimedOut,
                () = cancel.cancelled() => break Ending::Cancelled,
            }
        };
        let Ending::Exited(status) = ending else {
            if matches!(ending, Ending::Limit(_)) {
                // No grace for a call over its limit: it is what is hurting the Pi.
                self.kill().await;
            } else {
                self.stop().await;
            }
            return ending;
        };

        // It exited: kill whatever it left behind (a call leaves nothing running), then read
        // what it wrote before exiting, which may still sit in the pipes.
        self.kill().await;
        let mut grace = pin!(tokio::time::sleep(DRAIN_GRACE));
        while !(collected && reported) {
            tokio::select! {
                result = &mut collect, if !collected => {
                    collected = true;
                    if result.is_err() {
                        return Ending::TooLarge;
                    }
                }
                () = &mut report, if !reported => reported = true,
                () = &mut grace => {
                    log::warn!(mission:% = req.mission, function:% = req.function;
                        "a process that left the handler's group holds its output open; answering without it");
                    break;
                }
            }
        }
        Ending::Exited(status)
    }

    /// Stops a running handler: asks every process of its box to end (SIGTERM), gives the
    /// box [`TERM_GRACE`] to empty, then kills what is left.
    async fn stop(&mut self) {
        self.group.terminate().await;
        // The box's first stage ends once the handler has, having killed the rest.
        let _ = tokio::time::timeout(TERM_GRACE, self.child.wait()).await;
        self.kill().await;
    }

    /// Removes the call's directory and cgroup; after [`Handler::kill`].
    async fn close(&mut self) {
        if let Some(call_box) = self.group.call_box.take() {
            call_box.close().await;
        }
    }

    /// Kills every process left in the box (SIGKILL cannot be caught or ignored), then
    /// reaps the leader, waiting at most [`REAP_TIMEOUT`].
    ///
    /// When the leader has already been reaped, its pid could in principle be reused; but
    /// Linux keeps a group id reserved while any process is in the group, and when none is
    /// the kill comes microseconds after the reap, far too soon for the kernel to cycle
    /// through every pid to reach this one again. The same holds for the look for the
    /// leader's descendants; and by then the leader (the box) has killed them itself.
    async fn kill(&mut self) {
        self.group.kill_off_thread().await;
        self.group.armed = false;
        if tokio::time::timeout(REAP_TIMEOUT, self.child.wait())
            .await
            .is_err()
        {
            log::error!(pgid = self.group.id.as_raw();
                "a killed handler has not ended after {}; it is stuck in the kernel (failing storage?)",
                humantime::format_duration(REAP_TIMEOUT));
        }
    }
}

/// The program and its arguments, if they can be run at all.
fn check_argv<'r>(req: &'r ExecRequest<'_>) -> Result<(&'r str, &'r [String]), String> {
    let Some((program, args)) = req.argv.split_first() else {
        return Err("the function has no program to run (its `exec` is empty)".into());
    };
    if !program.starts_with('/') {
        return Err(format!(
            "the program `{program}` is not an absolute path, so which one runs would depend on PATH"
        ));
    }
    Ok((program, args))
}

/// The builder for one handler: the box around it, no shell, scrubbed environment, its
/// private directory, its own process group.
fn command(req: &ExecRequest<'_>, call_box: &CallBox, run_as: Resolved) -> Command {
    let user = match run_as.user {
        RunAs::CurrentUser => None,
        RunAs::Unprivileged { uid, gid } => Some((uid, gid)),
    };
    // The box (running as the agent) switches to the user itself, for the handler only.
    let mut command = call_box.command(req.argv, user, run_as.own_user);
    command
        .env_clear()
        .env("PATH", HANDLER_PATH)
        .env("HOME", HANDLER_HOME)
        .env("LANG", HANDLER_LANG)
        .env("TMPDIR", call_box.dir())
        .env("WTD_MISSION", req.mission.as_str())
        .env("WTD_FUNCTION", req.function.as_str());
    if !req.cause.is_empty() {
        command.env(wtd_keys::cause::CAUSE_VAR, &req.cause);
    }
    command
        // Not the agent's directory: the handler must not depend on, or write into, it.
        .current_dir(call_box.dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        // A safety net for the leader if `run` is dropped; `Group` covers the rest.
        .kill_on_drop(true);
    command
}

/// A sentence for the mission's owner on why the box itself did not start.
fn box_failure(program: &str, sandbox: &Sandbox, e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::InvalidInput {
        // std refuses an argument with a NUL byte before anything runs.
        return format!("cannot start {program}: {e}");
    }
    format!(
        "cannot start the mission box ({}) to run {program}: {e}",
        sandbox.program().display()
    )
}

/// A line the box writes for the agent, not for the caller.
fn is_box_report(line: &str) -> bool {
    line.starts_with(EXEC_FAILED) || line.starts_with(OVER_MEMORY)
}

/// The errno in the box's "cannot run the program" line, if that is how stderr ends, and
/// whether it was the program itself that could not be executed (rather than the start
/// of the box's second stage as the function's user).
fn exec_errno(tail: &str) -> Option<(i32, bool)> {
    let rest = tail.lines().last()?.strip_prefix(EXEC_FAILED)?.trim_end();
    let (number, program) = match rest.strip_suffix(EXEC_FAILED_PROGRAM) {
        Some(number) => (number, true),
        None => (rest, false),
    };
    Some((number.parse().ok()?, program))
}

/// A sentence for the mission's owner on why the program did not start.
///
/// `program_exec` is true when the uid switch succeeded and the program's own `execve`
/// failed: an EPERM there is a policy of the system (a seccomp filter, an LSM, file
/// capabilities under `no_new_privs`), not a missing privilege of the agent.
fn spawn_failure(req: &ExecRequest<'_>, run_as: Resolved, e: &io::Error, program_exec: bool) -> String {
    let program = req.argv.first().map(String::as_str).unwrap_or_default();
    let who = match run_as.user {
        RunAs::CurrentUser => "the agent's user".to_string(),
        RunAs::Unprivileged { uid, .. } => format!("uid {uid}, the user functions run as"),
    };
    match e.raw_os_error().map(Errno::from_raw) {
        Some(Errno::ENOENT) => format!(
            "{program} does not exist (nor, if it is a script, the interpreter on its #! line); \
             check `exec` in the mission file"
        ),
        Some(Errno::EACCES) => format!(
            "{program} cannot be run by {who}: make it executable (chmod +x) and its directories searchable"
        ),
        Some(Errno::ENOEXEC) => format!(
            "{program} is not a program this machine can run (a script needs a #! line; \
             a binary must be built for this CPU)"
        ),
        Some(Errno::ETXTBSY) => format!("{program} is being written to; try again once it is installed"),
        Some(Errno::EPERM) if program_exec => format!(
            "the system refused to run {program} as {who} ({e}): a security policy of the agent's service \
             (its seccomp filter, an LSM, or file capabilities under no_new_privs) forbids it"
        ),
        Some(Errno::EPERM) if matches!(run_as.user, RunAs::Unprivileged { .. }) => {
            format!("cannot switch to {who} to run {program} (only a root agent can): {e}")
        }
        _ => format!("cannot start {program}: {e}"),
    }
}

/// Who a handler really runs as, once its mission's user is resolved.
#[derive(Debug, Clone, Copy)]
struct Resolved {
    user: RunAs,
    /// The user is the mission's own, so a per-user process limit counts only its calls.
    own_user: bool,
}

/// Mission users already looked up (or created), by name; `None`: cannot be had, use the
/// shared user. Looked up once per agent: `useradd` is slow, and the answer does not change.
static MISSION_USERS: std::sync::Mutex<Option<UserCache>> = std::sync::Mutex::new(None);

/// Mission user name -> (uid, gid), or `None` for "use the shared user".
type UserCache = std::collections::HashMap<String, Option<(u32, u32)>>;

/// Who runs this call: `run_as`, or the mission's own user in its place.
async fn resolve_user(req: &ExecRequest<'_>) -> Result<Resolved, String> {
    let shared = Resolved {
        user: req.run_as,
        own_user: false,
    };
    let Some(choice) = &req.mission_user else {
        return Ok(shared);
    };
    let (name, create) = match choice {
        MissionUser::Configured(name) => (name.clone(), false),
        MissionUser::PerMission => (format!("{MISSION_USER_PREFIX}{}", req.mission), true),
    };
    let cached = MISSION_USERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(Default::default)
        .get(&name)
        .copied();
    let found = match cached {
        Some(found) => found,
        None => {
            let found = find_or_create_user(&name, create).await?;
            MISSION_USERS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert_with(Default::default)
                .insert(name.clone(), found);
            found
        }
    };
    Ok(match found {
        Some((uid, gid)) => Resolved {
            user: RunAs::Unprivileged { uid, gid },
            own_user: true,
        },
        None => shared,
    })
}

/// The prefix of a mission's own user name: `wtd-demo` runs `demo`'s functions.
pub const MISSION_USER_PREFIX: &str = "wtd-";

/// Looks `name` up; if it does not exist and `create`, makes it with `useradd`. `Ok(None)`:
/// it cannot be had, and the shared user will do (logged). `Err`: a configured user is
/// missing or privileged, which its owner must fix.
async fn find_or_create_user(name: &str, create: bool) -> Result<Option<(u32, u32)>, String> {
    let look = |name: &str| match User::from_name(name) {
        Ok(Some(user)) if user.uid.is_root() || user.gid.as_raw() == 0 => Err(format!(
            "user `{name}` has uid or gid 0; functions must run as an unprivileged user"
        )),
        Ok(Some(user)) => Ok(Some((user.uid.as_raw(), user.gid.as_raw()))),
        Ok(None) => Ok(None),
        Err(e) => Err(format!("cannot look up user `{name}`: {e}")),
    };
    if let Some(found) = look(name)? {
        return Ok(Some(found));
    }
    if !create {
        return Err(format!(
            "the user `{name}` named in the mission file does not exist; create it \
             (useradd --system --no-create-home {name}) or remove `user`"
        ));
    }
    // 32 bytes is the longest name `useradd` accepts.
    if name.len() <= 32 {
        let made = tokio::time::timeout(
            crate::defaults::USERADD_TIMEOUT,
            Command::new("useradd")
                .args(["--system", "--no-create-home", "--home-dir", HANDLER_HOME])
                .args(["--shell", "/usr/sbin/nologin", "--user-group", name])
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .output(),
        )
        .await;
        match made {
            Ok(Ok(out)) if out.status.success() => log::info!(user = name; "created the user for a mission"),
            Ok(Ok(out)) => {
                log::debug!(user = name; "useradd failed: {}", String::from_utf8_lossy(&out.stderr).trim())
            }
            Ok(Err(e)) => log::debug!(user = name; "cannot run useradd: {e}"),
            Err(_) => log::debug!(user = name; "useradd timed out"),
        }
        // Another call may have created it meanwhile: look again either way.
        if let Some(found) = look(name)? {
            return Ok(Some(found));
        }
    }
    log::warn!(user = name;
        "cannot create a user for this mission; its functions share the common unprivileged user");
    Ok(None)
}

/// A call's box, as `run` holds it. Dropping it while armed (when `run` is dropped
/// mid-call) kills the whole box, so not even an abandoned call leaves processes behind.
#[derive(Debug)]
struct Group {
    /// The group's id: its leader's pid, the box's first stage.
    id: Pid,
    /// Still to be killed: cleared once [`Handler::kill`] has done it.
    armed: bool,
    /// The box; taken by [`Handler::close`].
    call_box: Option<CallBox>,
}

impl Group {
    fn signal(&self, signal: Signal) {
        match killpg(self.id, signal) {
            // ESRCH: nobody is left in the group, which is what we wanted.
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => log::warn!(pgid = self.id.as_raw(); "cannot send {signal} to a handler's group: {e}"),
        }
    }

    /// Asks every process of the call to end: the group, and those that left it (found by
    /// a scan of `/proc`, off the async thread).
    async fn terminate(&self) {
        self.signal(Signal::SIGTERM);
        if let Some(call_box) = self.call_box.clone() {
            let root = self.id;
            off_thread(move || call_box.signal_descendants(root, Signal::SIGTERM)).await;
        }
    }

    /// [`Group::kill`], with the cgroup write and the scan of `/proc` off the async thread.
    async fn kill_off_thread(&self) {
        if let Some(call_box) = self.call_box.clone() {
            let root = self.id;
            if off_thread(move || call_box.kill_all(root)).await.is_none() {
                // No blocking pool (the agent is stopping): kill right here.
                self.kill();
            }
        }
        self.signal(Signal::SIGKILL);
    }

    /// Kills every process of the call, wherever it went. Synchronous, for `Drop`.
    fn kill(&self) {
        match &self.call_box {
            Some(call_box) => call_box.kill_all(self.id),
            None => self.signal(Signal::SIGKILL),
        }
        self.signal(Signal::SIGKILL);
    }

    /// The limit the call is over, if any, read off the async thread (cgroup files, or
    /// a scan of `/proc`).
    async fn limit_hit(&self) -> Option<LimitHit> {
        let call_box = self.call_box.clone()?;
        let root = self.id;
        off_thread(move || call_box.limit_hit(root)).await.flatten()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if self.armed {
            self.kill();
        }
        if let Some(call_box) = self.call_box.take() {
            // Not awaited (we are in `drop`): removing an empty cgroup and a small
            // directory is quick, and a failure is only logged.
            call_box.close_now();
        }
    }
}

/// Writes the call's arguments to the handler's stdin, then closes it (by dropping it), so
/// the handler reads end-of-file after the JSON.
async fn feed_stdin(mut stdin: ChildStdin, args_json: &[u8]) {
    if let Err(e) = stdin.write_all(args_json).await {
        // A handler that needs no arguments may exit without reading them: that is fine.
        if e.kind() != io::ErrorKind::BrokenPipe {
            log::debug!("cannot write a handler's arguments: {e}");
        }
    }
}

/// stdout held more than the cap.
#[derive(Debug)]
struct TooLarge;

/// Reads stdout into `output` until end-of-file, holding at most `cap` bytes.
async fn collect_output(
    mut stdout: impl AsyncRead + Unpin,
    cap: usize,
    output: &mut Vec<u8>,
) -> Result<(), TooLarge> {
    let mut chunk = vec![0; READ_CHUNK];
    loop {
        let n = match stdout.read(&mut chunk).await {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) => {
                // Reading a pipe fails only for reasons that cannot happen to ours (EFAULT).
                log::warn!("cannot read a handler's output: {e}");
                return Ok(());
            }
        };
        // `output.len() <= cap` always holds, so this cannot underflow.
        if n > cap - output.len() {
            return Err(TooLarge);
        }
        // `extend_from_slice` alone may reserve twice what it needs; grow by doubling, but
        // never past the cap, so the buffer is bounded by `cap`, not `2 * cap`.
        if output.capacity() - output.len() < n {
            let target = output.capacity().saturating_mul(2).max(output.len() + n).min(cap);
            output.reserve_exact(target - output.len());
        }
        output.extend_from_slice(&chunk[..n]);
    }
}

/// Reads stderr line by line until end-of-file: every line goes to `tail`, and the first
/// [`MAX_PROGRESS_EVENTS`] non-empty ones to `events` too.
async fn report_progress(
    mut stderr: impl AsyncRead + Unpin,
    events: &mpsc::Sender<ExecEvent>,
    tail: &mut Tail,
) {
    let mut chunk = vec![0; READ_CHUNK];
    let mut splitter = LineSplitter::default();
    let mut sent = 0;
    loop {
        let n = match stderr.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                log::warn!("cannot read a handler's stderr: {e}");
                break;
            }
        };
        for line in splitter.push(&chunk[..n]) {
            tail.push(&line);
            if let Some(event) = line.strip_prefix(crate::defaults::EMIT_PREFIX) {
                let _ = events.send(ExecEvent::Emit(event.trim().to_string())).await;
                continue;
            }
            if let Some(event) = line.strip_prefix(EVENT_PREFIX) {
                // The agent's budget bounds these downstream; here they only pass through.
                let _ = events.send(ExecEvent::Mission(event.trim().to_string())).await;
                continue;
            }
            // The box's own report that the program could not run is for us, not the caller.
            if line.is_empty() || sent >= MAX_PROGRESS_EVENTS || is_box_report(&line) {
                continue;
            }
            // An error means the receiver is gone: keep reading, for the tail.
            if events.send(ExecEvent::Progress(line)).await.is_ok() {
                sent += 1;
            }
        }
    }
    if let Some(line) = splitter.finish() {
        tail.push(&line);
        if let Some(event) = line.strip_prefix(crate::defaults::EMIT_PREFIX) {
            let _ = events.send(ExecEvent::Emit(event.trim().to_string())).await;
        } else if let Some(event) = line.strip_prefix(EVENT_PREFIX) {
            let _ = events.send(ExecEvent::Mission(event.trim().to_string())).await;
        } else if !line.is_empty() && sent < MAX_PROGRESS_EVENTS && !is_box_report(&line) {
            let _ = events.send(ExecEvent::Progress(line)).await;
        }
    }
}

/// Cuts a byte stream into lines of at most [`MAX_PROGRESS_LINE`] bytes. Pure, so it is
/// unit-tested without processes.
#[derive(Debug, Default)]
struct LineSplitter {
    /// The current line so far: at most `MAX_PROGRESS_LINE` bytes.
    line: Vec<u8>,
    /// The current line was longer than that, and the rest is being skipped.
    cut: bool,
}

impl LineSplitter {
    /// Adds `bytes`, yielding each line they complete.
    fn push<'s>(&'s mut self, bytes: &'s [u8]) -> impl Iterator<Item = String> + 's {
        bytes.split_inclusive(|&b| b == b'\n').filter_map(move |piece| {
            let (text, complete) = match piece.split_last() {
                Some((&b'\n', text)) => (text, true),
                _ => (piece, false),
            };
            let room = MAX_PROGRESS_LINE - self.line.len();
            if text.len() > room {
                self.cut = true;
            }
            self.line.extend_from_slice(&text[..text.len().min(room)]);
            complete.then(|| self.take())
        })
    }

    /// The last line, if the stream did not end with a newline.
    fn finish(mut self) -> Option<String> {
        (!self.line.is_empty() || self.cut).then(|| self.take())
    }

    /// The current line as printable text: invalid UTF-8 and control characters (which
    /// could drive the caller's terminal) become `�`, a trailing `\r` is dropped, and a cut
    /// line ends in `…`.
    fn take(&mut self) -> String {
        let bytes = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
        let mut text: String = String::from_utf8_lossy(bytes)
            .chars()
            .map(|c| {
                if c.is_control() && c != '\t' {
                    '\u{fffd}'
                } else {
                    c
                }
            })
            .collect();
        // Replacement characters are 3 bytes for 1: cut again, on a character boundary.
        if text.len() > MAX_PROGRESS_LINE {
            text.truncate(floor_char_boundary(&text, MAX_PROGRESS_LINE));
            self.cut = true;
        }
        if self.cut {
            text.push('…');
        }
        self.line.clear();
        self.cut = false;
        text
    }
}

/// The end of a handler's stderr, for the report of a failed call.
#[derive(Debug, Default)]
struct Tail {
    /// The last lines, trimmed back to [`STDERR_TAIL`] bytes whenever it reaches twice that,
    /// so it never holds more than `2 * STDERR_TAIL + MAX_PROGRESS_LINE` bytes.
    text: String,
}

impl Tail {
    fn push(&mut self, line: &str) {
        self.text.push_str(line);
        self.text.push('\n');
        if self.text.len() > 2 * STDERR_TAIL {
            self.keep_last(STDERR_TAIL);
        }
    }

    fn keep_last(&mut self, bytes: usize) {
        let mut start = self.text.len().saturating_sub(bytes);
        while !self.text.is_char_boundary(start) {
            start += 1;
        }
        self.text.drain(..start);
    }

    fn into_string(mut self) -> String {
        self.keep_last(STDERR_TAIL);
        let len = self.text.trim_end_matches('\n').len();
        self.text.truncate(len);
        self.text
    }
}

/// The largest `i <= index` that is a character boundary of `text` (`str::floor_char_boundary`
/// is newer than our minimum Rust).
fn floor_char_boundary(text: &str, index: usize) -> usize {
    let mut i = index.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> (Vec<String>, Option<String>) {
        let mut splitter = LineSplitter::default();
        let mut lines = Vec::new();
        for chunk in chunks {
            lines.extend(splitter.push(chunk));
        }
        (lines, splitter.finish())
    }

    #[test]
    fn the_box_says_which_start_failed() {
        let line = |rest: &str| format!("some output\n{EXEC_FAILED}{rest}");
        assert_eq!(exec_errno(&line("1")), Some((1, false)), "switching to the user");
        assert_eq!(
            exec_errno(&line("13 program")),
            Some((13, true)),
            "the program itself"
        );
        assert_eq!(exec_errno(&line("x program")), None);
        assert_eq!(exec_errno(&line("")), None);
        assert_eq!(exec_errno("1"), None, "not the box's line");
        assert_eq!(
            exec_errno(&format!("{EXEC_FAILED}1\nlater")),
            None,
            "not the last line"
        );
    }

    #[test]
    fn lines_are_split_across_chunks() {
        let (lines, last) = split(&[b"one\ntw", b"o\n\nthree\r\nfour"]);
        assert_eq!(lines, ["one", "two", "", "three"]);
        assert_eq!(last.as_deref(), Some("four"));
        assert_eq!(split(&[b"done\n"]).1, None);
    }

    #[test]
    fn long_lines_are_cut_and_marked() {
        let long = vec![b'x'; MAX_PROGRESS_LINE * 3];
        let (lines, last) = split(&[&long, b"\nnext\n", &long[..MAX_PROGRESS_LINE + 1]]);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], format!("{}…", "x".repeat(MAX_PROGRESS_LINE)));
        assert_eq!(lines[1], "next");
        assert_eq!(last, Some(format!("{}…", "x".repeat(MAX_PROGRESS_LINE))));
    }

    #[test]
    fn control_characters_and_bad_utf8_become_replacement_characters() {
        let (lines, _) = split(&[b"\x1b[31mred\x1b[0m\tok \xff\n"]);
        assert_eq!(lines, ["\u{fffd}[31mred\u{fffd}[0m\tok \u{fffd}"]);
    }

    #[test]
    fn replacement_characters_do_not_break_the_length_cap() {
        let bad = vec![0xff; MAX_PROGRESS_LINE];
        let (_, last) = split(&[&bad]);
        let last = last.unwrap();
        assert!(last.len() <= MAX_PROGRESS_LINE + '…'.len_utf8(), "{}", last.len());
        assert!(last.ends_with('…'));
    }

    #[test]
    fn the_tail_keeps_the_last_bytes() {
        let mut tail = Tail::default();
        for i in 0..10_000 {
            tail.push(&format!("line {i}"));
            assert!(tail.text.len() <= 2 * STDERR_TAIL + 16);
        }
        tail.push("é".repeat(STDERR_TAIL).as_str());
        tail.push("the end");
        let text = tail.into_string();
        assert!(text.len() <= STDERR_TAIL, "{}", text.len());
        assert!(text.ends_with("é\nthe end"), "{text}");
    }

    #[tokio::test]
    async fn output_is_capped_without_over_allocating() {
        let mut output = Vec::new();
        let input = vec![7u8; 100_000];
        assert!(collect_output(&input[..], 100_000, &mut output).await.is_ok());
        assert_eq!(output, input);
        assert!(output.capacity() <= 100_000, "{}", output.capacity());

        let mut output = Vec::new();
        assert!(collect_output(&input[..], 99_999, &mut output).await.is_err());
        assert!(output.capacity() <= 99_999, "{}", output.capacity());
    }

    #[test]
    fn outcomes_read_as_sentences() {
        let crashed = ExecOutcome::Failed {
            code: None,
            signal: Some(11),
            stderr_tail: String::new(),
            output: Vec::new(),
        };
        assert_eq!(crashed.to_string(), "crashed (SIGSEGV)");
        let timed_out = ExecOutcome::TimedOut {
            after: Duration::from_secs(5),
        };
        assert_eq!(timed_out.to_string(), "timed out after 5s");
    }
}
