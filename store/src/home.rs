//! Where a user's files live.
//!
//! `$WTD_HOME` if set (tests give Alice and Bob one each), else `$XDG_CONFIG_HOME/wtd`,
//! else `~/.config/wtd`.

use std::path::{Path, PathBuf};

/// A wtd home directory and the files in it.
#[derive(Clone, Debug)]
pub struct Home {
    dir: PathBuf,
}

/// The home directory could not be found.
#[derive(Debug, thiserror::Error)]
#[error("cannot tell where to keep wtd's files: set WTD_HOME (or HOME) to a directory")]
pub struct NoHome;

impl Home {
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Home { dir: dir.into() }
    }

    pub fn from_env() -> Result<Self, NoHome> {
        let var = |k| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        if let Some(d) = var("WTD_HOME") {
            return Ok(Home::at(d));
        }
        if let Some(d) = var("XDG_CONFIG_HOME") {
            return Ok(Home::at(d.join("wtd")));
        }
        var("HOME")
            .map(|h| Home::at(h.join(".config").join("wtd")))
            .ok_or(NoHome)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The secret key (mode 0600).
    pub fn identity(&self) -> PathBuf {
        self.dir.join("identity.key")
    }

    /// Names for other people's keys.
    pub fn keyring(&self) -> PathBuf {
        self.dir.join("keyring.toml")
    }

    /// This owner's log of grants and revocations.
    pub fn owner_log(&self) -> PathBuf {
        self.dir.join("owner.log")
    }

    /// The lessons this owner granted (`wtd grant --class`): each label and its grant ids,
    /// so `wtd revoke --label` can end one.
    pub fn lessons(&self) -> PathBuf {
        self.dir.join("lessons.toml")
    }

    /// Grants others made out to this user.
    pub fn received_grants(&self) -> PathBuf {
        self.dir.join("received")
    }

    /// Receipts of calls made with `wtd call --receipt`, one JSON file each.
    pub fn receipts(&self) -> PathBuf {
        self.dir.join("receipts")
    }

    /// Enrollment tokens this owner issued (`wtd enroll new`), one secret file each.
    pub fn enrollments(&self) -> PathBuf {
        self.dir.join("enroll")
    }

    /// Other owners' logs as this user last verified them (fetched from the proxy to learn
    /// which agents they adopted), so a proxy cannot roll them back unnoticed.
    pub fn seen_logs(&self) -> PathBuf {
        self.dir.join("seen-logs")
    }

    /// The proxy this user joined (`wtd join`).
    pub fn proxy(&self) -> PathBuf {
        self.dir.join("proxy.toml")
    }
}
