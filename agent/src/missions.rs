//! Missions: what this agent offers, read from one TOML file per mission.
//!
//! A mission is a named, versioned group of functions (`demo/echo`). Each function runs a
//! program, given as an argument list (never through a shell, so arguments are never
//! re-parsed):
//!
//! ```toml
//! # /etc/wtd/missions/demo.toml
//! name = "demo"
//! version = "1.0"
//! description = "Small functions to try wtd with"
//!
//! [[functions]]
//! name = "echo"
//! description = "Returns its input"
//! exec = ["/bin/cat"]          # argv; the program must be an absolute path
//! timeout = "5s"               # default 10s
//! output_cap = 65536           # bytes of output kept; default 64 KiB
//! idempotent = true            # safe to retry on another agent; default false
//! memory = "32MiB"             # the most memory it may use; default 64 MiB
//! pids = 16                    # the most processes it may run at once; default 32
//! open_files = 128             # the most files each process may hold open; default 256
//! subscribe = ["social/unfriend", "photos"]  # called once per signed event of these
//!                              # (mission/topic, or a whole mission); see `subscriber`
//! ```
//!
//! `memory`, `pids`, `open_files` and `user` may also be set once for the whole mission, at
//! the top of the file; a function's own value wins. `user = "wtd-demo"` names an existing
//! unprivileged user to run the mission's functions as (when the agent runs as root);
//! without it, a root agent uses `wtd-<mission>`, created on demand (see `exec`).
//!
//! Loading never fails as a whole. A file that is not valid TOML, uses a non-canonical
//! name, repeats a mission, has an unknown key or a function without `exec` is skipped,
//! logged, and reported as a warning in the advert, so its owner sees it in `wtd ls`, while
//! the agent carries on with the missions that are fine.
//!
//! Every agent also has the built-in `sys` mission (`sys/info`, `sys/ping`), answered by
//! the agent itself rather than by a program. This module only builds the catalogue; running
//! a function is the job of the call dispatcher.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use wtd_keys::names::NameError;
use wtd_keys::{FunctionName, MissionName};
use wtd_wire::defaults::{MAX_FUNCTIONS, MAX_MISSIONS, MAX_TEXT};
use wtd_wire::{FunctionInfo, MissionInfo};

use crate::defaults;

/// The name of the built-in mission. Mission files may not use it.
pub const SYS: &str = "sys";

/// Every mission this agent offers, and the problems found while reading them.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalogue {
    missions: Vec<Mission>,
    warnings: Vec<String>,
}

/// One mission.
#[derive(Debug, Clone, PartialEq)]
pub struct Mission {
    pub name: MissionName,
    /// Free text chosen by the mission's author (`1.0`, `2024-05`), shown in `wtd ls`.
    pub version: String,
    pub description: String,
    pub functions: Vec<Function>,
    /// The file it was read from; `None` for the built-in `sys` mission.
    pub source: Option<PathBuf>,
}

/// One function of a mission, with everything needed to run it.
#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    pub name: FunctionName,
    pub description: String,
    /// What runs when the function is called.
    pub run: Run,
    /// The call is stopped after this long.
    pub timeout: Duration,
    /// Bytes of output kept; a function that prints more has its output cut here.
    pub output_cap: usize,
    /// Safe to run twice: a caller may retry it on another agent if this one vanishes.
    pub idempotent: bool,
    /// What one call may use: memory, processes, open files.
    pub limits: Limits,
    /// The user its mission file names to run it as (`user = "..."`), if any.
    pub user: Option<String>,
    /// Signed events this function handles, once each (`subscribe = ["social/unfriend"]`).
    pub subscribe: Vec<Subscription>,
}

/// One entry of a function's `subscribe` list: a mission's events, of one topic or all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    pub mission: MissionName,
    pub topic: Option<wtd_keys::TopicName>,
}

impl Subscription {
    /// Parses `mission` or `mission/topic`.
    pub fn parse(text: &str) -> Result<Subscription, NameError> {
        let (m, t) = match text.split_once('/') {
            Some((m, t)) => (m, Some(wtd_keys::TopicName::new(t)?)),
            None => (text, None),
        };
        Ok(Subscription {
            mission: MissionName::new(m)?,
            topic: t,
        })
    }

