//! The mission box: what keeps one call of an exec function from outliving its call,
//! reading the agent's key or state, or starving the Pi.
//!
//! [`exec`](crate::exec) does not start a handler directly. It starts the *box*: the agent's
//! own binary again (`wtd agent-box ...`, an internal entry point), which sets up the
//! confinement in a fresh, single-threaded process and only then runs the handler. That is
//! how a crate that forbids `unsafe` sets limits "between fork and exec": the box does it
//! in its own process, where plain safe calls suffice.
//!
//! ```text
//!  agent ──spawn──► box, stage 1 (as the agent: root)       its own process group
//!                    │ child subreaper: every orphan below it is re-parented to it
//!                    │ joins the call's cgroup (when there is one)
//!                    │ ignores the group's SIGTERM (blocked), so it outlives its children
//!                    └─spawn as the mission's user──► box, stage 2
//!                                                      │ setrlimit: memory, processes, files
//!                                                      │ no_new_privs, parent-death signal
//!                                                      └─exec──► the handler
//!  handler exits ─► stage 1 kills whatever is left below it, reaps it, exits as the handler did
//!  timeout, cancel, a limit ─► the agent kills the cgroup (or everything below stage 1), then stage 1
//! ```
//!
//! # Modes, probed once at start and logged
//! - **cgroup**: a cgroup v2 hierarchy we may write to. Each call gets a cgroup of its own;
//!   stopping the call is `cgroup.kill`, which no process can escape (not even one that
//!   forked a moment ago). When the `memory` and `pids` controllers are delegated to us,
//!   the kernel enforces `memory.max` and `pids.max` and counts the hits (`memory.events`,
//!   `pids.events`), which is how a limit hit is reported.
//! - **subreaper** (the fallback, always on): stage 1 is a child subreaper, so a process
//!   that `setsid`s or double-forks is still below it; stopping the call kills every
//!   descendant of stage 1 (found through `/proc`), round after round until none is left.
//!   Without memory or pids controllers, a watchdog adds up what the call's processes use
//!   every [`WATCHDOG_INTERVAL`](crate::defaults::WATCHDOG_INTERVAL) and stops a call over
//!   its limit.
//!
//! In both modes, stage 2 sets `RLIMIT_AS` (memory plus headroom, per process),
//! `RLIMIT_NOFILE`, `RLIMIT_CORE = 0` and, for a per-mission user, `RLIMIT_NPROC`.
//!
//! # What the box does not do
//! - It does not hide the filesystem: a handler reads whatever its user may read. The
//!   agent's state directory is `0700 root`, which is what keeps the key safe.
//! - CPU is not limited (a handler may spin a core until its timeout), nor disk or network.
//! - If the agent is killed with SIGKILL, stage 1 lives on with the call (the systemd
//!   unit's `KillMode=control-group` then kills everything).
//! - The watchdog samples: between two looks a call can briefly go past its memory limit,
//!   and a process that lives less than one interval is never counted.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::sys::prctl;
use nix::sys::resource::{getrlimit, getrusage, setrlimit, Resource, UsageWho};
use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use crate::defaults;
use crate::missions::{show_size, Limits};

/// The first argument of `wtd` that enters the box instead of the CLI. Hidden: only the
/// agent runs it.
pub const BOX_COMMAND: &str = "agent-box";

/// What stage 2 prints (as its last stderr line) when it cannot run the handler, with the
/// errno, so the agent can say why ("does not exist", "not executable") as it did when it
/// started handlers itself. A handler printing it only changes how its own failure reads.
pub const EXEC_FAILED: &str = "wtd-box: cannot run the program, errno ";

/// What stage 1 prints (as the last stderr line, once everything below it is dead) when a
/// process of the call used more memory than its limit at its peak, in KiB. The watchdog
/// only samples, and the address-space limit can stop a fast grower between two looks
/// (it then just fails, "memory exhausted"); the kernel's peak count closes that gap.
pub const OVER_MEMORY: &str = "wtd-box: over the memory limit, peak KiB ";

/// The exit status of the box when the handler could not be run (the shell's "command not
/// found", so it reads naturally elsewhere too).
pub const EXEC_FAILED_STATUS: i32 = 127;

/// Follows the errno in the [`EXEC_FAILED`] line when it was the program itself that could
/// not be executed (stage 2), not the start of stage 2 as the function's user.
pub const EXEC_FAILED_PROGRAM: &str = " program";

