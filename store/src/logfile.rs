//! The owner log on disk.
//!
//! ```text
//! file  = magic "WTDLOG1\n" frame*
//! frame = len:u32be entry[len] sha256(entry)[..8]
//! ```
//!
//! An append writes one whole frame and fsyncs before it returns; only then is the record
//! acknowledged (printed to the user, or relayed to the proxy). A crash during the write
//! can leave a *torn* last frame: too short, or full-length but holding garbage. On open,
//! a torn last frame is detected (short read, or checksum mismatch at the very end), cut
//! off, and reported; it was never acknowledged, so nothing acknowledged is lost. Damage
//! anywhere *before* the last frame is not a torn write, and the file is refused rather
//! than silently shortened.
//!
//! Every entry read back is verified again (signatures, chain), so an edited file is
//! refused too. The file is locked while open, so two `wtd grant` runs cannot interleave.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wtd_keys::defaults::MAX_LOG_ENTRY_LEN;
use wtd_keys::log::{LogError, OwnerLog, SignedEntry, SyncOutcome};
use wtd_keys::seal::{Seal, SealKey};
use wtd_keys::OwnerKey;

use crate::atomic::sync_dir;
use crate::IoError;

const MAGIC: &[u8; 8] = b"WTDLOG1\n";
pub(crate) const CHECKSUM_LEN: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum LogFileError {
    #[error(transparent)]
    Io(#[from] IoError),
    /// The file is damaged before its last frame: not a torn write.
    #[error("the owner log {path} is damaged at byte {offset} ({reason}); restore it from a backup")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// An entry (read back, or about to be appended) does not fit the log.
    #[error("owner log {path}: {source}")]
    Entry {
        path: PathBuf,
        #[source]
        source: LogError,
    },
}

/// What opening the log found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Bytes of a torn last frame that were cut off (0 if the file was clean).
    pub torn_tail_bytes: u64,
    /// Entries whose signatures were verified (with a seal, only those after the sealed
    /// head; without, all of them).
    pub verified: usize,
}

/// An open, locked owner log file and its verified contents.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: File,
    log: OwnerLog,
}

pub(crate) fn checksum(entry: &[u8]) -> [u8; CHECKSUM_LEN] {
    let h = Sha256::digest(entry);
    h[..CHECKSUM_LEN].try_into().expect("sha256 is 32 bytes")
}

impl LogFile {
    /// Opens (creating if absent) the log at `path` for `owner`, verifying every entry.
    pub fn open(path: &Path, owner: OwnerKey) -> Result<(LogFile, OpenReport), LogFileError> {
        Self::open_with(path, owner, None)
    }

    /// [`LogFile::open`] for a log this machine keeps: the entries up to the head it sealed
    /// with `key` last time are only chained, not verified again (`wtd_keys::seal`), and the
    /// head is sealed anew (in `<file>.seal`) when entries were verified. A missing,
    /// damaged or stale seal costs only time: then every entry is verified.
    pub fn open_sealed(
        path: &Path,
        owner: OwnerKey,
        key: &SealKey,
    ) -> Result<(LogFile, OpenReport), LogFileError> {
        Self::open_with(path, owner, Some(key))
    }

    fn open_with(
        path: &Path,
        owner: OwnerKey,
        key: Option<&SealKey>,
    ) -> Result<(LogFile, OpenReport), LogFileError> {
        let io = |action, e| LogFileError::Io(IoError::new(action, path, e));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| io("open", e))?;
        file.lock().map_err(|e| io("lock", e))?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(|e| io("read", e))?;