    pub fn matches(&self, mission: &MissionName, topic: &wtd_keys::TopicName) -> bool {
        &self.mission == mission && self.topic.as_ref().is_none_or(|t| t == topic)
    }
}

/// What one call of a function may use. Enforced by the mission box (see `exec`), and a
/// call that goes past one is stopped and reported as such.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of memory the call's processes may use together.
    pub memory: u64,
    /// Processes (and threads) the call may run at once.
    pub pids: u32,
    /// Files each of its processes may hold open at once.
    pub open_files: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: defaults::FUNCTION_MEMORY,
            pids: defaults::FUNCTION_PIDS,
            open_files: defaults::FUNCTION_OPEN_FILES,
        }
    }
}

/// What runs when a function is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Run {
    /// A program and its arguments (`argv`); `argv[0]` is an absolute path.
    Exec(Vec<String>),
    /// A function the agent answers itself.
    Builtin(Builtin),
}

/// The functions of the built-in `sys` mission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// `sys/info`: what this agent is and offers, and its load.
    Info,
    /// `sys/ping`: answers at once, to measure the round trip.
    Ping,
}

/// Why a mission file was skipped. The file is named in the warning built from this.
#[derive(Debug, thiserror::Error)]
pub enum MissionError {
    /// The file could not be read (permissions, or it vanished while we listed the dir).
    #[error("cannot read it: {0}")]
    Read(#[source] std::io::Error),
    /// Far bigger than any mission: probably not a mission file.
    #[error("it is over {} bytes", defaults::MAX_MISSION_FILE_BYTES)]
    TooLarge,
    /// Not valid TOML, an unknown key, a missing key or a value of the wrong type.
    #[error("{0}")]
    Toml(String),
    /// The mission's name is not canonical.
    #[error("mission name `{name}`: {source}")]
    BadMissionName {
        name: String,
        #[source]
        source: NameError,
    },
    /// An entry of `subscribe` is not `mission` or `mission/topic`.
    #[error("function {function}: subscribe entry `{entry}`: {why} (write \"mission\" or \"mission/topic\", e.g. \"social/unfriend\")")]
    BadSubscribe {
        function: String,
        entry: String,
        why: String,
    },
    /// A function's name is not canonical.
    #[error("function name `{name}`: {source}")]
    BadFunctionName {
        name: String,
        #[source]
        source: NameError,
    },
    /// `sys` belongs to the agent.
    #[error("`{SYS}` is the agent's built-in mission; choose another name")]
    Reserved,
    /// Another file already declared this mission.
    #[error("mission `{name}` is already declared by {first}")]
    Duplicate { name: String, first: String },
    /// A mission without functions offers nothing.
    #[error("it declares no functions (add a [[functions]] table)")]
    NoFunctions,
    /// More functions than one advert may carry.
    #[error("{0} functions; a mission has at most {MAX_FUNCTIONS}")]
    TooManyFunctions(usize),
    /// Two functions with the same name in one mission.
    #[error("function `{0}` is declared twice")]
    DuplicateFunction(String),
    /// A function without `exec` would have nothing to run.
    #[error("function `{0}` has no `exec` (the program to run, e.g. exec = [\"/bin/echo\", \"hi\"])")]
    MissingExec(String),
    /// `exec = []`.
    #[error("function `{0}`: `exec` is empty; give the program and its arguments")]
    EmptyExec(String),
    /// `exec = ["echo"]`: which `echo` would depend on `$PATH`, which a service controls
    /// poorly and an attacker might control.
    #[error(
        "function `{function}`: the program `{program}` must be an absolute path (e.g. /usr/bin/{program})"
    )]
    RelativeProgram { function: String, program: String },
    /// An argument with a NUL byte cannot be passed to a program.
    #[error("function `{0}`: an `exec` argument contains a NUL byte")]
    NulInExec(String),
    /// `timeout` is not a duration.
    #[error("function `{function}`: `timeout = {text:?}` is not a duration (write e.g. \"10s\"): {source}")]
    BadTimeout {
        function: String,
        text: String,
        #[source]
        source: humantime::DurationError,
    },
    /// `timeout` is zero or too long.
    #[error(
        "function `{function}`: `timeout` must be more than 0 and at most {}",
        humantime::format_duration(defaults::MAX_FUNCTION_TIMEOUT)
    )]
    TimeoutOutOfRange { function: String },
    /// `output_cap` is zero or too big.
    #[error(
        "function `{function}`: `output_cap` must be 1 to {} bytes",
        defaults::MAX_OUTPUT_CAP
    )]
    OutputCapOutOfRange { function: String },
    /// A version or description is multi-line or too long for the advert.
    #[error("`{field}` must be one line of at most {MAX_TEXT} bytes")]
    BadText { field: String },
    /// `memory` is not a size.
    #[error("`memory = {text:?}` is not a size (write e.g. \"64MiB\")")]
    BadMemory { text: String },
    /// `memory`, `pids` or `open_files` is below what any program needs, or above what one
    /// call may take.
    #[error("`{field}` must be {min} to {max}")]
    LimitOutOfRange {
        field: &'static str,
        min: String,
        max: String,
    },
    /// `user` is not a plausible user name.
    #[error("`user = {0:?}` is not a user name (lowercase letters, digits, `-` and `_`)")]
    BadUser(String),
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MissionFile {
    name: String,
    version: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    functions: Vec<FunctionFile>,
    // The mission's own limits and user, for functions that do not give theirs. (Not a
    // `#[serde(flatten)]` struct: serde cannot combine that with `deny_unknown_fields`.)
    memory: Option<String>,
    pids: Option<u32>,
    open_files: Option<u32>,
    user: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FunctionFile {
    name: String,
    #[serde(default)]
    description: String,
    exec: Option<Vec<String>>,
    timeout: Option<String>,
    output_cap: Option<u64>,
    #[serde(default)]
    idempotent: bool,
    memory: Option<String>,
    pids: Option<u32>,
    open_files: Option<u32>,
    user: Option<String>,
    #[serde(default)]
    subscribe: Vec<String>,
}

/// Limits and user as a mission or function gives them: what is not given is inherited.
#[derive(Debug, Default, Clone)]
struct LimitsFile {
    memory: Option<String>,
    pids: Option<u32>,
    open_files: Option<u32>,
    user: Option<String>,
}

impl LimitsFile {
    /// These values, with `outer`'s where these are not given.
    fn or(self, outer: &LimitsFile) -> LimitsFile {
        LimitsFile {
            memory: self.memory.or_else(|| outer.memory.clone()),
            pids: self.pids.or(outer.pids),
            open_files: self.open_files.or(outer.open_files),
            user: self.user.or_else(|| outer.user.clone()),
        }
    }

    /// Checked limits (defaults for what nobody gave), and the user.
    fn resolve(self) -> Result<(Limits, Option<String>), MissionError> {
        let memory = match self.memory {
            None => defaults::FUNCTION_MEMORY,
            Some(text) => parse_size(&text).ok_or(MissionError::BadMemory { text })?,
        };
        let range = |field, value: u64, min: u64, max: u64, show: fn(u64) -> String| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(MissionError::LimitOutOfRange {
                    field,
                    min: show(min),
                    max: show(max),
                })
            }
        };
        range(
            "memory",
            memory,
            defaults::MIN_FUNCTION_MEMORY,
            defaults::MAX_FUNCTION_MEMORY,
            show_size,
        )?;
        let pids = self.pids.unwrap_or(defaults::FUNCTION_PIDS);
        range("pids", pids.into(), 1, defaults::MAX_FUNCTION_PIDS.into(), |n| {
            n.to_string()
        })?;
        let open_files = self.open_files.unwrap_or(defaults::FUNCTION_OPEN_FILES);
        range(
            "open_files",
            open_files.into(),
            defaults::MIN_FUNCTION_OPEN_FILES.into(),
            defaults::MAX_FUNCTION_OPEN_FILES.into(),
            |n| n.to_string(),
        )?;
        if let Some(user) = &self.user {
            let plausible = !user.is_empty()
                && user.len() <= 32
                && !user.starts_with('-')
                && user
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
            if !plausible {
                return Err(MissionError::BadUser(user.clone()));
            }
        }
        Ok((
            Limits {
                memory,
                pids,
                open_files,
            },
            self.user,
        ))
    }
}

