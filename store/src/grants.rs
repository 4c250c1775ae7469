//! Grants this user received, one file per grant (`received/<grant-id>.grant`), each
//! written atomically. Importing the same ticket twice is harmless.

use std::path::{Path, PathBuf};

use wtd_keys::defaults::MAX_RECORD_LEN;
use wtd_keys::record::RecordError;
use wtd_keys::{PublicId, SignedGrant};

use crate::atomic::{ensure_dir, write_atomic};
use crate::IoError;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The grant names another key as its subject. Grants are holder-bound: only the key
    /// they name can use them.
    #[error("this grant is for {subject}, not for you ({me}); ask its owner to grant your id (run `wtd id` to see it)")]
    NotForMe { subject: PublicId, me: PublicId },
    #[error(transparent)]
    Io(#[from] IoError),
}

/// A stored grant that could not be read back.
#[derive(Debug)]
pub struct Damaged {
    pub path: PathBuf,
    pub error: RecordError,
}

/// Saves `grant` if it is made out to `me`. Returns false if it was already there.
pub fn import(dir: &Path, me: &PublicId, grant: &SignedGrant) -> Result<bool, ImportError> {
    if grant.grant().subject.key() != me {
        return Err(ImportError::NotForMe {
            subject: *grant.grant().subject.key(),
            me: *me,
        });
    }
    ensure_dir(dir, 0o700)?;
    let path = dir.join(format!("{}.grant", grant.grant().id));
    if std::fs::read(&path).is_ok_and(|b| b == grant.bytes()) {
        return Ok(false);
    }
    write_atomic(&path, grant.bytes(), 0o600)?;
    Ok(true)
}

/// Every received grant, verified again, and the files that failed verification.
pub fn list(dir: &Path) -> Result<(Vec<SignedGrant>, Vec<Damaged>), IoError> {
    let mut grants = Vec::new();
    let mut damaged = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((grants, damaged)),
        Err(e) => return Err(IoError::new("list", dir, e)),
    };
    for entry in entries {
        let path = entry.map_err(|e| IoError::new("list", dir, e))?.path();
        if path.extension().is_none_or(|e| e != "grant") {
            continue;
        }
        let bytes = read_bounded(&path)?;
        match SignedGrant::decode(&bytes) {
            Ok(g) => grants.push(g),
            Err(error) => damaged.push(Damaged { path, error }),
        }
    }
    grants.sort_by_key(|g| (g.grant().issued_at, g.grant().id));
    Ok((grants, damaged))
}

/// Reads at most one byte more than any record may be, so a huge file costs nothing.
fn read_bounded(path: &Path) -> Result<Vec<u8>, IoError> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| IoError::new("read", path, e))?;
    let mut buf = Vec::new();
    f.take(MAX_RECORD_LEN as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| IoError::new("read", path, e))?;
    Ok(buf)
}
