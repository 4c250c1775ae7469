//! What most commands need: where the files are, who you are, whom you know.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use wtd_keys::seal::SealKey;
use wtd_keys::{OwnerKey, SecretKey, Timestamp};
use wtd_store::home::Home;
use wtd_store::keyring::Keyring;
use wtd_store::logfile::LogFile;

#[derive(Debug)]
pub struct Context {
    pub home: Home,
}

impl Context {
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Context {
            home: Home::from_env()?,
        })
    }

    pub fn identity(&self) -> anyhow::Result<SecretKey> {
        Ok(wtd_store::identity::load(&self.home.identity())?)
    }

    pub fn keyring(&self) -> anyhow::Result<Keyring> {
        Ok(Keyring::load(&self.home.keyring())?)
    }

    /// Opens (and locks) this owner's log. A torn tail from a crash is cut off and said.
    /// What this machine verified before is not verified again (`wtd_keys::seal`).
    pub fn owner_log(&self, me: &SecretKey) -> anyhow::Result<LogFile> {
        let path = self.home.owner_log();
        let (file, report) = LogFile::open_sealed(&path, OwnerKey(me.public()), &SealKey::derive(me))
            .with_context(|| format!("opening your owner log {}", path.display()))?;
        if report.torn_tail_bytes > 0 {
            eprintln!(
                "note: the last write to {} was interrupted (a crash?); its {} incomplete bytes were \
                 dropped. Nothing that was confirmed to you was lost.",
                path.display(),
                report.torn_tail_bytes
            );
        }
        Ok(file)
    }
}

/// The wall clock, as the security core wants it.
pub fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Timestamp(ms)
}