/// `"64MiB"`, `"64M"`, `"1GiB"`, `"512KiB"` or a number of bytes, in bytes. Units are
/// powers of two, as the kernel counts memory.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().ok()?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        _ => return None,
    };
    number.checked_mul(1 << shift)
}

/// A size as a person writes it: `64 MiB`, `1 GiB`, `1000 bytes`.
pub fn show_size(bytes: u64) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

impl Catalogue {
    /// Reads every `*.toml` file in `dir` (in file-name order, so the result does not
    /// depend on the filesystem), after the built-in `sys` mission. A missing directory
    /// just means no missions of our own; every other problem becomes a warning.
    pub fn load(dir: &Path) -> Catalogue {
        let mut catalogue = Catalogue::builtin();
        let files = match mission_files(dir) {
            Ok(files) => files,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                log::info!(dir:% = dir.display(); "no missions directory; offering only the built-in `{SYS}` mission");
                return catalogue;
            }
            Err(e) => {
                catalogue.warn(format!(
                    "cannot read the missions directory {}: {e}",
                    dir.display()
                ));
                return catalogue;
            }
        };
        for path in files {
            let file_name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if catalogue.missions.len() >= MAX_MISSIONS {
                catalogue.warn(format!(
                    "mission file {file_name} skipped: an agent offers at most {MAX_MISSIONS} missions"
                ));
                continue;
            }
            match catalogue.read_file(&path, &file_name) {
                Ok(mission) => {
                    log::info!(mission:% = mission.name, file = file_name.as_str(); "mission loaded");
                    catalogue.missions.push(mission);
                }
                Err(e) => catalogue.warn(format!("mission file {file_name} skipped: {e}")),
            }
        }
        catalogue
    }

    /// Only the built-in `sys` mission.
    pub fn builtin() -> Catalogue {
        Catalogue {
            missions: vec![sys_mission()],
            warnings: Vec::new(),
        }
    }

    /// Every mission, `sys` first.
    pub fn missions(&self) -> &[Mission] {
        &self.missions
    }

    /// Problems found while loading, one sentence each, for the log and `wtd ls`.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The mission called `name`, if offered.
    pub fn mission(&self, name: &MissionName) -> Option<&Mission> {
        self.missions.iter().find(|m| m.name == *name)
    }

    /// The function `mission/function`, if offered: what a call dispatcher looks up.
    pub fn function(&self, mission: &MissionName, function: &FunctionName) -> Option<&Function> {
        self.mission(mission)?
            .functions
            .iter()
            .find(|f| f.name == *function)
    }

    /// The missions as the advert describes them (without how they run).
    pub fn infos(&self) -> Vec<MissionInfo> {
        self.missions.iter().map(Mission::info).collect()
    }

    fn warn(&mut self, warning: String) {
        log::warn!("{warning}");
        self.warnings.push(warning);
    }

    fn read_file(&self, path: &Path, file_name: &str) -> Result<Mission, MissionError> {
        let text = read_bounded(path)?;
        let file: MissionFile =
            toml::from_str(&text).map_err(|e| MissionError::Toml(toml_summary(&e, &text)))?;
        let mut mission = parse(file)?;
        if let Some(first) = self.missions.iter().find(|m| m.name == mission.name) {
            let first = match &first.source {
                Some(p) => p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                None => "the agent itself".to_string(),
            };
            return Err(if mission.name.as_str() == SYS {
                MissionError::Reserved
            } else {
                MissionError::Duplicate {
                    name: mission.name.to_string(),
                    first,
                }
            });
        }
        log::debug!(file = file_name; "parsed mission file");
        mission.source = Some(path.to_path_buf());
        Ok(mission)
    }
}

