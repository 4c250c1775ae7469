//! The shared harness for end-to-end tests: real `wtd` processes, each user with their own
//! `WTD_HOME` in a temp dir, so tests read like a lab script:
//!
//! ```ignore
//! let lab = TestCluster::new();
//! let alice = lab.user("alice");
//! alice.ok(["init"]);
//! ```
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod browser;
pub mod mosquitto;

/// The `wtd` binary cargo built for these tests.
pub fn wtd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_wtd"))
}

/// One lab: a temp dir holding every participant's files. Dropped, it removes them.
pub struct TestCluster {
    dir: tempfile::TempDir,
}

impl TestCluster {
    pub fn new() -> Self {
        TestCluster {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A person with their own `WTD_HOME` (not yet initialised).
    pub fn user(&self, name: &str) -> User {
        User {
            name: name.to_string(),
            home: self.dir.path().join(name),
        }
    }
}

/// A person at a terminal: runs `wtd` with their `WTD_HOME`.
pub struct User {
    pub name: String,
    pub home: PathBuf,
}

impl User {
    /// Runs `wtd args...` and returns its output, whatever the exit status.
    pub fn cli<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Command::new(wtd_bin())
            .args(args)
            .env("WTD_HOME", &self.home)
            .env_remove("RUST_LOG")
            .output()
            .expect("run wtd")
    }

    /// Runs `wtd args...`, which must succeed; returns its stdout.
    pub fn ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_os_string()).collect();
        let out = self.cli(&args);
        assert!(
            out.status.success(),
            "{}: wtd {:?} failed:\n{}",
            self.name,
            args,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Runs `wtd args...`, which must fail with exit code 1; returns its stderr.
    pub fn fails<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_os_string()).collect();
        let out = self.cli(&args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}: wtd {:?} should have failed; stdout:\n{}",
            self.name,
            args,
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).expect("utf-8 output")
    }

    /// `wtd init`, then this user's id.
    pub fn init(&self) -> String {
        self.ok(["init"]);
        self.id()
    }

    pub fn id(&self) -> String {
        self.ok(["id", "--quiet"]).trim().to_string()
    }

    /// `wtd grants --json`, parsed.
    pub fn grants(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ok(["grants", "--json"])).expect("grants --json is JSON")
    }
}

/// Polls `cond` every 50 ms until it holds or `limit` passes; returns how long it took.
/// Limits are generous on purpose: these machines are shared and noisy, and timing
/// budgets are measured by benchmarks, not asserted here.
pub fn wait_for(
    what: &str,
    limit: std::time::Duration,
    mut cond: impl FnMut() -> bool,
) -> std::time::Duration {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    start.elapsed()
}

/// A daemon this test started (`wtd proxy`, `wtd agent`): killed by PID when dropped.
pub struct Daemon {
    pub name: String,
    pub child: std::process::Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn spawn(name: &str, log: PathBuf, args: &[&OsStr], home: &Path) -> Daemon {
        Self::spawn_bin(&wtd_bin(), name, log, args, home)
    }

    /// Like [`Daemon::spawn`] with another `wtd` binary (an aarch64 build under qemu).
    pub fn spawn_bin(bin: &Path, name: &str, log: PathBuf, args: &[&OsStr], home: &Path) -> Daemon {
        Self::spawn_bin_env(bin, name, log, args, home, &[])
    }

    /// Like [`Daemon::spawn_bin`], with more environment variables (`WTD_TEST_CLOCK_OFFSET`).
    pub fn spawn_bin_env(
        bin: &Path,
        name: &str,
        log: PathBuf,
        args: &[&OsStr],
        home: &Path,
        env: &[(&str, &str)],
    ) -> Daemon {
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(bin)
            .args(args)
            .env("WTD_HOME", home)
            .env("RUST_LOG", "debug,quinn=info,quinn_proto=info,rustls=info")
            .envs(env.iter().copied())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("spawn wtd");
        Daemon {
            name: name.to_string(),
            child,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} {}", self.pid());
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and wait for it to exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.child.wait().expect("wait")
    }

    /// Resident memory in kB, from /proc.
    pub fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `wtd proxy` on 127.0.0.1.
pub struct Proxy {
    pub daemon: Daemon,
    pub state_dir: PathBuf,
    pub addr: std::net::SocketAddr,
    pub ticket: String,
    pub id: wtd_keys::ProxyId,
}

impl TestCluster {
    /// Starts `wtd proxy` on a free port (or `port`), with extra arguments.
    pub fn start_proxy_on(&self, port: u16, extra: &[&str]) -> Proxy {
        let state_dir = self.dir().join("proxy");
        let ticket_file = state_dir.join("ticket.txt");
        let _ = std::fs::remove_file(&ticket_file);
        let listen = format!("127.0.0.1:{port}");
        let mut args: Vec<&OsStr> = vec!["proxy".as_ref(), "--listen".as_ref(), listen.as_ref()];
        args.push("--state-dir".as_ref());
        args.push(state_dir.as_os_str());
        args.extend(extra.iter().map(|a| OsStr::new(*a)));
        let daemon = Daemon::spawn(
            "proxy",
            self.dir().join("proxy.log"),
            &args,
            &self.dir().join("proxy-home"),
        );
        wait_for("the proxy's ticket", std::time::Duration::from_secs(20), || {
            ticket_file.exists()
        });
        let ticket = std::fs::read_to_string(&ticket_file)
            .expect("ticket")
            .trim()
            .to_string();
        let info = wtd_keys::Ticket::from_text(&ticket)
            .expect("ticket parses")
            .proxy
            .expect("has a proxy");
        Proxy {
            daemon,
            state_dir,
            addr: info.addrs[0],
            ticket,
            id: info.id,
        }
    }

