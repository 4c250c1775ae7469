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
//! Without `-v`, `RUST_LOG` works as in most Rust programs (`RUST_LOG=warn`,
//! `RUST_LOG=debug,quinn=info`: a level, and `target=level` overrides).

use std::io::Write;

use log::kv::{Key, Value, VisitSource};
use log::{LevelFilter, Log, Metadata, Record};

/// Sends log records to the journal or stderr, at a level set by `verbosity` (the count of
/// `-v` flags). Only the first call in a process has an effect.
pub fn init(verbosity: u8) {
    let filter = Filter::new(verbosity, std::env::var("RUST_LOG").ok().as_deref());
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

/// Which records pass. By default wtd's own lines from info up and other crates' from
/// warnings up (quinn and rustls are chatty below that).
#[derive(Debug, Clone, PartialEq)]
struct Filter {
    /// The level for targets no rule matches.
    fallback: LevelFilter,
    /// `(target prefix, level)`: the longest matching prefix wins, as in `env_logger`.
    rules: Vec<(String, LevelFilter)>,
}

impl Filter {
    /// `-v` flags win; else `RUST_LOG`, if it parses; else the default.
    fn new(verbosity: u8, rust_log: Option<&str>) -> Self {
        let ours = |level| Filter {
            fallback: LevelFilter::Warn,
            rules: vec![("wtd".to_string(), level)],
        };
        match verbosity {
            0 => rust_log
                .and_then(Filter::parse)
                .unwrap_or_else(|| ours(LevelFilter::Info)),
            1 => ours(LevelFilter::Debug),
            _ => Filter {
                fallback: LevelFilter::Trace,
                rules: Vec::new(),
            },
        }
    }

    /// The common subset of `env_logger`'s syntax: comma-separated `level` (for every
    /// target) and `target=level` items, e.g. `debug,quinn=info`. `None` if any item does
    /// not parse, so a typo falls back to the default rather than silencing the agent.
    fn parse(spec: &str) -> Option<Filter> {
        let mut filter = Filter {
            fallback: LevelFilter::Info,
            rules: Vec::new(),
        };
        for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            match item.split_once('=') {
                Some((target, level)) => filter
                    .rules
                    .push((target.trim().to_string(), level.trim().parse().ok()?)),
                None => filter.fallback = item.parse().ok()?,
            }
        }
        Some(filter)
    }

    fn max(&self) -> LevelFilter {
        self.rules
            .iter()
            .map(|(_, level)| *level)
            .fold(self.fallback, Ord::max)
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        let level = self
            .rules
            .iter()
            .filter(|(prefix, _)| metadata.target().starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map_or(self.fallback, |(_, level)| *level);
        metadata.level() <= level
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
        let normal = Filter::new(0, None);
        assert!(normal.enabled(&meta("wtd_agent::link", Level::Info)));
        assert!(!normal.enabled(&meta("wtd_agent::link", Level::Debug)));
        assert!(!normal.enabled(&meta("quinn_proto::connection", Level::Info)));
        assert!(normal.enabled(&meta("quinn_proto::connection", Level::Warn)));
        let verbose = Filter::new(1, Some("error"));
        assert!(verbose.enabled(&meta("wtd_transport", Level::Debug)));
        assert!(!verbose.enabled(&meta("rustls::client", Level::Debug)));
        let everything = Filter::new(2, None);
        assert!(everything.enabled(&meta("rustls::client", Level::Trace)));
        assert_eq!(everything.max(), LevelFilter::Trace);
    }

    #[test]
    fn rust_log_sets_levels_per_target() {
        let meta = |target, level| Metadata::builder().target(target).level(level).build();
        let quiet = Filter::new(0, Some("warn"));
        assert!(!quiet.enabled(&meta("wtd_agent::link", Level::Info)));
        assert!(quiet.enabled(&meta("wtd_agent::link", Level::Warn)));
        assert_eq!(quiet.max(), LevelFilter::Warn);

        let mixed = Filter::new(0, Some("debug, quinn=info ,wtd_agent::load=error"));
        assert!(mixed.enabled(&meta("wtd_agent::link", Level::Debug)));
        assert!(
            !mixed.enabled(&meta("quinn_proto::connection", Level::Debug)),
            "prefixes match"
        );
        assert!(mixed.enabled(&meta("quinn", Level::Info)));
        assert!(
            !mixed.enabled(&meta("wtd_agent::load", Level::Warn)),
            "the longest prefix wins"
        );
        assert_eq!(mixed.max(), LevelFilter::Debug);

        let typo = Filter::new(0, Some("debug,quinn=loud"));
        assert_eq!(typo, Filter::new(0, None), "a typo falls back to the default");
        assert_eq!(Filter::new(1, Some("error")), Filter::new(1, None), "-v wins");
    }
}