impl Mission {
    /// How the advert describes this mission.
    pub fn info(&self) -> MissionInfo {
        MissionInfo {
            name: self.name.to_string(),
            version: self.version.clone(),
            description: self.description.clone(),
            functions: self
                .functions
                .iter()
                .map(|f| FunctionInfo {
                    name: f.name.to_string(),
                    description: f.description.clone(),
                    idempotent: f.idempotent,
                })
                .collect(),
        }
    }
}

impl fmt::Display for Builtin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Builtin::Info => "info",
            Builtin::Ping => "ping",
        })
    }
}

/// The `*.toml` files in `dir`, sorted by name, skipping hidden files (editors' backups).
fn mission_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or(".");
            !name.starts_with('.') && path.extension().is_some_and(|ext| ext == "toml")
        })
        .collect();
    files.sort();
    Ok(files)
}

fn read_bounded(path: &Path) -> Result<String, MissionError> {
    let file = fs::File::open(path).map_err(MissionError::Read)?;
    let mut text = String::new();
    file.take(defaults::MAX_MISSION_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(MissionError::Read)?;
    if text.len() as u64 > defaults::MAX_MISSION_FILE_BYTES {
        return Err(MissionError::TooLarge);
    }
    Ok(text)
}

/// A TOML error in one line (`line 3: unknown field ...`): toml's own rendering spans
/// several lines with a source excerpt, which does not fit a warning in `wtd ls`.
fn toml_summary(error: &toml::de::Error, text: &str) -> String {
    let message = error.message().trim();
    match error.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message.to_string(),
    }
}