/// Which start the box reports as failed (see `exec_failed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    SwitchUser,
    Program,
}

/// How calls are contained on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A cgroup per call, killed as a whole; `memory`/`pids`: whether the kernel enforces
    /// those limits too (their controllers are delegated to us).
    Cgroup { memory: bool, pids: bool },
    /// No cgroup: the subreaper and the watchdog.
    Subreaper,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::Cgroup { memory, pids } => {
                let by = |on: bool| if on { "the kernel" } else { "the watchdog" };
                write!(
                    f,
                    "a cgroup v2 per call, killed as a whole; memory limited by {}, processes by {}",
                    by(*memory),
                    by(*pids)
                )
            }
            Mode::Subreaper => f.write_str(
                "no writable cgroup v2: a subreaper box per call, killed process by process; \
                 memory and processes limited by the watchdog",
            ),
        }
    }
}

/// The box as this agent runs it: which program is the box, and the probed [`Mode`].
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// The box's program and the arguments that select it (`wtd`, `agent-box`).
    program: PathBuf,
    prefix: Vec<OsString>,
    /// Where call cgroups are made, when in cgroup mode.
    cgroups: Option<Cgroups>,
}

/// The cgroup v2 directory holding one child per running call.
#[derive(Debug, Clone)]
struct Cgroups {
    dir: PathBuf,
    memory: bool,
    pids: bool,
}

impl Sandbox {
    /// The box this agent process uses: the `wtd` binary with [`BOX_COMMAND`], in the best
    /// mode this machine offers. Probed (and the mode logged) on first use.
    pub fn global() -> &'static Sandbox {
        static GLOBAL: OnceLock<Sandbox> = OnceLock::new();
        GLOBAL.get_or_init(|| {
            let program = wtd_binary();
            let sandbox = Sandbox::probe(&program, [BOX_COMMAND]);
            log::info!(program:% = program.display(); "mission box: {}", sandbox.mode());
            sandbox
        })
    }

    /// A box run as `program prefix...`, in the best mode this machine offers.
    pub fn probe(
        program: impl Into<PathBuf>,
        prefix: impl IntoIterator<Item = impl Into<OsString>>,
    ) -> Sandbox {
        let mut sandbox = Sandbox::subreaper(program, prefix);
        sandbox.cgroups = Cgroups::probe();
        sandbox
    }

    /// A box in [`Mode::Subreaper`], whatever the machine offers: the fallback, and how
    /// tests check it on machines that have cgroups.
    pub fn subreaper(
        program: impl Into<PathBuf>,
        prefix: impl IntoIterator<Item = impl Into<OsString>>,
    ) -> Sandbox {
        Sandbox {
            program: program.into(),
            prefix: prefix.into_iter().map(Into::into).collect(),
            cgroups: None,
        }
    }

    /// The box's program (the agent's own binary, normally).
    pub fn program(&self) -> &Path {
        &self.program
    }

    pub fn mode(&self) -> Mode {
        match &self.cgroups {
            Some(c) => Mode::Cgroup {
                memory: c.memory,
                pids: c.pids,
            },
            None => Mode::Subreaper,
        }
    }

    /// Makes the box of one call: its private working directory, owned by `owner` (uid,
    /// gid) when given, and its cgroup in cgroup mode.
    pub fn open(&self, limits: Limits, owner: Option<(u32, u32)>) -> io::Result<CallBox> {
        let dir = private_dir(owner)?;
        let mut call = CallBox {
            program: self.program.clone(),
            prefix: self.prefix.clone(),
            dir,
            cgroup: None,
            limits,
        };
        if let Some(cgroups) = &self.cgroups {
            // A failure here (the hierarchy went read-only, a limit on cgroup count) is
            // not fatal: the subreaper still contains the call.
            match cgroups.open(&call.dir, limits) {
                Ok(cgroup) => call.cgroup = Some(cgroup),
                Err(e) => log::warn!("cannot make a cgroup for a call, using the subreaper only: {e}"),
            }
        }
        Ok(call)
    }
}

/// The `wtd` binary: normally this very process. A program that embeds the agent (a
/// benchmark, a test under `target/<profile>/deps/`) is not `wtd`; then the `wtd` next to
/// it or one directory up (where cargo puts it), else the installed one.
fn wtd_binary() -> PathBuf {
    let installed = PathBuf::from("/usr/bin/wtd");
    let Ok(me) = std::env::current_exe() else {
        return installed;
    };
    if me.file_name() == Some(OsStr::new("wtd")) {
        return me;
    }
    me.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("wtd"))
        .find(|candidate| candidate.is_file())
        .unwrap_or(installed)
}

