//! One event log on disk (an agent's own log of a mission, or the proxy's copy of one).
//!
//! ```text
//! file  = magic "WTDEVT1\n" frame*
//! frame = len:u32be event[len] sha256(event)[..8]     (the owner log's frames, see logfile)
//! ```
//!
//! The same crash rules as the owner log ([`crate::logfile`]): an append is one whole
//! frame, fsynced before it returns (only then is the event sent on or acknowledged); a
//! torn last frame is cut off on open and reported; damage before the last frame is not a
//! torn write and the file is refused. Every event read back is verified again (signature,
//! chain from the first kept event), so an edited file is refused too.
//!
//! Unlike the owner log, an event log may be *trimmed* at the front (retention: the oldest
//! events go first). [`EventFile::trim`] rewrites the file atomically (temporary file,
//! fsync, rename), so a power cut leaves either the old file or the new one.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use wtd_keys::event::{ChainError, EventLog, LogId, SignedEvent};

use crate::atomic::{sync_dir, write_atomic};
use crate::logfile::{checksum, parse_frame, Frame};
use crate::IoError;

const MAGIC: &[u8; 8] = b"WTDEVT1\n";

#[derive(Debug, thiserror::Error)]
pub enum EventFileError {
    #[error(transparent)]
    Io(#[from] IoError),
    /// The file is damaged before its last frame, or an event in it does not verify.
    #[error("the event log {path} is damaged at byte {offset} ({reason}); move it aside and restart (its events are lost from this copy)")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// An event about to be appended does not follow the log.
    #[error("event log {path}: {source}")]
    Entry {
        path: PathBuf,
        #[source]
        source: ChainError,
    },
}

/// An open, locked event log file, and where it ends.
#[derive(Debug)]
pub struct EventFile {
    path: PathBuf,
    file: File,
    log: EventLog,
}

/// What opening found: the events kept, and the bytes of a torn last frame cut off.
#[derive(Debug)]
pub struct Opened {
    pub file: EventFile,
    pub events: Vec<SignedEvent>,
    pub torn_tail_bytes: u64,
}

fn frame(bytes: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(4 + bytes.len() + 8);
    f.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    f.extend_from_slice(bytes);
    f.extend_from_slice(&checksum(bytes));
    f
}

impl EventFile {
    /// Opens (creating if absent) the log of `id` at `path`, verifying every event.
    pub fn open(path: &Path, id: LogId) -> Result<Opened, EventFileError> {
        let io = |action, e| EventFileError::Io(IoError::new(action, path, e));
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
        let mut torn = 0u64;
        if !data.is_empty() && data.len() < MAGIC.len() && MAGIC.starts_with(&data) {
            torn = data.len() as u64;
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
        if &data[..MAGIC.len().min(data.len())] != MAGIC {
            return Err(corrupt(path, 0, "not a wtd event log"));
        }
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
                    torn = rest.len() as u64;
                    break;
                }
                Frame::BadChecksum { len } if pos + len == data.len() => {
                    torn = rest.len() as u64;
                    break;
                }
                Frame::BadChecksum { .. } => return Err(corrupt(path, pos as u64, "checksum mismatch")),
                Frame::TooLong => return Err(corrupt(path, pos as u64, "frame length over the limit")),
            }
        }
        let raw: Vec<&[u8]> = frames.iter().map(|(_, e)| *e).collect();
        let log = EventLog::reopen(id, &raw).map_err(|refused| {
            corrupt(
                path,
                frames[refused.index].0 as u64,
                &format!("event does not verify: {}", refused.error),
            )
        })?;
        // reopen verified each one; decoding again only rebuilds the values.
        let events = raw
            .iter()
            .map(|b| SignedEvent::decode(b).expect("verified just above"))
            .collect();
        drop(raw);
        if torn > 0 {
            file.set_len(pos as u64).map_err(|e| io("truncate", e))?;
            file.sync_all().map_err(|e| io("fsync", e))?;
        }
        file.seek(SeekFrom::Start(pos as u64))
            .map_err(|e| io("seek", e))?;
        Ok(Opened {
            file: EventFile {
                path: path.to_path_buf(),
                file,
                log,
            },
            events,
            torn_tail_bytes: torn,
        })
    }

    pub fn log(&self) -> &EventLog {
        &self.log
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `event` if it is the next one: one frame, fsynced. When this returns Ok the
    /// event survives a power cut.
    pub fn append(&mut self, event: &SignedEvent) -> Result<(), EventFileError> {
        self.append_all(std::slice::from_ref(event))
    }

    /// Appends `events` if they follow the log and each other: one write and one fsync for
    /// all of them (a batch from the proxy's point of view). All or none are appended.
    pub fn append_all(&mut self, events: &[SignedEvent]) -> Result<(), EventFileError> {
        let (mut seq, mut hash) = self.log.head();
        let mut frames = Vec::new();
        for event in events {
            let e = event.event();
            let refused = |source| EventFileError::Entry {
                path: self.path.clone(),
                source,
            };
            if &e.log != self.log.id() || e.seq != seq + 1 {
                return Err(refused(ChainError::Gap {
                    log: e.log.clone(),
                    expected: seq + 1,
                    found: e.seq,
                }));
            }
            // A log trimmed to nothing keeps its head, so the next event still chains.
            if e.prev != hash {
                return Err(refused(ChainError::BrokenChain {
                    log: e.log.clone(),
                    seq: e.seq,
                }));
            }
            frames.extend_from_slice(&frame(event.bytes()));
            (seq, hash) = (e.seq, event.hash());
        }
        if frames.is_empty() {
            return Ok(());
        }
        let io = |action, err| EventFileError::Io(IoError::new(action, &self.path, err));
        let start = self.file.stream_position().map_err(|err| io("seek", err))?;
        if let Err(err) = self.file.write_all(&frames).and_then(|_| self.file.sync_data()) {
            // Leave the file as it was, so the next append does not follow garbage.
            let _ = self.file.set_len(start);
            let _ = self.file.seek(SeekFrom::Start(start));
            return Err(io("append to", err));
        }
        for event in events {
            self.log.appended(event);
        }
        Ok(())
    }

    /// Replaces the file with only `keep` (the newest events, in order), atomically. The
    /// last event is always kept, so the log's head (and the next event's chain) survives
    /// a reopen.
    pub fn trim(&mut self, keep: &[SignedEvent]) -> Result<(), EventFileError> {
        let (head, _) = self.log.head();
        if keep.last().map(|e| e.event().seq) != Some(head) {
            return Err(EventFileError::Entry {
                path: self.path.clone(),
                source: ChainError::Gap {
                    log: self.log.id().clone(),
                    expected: head,
                    found: keep.last().map_or(0, |e| e.event().seq),
                },
            });
        }
        let io = |action, err| EventFileError::Io(IoError::new(action, &self.path, err));
        let mut bytes = MAGIC.to_vec();
        for e in keep {
            bytes.extend_from_slice(&frame(e.bytes()));
        }
        write_atomic(&self.path, &bytes, 0o600)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(|err| io("open", err))?;
        file.lock().map_err(|err| io("lock", err))?;
        file.seek(SeekFrom::End(0)).map_err(|err| io("seek", err))?;
        self.file = file;
        Ok(())
    }
}

fn corrupt(path: &Path, offset: u64, reason: &str) -> EventFileError {
    EventFileError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason: reason.to_string(),
    }
}