/// One line of printable text that fits the advert.
fn one_line(field: &str, text: String) -> Result<String, MissionError> {
    if text.len() > MAX_TEXT || text.chars().any(char::is_control) {
        return Err(MissionError::BadText {
            field: field.to_string(),
        });
    }
    Ok(text)
}

fn parse(file: MissionFile) -> Result<Mission, MissionError> {
    let name = MissionName::new(&file.name).map_err(|source| MissionError::BadMissionName {
        name: file.name.clone(),
        source,
    })?;
    if name.as_str() == SYS {
        return Err(MissionError::Reserved);
    }
    if file.functions.is_empty() {
        return Err(MissionError::NoFunctions);
    }
    if file.functions.len() > MAX_FUNCTIONS {
        return Err(MissionError::TooManyFunctions(file.functions.len()));
    }
    let outer = LimitsFile {
        memory: file.memory,
        pids: file.pids,
        open_files: file.open_files,
        user: file.user,
    };
    let mut seen = HashSet::new();
    let mut functions = Vec::with_capacity(file.functions.len());
    for f in file.functions {
        let function = parse_function(f, &outer)?;
        if !seen.insert(function.name.clone()) {
            return Err(MissionError::DuplicateFunction(function.name.to_string()));
        }
        functions.push(function);
    }
    Ok(Mission {
        name,
        version: one_line("version", file.version)?,
        description: one_line("description", file.description)?,
        functions,
        source: None,
    })
}

