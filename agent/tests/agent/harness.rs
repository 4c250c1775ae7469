//! The shared cast and tools: fixed keys, owner logs to send, an agent running in-process
//! in temporary directories, a logger that captures what agents log, and bounded waits.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use log::kv::{Key, Value, VisitSource};
use log::{Level, Log, Metadata, Record};
use tempfile::TempDir;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wtd_agent::{Agent, AgentConfig, AgentError, LogsHandle};
use wtd_keys::log::Record as LogRecord;
use wtd_keys::{
    AgentId, Audience, Grant, GrantId, MissionName, OwnerKey, OwnerLog, Rate, Revocation, SecretKey,
    SignedEntry, Target, Timestamp, UserKey,
};

/// The longest any test waits for something that should happen in milliseconds. Only a
/// bound for a hung test; no test measures time.
pub const WAIT: Duration = Duration::from_secs(10);

/// A key rebuilt from a fixed seed, so failures reproduce.
pub fn secret(seed: u8) -> SecretKey {
    SecretKey::from_seed(&[seed; 32])
}

/// The owner the test agents obey.
pub fn alice() -> SecretKey {
    secret(1)
}

/// A valid key no agent obeys.
pub fn mallory() -> SecretKey {
    secret(4)
}

pub fn owner(k: &SecretKey) -> OwnerKey {
    OwnerKey(k.public())
}

/// The wire form of a key.
pub fn key(k: &SecretKey) -> wtd_wire::Key {
    wtd_wire::Key::from(k.public())
}

/// `issuer`'s log: grants to Bob for `demo` numbered 1..n, and a revocation as entry 3
/// when `n >= 3`. Built with the real writer (`next_entry` + `append`).
pub fn owner_log(issuer: &SecretKey, n: u8) -> Vec<SignedEntry> {
    let bob = UserKey(secret(2).public());
    let t0 = Timestamp(1_750_000_000_000);
    let mut log = OwnerLog::new(owner(issuer));
    for i in 1..=n {
        let issued_at = t0.plus_ms(u64::from(i) * 60_000);
        let record = if i == 3 {
            LogRecord::Revocation(
                Revocation {
                    issuer: owner(issuer),
                    target: Target::SubjectAll(bob),
                    issued_at,
                }
                .sign(issuer),
            )
        } else {
            LogRecord::Grant(
                Grant {
                    id: GrantId([i; 16]),
                    issuer: owner(issuer),
                    subject: bob,
                    audience: Audience::AllAgents,
                    mission: MissionName::new("demo").expect("canonical"),
                    rate: Rate {
                        calls: 10,
                        period_ms: 60_000,
                    },
                    burst: 2,
                    concurrency: 1,
                    not_before: t0,
                    expires: t0.plus_ms(7_200_000),
                    issued_at,
                }
                .sign(issuer),
            )
        };
        let entry = log.next_entry(issuer, record).expect("the writer's next entry");
        log.append(entry).expect("the writer's own entry chains");
    }
    log.entries().to_vec()
}

/// The signed bytes of each entry, as `ToAgent::Log` carries them.
pub fn wire(entries: &[SignedEntry]) -> Vec<Vec<u8>> {
    entries.iter().map(|e| e.bytes().to_vec()).collect()
}

/// A mission file that loads.
pub const DEMO_MISSION: &str = r#"
name = "demo"
version = "1.0"
description = "Small functions to try wtd with"

[[functions]]
name = "echo"
description = "Returns its input"
exec = ["/bin/cat"]
idempotent = true
"#;

/// A directory for one agent: `state/` and `missions/` inside.
pub struct AgentDir {
    pub dir: TempDir,
}

