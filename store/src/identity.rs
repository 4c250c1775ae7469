//! The secret key file.
//!
//! One line, `wtdsecret1...`, mode 0600, created once and never overwritten: losing an
//! identity means every grant made to it or by it is lost, so `wtd init` refuses to
//! replace one. A key file readable by others is refused, as ssh does.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use wtd_keys::{KeyError, SecretKey};

use crate::atomic::{create_new_atomic, ensure_dir};
use crate::IoError;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// `wtd init` was run twice.
    #[error("an identity already exists at {0}; wtd never overwrites one (use another WTD_HOME for a second identity)")]
    AlreadyExists(PathBuf),
    /// No identity yet.
    #[error("no identity at {0}; run `wtd init` first")]
    NotFound(PathBuf),
    /// The file is readable by other users: the secret may have leaked.
    #[error("{path} is readable by other users (mode {mode:o}); run `chmod 600 {path}`", path = .0.display(), mode = .1)]
    TooOpen(PathBuf, u32),
    /// The file does not hold a key.
    #[error("{path}: {err}", path = .0.display(), err = .1)]
    Damaged(PathBuf, #[source] KeyError),
    #[error(transparent)]
    Io(#[from] IoError),
}

/// Creates a new identity at `path`; fails if one exists.
pub fn create(path: &Path) -> Result<SecretKey, IdentityError> {
    if let Some(dir) = path.parent() {
        ensure_dir(dir, 0o700)?;
    }
    let key = SecretKey::generate();
    let mut text = key.to_text();
    text.push('\n');
    create_new_atomic(path, text.as_bytes(), 0o600).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => IdentityError::AlreadyExists(path.to_path_buf()),
        _ => IdentityError::Io(e),
    })?;
    Ok(key)
}

/// Loads the identity at `path`.
pub fn load(path: &Path) -> Result<SecretKey, IdentityError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(IdentityError::NotFound(path.to_path_buf()))
        }
        Err(e) => return Err(IoError::new("read", path, e).into()),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(IdentityError::TooOpen(path.to_path_buf(), mode));
    }
    if meta.len() > 1024 {
        return Err(IdentityError::Damaged(path.to_path_buf(), KeyError::BadSecret));
    }
    let text = zeroize::Zeroizing::new(fs::read_to_string(path).map_err(|e| IoError::new("read", path, e))?);
    SecretKey::from_text(&text).map_err(|e| IdentityError::Damaged(path.to_path_buf(), e))
}

/// Loads the identity, creating it first if there is none (agents do this on first boot).
/// Returns whether it was created.
pub fn load_or_create(path: &Path) -> Result<(SecretKey, bool), IdentityError> {
    match load(path) {
        Ok(k) => Ok((k, false)),
        Err(IdentityError::NotFound(_)) => match create(path) {
            Ok(k) => Ok((k, true)),
            // Someone else created it between our two calls: use theirs.
            Err(IdentityError::AlreadyExists(_)) => Ok((load(path)?, false)),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_load_and_refuse_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join("identity.key");
        assert!(matches!(load(&p), Err(IdentityError::NotFound(_))));
        let k = create(&p).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(load(&p).unwrap().public(), k.public());
        assert!(matches!(create(&p), Err(IdentityError::AlreadyExists(_))));
        assert_eq!(
            load(&p).unwrap().public(),
            k.public(),
            "refused create left the key alone"
        );
        let (again, created) = load_or_create(&p).unwrap();
        assert!(!created);
        assert_eq!(again.public(), k.public());
    }

    #[test]
    fn refuses_open_permissions_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("identity.key");
        create(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(load(&p), Err(IdentityError::TooOpen(_, 0o644))));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&p, "garbage").unwrap();
        assert!(matches!(load(&p), Err(IdentityError::Damaged(..))));
    }
}