impl Cgroups {
    /// A cgroup v2 directory below our own where we can make children, with whichever of
    /// the memory and pids controllers we can enable for them.
    fn probe() -> Option<Cgroups> {
        let mount = cgroup2_mount()?;
        let own = fs::read_to_string("/proc/self/cgroup").ok()?;
        let path = own.lines().find_map(|l| l.strip_prefix("0::"))?;
        let base = mount.join(path.trim_start_matches('/'));
        // Shared by every agent process in this cgroup; each call's child has a random name.
        let dir = base.join("wtd-calls");
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                log::debug!(dir:% = dir.display(); "no cgroup v2 for calls: {e}");
                return None;
            }
        }
        // Without `cgroup.kill` (Linux < 5.14) a cgroup cannot be killed as a whole.
        if !dir.join("cgroup.kill").exists() {
            let _ = fs::remove_dir(&dir);
            return None;
        }
        let read = |file: &str| fs::read_to_string(base.join(file)).unwrap_or_default();
        let has = |list: &str, name: &str| list.split_whitespace().any(|c| c == name);
        let (offered, enabled) = (read("cgroup.controllers"), read("cgroup.subtree_control"));
        if ["memory", "pids"]
            .iter()
            .any(|c| has(&offered, c) && !has(&enabled, c))
        {
            // Delegated to us (systemd's `Delegate=`) but not enabled below us. A cgroup
            // with processes may not enable controllers for its children (the "no
            // internal processes" rule), so the agent first moves itself to a leaf.
            let leaf = base.join("wtd-agent");
            let moved = (fs::create_dir(&leaf).is_ok() || leaf.exists())
                && fs::write(leaf.join("cgroup.procs"), std::process::id().to_string()).is_ok();
            for name in ["memory", "pids"] {
                if moved && has(&offered, name) {
                    let _ = fs::write(base.join("cgroup.subtree_control"), format!("+{name}"));
                }
            }
        }
        let available = read("cgroup.subtree_control");
        let enable = |name: &str| {
            has(&available, name) && fs::write(dir.join("cgroup.subtree_control"), format!("+{name}")).is_ok()
        };
        let (memory, pids) = (enable("memory"), enable("pids"));
        Some(Cgroups { dir, memory, pids })
    }

    fn open(&self, call_dir: &Path, limits: Limits) -> io::Result<CallCgroup> {
        let name = call_dir.file_name().unwrap_or(OsStr::new("call"));
        let dir = self.dir.join(name);
        fs::create_dir(&dir)?;
        let cgroup = CallCgroup {
            dir,
            memory: self.memory,
            pids: self.pids,
        };
        if self.memory {
            fs::write(cgroup.dir.join("memory.max"), limits.memory.to_string())?;
            // Swap would let a call use more than its limit, slowly; most Pis have little.
            let _ = fs::write(cgroup.dir.join("memory.swap.max"), "0");
        }
        if self.pids {
            fs::write(cgroup.dir.join("pids.max"), limits.pids.to_string())?;
        }
        Ok(cgroup)
    }
}

/// Where cgroup v2 is mounted: `/sys/fs/cgroup` on a modern system, `/sys/fs/cgroup/unified`
/// on a hybrid one.
fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        Some(PathBuf::from(left.split_whitespace().nth(4)?))
    })
}

/// A fresh `0700` directory for one call, owned by `owner`: the handler's working
/// directory and `TMPDIR`, so it has somewhere to write that nobody else sees.
fn private_dir(owner: Option<(u32, u32)>) -> io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let mut random = [0u8; 8];
    getrandom::getrandom(&mut random).map_err(|e| io::Error::other(e.to_string()))?;
    let name: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let dir = Path::new(defaults::CALL_DIR_PARENT).join(format!("wtd-call-{name}"));
    // `create`, not `create_all`: the name is new, and an existing one is an attack.
    fs::DirBuilder::new().mode(0o700).create(&dir)?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
    if let Some((uid, gid)) = owner {
        nix::unistd::chown(&dir, Some(uid.into()), Some(gid.into())).map_err(io::Error::from)?;
    }
    Ok(dir)
}