        let mut report = OpenReport::default();
        if !data.is_empty() && data.len() < MAGIC.len() && MAGIC.starts_with(&data) {
            // Even the header was torn: the file was just being created.
            report.torn_tail_bytes = data.len() as u64;
            data.clear();
            file.set_len(0).map_err(|e| io("truncate", e))?;
            file.seek(SeekFrom::Start(0)).map_err(|e| io("seek", e))?;
        }
        if data.is_empty() {
            file.write_all(MAGIC).map_err(|e| io("write", e))?;
            file.sync_all().map_err(|e| io("fsync", e))?;
            sync_dir(path)?;
            data.extend_from_slice(MAGIC);
        }
        if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
            return Err(corrupt(path, 0, "not a wtd owner log"));
        }

        // The frames first (a torn tail ends them), then the entries in them.
        let mut frames: Vec<(usize, &[u8])> = Vec::new();
        let mut pos = MAGIC.len();
        while pos < data.len() {
            let rest = &data[pos..];
            match parse_frame(rest) {
                Frame::Whole { entry, len } => {
                    frames.push((pos, entry));
                    pos += len;
                }
                Frame::Torn => {
                    report.torn_tail_bytes = rest.len() as u64;
                    break;
                }
                Frame::BadChecksum { len } if pos + len == data.len() => {
                    // A full-length last frame with garbage in it: the write was torn
                    // after the length reached the disk but before the data did.
                    report.torn_tail_bytes = rest.len() as u64;
                    break;
                }
                Frame::BadChecksum { .. } => return Err(corrupt(path, pos as u64, "checksum mismatch")),
                Frame::TooLong => return Err(corrupt(path, pos as u64, "frame length over the limit")),
            }
        }
        let seal_path = seal_path(path);
        let seal = key
            .and_then(|_| std::fs::read(&seal_path).ok())
            .and_then(|b| Seal::decode(&b));
        let entries: Vec<&[u8]> = frames.iter().map(|(_, e)| *e).collect();
        let reopened = OwnerLog::reopen(owner, &entries, seal.as_ref().zip(key)).map_err(|refused| {
            let at = frames[refused.index].0 as u64;
            match refused.error {
                LogError::Record(e) => corrupt(path, at, &format!("entry does not verify: {e}")),
                source => LogFileError::Entry {
                    path: path.to_path_buf(),
                    source,
                },
            }
        })?;
        let log = reopened.log;
        report.verified = reopened.verified;
        if let Some(key) = key {
            if reopened.verified > 0 {
                // Best effort, so an unwritable seal (a full disk) never fails the open:
                // without a seal the next open verifies everything again.
                let seal = key.seal(owner, log.head());
                let _ = crate::atomic::write_atomic(&seal_path, &seal.encode(), 0o600);
            }
        }
        drop(entries);
        if report.torn_tail_bytes > 0 {
            file.set_len(pos as u64).map_err(|e| io("truncate", e))?;
            file.sync_all().map_err(|e| io("fsync", e))?;
        }
        file.seek(SeekFrom::Start(pos as u64))
            .map_err(|e| io("seek", e))?;
        Ok((
            LogFile {
                path: path.to_path_buf(),
                file,
                log,
            },
            report,
        ))
    }

    pub fn log(&self) -> &OwnerLog {
        &self.log
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `entry`: checks it chains on, writes its frame, fsyncs. When this returns
    /// Ok the record survives a power cut.
    pub fn append(&mut self, entry: SignedEntry) -> Result<(), LogFileError> {
        self.log
            .check_next(&entry)
            .map_err(|source| LogFileError::Entry {
                path: self.path.clone(),
                source,
            })?;
        let bytes = entry.bytes();
        let mut frame = Vec::with_capacity(4 + bytes.len() + CHECKSUM_LEN);
        frame.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        frame.extend_from_slice(bytes);
        frame.extend_from_slice(&checksum(bytes));
        let io = |action, e| LogFileError::Io(IoError::new(action, &self.path, e));
        let start = self.file.stream_position().map_err(|e| io("seek", e))?;
        if let Err(e) = self.file.write_all(&frame).and_then(|_| self.file.sync_data()) {
            // Leave the file as it was, so the next append does not follow garbage.
            let _ = self.file.set_len(start);
            let _ = self.file.seek(SeekFrom::Start(start));
            return Err(io("append to", e));
        }
        self.log.append(entry).map_err(|source| LogFileError::Entry {
            path: self.path.clone(),
            source,
        })
    }
}

