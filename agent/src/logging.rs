//! Where log lines go: the systemd journal when running as a service, else stderr.
//!
//! Library code logs with the `log` macros and structured key-values
//! (`log::info!(agent:% = id, peer:% = addr; "connected")`). This module is for binaries:
//! call [`init`] once, first thing.
//!
//! - Under systemd, stderr is connected to the journal (systemd says so in
//!   `$JOURNAL_STREAM`), and we write to the journal directly instead: each key-value
//!   becomes a journal field (`journalctl AGENT=wtd1...`) and levels become priorities
//!   (`journalctl -p err`).
//! - Elsewhere, one line per record on stderr:
//!   `2025-06-01T10:00:00Z INFO  wtd_agent::link: connected agent=wtd1... peer=10.0.0.2:7788`.
//!
//! `-v` shows wtd's debug lines, `-vv` everything, including QUIC and TLS internals.

use std::io::Write;

use log::kv::{Key, Value, VisitSource};
use log::{LevelFilter, Log, Metadata, Record};

/// Sends log records to the journal or stderr, at a level set by `verbosity` (the count of
/// `-v` flags). Only the first call in a process has an effect.
pub fn init(verbosity: u8) {
    let filter = Filter::new(verbosity);
    let max = filter.max();
    let journal = systemd_journal_logger::connected_to_journal()
        .then(systemd_journal_logger::JournalLog::new)
        .and_then(Result::ok);
    let installed = match journal {
        Some(journal) => log::set_boxed_logger(Box::new(Filtered {
            filter,
            inner: journal.with_syslog_identifier("wtd".to_string()),
        })),
        None => log::set_boxed_logger(Box::new(Filtered {
            filter,
            inner: Stderr,
        })),
    };
    if installed.is_ok() {
        log::set_max_level(max);
    }
}

/// Which records pass: wtd's own at the chosen level, other crates' from warnings up
/// (quinn and rustls are chatty at debug) unless `-vv` asks for everything.
#[derive(Debug, Clone, Copy)]
struct Filter {
    ours: LevelFilter,
    others: LevelFilter,
}

impl Filter {
    fn new(verbosity: u8) -> Self {
        match verbosity {
            0 => Filter {
                ours: LevelFilter::Info,
                others: LevelFilter::Warn,
            },
            1 => Filter {
                ours: LevelFilter::Debug,
                others: LevelFilter::Warn,
            },
            _ => Filter {
                ours: LevelFilter::Trace,
                others: LevelFilter::Trace,
            },
        }
    }

    fn max(&self) -> LevelFilter {
        self.ours.max(self.others)
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        let ours = metadata.target().starts_with("wtd");
        metadata.level() <= if ours { self.ours } else { self.others }
    }
}

/// Any logger, behind a [`Filter`].
struct Filtered<L> {
    filter: Filter,
    inner: L,
}

impl<L: Log> Log for Filtered<L> {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if self.filter.enabled(record.metadata()) {
            self.inner.log(record);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// One line per record on stderr.
struct Stderr;

impl Log for Stderr {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &Record<'_>) {
        let line = format_line(record, std::time::SystemTime::now());
        // One write per line, so lines from different threads never interleave. A closed
        // stderr is not worth crashing over.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// `<time> <LEVEL> <target>: <message> key=value ...\n`
fn format_line(record: &Record<'_>, now: std::time::SystemTime) -> String {
    let mut line = format!(
        "{} {:<5} {}: {}",
        humantime::format_rfc3339_seconds(now),
        record.level(),
        record.target(),
        record.args()
    );
    let _ = record.key_values().visit(&mut AppendPairs(&mut line));
    line.push('\n');
    line
}

/// Appends ` key=value` for each structured pair.
struct AppendPairs<'a>(&'a mut String);

impl<'kvs> VisitSource<'kvs> for AppendPairs<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        use std::fmt::Write;
        let _ = write!(self.0, " {key}={value}");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Level;

    #[test]
    fn lines_carry_level_target_message_and_pairs() {
        let pairs = [("peer", "10.0.0.2:7788")];
        let line = format_line(
            &Record::builder()
                .level(Level::Warn)
                .target("wtd_agent::link")
                .args(format_args!("lost the proxy"))
                .key_values(&pairs)
                .build(),
            std::time::UNIX_EPOCH,
        );
        assert_eq!(
            line,
            "1970-01-01T00:00:00Z WARN  wtd_agent::link: lost the proxy peer=10.0.0.2:7788\n"
        );
    }

    #[test]
    fn other_crates_are_quiet_unless_asked() {
        let meta = |target, level| Metadata::builder().target(target).level(level).build();
        let normal = Filter::new(0);
        assert!(normal.enabled(&meta("wtd_agent::link", Level::Info)));
        assert!(!normal.enabled(&meta("wtd_agent::link", Level::Debug)));
        assert!(!normal.enabled(&meta("quinn_proto::connection", Level::Info)));
        assert!(normal.enabled(&meta("quinn_proto::connection", Level::Warn)));
        let verbose = Filter::new(1);
        assert!(verbose.enabled(&meta("wtd_transport", Level::Debug)));
        assert!(!verbose.enabled(&meta("rustls::client", Level::Debug)));
        let everything = Filter::new(2);
        assert!(everything.enabled(&meta("rustls::client", Level::Trace)));
        assert_eq!(everything.max(), LevelFilter::Trace);
    }
}