/// One call's box: what [`exec`](crate::exec) starts and later empties.
///
/// `Clone` so that a copy can be moved to the blocking pool for a limit check or a kill
/// (see [`off_thread`]); only the call's own box is ever closed.
#[derive(Debug, Clone)]
pub struct CallBox {
    program: PathBuf,
    prefix: Vec<OsString>,
    dir: PathBuf,
    cgroup: Option<CallCgroup>,
    limits: Limits,
}

#[derive(Debug, Clone)]
struct CallCgroup {
    dir: PathBuf,
    memory: bool,
    pids: bool,
}

/// A limit a call went past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    /// Its processes together used more than this many bytes.
    Memory { limit: u64 },
    /// It tried to run more than this many processes at once.
    Pids { limit: u32 },
}

impl fmt::Display for LimitHit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitHit::Memory { limit } => write!(f, "used more than {} of memory", show_size(*limit)),
            LimitHit::Pids { limit } => write!(f, "ran more than {limit} processes at once"),
        }
    }
}

impl CallBox {
    /// The call's private working directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The command that runs `argv` in this box, as `run_as` (`None`: the agent's user).
    /// `nproc`: whether to set `RLIMIT_NPROC`, which counts every process of the user, so
    /// only makes sense for a user of this mission's own.
    pub fn command(
        &self,
        argv: &[String],
        run_as: Option<(u32, u32)>,
        nproc: bool,
    ) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.program);
        command.args(&self.prefix);
        let limits = self.limits;
        command
            .arg("--memory")
            .arg(limits.memory.to_string())
            .arg("--open-files")
            .arg(limits.open_files.to_string())
            .arg("--nproc")
            .arg(if nproc { limits.pids } else { 0 }.to_string());
        if let Some((uid, gid)) = run_as {
            command
                .arg("--uid")
                .arg(uid.to_string())
                .arg("--gid")
                .arg(gid.to_string());
        }
        if let Some(cgroup) = &self.cgroup {
            command.arg("--cgroup").arg(&cgroup.dir);
        }
        command.arg("--").args(argv);
        command
    }

    /// Sends `signal` to every process below the box's stage 1 (`root`), not to stage 1.
    pub fn signal_descendants(&self, root: Pid, signal: Signal) {
        for pid in descendants(root) {
            let _ = kill(pid, signal);
        }
    }

    /// Kills everything in the box, stage 1 last, so nothing is re-parented out of it.
    /// Synchronous and bounded: safe in `Drop`.
    pub fn kill_all(&self, root: Pid) {
        if let Some(cgroup) = &self.cgroup {
            if let Err(e) = fs::write(cgroup.dir.join("cgroup.kill"), "1") {
                log::warn!("cannot kill a call's cgroup: {e}");
            }
        }
        kill_descendants(root);
        let _ = kill(root, Signal::SIGKILL);
    }

    /// The limit the call is over, if any: the kernel's count in cgroup mode, else what
    /// the watchdog sees in `/proc` now (`root`: stage 1).
    pub fn limit_hit(&self, root: Pid) -> Option<LimitHit> {
        let limits = self.limits;
        let (kernel_memory, kernel_pids) = match &self.cgroup {
            Some(c) => (c.memory, c.pids),
            None => (false, false),
        };
        if let Some(cgroup) = &self.cgroup {
            if kernel_memory && event_count(&cgroup.dir.join("memory.events"), "oom_kill") > 0 {
                return Some(LimitHit::Memory { limit: limits.memory });
            }
            if kernel_pids && event_count(&cgroup.dir.join("pids.events"), "max") > 0 {
                return Some(LimitHit::Pids { limit: limits.pids });
            }
        }
        if kernel_memory && kernel_pids {
            return None;
        }
        let below = descendants(root);
        if !kernel_pids && below.len() > limits.pids as usize {
            return Some(LimitHit::Pids { limit: limits.pids });
        }
        if !kernel_memory {
            let used: u64 = below.iter().map(|&pid| resident_bytes(pid)).sum();
            if used > limits.memory {
                return Some(LimitHit::Memory { limit: limits.memory });
            }
        }
        None
    }

    /// [`CallBox::close`] without waiting: for `Drop`, when a call is abandoned. A cgroup
    /// whose processes have not quite left yet stays behind, empty (and is logged).
    pub fn close_now(self) {
        if let Some(cgroup) = &self.cgroup {
            if let Err(e) = fs::remove_dir(&cgroup.dir) {
                log::debug!(dir:% = cgroup.dir.display(); "cannot remove a call's cgroup yet: {e}");
            }
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            log::warn!(dir:% = self.dir.display(); "cannot remove a call's directory: {e}");
        }
    }

    /// Removes the cgroup and the working directory. Call once everything is dead.
    pub async fn close(self) {
        if let Some(cgroup) = &self.cgroup {
            // A killed process leaves its cgroup a moment after it is reaped.
            for _ in 0..100 {
                let dir = cgroup.dir.clone();
                let removed = match off_thread(move || fs::remove_dir(dir)).await {
                    Some(removed) => removed,
                    // The agent is stopping: `close_now`'s single try, then leave it.
                    None => fs::remove_dir(&cgroup.dir),
                };
                match removed {
                    Err(e) if e.raw_os_error() == Some(Errno::EBUSY as i32) => {
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                    Err(e) => {
                        log::warn!(dir:% = cgroup.dir.display(); "cannot remove a call's cgroup: {e}");
                        break;
                    }
                    Ok(()) => break,
                }
            }
        }
        if let Err(e) = tokio::fs::remove_dir_all(&self.dir).await {
            log::warn!(dir:% = self.dir.display(); "cannot remove a call's directory: {e}");
        }
    }
}

