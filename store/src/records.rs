//! A crash-safe file of opaque records: the owner log's framing ([`crate::logfile`]) for
//! anything else a daemon must not lose, such as the proxy's queue of jobs.
//!
//! ```text
//! file  = magic (8 bytes, the caller's) frame*
//! frame = len:u32be record[len] sha256(record)[..8]
//! ```
//!
//! Same rules as the owner log: an append writes one whole frame and fsyncs before it
//! returns; on open, a torn last frame (short, or full length with a bad checksum) is cut
//! off and reported, since it was never acknowledged; damage before the last frame is not
//! a torn write and the file is refused. What the records *mean* is the caller's business:
//! this module only promises that what [`RecordFile::append`] acknowledged comes back from
//! [`RecordFile::open`], byte for byte, in order.
//!
//! A file that only grows would fill the disk, so the owner [`RecordFile::rewrite`]s it
//! from what is still live now and then: the new content is written to a temporary file,
//! fsynced and renamed over the old one (atomic), so a crash leaves either file, whole.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::atomic::{sync_dir, write_atomic};
use crate::IoError;

const CHECKSUM_LEN: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum RecordFileError {
    #[error(transparent)]
    Io(#[from] IoError),
    /// The file is damaged before its last frame (not a torn write), or is another file.
    #[error(
        "{path} is damaged at byte {offset} ({reason}); move it aside to start with an empty one \
         (what it held is lost), or restore it from a backup"
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// A record longer than this file takes: a bug in its owner.
    #[error("a {len}-byte record is longer than {path} takes ({max} bytes)")]
    TooLong { path: PathBuf, len: usize, max: usize },
}

/// What opening the file found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Bytes of a torn last frame that were cut off (0 if the file was clean).
    pub torn_tail_bytes: u64,
}

/// An open, locked record file. Appends go to its end.
#[derive(Debug)]
pub struct RecordFile {
    path: PathBuf,
    file: File,
    magic: [u8; 8],
    max_record: usize,
    /// Bytes in the file now, so its owner can bound it.
    len: u64,
}

fn checksum(record: &[u8]) -> [u8; CHECKSUM_LEN] {
    let h = Sha256::digest(record);
    h[..CHECKSUM_LEN].try_into().expect("sha256 is 32 bytes")
}

fn frame(record: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(record.len() as u32).to_be_bytes());
    out.extend_from_slice(record);
    out.extend_from_slice(&checksum(record));
}

