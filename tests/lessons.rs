//! The lessons of `docs/lessons/` (and the pages of `examples/missions/`), run as
//! written, so their text cannot drift from the program.
//!
//! Every ```` ```console ```` block of a lesson is a terminal session: a line `$ cmd` is a
//! command typed by "you", `bob$ cmd` one typed by Bob on his own machine (every person has
//! their own `WTD_HOME`), and the lines after it are what it printed (stdout and stderr,
//! as the terminal shows them; `[exit N]` when it exits with a status other than 0). This
//! test runs each command with the `wtd` just built on `PATH`, in the repository's root,
//! and compares what it printed with the lesson, after normalising what changes from run
//! to run (ids, tickets, times, addresses, load figures: see [`normalise`]). A mismatch
//! fails the test; `WTD_BLESS=1 cargo test --test lessons` writes the new output into the
//! lessons instead (read the diff before committing it).
//!
//! What a reader does with their hands is an HTML comment the page does not show:
//!
//! - `<!-- test: up teacher -->`: the classroom's proxy and the teacher's Pis are running
//!   (`wtd up` as the teacher, its output not part of the lesson).
//! - `<!-- test: boot pi-7 owner=you [enrolled] -->`: a Pi flashed for "you" boots: an
//!   agent named `pi-7` whose config names that person, joined to the proxy, offering the
//!   example missions (as the image does); `enrolled`: with a one-time enrollment token
//!   from `wtd enroll new`, as `scripts/flash.sh` writes by default.
//! - `<!-- test: write ~/PATH as you -->`: that person saves the next fenced block there
//!   (with its placeholders filled in: a roster of `<id of sam>` lines).
//! - `<!-- test: ctrl-c -->`: Ctrl-C in the terminal running `wtd up`.
//! - `<!-- test: init sam -->`: Sam has made his identity on his own laptop, off the page.
//! - `<!-- test: unplug-busy -->`: during the next command, the plug of whichever of `wtd
//!   up`'s agents runs its call is pulled (SIGKILL), as a person does when they see it run.
//!   Later directives may name it `unplugged` (`<!-- test: plug unplugged -->`).
//! - `<!-- test: unplug pi-2 -->`: its power is pulled: the agent is killed with SIGKILL.
//! - `<!-- test: plug pi-2 -->`: plugged back in: the agent starts again, same state.
//! - `<!-- test: wait pi-2 offline -->` / `online`: until `wtd ls` (as the cluster's owner)
//!   shows it so; a person would look at the projector.
//!
//! In commands, `<join ticket>` is the proxy's join ticket, `<grant ticket>` the last
//! grant ticket a command printed, and `<id of bob>` Bob's id (a person or an agent): what
//! a person would paste. A command `wtd up` is left running (as in a second terminal) and
//! its output is what it printed until it waits for Ctrl-C; the lesson's end stops it.
//!
//! A block's info string may ask for looser comparison: `console numbers` (every number,
//! for random results like pi's), `console any-agent` (which agent answered, for a
//! least-loaded call among equals), `console any-order` (lines in any order: progress
//! lines of `--all`, which agents write at the same time), `console json-keys` (a JSON object's keys, not its
//! values, on the last line: facts about the machine it ran on, like its name or memory).

mod common;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{wait_for, wtd_bin, Daemon};

const LIMIT: Duration = Duration::from_secs(60);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// One command of a console block and what the lesson says it prints.
#[derive(Debug, Clone)]
struct Cmd {
    person: String,
    command: String,
    expected: Vec<String>,
}

/// What a lesson is made of, in order.
#[derive(Debug)]
enum Item {
    /// A ```` ```console ```` block: lines `first..end` of the file are its content.
    Console {
        flags: Vec<String>,
        cmds: Vec<Cmd>,
        first: usize,
        end: usize,
    },
    /// `<!-- test: ... -->`, split into words; for `write`, the next block's content.
    Directive {
        words: Vec<String>,
        line: usize,
        block: Vec<String>,
    },
}

/// A line `$ cmd` or `name$ cmd`: the person and the command.
fn prompt(line: &str) -> Option<(String, String)> {
    let (who, cmd) = line.split_once("$ ")?;
    let ok = who
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    ok.then(|| {
        let who = if who.is_empty() { "you" } else { who };
        (who.to_string(), cmd.to_string())
    })
}