    pub fn start_proxy(&self) -> Proxy {
        self.start_proxy_on(0, &[])
    }
}

/// A `wtd agent` process with its own state and missions.
pub struct Agent {
    pub name: String,
    pub daemon: Daemon,
    pub dir: PathBuf,
    pub config: PathBuf,
}

impl Agent {
    /// The agent's id (`wtd1...`), once it has created its identity.
    pub fn id(&self) -> String {
        let key = self.dir.join("state").join("identity.key");
        wait_for("the agent's identity", std::time::Duration::from_secs(20), || {
            key.exists()
        });
        let text = std::fs::read_to_string(&key).expect("identity");
        wtd_keys::SecretKey::from_text(&text)
            .expect("key")
            .public()
            .to_string()
    }

    /// Starts it again after a stop, with the same state.
    pub fn restart(&mut self) {
        self.restart_with_env(&[]);
    }

    /// Like [`Agent::restart`], with more environment variables: `WTD_TEST_CLOCK_OFFSET`
    /// (e.g. `+3h`) moves its clock, which only this debug build honours. Its log goes to
    /// `agent.log` again (the previous run's is overwritten).
    pub fn restart_with_env(&mut self, env: &[(&str, &str)]) {
        self.daemon.kill();
        let args: Vec<&OsStr> = vec!["agent".as_ref(), "--config".as_ref(), self.config.as_os_str()];
        self.daemon = Daemon::spawn_bin_env(
            &wtd_bin(),
            &self.name,
            self.dir.join("agent.log"),
            &args,
            &self.dir,
            env,
        );
    }
}

impl TestCluster {
    /// Starts an agent called `name` that joins the proxy of `ticket`, obeys `owners` (ids)
    /// and offers the example
    /// `demo` mission; `extra` is appended to its agent.toml.
    pub fn add_agent(&self, ticket: &str, name: &str, owners: &[&str], extra: &str) -> Agent {
        self.add_agent_bin(&wtd_bin(), ticket, name, owners, extra)
    }

    /// Like [`TestCluster::add_agent`], running another `wtd` binary.
    pub fn add_agent_bin(&self, bin: &Path, ticket: &str, name: &str, owners: &[&str], extra: &str) -> Agent {
        let dir = self.dir().join("agents").join(name);
        let missions = dir.join("missions");
        std::fs::create_dir_all(&missions).expect("mkdir");
        let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/missions/demo.toml");
        std::fs::copy(demo, missions.join("demo.toml")).expect("copy demo mission");
        let owners: Vec<String> = owners.iter().map(|o| format!("\"{o}\"")).collect();
        let config = dir.join("agent.toml");
        let toml = format!(
            "name = \"{name}\"\nstate_dir = \"{}\"\nmissions_dir = \"{}\"\nproxy = \"{}\"\nowners = [{}]\n{extra}\n",
            dir.join("state").display(),
            missions.display(),
            ticket,
            owners.join(", "),
        );
        std::fs::write(&config, toml).expect("write agent.toml");
        let args: Vec<&OsStr> = vec!["agent".as_ref(), "--config".as_ref(), config.as_os_str()];
        let daemon = Daemon::spawn_bin(bin, name, dir.join("agent.log"), &args, &dir);
        Agent {
            name: name.to_string(),
            daemon,
            dir,
            config,
        }
    }
}

impl User {
    /// `wtd adopt <id>`: this owner signs that `agent` is hers (by its full id, so it works
    /// before the agent is online). With the agent's config naming her, both sides agree.
    pub fn adopt(&self, agent: &Agent) {
        self.ok(["adopt", &agent.id()]);
    }

    /// `wtd ls --json`, parsed (an empty list if the proxy is unreachable).
    pub fn ls(&self) -> Vec<serde_json::Value> {
        let out = self.cli(["ls", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    /// The names of the agents `wtd ls` shows.
    pub fn agent_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .ls()
            .iter()
            .map(|a| a["name"].as_str().unwrap_or_default().to_string())
            .collect();
        names.sort();
        names
    }
}

/// `GET <base><path>` over plain HTTP/1.1 (the proxy's dashboard), the body as text; empty
/// if it cannot be reached. `base` is `http://127.0.0.1:PORT/`.
pub fn http_get(base: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let Some(host) = base.strip_prefix("http://").map(|h| h.trim_end_matches('/')) else {
        return String::new();
    };
    let Ok(mut s) = std::net::TcpStream::connect(host) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    let _ = write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}