/// Runs `work` on tokio's blocking pool and waits for it; `None` if the pool is gone (the
/// agent is stopping).
///
/// For the box's file-system work: making and removing cgroups and writing their files,
/// scanning `/proc` for a call's processes. Each is quick on an idle machine, but cgroupfs
/// `mkdir` and `rmdir` wait for the kernel (RCU grace periods), and with many calls on a
/// busy machine one took up to 2.8 s. The agent has a single async thread: work done there
/// stalls everything else on it, the heartbeats first, and the proxy drops an agent that
/// misses two (`benches/callers.rs` showed it: 40 agents with 25 callers each were all
/// dropped within seconds). Awaited right here, so it stays owned by the call; if the call
/// is dropped meanwhile, the work still ends on its own (each piece is bounded).
pub async fn off_thread<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(done) => Some(done),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => None,
    }
}

/// `name N` in a cgroup events file (`memory.events`, `pids.events`); 0 if absent.
fn event_count(file: &Path, name: &str) -> u64 {
    fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

/// Every live process below `root` (children, their children, ...), from `/proc`.
pub fn descendants(root: Pid) -> Vec<Pid> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue; // it just ended
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("X");
        let Some(ppid) = fields.next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if !matches!(state, "Z" | "X") {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut queue = vec![root.as_raw()];
    while let Some(parent) = queue.pop() {
        for &child in children.get(&parent).into_iter().flatten() {
            found.push(Pid::from_raw(child));
            queue.push(child);
        }
    }
    found
}

/// SIGKILLs everything below `root`, round after round until nothing is left (a round
/// only finds what forked since the last: a killed process forks no more).
pub fn kill_descendants(root: Pid) {
    for _ in 0..defaults::KILL_ROUNDS {
        let below = descendants(root);
        if below.is_empty() {
            return;
        }
        for pid in below {
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
    log::warn!(pid = root.as_raw(); "processes of a call were still forking after {} rounds of kills", defaults::KILL_ROUNDS);
}

/// Resident memory of one process, in bytes (0 if it is gone).
fn resident_bytes(pid: Pid) -> u64 {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| u64::try_from(p).ok())
        .unwrap_or(4096);
    fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page)
}

// ---- inside the box ----

/// What the box was asked to do, from its arguments.
#[derive(Debug, Default)]
struct BoxArgs {
    stage2: bool,
    memory: u64,
    open_files: u64,
    nproc: u64,
    uid: Option<u32>,
    gid: Option<u32>,
    cgroup: Option<PathBuf>,
    argv: Vec<OsString>,
}

fn parse_box_args(args: &[OsString]) -> Result<BoxArgs, String> {
    let mut parsed = BoxArgs::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let arg = arg.to_str().ok_or("an argument is not UTF-8")?;
        if arg == "--" {
            parsed.argv = args.cloned().collect();
            return Ok(parsed);
        }
        if arg == "--stage2" {
            parsed.stage2 = true;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{arg} needs a value"))?;
        let number = || -> Result<u64, String> {
            value
                .to_str()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{arg}: not a number"))
        };
        match arg {
            "--memory" => parsed.memory = number()?,
            "--open-files" => parsed.open_files = number()?,
            "--nproc" => parsed.nproc = number()?,
            "--uid" => parsed.uid = Some(u32::try_from(number()?).map_err(|e| e.to_string())?),
            "--gid" => parsed.gid = Some(u32::try_from(number()?).map_err(|e| e.to_string())?),
            "--cgroup" => parsed.cgroup = Some(PathBuf::from(value)),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Err("no `--` before the program".into())
}

/// The box's entry point: `prefix` is how it was invoked (`["agent-box"]` for `wtd
/// agent-box`), `args` what follows. Never returns: it becomes the handler (stage 2) or
/// exits as the handler did (stage 1).
pub fn box_main(prefix: &[&str], args: &[OsString]) -> ! {
    let args = match parse_box_args(args) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("wtd-box: {e} (this is an internal command of the agent)");
            std::process::exit(2);
        }
    };
    if args.stage2 {
        stage2(args)
    } else {
        stage1(prefix, args)
    }
}

/// Reports that the handler (or stage 2) could not be run, the way the agent reads it.
///
/// `step` says which start failed: [`Step::SwitchUser`] (stage 1 starting stage 2 as the
/// function's user: the uid and gid switch happen there) or [`Step::Program`] (stage 2
/// executing the program itself), as the agent words the two differently.
fn exec_failed(e: &io::Error, step: Step) -> ! {
    let errno = e.raw_os_error().unwrap_or(0);
    let step = match step {
        Step::SwitchUser => "",
        Step::Program => EXEC_FAILED_PROGRAM,
    };
    let _ = writeln!(io::stderr(), "\n{EXEC_FAILED}{errno}{step}");
    std::process::exit(EXEC_FAILED_STATUS);
}

fn stage1(prefix: &[&str], args: BoxArgs) -> ! {
    // Orphans of the handler come to us, not to init: they stay findable and killable.
    if let Err(e) = prctl::set_child_subreaper(true) {
        eprintln!("wtd-box: cannot become a subreaper: {e}");
        std::process::exit(EXEC_FAILED_STATUS);
    }
    // The agent's SIGTERM goes to the whole group, us included: we must outlive the
    // processes below us, or they would be re-parented out of the box. Blocked, not
    // ignored (ignoring needs `unsafe`); std unblocks signals in the child it spawns.
    let mut term = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        term.add(signal);
    }
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&term), None);
    if let Some(cgroup) = &args.cgroup {
        if let Err(e) = fs::write(cgroup.join("cgroup.procs"), std::process::id().to_string()) {
            eprintln!("wtd-box: cannot join the call's cgroup {}: {e}", cgroup.display());
            std::process::exit(EXEC_FAILED_STATUS);
        }
    }
    let me = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let mut stage2 = std::process::Command::new(me);
    stage2
        .args(prefix)
        .arg("--stage2")
        .arg("--memory")
        .arg(args.memory.to_string())
        .arg("--open-files")
        .arg(args.open_files.to_string())
        .arg("--nproc")
        .arg(args.nproc.to_string())
        .arg("--")
        .args(&args.argv);
    let memory = args.memory;
    if let (Some(uid), Some(gid)) = (args.uid, args.gid) {
        // With a uid and no explicit groups, std also drops every supplementary group.
        stage2.uid(uid).gid(gid);
    }
    let child = match stage2.spawn() {
        Ok(child) => child,
        Err(e) => exec_failed(&e, Step::SwitchUser),
    };
    let handler = Pid::from_raw(child.id() as i32);
    let mut status = None;
    // Reap everything, so orphans do not linger as zombies, until the handler ends.
    loop {
        match waitpid(None::<Pid>, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == handler => {
                status = Some(std::process::ExitStatus::from_raw((code & 0xff) << 8));
                break;
            }
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == handler => {
                status = Some(std::process::ExitStatus::from_raw(signal as i32));
                break;
            }
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => break, // ECHILD: nothing left to wait for
        }
    }
    // The handler is done: nothing it started may outlive it.
    kill_descendants(Pid::this());
    while let Ok(_) | Err(Errno::EINTR) = waitpid(None::<Pid>, None) {}
    // The largest peak of any process of the call (Linux counts it in KiB).
    if let Ok(usage) = getrusage(UsageWho::RUSAGE_CHILDREN) {
        let peak_kib = u64::try_from(usage.max_rss()).unwrap_or(0);
        if peak_kib.saturating_mul(1024) > memory && memory > 0 {
            let _ = writeln!(io::stderr(), "\n{OVER_MEMORY}{peak_kib}");
        }
    }
    exit_like(status)
}

