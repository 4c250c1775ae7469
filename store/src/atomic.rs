//! Atomic file writes.
//!
//! `write_atomic` never leaves a reader seeing half a file: the new content goes to a
//! temporary file in the same directory, is fsynced, then renamed over the target (rename
//! is atomic on POSIX filesystems), and finally the directory is fsynced so the rename
//! itself survives a power cut.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::IoError;

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // The pid keeps two processes writing the same file from sharing a temp file.
    path.with_file_name(format!(".{name}.tmp.{}", std::process::id()))
}

fn write_temp(path: &Path, bytes: &[u8], mode: u32) -> Result<PathBuf, IoError> {
    let tmp = temp_path(path);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| IoError::new("create", &tmp, e))?;
    let written = f
        .write_all(bytes)
        .map_err(|e| IoError::new("write", &tmp, e))
        .and_then(|_| f.sync_all().map_err(|e| IoError::new("fsync", &tmp, e)));
    if let Err(e) = written {
        // On a full disk the half-written temp file would keep holding the space that the
        // next attempt needs.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}

/// Fsyncs the directory holding `path`, so a rename or a new file in it is durable.
pub fn sync_dir(path: &Path) -> Result<(), IoError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| IoError::new("fsync directory", dir, e))
}

/// Replaces `path` with `bytes`, atomically and durably, with permissions `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), IoError> {
    let tmp = write_temp(path, bytes, mode)?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(IoError::new("replace", path, e));
    }
    sync_dir(path)
}

/// Creates `path` with `bytes` only if it does not exist yet; never overwrites. Returns
/// an error of kind `AlreadyExists` if it does. Atomic: the file appears whole or not at
/// all (written to a temp file, then hard-linked into place, which fails if the target
/// exists).
pub fn create_new_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), IoError> {
    let tmp = write_temp(path, bytes, mode)?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    linked.map_err(|e| IoError::new("create", path, e))?;
    sync_dir(path)
}

/// Creates a directory (and its parents) with permissions `mode` if it is missing.
pub fn ensure_dir(dir: &Path, mode: u32) -> Result<(), IoError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(|e| IoError::new("create directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_whole_files_with_the_given_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        // No temp file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn create_new_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        create_new_atomic(&p, b"one", 0o600).unwrap();
        let err = create_new_atomic(&p, b"two", 0o600).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
