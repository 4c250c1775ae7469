//! wtd's state on disk, written so that a crash or a power cut never loses what was
//! acknowledged and never leaves a half-written file behind.
//!
//! Two rules run through every module:
//! - whole files are replaced atomically: write a temporary file, fsync it, rename it over
//!   the old one, fsync the directory ([`atomic`]);
//! - the owner log only ever grows, one fsynced frame at a time, and a torn last frame is
//!   detected on open and cut off, never half-accepted ([`logfile`]).
//!
//! # Layout
//! - [`atomic`]: atomic whole-file replacement and create-if-absent.
//! - [`home`]: where a user's or an agent's files live (`$WTD_HOME`, `~/.config/wtd`).
//! - [`identity`]: the secret key file (mode 0600, never overwritten).
//! - [`logfile`]: the owner log on disk: framed, checksummed, fsynced appends.
//! - [`records`]: the same framing for any records a daemon must keep (the proxy's jobs).
//! - [`eventfile`]: one signed event log on disk: the same frames, trimmed atomically.
//! - [`keyring`]: names for other people's keys, like ssh's known_hosts.
//! - [`grants`]: grants this user has received (imported from tickets).
//! - [`enroll`]: the enrollment tokens an owner issued for headless Pis.
//! - [`floor`]: the persisted time floor.
#![forbid(unsafe_code)]

pub mod atomic;
pub mod enroll;
pub mod eventfile;
pub mod floor;
pub mod grants;
pub mod home;
pub mod identity;
pub mod keyring;
pub mod logfile;
pub mod records;

/// Errors touching the disk, with the path involved.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("could not {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl IoError {
    pub(crate) fn new(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        IoError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// The underlying error kind, for callers that branch on "not found" and the like.
    pub fn kind(&self) -> std::io::ErrorKind {
        match self {
            IoError::Io { source, .. } => source.kind(),
        }
    }
}