impl LogFile {
    /// Appends several entries with one write and one fsync (a lesson's grants, one per
    /// student): each must chain on the one before, and all are checked before anything is
    /// written. On a write error the file is cut back to where it was, so none of them is
    /// kept. (A power cut in the middle of the write can still leave the first few on disk:
    /// each one whole and valid, the rest torn off and dropped on the next open.)
    pub fn append_batch(&mut self, entries: Vec<SignedEntry>) -> Result<(), LogFileError> {
        let mut scratch = self.log.clone();
        let mut frames = Vec::new();
        for entry in &entries {
            scratch
                .append(entry.clone())
                .map_err(|source| LogFileError::Entry {
                    path: self.path.clone(),
                    source,
                })?;
            let bytes = entry.bytes();
            frames.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            frames.extend_from_slice(bytes);
            frames.extend_from_slice(&checksum(bytes));
        }
        let io = |action, e| LogFileError::Io(IoError::new(action, &self.path, e));
        let start = self.file.stream_position().map_err(|e| io("seek", e))?;
        if let Err(e) = self.file.write_all(&frames).and_then(|_| self.file.sync_data()) {
            let _ = self.file.set_len(start);
            let _ = self.file.seek(SeekFrom::Start(start));
            return Err(io("append to", e));
        }
        self.log = scratch;
        Ok(())
    }

    /// Merges entries someone else sent (the proxy relaying an owner's log, or an owner
    /// publishing to the proxy): entries already held must match exactly, new ones must
    /// chain on and are appended, each fsynced. Stops at the first bad entry, keeping the
    /// good ones before it.
    pub fn sync(
        &mut self,
        offered: impl IntoIterator<Item = SignedEntry>,
    ) -> Result<SyncOutcome, LogFileError> {
        let mut added = 0;
        let mut last_seen = 0;
        for entry in offered {
            last_seen = entry.seq;
            let have = self.log.head().seq;
            if entry.seq >= 1 && entry.seq <= have {
                if self.log.entries()[(entry.seq - 1) as usize].hash() != entry.hash() {
                    return Err(LogFileError::Entry {
                        path: self.path.clone(),
                        source: LogError::Fork { seq: entry.seq },
                    });
                }
                continue;
            }
            self.append(entry)?;
            added += 1;
        }
        Ok(SyncOutcome {
            added,
            offered_older: last_seen < self.log.head().seq,
        })
    }
}

pub(crate) enum Frame<'a> {
    Whole { entry: &'a [u8], len: usize },
    Torn,
    BadChecksum { len: usize },
    TooLong,
}

pub(crate) fn parse_frame(rest: &[u8]) -> Frame<'_> {
    let Some(len_bytes) = rest.get(..4) else {
        return Frame::Torn;
    };
    let len = u32::from_be_bytes(len_bytes.try_into().expect("4 bytes")) as usize;
    if len > MAX_LOG_ENTRY_LEN {
        // A length this large was never written by us; if it is the tail, it is a torn
        // write of the length itself only when it runs past the end of the file.
        return if 4 + len + CHECKSUM_LEN > rest.len() {
            Frame::Torn
        } else {
            Frame::TooLong
        };
    }
    let total = 4 + len + CHECKSUM_LEN;
    if rest.len() < total {
        return Frame::Torn;
    }
    let entry = &rest[4..4 + len];
    if rest[4 + len..total] != checksum(entry) {
        return Frame::BadChecksum { len: total };
    }
    Frame::Whole { entry, len: total }
}

/// Where the seal of the log at `path` is kept: `<file>.seal` beside it.
pub fn seal_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".seal");
    path.with_file_name(name)
}

fn corrupt(path: &Path, offset: u64, reason: &str) -> LogFileError {
    LogFileError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason: reason.to_string(),
    }
}