fn parse(text: &str) -> Vec<Item> {
    let lines: Vec<&str> = text.lines().collect();
    let mut items = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some(info) = line.strip_prefix("```console") {
            let first = i + 1;
            let mut end = first;
            while end < lines.len() && !lines[end].starts_with("```") {
                end += 1;
            }
            assert!(end < lines.len(), "line {}: a console block is not closed", i + 1);
            let mut cmds: Vec<Cmd> = Vec::new();
            for (n, l) in lines[first..end].iter().enumerate() {
                match (prompt(l), cmds.last_mut()) {
                    (Some((person, command)), _) => cmds.push(Cmd {
                        person,
                        command,
                        expected: Vec::new(),
                    }),
                    (None, Some(cmd)) => cmd.expected.push(l.to_string()),
                    (None, None) => panic!(
                        "line {}: a console block must start with a `$ ` command",
                        first + n + 1
                    ),
                }
            }
            items.push(Item::Console {
                flags: info.split_whitespace().map(str::to_string).collect(),
                cmds,
                first,
                end,
            });
            i = end + 1;
            continue;
        }
        if line.starts_with("```") {
            // Another language's block (sh, toml): shown, not run. Skip to its end.
            i += 1;
            while i < lines.len() && !lines[i].starts_with("```") {
                i += 1;
            }
        } else if let Some(d) = line.trim().strip_prefix("<!-- test:") {
            let d = d.strip_suffix("-->").expect("a test directive ends with -->");
            let words: Vec<String> = d.split_whitespace().map(str::to_string).collect();
            let mut block = Vec::new();
            if words.first().is_some_and(|w| w == "write") {
                // The file's content is the next fenced block, shown to the reader as is.
                let mut j = i + 1;
                while j < lines.len() && !lines[j].starts_with("```") {
                    j += 1;
                }
                assert!(
                    j < lines.len(),
                    "line {}: `write` needs a fenced block after it",
                    i + 1
                );
                j += 1;
                while j < lines.len() && !lines[j].starts_with("```") {
                    block.push(lines[j].to_string());
                    j += 1;
                }
            }
            items.push(Item::Directive {
                words,
                line: i + 1,
                block,
            });
        }
        i += 1;
    }
    items
}