impl AgentDir {
    pub fn new() -> AgentDir {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::create_dir(dir.path().join("missions")).expect("missions dir");
        AgentDir { dir }
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn missions(&self) -> PathBuf {
        self.dir.path().join("missions")
    }

    /// Adds a mission file.
    pub fn mission(self, file: &str, text: &str) -> AgentDir {
        std::fs::write(self.missions().join(file), text).expect("write a mission file");
        self
    }

    /// A config for an agent obeying Alice, living in this directory, reporting fast.
    pub fn config(&self, proxy: wtd_keys::ProxyInfo) -> AgentConfig {
        AgentConfig {
            name: "test-pi".into(),
            state_dir: self.state(),
            missions_dir: self.missions(),
            // Faster than the default so tests see several heartbeats quickly.
            heartbeat_interval: Duration::from_millis(100),
            ..AgentConfig::new(proxy, vec![owner(&alice())])
        }
    }

    /// Where the agent keeps `owner`'s log.
    pub fn log_file(&self, owner: &OwnerKey) -> PathBuf {
        wtd_agent::owner_logs::log_path(&self.state().join("logs"), owner)
    }
}

/// An agent running in-process, in its own task owned by this value: dropping it aborts
/// the agent (a crash); [`TestAgent::stop`] stops it gracefully.
pub struct TestAgent {
    pub id: AgentId,
    pub logs: LogsHandle,
    shutdown: CancellationToken,
    task: JoinSet<Result<(), AgentError>>,
}

impl TestAgent {
    pub fn start(config: AgentConfig) -> TestAgent {
        capture_logs();
        let agent = Agent::new(config).expect("the agent starts");
        let shutdown = CancellationToken::new();
        let mut task = JoinSet::new();
        let (id, logs) = (agent.id(), agent.logs());
        task.spawn(agent.run(shutdown.clone()));
        TestAgent {
            id,
            logs,
            shutdown,
            task,
        }
    }

    /// Asks the agent to stop (SIGTERM does the same) and waits until `run` returns.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let joined = tokio::time::timeout(WAIT, self.task.join_next())
            .await
            .expect("the agent stops promptly");
        joined
            .expect("the agent task exists")
            .expect("the agent task did not panic")
            .expect("run returns Ok after a shutdown");
    }

    /// Waits until the agent holds `seq` entries of `owner`'s log.
    pub async fn wait_for_head(&mut self, owner: &OwnerKey, seq: u64) {
        let reached = tokio::time::timeout(WAIT, self.logs.wait_for(|logs| logs.head(owner) >= seq))
            .await
            .is_ok_and(|changed| changed.is_ok());
        let head = self.logs.borrow().head(owner);
        assert!(reached, "the agent's copy of the log stayed at {head}, not {seq}");
        assert_eq!(head, seq, "more entries than expected");
    }

    /// Waits until this agent logs a line at `level` containing `text`, and returns it.
    pub async fn wait_for_log(&self, level: Level, text: &str) -> String {
        wait_for_log(&self.id.to_string(), level, text).await
    }
}

/// One captured log line.
#[derive(Debug, Clone)]
struct Captured {
    level: Level,
    message: String,
    /// The `agent` key-value, if the line had one.
    agent: Option<String>,
}

static CAPTURED: OnceLock<Mutex<Vec<Captured>>> = OnceLock::new();

/// Installs (once per test binary) a logger that keeps every line from the wtd crates.
/// Tests run in parallel in one process, so lines are told apart by their `agent` key.
fn capture_logs() {
    struct Capture;
    impl Log for Capture {
        fn enabled(&self, metadata: &Metadata<'_>) -> bool {
            metadata.target().starts_with("wtd")
        }
        fn log(&self, record: &Record<'_>) {
            if !self.enabled(record.metadata()) {
                return;
            }
            struct AgentKey(Option<String>);
            impl<'kvs> VisitSource<'kvs> for AgentKey {
                fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
                    if key.as_str() == "agent" {
                        self.0 = Some(value.to_string());
                    }
                    Ok(())
                }
            }
            let mut agent = AgentKey(None);
            let _ = record.key_values().visit(&mut agent);
            let line = Captured {
                level: record.level(),
                message: record.args().to_string(),
                agent: agent.0,
            };
            // Echo, so a failing test's output shows what the agent said.
            eprintln!(
                "[{}] {} {}",
                line.level,
                line.agent.as_deref().map_or("-", short),
                line.message
            );
            CAPTURED
                .get_or_init(Mutex::default)
                .lock()
                .expect("not poisoned")
                .push(line);
        }
        fn flush(&self) {}
    }
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        log::set_logger(&Capture).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Debug);
    });
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Waits until `agent` logs a line at `level` containing `text`.
async fn wait_for_log(agent: &str, level: Level, text: &str) -> String {
    let found = || {
        CAPTURED
            .get_or_init(Mutex::default)
            .lock()
            .expect("not poisoned")
            .iter()
            .find(|l| l.level == level && l.agent.as_deref() == Some(agent) && l.message.contains(text))
            .map(|l| l.message.clone())
    };
    let result = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(line) = found() {
                return line;
            }
            // Polling a condition, with a bound above: not a sleep standing in for one.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    match result {
        Ok(line) => line,
        Err(_) => panic!(
            "agent {} never logged a {level} line containing {text:?}",
            short(agent)
        ),
    }
}