/// Exits the way the handler did: its exit code, or killed by its signal.
fn exit_like(status: Option<std::process::ExitStatus>) -> ! {
    let Some(status) = status else {
        std::process::exit(EXEC_FAILED_STATUS);
    };
    if let Some(code) = status.code() {
        std::process::exit(code);
    }
    let signal = status.signal().and_then(|s| Signal::try_from(s).ok());
    if let Some(signal) = signal {
        let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
        // No core file of the box itself.
        let _ = setrlimit(Resource::RLIMIT_CORE, 0, 0);
        // Twice: Rust's own SIGSEGV/SIGBUS handler restores the default on the first.
        // SIGPIPE is ignored by Rust programs; for it the exit code below stands in.
        let _ = kill(Pid::this(), signal);
        let _ = kill(Pid::this(), signal);
    }
    std::process::exit(128 + status.signal().unwrap_or(0))
}

fn stage2(args: BoxArgs) -> ! {
    let limit = |resource: Resource, value: u64| {
        // Never above the current hard limit: lowering is all an unprivileged user may do.
        let (_, hard) = getrlimit(resource).unwrap_or((value, value));
        let value = value.min(hard);
        if let Err(e) = setrlimit(resource, value, value) {
            eprintln!("wtd-box: cannot set {resource:?}: {e}");
            std::process::exit(EXEC_FAILED_STATUS);
        }
    };
    limit(
        Resource::RLIMIT_AS,
        args.memory.saturating_add(defaults::ADDRESS_SPACE_HEADROOM),
    );
    limit(Resource::RLIMIT_NOFILE, args.open_files);
    limit(Resource::RLIMIT_CORE, 0);
    if args.nproc > 0 {
        limit(Resource::RLIMIT_NPROC, args.nproc);
    }
    // No setuid program (sudo, ping) can give the handler back what the box took.
    let _ = prctl::set_no_new_privs();
    // If stage 1 dies, so does the handler (kept across exec, as the handler is not setuid).
    let _ = prctl::set_pdeathsig(Signal::SIGKILL);
    let Some((program, rest)) = args.argv.split_first() else {
        eprintln!("wtd-box: no program");
        std::process::exit(EXEC_FAILED_STATUS);
    };
    let e = std::process::Command::new(program).args(rest).exec();
    exec_failed(&e, Step::Program)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn box_arguments_round_trip() {
        let args = parse_box_args(&os(&[
            "--memory",
            "1024",
            "--open-files",
            "64",
            "--nproc",
            "8",
            "--uid",
            "1000",
            "--gid",
            "1001",
            "--cgroup",
            "/sys/fs/cgroup/x",
            "--",
            "/bin/echo",
            "--memory",
        ]))
        .unwrap();
        assert_eq!((args.memory, args.open_files, args.nproc), (1024, 64, 8));
        assert_eq!((args.uid, args.gid), (Some(1000), Some(1001)));
        assert_eq!(args.cgroup.as_deref(), Some(Path::new("/sys/fs/cgroup/x")));
        assert_eq!(args.argv, os(&["/bin/echo", "--memory"]));
        assert!(!args.stage2);
    }

    #[test]
    fn bad_box_arguments_are_refused() {
        for (args, expected) in [
            (&["--memory"][..], "needs a value"),
            (&["--memory", "lots", "--"], "not a number"),
            (&["--colour", "red", "--"], "unknown option"),
            (&["--memory", "1"], "no `--`"),
            (&["--uid", "99999999999", "--"], "out of range"),
        ] {
            let e = parse_box_args(&os(args)).unwrap_err();
            assert!(e.contains(expected), "{args:?}: {e}");
        }
    }

    #[test]
    fn event_counts_are_read_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("memory.events");
        fs::write(&file, "low 0\nhigh 0\nmax 7\noom 2\noom_kill 1\n").unwrap();
        assert_eq!(event_count(&file, "oom_kill"), 1);
        assert_eq!(event_count(&file, "oom"), 2);
        assert_eq!(event_count(&file, "max"), 7);
        assert_eq!(event_count(&dir.path().join("absent"), "max"), 0);
    }
}