/// What varies from run to run, replaced so that two runs of the same lesson compare
/// equal: ids and tickets (`wtd1…`), times, dates, addresses and decimals (`#`), numbers
/// with a unit of time (`#s`), percentages, and runs of spaces (table columns widen with
/// their contents). With `numbers`, every number; with `any-agent`, agent names `pi-N`.
fn normalise(line: &str, flags: &[String]) -> String {
    let all_numbers = flags.iter().any(|f| f == "numbers");
    let any_agent = flags.iter().any(|f| f == "any-agent");
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let word_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    while i < chars.len() {
        let c = chars[i];
        let at_word_start = i == 0 || !word_char(chars[i - 1]);
        // An id or a ticket: `wtd`, letters, `1`, then base32.
        if at_word_start && chars[i..].starts_with(&['w', 't', 'd']) {
            let mut j = i + 3;
            while j < chars.len() && chars[j].is_ascii_lowercase() {
                j += 1;
            }
            if j < chars.len()
                && chars[j] == '1'
                && j + 1 < chars.len()
                && chars[j + 1].is_ascii_alphanumeric()
            {
                out.extend(&chars[i..=j]);
                out.push('…');
                j += 1;
                while j < chars.len() && chars[j].is_ascii_alphanumeric() {
                    j += 1;
                }
                i = j;
                continue;
            }
        }
        // A key's fingerprint: four groups of four hex digits, `da93-9b97-b940-c83c`.
        if at_word_start && chars.len() >= i + 19 {
            let fp = &chars[i..i + 19];
            let shaped = fp.iter().enumerate().all(|(k, c)| {
                if k % 5 == 4 {
                    *c == '-'
                } else {
                    c.is_ascii_hexdigit()
                }
            });
            if shaped && chars.get(i + 19).is_none_or(|c| !word_char(*c)) {
                out.push_str("####-####-####-####");
                i += 19;
                continue;
            }
        }
        // A token's or a grant's id: `enroll-` and a long base32 run.
        if at_word_start && c.is_ascii_lowercase() {
            let mut j = i;
            while j < chars.len() && chars[j].is_ascii_lowercase() {
                j += 1;
            }
            if chars.get(j) == Some(&'-') {
                let run = chars[j + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .count();
                if run >= 16 {
                    out.extend(&chars[i..=j]);
                    out.push('…');
                    i = j + 1 + run;
                    continue;
                }
            }
        }
        if any_agent && at_word_start && chars[i..].starts_with(&['p', 'i', '-']) {
            let mut j = i + 3;
            while j < chars.len() && chars[j].is_ascii_digit() {
                j += 1;
            }
            if j > i + 3 {
                out.push_str("pi-N");
                i = j;
                continue;
            }
        }
        if c.is_ascii_digit() && at_word_start {
            // A number, with what joins numbers into a time, a date or an address.
            let mut j = i;
            let mut joined = false;
            while j < chars.len() {
                let d = chars[j];
                let next_digit = chars.get(j + 1).is_some_and(|n| n.is_ascii_digit());
                if d.is_ascii_digit() {
                    j += 1;
                } else if matches!(d, '.' | ':' | '-' | 'T') && next_digit {
                    joined = true;
                    j += 1;
                } else {
                    break;
                }
            }
            if j < chars.len() && chars[j] == 'Z' && joined {
                j += 1;
            }
            let unit: String = chars[j..].iter().take_while(|c| c.is_alphabetic()).collect();
            let spaced: String = match chars.get(j) {
                Some(' ') => chars[j + 1..].iter().take_while(|c| c.is_alphabetic()).collect(),
                _ => String::new(),
            };
            let timed = ["s", "ms", "m", "h", "d", "min", "days", "µs", "us"].contains(&unit.as_str())
                || ["ms", "s", "µs", "min", "seconds", "minutes"].contains(&spaced.as_str());
            let percent = chars.get(j) == Some(&'%');
            if joined || timed || percent || all_numbers {
                out.push('#');
            } else {
                out.extend(&chars[i..j]);
            }
            i = j;
            continue;
        }
        if c.is_whitespace() {
            while i < chars.len() && chars[i].is_whitespace() {
                i += 1;
            }
            out.push(' ');
            continue;
        }
        out.push(c);
        i += 1;
    }
    out.trim().to_string()
}

fn normalised(lines: &[String], flags: &[String]) -> Vec<String> {
    if flags.iter().any(|f| f == "json-keys") {
        // Facts about the machine it ran on (its name, kernel, memory): only which facts,
        // from the answer on the last line (progress lines before it may differ too: a
        // machine without a sensor says so).
        let answer = lines.iter().rev().find(|l| !l.trim().is_empty());
        return match answer.map(|l| serde_json::from_str::<serde_json::Value>(l)) {
            Some(Ok(serde_json::Value::Object(map))) => map.keys().cloned().collect(),
            _ => lines.to_vec(),
        };
    }
    let mut out: Vec<String> = lines.iter().map(|l| normalise(l, flags)).collect();
    while out.last().is_some_and(|l| l.is_empty()) {
        out.pop();
    }
    if flags.iter().any(|f| f == "any-order") {
        // Lines written at once by several agents (progress of an `--all` call).
        out.sort();
    }
    out
}

/// One lesson being run: its people, its cluster, its Pis.
struct Run {
    dir: tempfile::TempDir,
    /// `wtd up`, when a command started it: the process, its owner, its directory.
    up: Option<(Child, String, PathBuf)>,
    /// Agents this run started itself (booted or plugged back in), by name.
    pis: HashMap<String, Daemon>,
    join_ticket: Option<String>,
    grant_ticket: Option<String>,
    /// Set by `unplug-busy`: during the next command, kill the agent that runs its call.
    unplug_busy: bool,
    /// The agent unplugged last: what a directive calls `unplugged`.
    unplugged: Option<String>,
    /// The agents that should be online now (started, not unplugged).
    plugged_in: std::collections::BTreeSet<String>,
}

impl Run {
    fn home(&self, person: &str) -> PathBuf {
        self.dir.path().join(person)
    }

    fn id_of(&self, who: &str) -> String {
        if let Some(pi) = self.pis.get(who) {
            let _ = pi;
            return agent_id(&self.dir.path().join("pis").join(who).join("state"));
        }
        if let Some((_, _, up_dir)) = &self.up {
            let state = up_dir.join(who).join("state");
            if state.exists() {
                return agent_id(&state);
            }
        }
        let out = self.wtd(who, ["id", "--quiet"]);
        assert!(out.status.success(), "<id of {who}>: {who} has no identity yet");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn wtd<I, S>(&self, person: &str, args: I) -> std::process::Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.as_person(&mut Command::new(wtd_bin()), person)
            .args(args)
            .output()
            .expect("run wtd")
    }

    /// A command as `person` runs it at their own terminal: their `HOME` (so their wtd
    /// files are in `~/.config/wtd`, the default), the `wtd` just built first on a plain
    /// Debian `PATH`, in the repository's root (where the lessons say to be).
    fn as_person<'c>(&self, command: &'c mut Command, person: &str) -> &'c mut Command {
        let home = self.home(person);
        std::fs::create_dir_all(&home).unwrap();
        let path = format!(
            "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            wtd_bin().parent().unwrap().display()
        );
        command
            .current_dir(repo())
            .env("HOME", home)
            .env("PATH", path)
            .env_remove("WTD_HOME")
            .env_remove("WTD")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
    }

    /// The command with what a person would paste in place of its `<...>` (other `<`s,
    /// shell redirections, are left alone).
    fn fill(&self, command: &str) -> String {
        let mut out = String::new();
        let mut rest = command;
        while let Some(start) = rest.find('<') {
            out.push_str(&rest[..start]);
            let hole = rest[start + 1..].split_once('>').map(|(h, _)| h);
            let value = match hole {
                Some("join ticket") => Some(self.join_ticket.clone().expect("<join ticket> before wtd up")),
                Some("grant ticket") => {
                    Some(self.grant_ticket.clone().expect("<grant ticket> before a grant"))
                }
                Some(h) => h.strip_prefix("id of ").map(|who| self.id_of(who)),
                None => None,
            };
            match (value, hole) {
                (Some(value), Some(hole)) => {
                    out.push_str(&value);
                    rest = &rest[start + hole.len() + 2..];
                }
                _ => {
                    out.push('<');
                    rest = &rest[start + 1..];
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// What the person's terminal shows, with this run's temp dir written as a person
    /// sees their own home: `~`.
    fn tidy(&self, text: &str) -> Vec<String> {
        let tmp = self.dir.path().to_string_lossy().into_owned();
        let mut out = String::new();
        let mut rest = text;
        while let Some(at) = rest.find(&tmp) {
            out.push_str(&rest[..at]);
            rest = &rest[at + tmp.len()..];
            // Skip `/<person>`.
            let person_end = rest[1..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .map_or(rest.len(), |e| e + 1);
            out.push('~');
            rest = &rest[person_end..];
        }
        out.push_str(rest);
        out.lines().map(str::to_string).collect()
    }

    fn run_command(&mut self, cmd: &Cmd) -> Vec<String> {
        let command = self.fill(&cmd.command);
        if cmd.command.starts_with("wtd up") {
            return self.start_up(cmd, &command);
        }
        // Every command runs against the cluster the page describes: on a loaded machine
        // an agent can miss its heartbeats and leave the roster for a moment, which would
        // change what the command prints (liveness has its own benchmark).
        if self.up.is_some() {
            let want: Vec<String> = self.plugged_in.iter().cloned().collect();
            wait_for(&format!("{want:?} online"), LIMIT, || {
                let out = self.wtd(&self.owner(), ["ls", "--json"]);
                let agents: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
                want.iter()
                    .all(|name| agents.iter().any(|a| a["name"] == name.as_str()))
            });
        }
        // `exec 2>&1`: stderr and stdout in one pipe, in the order they were written,
        // as a terminal shows them. `timeout`: no command of a lesson runs for minutes.
        let mut child = self
            .as_person(&mut Command::new("timeout"), &cmd.person)
            .args(["120", "bash", "-c"])
            .arg(format!("exec 2>&1; {command}"))
            .stdout(Stdio::piped())
            .spawn()
            .expect("run bash");
        // With `unplug-busy`, what the command prints is read as it comes, so the plug is
        // pulled only once the call has visibly started (its first progress line reached
        // the caller), as a person watching the terminal does; on a loaded machine the
        // agent can fork the handler well before that line makes it through.
        let mut reader = None;
        if std::mem::take(&mut self.unplug_busy) {
            let mut stdout = child.stdout.take().expect("piped stdout");
            let printed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let sink = printed.clone();
            reader = Some((
                printed,
                std::thread::spawn(move || {
                    use std::io::Read;
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stdout.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        sink.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                }),
            ));
            let printed = &reader.as_ref().unwrap().0;
            // Pull the plug of whichever agent is running the call, once it runs one.
            let agents = self.up_agent_pids();
            wait_for("an agent running the call, and its first line", LIMIT, || {
                printed.lock().unwrap().contains(&b'\n')
                    && agents.iter().any(|(_, pid)| !children_of(*pid).is_empty())
            });
            let (name, pid) = agents
                .iter()
                .find(|(_, pid)| !children_of(*pid).is_empty())
                .unwrap();
            eprintln!("unplugging {name}, which runs the call");
            self.unplugged = Some(name.clone());
            self.plugged_in.remove(name);
            Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .unwrap();
        }
        let mut out = child.wait_with_output().expect("run bash");
        if let Some((printed, thread)) = reader {
            thread.join().expect("the output reader");
            out.stdout = std::mem::take(&mut *printed.lock().unwrap());
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // The last grant ticket printed: what Alice would read out or send to Bob.
        if cmd.command.starts_with("wtd grant") {
            if let Some(t) = text.split_whitespace().rfind(|w| w.starts_with("wtdt1")) {
                self.grant_ticket = Some(t.to_string());
            }
        }
        let mut lines = self.tidy(&text);
        if let Some(code) = out.status.code().filter(|c| *c != 0) {
            lines.push(format!("[exit {code}]"));
        }
        lines
    }

    /// `wtd up`, left running: what it printed until it waits for Ctrl-C.
    fn start_up(&mut self, cmd: &Cmd, command: &str) -> Vec<String> {
        assert!(
            self.up.is_none(),
            "`wtd up` is already running (stop it with <!-- test: ctrl-c -->)"
        );
        let log = self.dir.path().join("up.out");
        let file = std::fs::File::create(&log).unwrap();
        // The dashboard on a free port, not the default 8080: lessons run in parallel with
        // each other and with tests/cluster.rs, and another program may hold 8080 on this
        // machine. Its address is normalised in what is compared, so the page reads the same.
        let dashboard = if command.contains("--dashboard") || command.contains("--no-dashboard") {
            ""
        } else {
            " --dashboard 127.0.0.1:0"
        };
        let child = self
            .as_person(&mut Command::new("bash"), &cmd.person)
            .arg("-c")
            .arg(format!("exec {command}{dashboard}"))
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start wtd up");
        let read = || std::fs::read_to_string(&log).unwrap_or_default();
        wait_for("wtd up to be ready", LIMIT, || {
            read().contains("Press Ctrl-C to stop everything.")
        });
        let text = read();
        let dir = text
            .lines()
            .find_map(|l| l.strip_prefix("Files and logs: "))
            .expect("wtd up names its directory")
            .to_string();
        let dir = PathBuf::from(dir.replacen('~', &self.home(&cmd.person).to_string_lossy(), 1));
        self.join_ticket = Some(
            std::fs::read_to_string(dir.join("proxy/ticket.txt"))
                .unwrap()
                .trim()
                .to_string(),
        );
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            if entry.path().join("agent.toml").exists() {
                self.plugged_in
                    .insert(entry.file_name().to_string_lossy().into_owned());
            }
        }
        self.up = Some((child, cmd.person.clone(), dir));
        self.tidy(&text)
    }

    fn owner(&self) -> String {
        self.up.as_ref().expect("wtd up first").1.clone()
    }

    fn online(&self, name: &str) -> bool {
        let out = self.wtd(&self.owner(), ["ls", "--json"]);
        let agents: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        agents.iter().any(|a| a["name"] == name)
    }

    fn directive(&mut self, words: &[String], line: usize, block: &[String]) {
        let last = self.unplugged.clone().unwrap_or_default();
        let words: Vec<&str> = words
            .iter()
            .map(|w| {
                if w == "unplugged" {
                    last.as_str()
                } else {
                    w.as_str()
                }
            })
            .collect();
        match words.as_slice() {
            ["write", path, "as", person] => {
                let path = path.strip_prefix("~/").expect("write ~/PATH as PERSON");
                let path = self.home(person).join(path);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                // With what the person would paste in place of `<id of sam>`.
                let text: Vec<String> = block.iter().map(|l| self.fill(l)).collect();
                std::fs::write(&path, text.join("\n") + "\n").unwrap();
            }
            ["ctrl-c"] => self.stop_up(),
            ["init", person] => {
                let out = self.wtd(person, ["init"]);
                assert!(out.status.success(), "line {line}: wtd init as {person} failed");
            }
            ["unplug-busy"] => self.unplug_busy = true,
            ["up", person] => {
                // The classroom's proxy (and the teacher's Pis), not part of the reading.
                let cmd = Cmd {
                    person: person.to_string(),
                    command: "wtd up".into(),
                    expected: Vec::new(),
                };
                self.run_command(&cmd);
            }
            ["boot", name, owner, rest @ ..] => {
                let owner = owner.strip_prefix("owner=").expect("boot NAME owner=PERSON");
                let owner_id = self.id_of(owner);
                // `enrolled`: the card carries a one-time token, as scripts/flash.sh writes
                // by default (from `wtd enroll new`, run as the card's owner).
                let mut enroll = String::new();
                if rest == ["enrolled"] {
                    let out = self.wtd(owner, ["enroll", "new", "--label", name, "--expires", "2h"]);
                    let text = String::from_utf8_lossy(&out.stdout).into_owned();
                    enroll = text
                        .lines()
                        .find(|l| l.starts_with("enroll = "))
                        .expect("wtd enroll new prints an enroll line")
                        .to_string();
                } else {
                    assert!(rest.is_empty(), "line {line}: boot NAME owner=PERSON [enrolled]");
                }
                let dir = self.dir.path().join("pis").join(name);
                let missions = dir.join("missions");
                std::fs::create_dir_all(&missions).unwrap();
                for entry in std::fs::read_dir(repo().join("examples/missions")).unwrap() {
                    let path = entry.unwrap().path();
                    if path.extension() == Some(OsStr::new("toml")) {
                        std::fs::copy(&path, missions.join(path.file_name().unwrap())).unwrap();
                    }
                }
                // What scripts/flash.sh writes into the card's agent.toml.
                let config = dir.join("agent.toml");
                let toml = format!(
                    "name = \"{name}\"\nstate_dir = \"{}\"\nmissions_dir = \"{}\"\nproxy = \"{}\"\nowners = [\"{owner_id}\"]\n{enroll}\n",
                    dir.join("state").display(),
                    missions.display(),
                    self.join_ticket.as_ref().expect("wtd up before a Pi boots"),
                );
                std::fs::write(&config, toml).unwrap();
                self.start_agent(name, &config, &dir);
                wait_for(&format!("{name} online"), LIMIT, || self.online(name));
            }
            ["unplug", name] => {
                self.unplugged = Some(name.to_string());
                self.plugged_in.remove(*name);
                if let Some(mut pi) = self.pis.remove(*name) {
                    pi.kill();
                } else {
                    let pid = self.up_agent_pid(name);
                    let ok = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status()
                        .unwrap();
                    assert!(ok.success());
                }
            }
            ["plug", name] => {
                let up_dir = self.up.as_ref().expect("wtd up first").2.clone();
                let (config, dir) = match up_dir.join(name) {
                    d if d.exists() => (d.join("agent.toml"), d),
                    _ => {
                        let d = self.dir.path().join("pis").join(name);
                        (d.join("agent.toml"), d)
                    }
                };
                self.start_agent(name, &config, &dir);
            }
            ["wait", name, "online"] => {
                wait_for(&format!("{name} online"), LIMIT, || self.online(name));
            }
            ["wait", name, "offline"] => {
                wait_for(&format!("{name} offline"), LIMIT, || !self.online(name));
            }
            _ => panic!("line {line}: unknown test directive {words:?}"),
        }
    }

    fn start_agent(&mut self, name: &str, config: &Path, dir: &Path) {
        self.plugged_in.insert(name.to_string());
        let args: Vec<&OsStr> = vec!["agent".as_ref(), "--config".as_ref(), config.as_os_str()];
        let log = self.dir.path().join(format!("{name}.log"));
        let daemon = Daemon::spawn(name, log, &args, dir);
        self.pis.insert(name.to_string(), daemon);
    }

    /// The agents `wtd up` started: its children running `wtd agent --config
    /// <dir>/<name>/agent.toml`, by name, with their pids.
    fn up_agent_pids(&self) -> Vec<(String, u32)> {
        let (up, _, dir) = self.up.as_ref().expect("wtd up first");
        let prefix = format!("{}/", dir.display());
        let mut agents = Vec::new();
        for pid in children_of(up.id()) {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if let Some(rest) = cmdline.split_once(&prefix).map(|(_, r)| r) {
                if let Some(name) = rest.strip_suffix("/agent.toml ") {
                    agents.push((name.to_string(), pid));
                }
            }
        }
        agents.sort();
        agents
    }

    fn up_agent_pid(&self, name: &str) -> u32 {
        self.up_agent_pids()
            .into_iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no agent {name} under wtd up"))
            .1
    }
}

/// The pids whose parent is `parent`, from /proc.
fn children_of(parent: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // The parent pid is the second field after the `(command)` field.
        let ppid = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split(' ').nth(1));
        if ppid == Some(parent.to_string().as_str()) {
            pids.push(pid);
        }
    }
    pids
}

impl Drop for Run {
    fn drop(&mut self) {
        self.stop_up();
    }
}

impl Run {
    /// Ctrl-C for `wtd up`: it stops its agents, then its proxy.
    fn stop_up(&mut self) {
        if let Some((mut up, _, dir)) = self.up.take() {
            self.plugged_in.retain(|name| !dir.join(name).exists());
            let _ = Command::new("kill").args(["-INT", &up.id().to_string()]).status();
            for _ in 0..200 {
                if let Ok(Some(_)) = up.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = up.kill();
            let _ = up.wait();
        }
    }
}

fn agent_id(state: &Path) -> String {
    let text = std::fs::read_to_string(state.join("identity.key")).expect("the agent's identity");
    wtd_keys::SecretKey::from_text(&text)
        .unwrap()
        .public()
        .to_string()
}

/// Runs the lesson `file` of docs/lessons/; fails on a difference (or blesses it).
fn lesson(file: &str) {
    page(&repo().join("docs/lessons").join(file));
}

/// Runs the console blocks of the page at `path`; fails on a difference (or blesses it).
fn page(path: &Path) {
    let file = path.file_name().unwrap().to_string_lossy().into_owned();
    let text = std::fs::read_to_string(path).unwrap();
    let items = parse(&text);
    let bless = std::env::var_os("WTD_BLESS").is_some();
    let mut run = Run {
        dir: tempfile::tempdir().unwrap(),
        up: None,
        pis: HashMap::new(),
        join_ticket: None,
        grant_ticket: None,
        unplug_busy: false,
        unplugged: None,
        plugged_in: Default::default(),
    };
    let mut differences = Vec::new();
    // Replacement contents for console blocks, by their line range.
    let mut blessed: Vec<(usize, usize, Vec<String>)> = Vec::new();
    for item in &items {
        match item {
            Item::Directive { words, line, block } => run.directive(words, *line, block),
            Item::Console {
                flags,
                cmds,
                first,
                end,
            } => {
                let mut content = Vec::new();
                for cmd in cmds {
                    let actual = run.run_command(cmd);
                    let (want, got) = (normalised(&cmd.expected, flags), normalised(&actual, flags));
                    if want != got {
                        differences.push(format!(
                            "{file}:{}: `{}` printed:\n{}\n-- the lesson says:\n{}\n-- normalised, they differ:\n{:#?}\n{:#?}",
                            first,
                            cmd.command,
                            actual.join("\n"),
                            cmd.expected.join("\n"),
                            want,
                            got
                        ));
                    }
                    let who = if cmd.person == "you" { "" } else { &cmd.person };
                    content.push(format!("{who}$ {}", cmd.command));
                    content.extend(actual);
                }
                blessed.push((*first, *end, content));
            }
        }
    }
    drop(run);
    if bless {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        for (first, end, content) in blessed.into_iter().rev() {
            lines.splice(first..end, content);
        }
        std::fs::write(path, lines.join("\n") + "\n").unwrap();
    } else if !differences.is_empty() {
        panic!(
            "{} command(s) of {file} print something else than the lesson says (if the \
             program is right, rerun with WTD_BLESS=1 and read the diff):\n\n{}",
            differences.len(),
            differences.join("\n\n")
        );
    }
}

#[test]
fn normalise_keeps_what_matters_and_drops_what_varies() {
    let none: &[String] = &[];
    assert_eq!(
        normalise(
            "pi-1  wtd17t5ohyoi  you    7.05 100%  sys,demo  odd   0.9s ago",
            none
        ),
        "pi-1 wtd1… you # #% sys,demo odd #s ago"
    );
    assert_eq!(
        normalise(
            "Granted yourself mission `demo` (600/min, until 2026-12-10T15:18:40Z).",
            none
        ),
        "Granted yourself mission `demo` (600/min, until #)."
    );
    assert_eq!(
        normalise("a proxy on 127.0.0.1:46266 and 3 agents", none),
        "a proxy on # and 3 agents"
    );
    assert_eq!(
        normalise("wtd grants import wtdt1abcdef0 now", none),
        "wtd grants import wtdt1… now"
    );
    assert_eq!(normalise("found 28665 primes", none), "found 28665 primes");
    assert_eq!(
        normalise("try again in 10s (retry after 10675 ms)", none),
        "try again in #s (retry after # ms)"
    );
    assert_eq!(normalise("3 agents", none), "3 agents");
    assert_eq!(
        normalise("Fingerprint: f658-0683-815d-03a7", none),
        "Fingerprint: ####-####-####-####"
    );
    assert_eq!(
        normalise("token enroll-afyf7qwsykbduadfscqbl7yq6a (until", none),
        "token enroll-… (until"
    );
    assert_eq!(
        normalise("the least-loaded agent", none),
        "the least-loaded agent"
    );
    assert_eq!(
        normalise("found 28665 primes", &["numbers".into()]),
        "found # primes"
    );
    assert_eq!(normalise("[pi-3] 3...", &["any-agent".into()]), "[pi-N] 3...");
    assert_ne!(normalise("[pi-3] 3...", none), normalise("[pi-2] 3...", none));
}

#[test]
fn every_lesson_has_a_goal_steps_real_output_and_what_just_happened() {
    for file in LESSONS {
        let text = std::fs::read_to_string(repo().join("docs/lessons").join(file)).unwrap();
        for heading in ["## Goal", "## Steps", "## What just happened"] {
            assert!(text.contains(heading), "{file} has no `{heading}` section");
        }
        let runs = parse(&text)
            .iter()
            .filter(|i| matches!(i, Item::Console { .. }))
            .count();
        assert!(runs > 0, "{file} has no console block, so no output is checked");
    }
}

const LESSONS: [&str; 5] = [
    "1-flash-and-join.md",
    "2-your-first-mission.md",
    "3-grant-a-classmate.md",
    "4-load-balancing-and-failover.md",
    "5-map-reduce-across-the-class.md",
];

#[test]
fn lesson_1_flash_and_join() {
    lesson(LESSONS[0]);
}

#[test]
fn lesson_2_your_first_mission() {
    lesson(LESSONS[1]);
}

#[test]
fn lesson_3_grant_a_classmate_and_revoke() {
    lesson(LESSONS[2]);
}

#[test]
fn lesson_4_load_balancing_and_failover() {
    lesson(LESSONS[3]);
}

#[test]
fn lesson_5_map_reduce_across_the_class() {
    lesson(LESSONS[4]);
}

#[test]
fn the_teachers_guide_troubleshooting_shows_the_real_messages() {
    lesson("teachers-guide.md");
}

/// The example missions' pages show real output too.
#[test]
fn the_example_missions_pages_show_real_output() {
    for mission in ["echo", "sysinfo", "primes", "pi", "wordcount"] {
        page(&repo().join("examples/missions").join(format!("{mission}.md")));
    }
}
