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
