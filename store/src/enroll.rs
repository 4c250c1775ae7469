//! The enrollment tokens an owner issued (`wtd enroll new`), one file each:
//! `enroll/<token id>.toml`, mode 0600, written atomically.
//!
//! ```toml
//! token = "wtdenroll1..."     # the secret: only here and on the card it was written to
//! label = "kitchen Pi"
//! issued_at = 1750000000000   # ms since the epoch
//! expires = 1750604800000
//! ```
//!
//! Whether a token was used is not kept here: the adoption that used it names it in the
//! owner's signed log, which is the one record that counts (and survives this directory).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wtd_keys::enroll::TokenError;
use wtd_keys::{EnrollmentToken, IssuedToken, Timestamp};
use zeroize::Zeroizing;

use crate::atomic::{ensure_dir, write_atomic};
use crate::IoError;

/// Reading or writing the issued tokens failed. Never names a token's secret.
#[derive(Debug, thiserror::Error)]
pub enum EnrollStoreError {
    #[error(transparent)]
    Io(#[from] IoError),
    /// A token file was edited or damaged; remove it (and issue a new token if needed).
    #[error("the enrollment token file {path} is damaged ({reason}); remove it and issue a new token with `wtd enroll new`")]
    Damaged { path: PathBuf, reason: String },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    token: String,
    label: String,
    issued_at: u64,
    expires: u64,
}

/// Saves an issued token (a new file; the id is random, so it never replaces another).
pub fn save(dir: &Path, issued: &IssuedToken) -> Result<PathBuf, EnrollStoreError> {
    ensure_dir(dir, 0o700)?;
    let file = File {
        token: issued.token.to_text().to_string(),
        label: issued.label.clone(),
        issued_at: issued.issued_at.0,
        expires: issued.expires.0,
    };
    let text = Zeroizing::new(format!(
        "# An enrollment token issued by `wtd enroll new`. The token is a secret.\n{}",
        toml::to_string(&file).expect("serializable")
    ));
    // The File holds a copy of the secret too; wipe it.
    drop(Zeroizing::new(file.token));
    let path = dir.join(format!("{}.toml", issued.token.id()));
    write_atomic(&path, text.as_bytes(), 0o600)?;
    Ok(path)
}

/// Every issued token, oldest first. A missing directory means none.
pub fn list(dir: &Path) -> Result<Vec<IssuedToken>, EnrollStoreError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(IoError::new("list", dir, e).into()),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| IoError::new("list", dir, e))?.path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let damaged = |reason: String| EnrollStoreError::Damaged {
            path: path.clone(),
            reason,
        };
        let text =
            Zeroizing::new(std::fs::read_to_string(&path).map_err(|e| IoError::new("read", &path, e))?);
        // toml's error would quote the offending line, which may hold the secret.
        let file: File = toml::from_str(&text).map_err(|_| damaged("not a token file".into()))?;
        let token_text = Zeroizing::new(file.token);
        let token =
            EnrollmentToken::from_text(&token_text).map_err(|e: TokenError| damaged(e.to_string()))?;
        out.push(IssuedToken {
            token,
            label: file.label,
            issued_at: Timestamp(file.issued_at),
            expires: Timestamp(file.expires),
        });
    }
    out.sort_by_key(|t| (t.issued_at, t.token.id()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_damage_is_reported_without_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        assert!(list(&dir.path().join("none")).unwrap().is_empty());
        let t = IssuedToken {
            token: EnrollmentToken::generate(),
            label: "kitchen".into(),
            issued_at: Timestamp(1),
            expires: Timestamp(2),
        };
        let path = save(dir.path(), &t).unwrap();
        assert_eq!(list(dir.path()).unwrap(), vec![t.clone()]);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );

        let secret = t.token.to_text().to_string();
        let broken = std::fs::read_to_string(&path).unwrap().replace("label", "lable");
        std::fs::write(&path, broken).unwrap();
        let err = list(dir.path()).unwrap_err().to_string();
        assert!(err.contains("damaged") && !err.contains(&secret[12..]), "{err}");
    }
}