fn parse_function(f: FunctionFile, outer: &LimitsFile) -> Result<Function, MissionError> {
    let name = FunctionName::new(&f.name).map_err(|source| MissionError::BadFunctionName {
        name: f.name.clone(),
        source,
    })?;
    let fname = || name.to_string();
    let argv = f.exec.ok_or_else(|| MissionError::MissingExec(fname()))?;
    let program = argv.first().ok_or_else(|| MissionError::EmptyExec(fname()))?;
    if !Path::new(program).is_absolute() {
        return Err(MissionError::RelativeProgram {
            function: fname(),
            program: program.clone(),
        });
    }
    if argv.iter().any(|arg| arg.contains('\0')) {
        return Err(MissionError::NulInExec(fname()));
    }
    let timeout = match f.timeout {
        None => defaults::FUNCTION_TIMEOUT,
        Some(text) => humantime::parse_duration(&text).map_err(|source| MissionError::BadTimeout {
            function: fname(),
            text,
            source,
        })?,
    };
    if timeout.is_zero() || timeout > defaults::MAX_FUNCTION_TIMEOUT {
        return Err(MissionError::TimeoutOutOfRange { function: fname() });
    }
    let output_cap = match f.output_cap {
        None => defaults::OUTPUT_CAP,
        Some(cap) if (1..=defaults::MAX_OUTPUT_CAP as u64).contains(&cap) => cap as usize,
        Some(_) => return Err(MissionError::OutputCapOutOfRange { function: fname() }),
    };
    let own = LimitsFile {
        memory: f.memory,
        pids: f.pids,
        open_files: f.open_files,
        user: f.user,
    };
    let (limits, user) = own.or(outer).resolve()?;
    if f.subscribe.len() > defaults::MAX_SUBSCRIPTIONS {
        return Err(MissionError::BadSubscribe {
            function: fname(),
            entry: format!("{} entries", f.subscribe.len()),
            why: format!("a function subscribes to at most {}", defaults::MAX_SUBSCRIPTIONS),
        });
    }
    let subscribe = f
        .subscribe
        .iter()
        .map(|entry| {
            Subscription::parse(entry).map_err(|e| MissionError::BadSubscribe {
                function: fname(),
                entry: entry.clone(),
                why: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Function {
        subscribe,
        description: one_line(&format!("{name}.description"), f.description)?,
        name,
        run: Run::Exec(argv),
        timeout,
        output_cap,
        idempotent: f.idempotent,
        limits,
        user,
    })
}

/// The built-in `sys` mission.
fn sys_mission() -> Mission {
    let builtin = |builtin: Builtin, description: &str| Function {
        name: FunctionName::new(&builtin.to_string()).expect("built-in names are canonical"),
        description: description.to_string(),
        run: Run::Builtin(builtin),
        timeout: defaults::SYS_TIMEOUT,
        output_cap: defaults::SYS_OUTPUT_CAP,
        idempotent: true,
        // The agent answers these itself: no process, nothing to limit.
        limits: Limits::default(),
        user: None,
        subscribe: Vec::new(),
    };
    Mission {
        name: MissionName::new(SYS).expect("`sys` is canonical"),
        version: env!("CARGO_PKG_VERSION").to_string(),
        description: "Built into every wtd agent".to_string(),
        functions: vec![
            builtin(
                Builtin::Info,
                "What this agent is: name, model, software, missions and load",
            ),
            builtin(Builtin::Ping, "Answers at once, to measure the round trip"),
        ],
        source: None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const DEMO: &str = r#"
name = "demo"
version = "1.0"
description = "Small functions to try wtd with"

[[functions]]
name = "echo"
description = "Returns its input"
exec = ["/bin/cat"]
timeout = "5s"
output_cap = 1024
idempotent = true

[[functions]]
name = "date"
exec = ["/bin/date", "+%s"]
"#;

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    fn names(c: &Catalogue) -> Vec<&str> {
        c.missions().iter().map(|m| m.name.as_str()).collect()
    }

    /// The one warning, which must name `file`.
    fn only_warning<'a>(c: &'a Catalogue, file: &str) -> &'a str {
        assert_eq!(c.warnings().len(), 1, "{:?}", c.warnings());
        let w = &c.warnings()[0];
        assert!(w.contains(file), "{w}");
        w
    }

    #[test]
    fn a_good_file_is_loaded_with_defaults_filled_in() {
        let dir = dir_with(&[("demo.toml", DEMO)]);
        let c = Catalogue::load(dir.path());
        assert_eq!(names(&c), ["sys", "demo"]);
        assert!(c.warnings().is_empty());
        let demo = c.mission(&MissionName::new("demo").unwrap()).unwrap();
        assert_eq!(demo.version, "1.0");
        assert_eq!(
            demo.source.as_deref(),
            Some(dir.path().join("demo.toml").as_path())
        );
        let echo = c
            .function(
                &MissionName::new("demo").unwrap(),
                &FunctionName::new("echo").unwrap(),
            )
            .unwrap();
        assert_eq!(echo.run, Run::Exec(vec!["/bin/cat".into()]));
        assert_eq!(
            (echo.timeout, echo.output_cap, echo.idempotent),
            (Duration::from_secs(5), 1024, true)
        );
        let date = &demo.functions[1];
        assert_eq!(date.run, Run::Exec(vec!["/bin/date".into(), "+%s".into()]));
        assert_eq!(
            (
                date.timeout,
                date.output_cap,
                date.idempotent,
                date.description.as_str()
            ),
            (Duration::from_secs(10), 64 * 1024, false, "")
        );
    }

    #[test]
    fn sys_is_built_in() {
        let c = Catalogue::load(Path::new("/nonexistent/wtd/missions"));
        assert_eq!(names(&c), ["sys"]);
        assert!(c.warnings().is_empty(), "a missing directory is not a problem");
        let sys = &c.missions()[0];
        let runs: Vec<&Run> = sys.functions.iter().map(|f| &f.run).collect();
        assert_eq!(runs, [&Run::Builtin(Builtin::Info), &Run::Builtin(Builtin::Ping)]);
        assert_eq!(sys.source, None);
        let info = sys.info();
        assert_eq!(info.functions[0].name, "info");
        assert_eq!(info.functions[1].name, "ping");
    }

    #[test]
    fn broken_files_are_skipped_with_a_warning_naming_them() {
        let cases: &[(&str, &str, &str)] = &[
            ("bad TOML", "name = \"x\n", "line 1"),
            (
                "unknown key",
                &DEMO.replace("idempotent", "idempotant"),
                "unknown field `idempotant`",
            ),
            (
                "unknown top key",
                &format!("colour = 1\n{DEMO}"),
                "unknown field `colour`",
            ),
            (
                "missing exec",
                &DEMO.replace("exec = [\"/bin/cat\"]", ""),
                "has no `exec`",
            ),
            (
                "empty exec",
                &DEMO.replace("[\"/bin/cat\"]", "[]"),
                "`exec` is empty",
            ),
            (
                "relative program",
                &DEMO.replace("/bin/cat", "cat"),
                "absolute path",
            ),
            (
                "bad mission name",
                &DEMO.replace("\"demo\"", "\"Demo\""),
                "mission name `Demo`",
            ),
            (
                "bad function name",
                &DEMO.replace("\"echo\"", "\"ec ho\""),
                "function name `ec ho`",
            ),
            (
                "duplicate function",
                &DEMO.replace("\"date\"", "\"echo\""),
                "declared twice",
            ),
            (
                "no functions",
                "name = \"demo\"\nversion = \"1\"\n",
                "no functions",
            ),
            (
                "no version",
                &DEMO.replace("version = \"1.0\"", ""),
                "missing field `version`",
            ),
            ("reserved", &DEMO.replace("\"demo\"", "\"sys\""), "built-in"),
            (
                "bad timeout",
                &DEMO.replace("\"5s\"", "\"soon\""),
                "not a duration",
            ),
            ("zero timeout", &DEMO.replace("\"5s\"", "\"0s\""), "`timeout`"),
            ("huge timeout", &DEMO.replace("\"5s\"", "\"2h\""), "`timeout`"),
            ("zero output", &DEMO.replace("1024", "0"), "`output_cap`"),
            ("huge output", &DEMO.replace("1024", "99999999"), "`output_cap`"),
            (
                "multi-line text",
                &DEMO.replace("\"1.0\"", "\"1\\n2\""),
                "`version`",
            ),
            (
                "wrong type",
                &DEMO.replace("true", "\"yes\""),
                "line 12: invalid type",
            ),
            (
                "bad memory",
                &DEMO.replace("idempotent = true", "memory = \"lots\""),
                "is not a size",
            ),
            (
                "tiny memory",
                &DEMO.replace("idempotent = true", "memory = \"1MiB\""),
                "`memory` must be 4 MiB to 1 GiB",
            ),
            (
                "huge memory",
                &DEMO.replace("idempotent = true", "memory = \"2GiB\""),
                "`memory` must be",
            ),
            (
                "zero pids",
                &DEMO.replace("idempotent = true", "pids = 0"),
                "`pids` must be 1 to 1024",
            ),
            (
                "too many open files",
                &DEMO.replace("idempotent = true", "open_files = 100000"),
                "`open_files` must be 16 to 4096",
            ),
            (
                "mission-wide bad limit",
                &DEMO.replace("version = \"1.0\"", "version = \"1.0\"\npids = 5000"),
                "`pids` must be",
            ),
            (
                "bad user",
                &DEMO.replace("idempotent = true", "user = \"Root User\""),
                "is not a user name",
            ),
        ];
        for (what, text, expected) in cases {
            let dir = dir_with(&[
                ("broken.toml", text),
                ("demo-2.toml", &DEMO.replace("\"demo\"", "\"ok\"")),
            ]);
            let c = Catalogue::load(dir.path());
            assert_eq!(names(&c), ["sys", "ok"], "{what}: the good file still loads");
            let w = only_warning(&c, "broken.toml");
            assert!(w.contains(expected), "{what}: {w}");
            assert!(!w.contains('\n'), "{what}: warnings are one line: {w}");
        }
    }

    #[test]
    fn limits_come_from_the_function_then_the_mission_then_the_defaults() {
        let text = DEMO
            .replace(
                "version = \"1.0\"",
                "version = \"1.0\"\nmemory = \"32MiB\"\nuser = \"wtd-demo\"",
            )
            .replace(
                "idempotent = true",
                "idempotent = true\nmemory = \"512KiB\"\npids = 4",
            );
        // 512 KiB is below the minimum: first check that, then use a valid size.
        let dir = dir_with(&[("demo.toml", &text)]);
        assert!(only_warning(&Catalogue::load(dir.path()), "demo.toml").contains("`memory`"));
        let dir = dir_with(&[("demo.toml", &text.replace("512KiB", "8M"))]);
        let c = Catalogue::load(dir.path());
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
        let demo = &c.missions()[1];
        let (echo, date) = (&demo.functions[0], &demo.functions[1]);
        assert_eq!(
            echo.limits,
            Limits {
                memory: 8 << 20,
                pids: 4,
                open_files: defaults::FUNCTION_OPEN_FILES
            }
        );
        assert_eq!(date.limits.memory, 32 << 20, "the mission's value");
        assert_eq!(date.limits.pids, defaults::FUNCTION_PIDS, "the default");
        assert_eq!(date.user.as_deref(), Some("wtd-demo"));
    }

    #[test]
    fn sizes_parse_and_print_in_powers_of_two() {
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size("64M"), Some(64 << 20));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("512 KiB"), Some(512 << 10));
        assert_eq!(parse_size("1000"), Some(1000));
        for bad in ["", "MiB", "64 MB", "-1M", "99999999999999999999G"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
        assert_eq!(show_size(64 << 20), "64 MiB");
        assert_eq!(show_size(1 << 30), "1 GiB");
        assert_eq!(show_size(1000), "1000 bytes");
    }

    #[test]
    fn a_duplicate_mission_keeps_the_first_file() {
        let dir = dir_with(&[("a.toml", DEMO), ("b.toml", DEMO)]);
        let c = Catalogue::load(dir.path());
        assert_eq!(names(&c), ["sys", "demo"]);
        assert_eq!(
            c.missions()[1].source.as_deref(),
            Some(dir.path().join("a.toml").as_path())
        );
        let w = only_warning(&c, "b.toml");
        assert!(w.contains("already declared by a.toml"), "{w}");
    }

    #[test]
    fn only_visible_toml_files_are_read() {
        let dir = dir_with(&[
            ("demo.toml", DEMO),
            ("README.md", "not a mission"),
            (".demo.toml", "garbage"),
            ("demo.toml~", "garbage"),
        ]);
        let c = Catalogue::load(dir.path());
        assert_eq!(names(&c), ["sys", "demo"]);
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    }

    #[test]
    fn oversized_files_are_refused_unread() {
        let big = format!("{DEMO}\n# {}\n", "x".repeat(70_000));
        let dir = dir_with(&[("big.toml", &big)]);
        let c = Catalogue::load(dir.path());
        assert!(only_warning(&c, "big.toml").contains("over 65536 bytes"));
    }

    #[test]
    fn an_unreadable_directory_is_a_warning() {
        let dir = dir_with(&[]);
        let file = dir.path().join("not-a-dir");
        fs::write(&file, "").unwrap();
        let c = Catalogue::load(&file);
        assert_eq!(names(&c), ["sys"]);
        assert!(only_warning(&c, "not-a-dir").contains("cannot read the missions directory"));
    }

    #[test]
    fn missions_beyond_the_limit_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..MAX_MISSIONS {
            fs::write(
                dir.path().join(format!("m{i:03}.toml")),
                DEMO.replace("\"demo\"", &format!("\"m{i}\"")),
            )
            .unwrap();
        }
        let c = Catalogue::load(dir.path());
        assert_eq!(c.missions().len(), MAX_MISSIONS, "sys plus 63 files");
        assert_eq!(c.warnings().len(), 1);
        assert!(c.warnings()[0].contains("m063.toml"), "{:?}", c.warnings());
    }
}