impl RecordFile {
    /// Opens (creating if absent) the file at `path`, whose first 8 bytes must be `magic`,
    /// and returns every whole record in it, in order. Records longer than `max_record`
    /// are never written, so a length above it is damage (or a torn length at the end).
    pub fn open(
        path: &Path,
        magic: [u8; 8],
        max_record: usize,
    ) -> Result<(RecordFile, Vec<Vec<u8>>, OpenReport), RecordFileError> {
        let io = |action, e| RecordFileError::Io(IoError::new(action, path, e));
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
        if !data.is_empty() && data.len() < magic.len() && magic.starts_with(&data) {
            // Even the header was torn: the file was just being created.
            report.torn_tail_bytes = data.len() as u64;
            data.clear();
            file.set_len(0).map_err(|e| io("truncate", e))?;
            file.seek(SeekFrom::Start(0)).map_err(|e| io("seek", e))?;
        }
        if data.is_empty() {
            file.write_all(&magic).map_err(|e| io("write", e))?;
            file.sync_all().map_err(|e| io("fsync", e))?;
            sync_dir(path)?;
            data.extend_from_slice(&magic);
        }
        if data.len() < magic.len() || data[..magic.len()] != magic {
            return Err(corrupt(path, 0, "not the file this program keeps here"));
        }
        let mut records = Vec::new();
        let mut pos = magic.len();
        while pos < data.len() {
            let rest = &data[pos..];
            let Some(len_bytes) = rest.get(..4) else {
                report.torn_tail_bytes = rest.len() as u64;
                break;
            };
            let len = u32::from_be_bytes(len_bytes.try_into().expect("4 bytes")) as usize;
            let total = 4 + len + CHECKSUM_LEN;
            if rest.len() < total {
                // Runs past the end: the write was torn (perhaps in its length).
                report.torn_tail_bytes = rest.len() as u64;
                break;
            }
            if len > max_record {
                return Err(corrupt(path, pos as u64, "frame length over the limit"));
            }
            let record = &rest[4..4 + len];
            if rest[4 + len..total] != checksum(record) {
                if pos + total == data.len() {
                    // A full-length last frame with garbage in it: torn after the length
                    // reached the disk but before the data did.
                    report.torn_tail_bytes = rest.len() as u64;
                    break;
                }
                return Err(corrupt(path, pos as u64, "checksum mismatch"));
            }
            records.push(record.to_vec());
            pos += total;
        }
        if report.torn_tail_bytes > 0 {
            file.set_len(pos as u64).map_err(|e| io("truncate", e))?;
            file.sync_all().map_err(|e| io("fsync", e))?;
        }
        file.seek(SeekFrom::Start(pos as u64))
            .map_err(|e| io("seek", e))?;
        Ok((
            RecordFile {
                path: path.to_path_buf(),
                file,
                magic,
                max_record,
                len: pos as u64,
            },
            records,
            report,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes in the file now.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.len <= self.magic.len() as u64
    }

    fn check_len(&self, record: &[u8]) -> Result<(), RecordFileError> {
        if record.len() > self.max_record {
            return Err(RecordFileError::TooLong {
                path: self.path.clone(),
                len: record.len(),
                max: self.max_record,
            });
        }
        Ok(())
    }

    /// Appends one record and fsyncs. When this returns Ok the record survives a power cut;
    /// on an error the file is as it was.
    pub fn append(&mut self, record: &[u8]) -> Result<(), RecordFileError> {
        self.check_len(record)?;
        let mut buf = Vec::with_capacity(4 + record.len() + CHECKSUM_LEN);
        frame(record, &mut buf);
        let io = |action, e| RecordFileError::Io(IoError::new(action, &self.path, e));
        let start = self.len;
        if let Err(e) = self.file.write_all(&buf).and_then(|_| self.file.sync_data()) {
            // Leave the file as it was, so the next append does not follow garbage.
            let _ = self.file.set_len(start);
            let _ = self.file.seek(SeekFrom::Start(start));
            return Err(io("append to", e));
        }
        self.len += buf.len() as u64;
        Ok(())
    }

    /// Replaces the whole file with `records`, atomically: a crash leaves the old file or
    /// the new one, never a mix. Used to drop what is no longer live.
    pub fn rewrite<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), RecordFileError> {
        let mut buf = self.magic.to_vec();
        for r in records {
            self.check_len(r)?;
            frame(r, &mut buf);
        }
        write_atomic(&self.path, &buf, 0o600)?;
        let io = |action, e| RecordFileError::Io(IoError::new(action, &self.path, e));
        // The old handle points at the replaced inode: open the new file, lock it, go to its end.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(|e| io("open", e))?;
        file.lock().map_err(|e| io("lock", e))?;
        file.seek(SeekFrom::End(0)).map_err(|e| io("seek", e))?;
        self.file = file;
        self.len = buf.len() as u64;
        Ok(())
    }
}

fn corrupt(path: &Path, offset: u64, reason: &str) -> RecordFileError {
    RecordFileError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAGIC: [u8; 8] = *b"WTDTEST\n";

    fn open(path: &Path) -> Result<(RecordFile, Vec<Vec<u8>>, OpenReport), RecordFileError> {
        RecordFile::open(path, MAGIC, 100)
    }

    #[test]
    fn records_come_back_in_order_after_a_reopen_and_a_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q");
        let (mut f, records, _) = open(&path).unwrap();
        assert!(records.is_empty() && f.is_empty());
        f.append(b"one").unwrap();
        f.append(b"two").unwrap();
        drop(f);
        let (mut f, records, report) = open(&path).unwrap();
        assert_eq!(records, vec![b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(report.torn_tail_bytes, 0);
        f.rewrite([&b"two"[..]]).unwrap();
        f.append(b"three").unwrap();
        drop(f);
        let (_, records, _) = open(&path).unwrap();
        assert_eq!(records, vec![b"two".to_vec(), b"three".to_vec()]);
    }

    #[test]
    fn a_torn_tail_is_cut_off_at_every_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q");
        let (mut f, _, _) = open(&path).unwrap();
        f.append(b"kept").unwrap();
        let good = f.len() as usize;
        f.append(b"torn record").unwrap();
        drop(f);
        let whole = std::fs::read(&path).unwrap();
        for cut in good + 1..whole.len() {
            std::fs::write(&path, &whole[..cut]).unwrap();
            let (f, records, report) = open(&path).unwrap();
            assert_eq!(records, vec![b"kept".to_vec()], "cut at {cut}");
            assert_eq!(report.torn_tail_bytes as usize, cut - good);
            assert_eq!(f.len() as usize, good);
        }
        // A full-length last frame holding garbage is a torn write too.
        let mut garbled = whole.clone();
        let last = garbled.len() - 10;
        garbled[last] ^= 0xff;
        std::fs::write(&path, &garbled).unwrap();
        let (_, records, report) = open(&path).unwrap();
        assert_eq!(records.len(), 1);
        assert!(report.torn_tail_bytes > 0);
    }

    #[test]
    fn damage_before_the_end_refuses_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q");
        let (mut f, _, _) = open(&path).unwrap();
        f.append(b"first").unwrap();
        f.append(b"second").unwrap();
        drop(f);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[MAGIC.len() + 5] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = open(&path).unwrap_err();
        assert!(matches!(err, RecordFileError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("move it aside"), "{err}");
        // Another program's file.
        std::fs::write(&path, b"something else entirely").unwrap();
        assert!(matches!(
            open(&path),
            Err(RecordFileError::Corrupt { offset: 0, .. })
        ));
        // An over-long length in the middle.
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&1000u32.to_be_bytes());
        bytes.extend_from_slice(&[0; 1100]);
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(open(&path), Err(RecordFileError::Corrupt { .. })));
    }

    #[test]
    fn a_record_over_the_limit_is_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q");
        let (mut f, _, _) = open(&path).unwrap();
        let before = f.len();
        assert!(matches!(
            f.append(&[0; 101]),
            Err(RecordFileError::TooLong { .. })
        ));
        assert_eq!(f.len(), before);
    }
}
