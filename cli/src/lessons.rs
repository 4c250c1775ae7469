//! `lessons.toml` in the wtd home: which grants each lesson label stands for.
//!
//! The grants themselves live in the owner log; this index only remembers which of them
//! `wtd grant --class` made together, under which label, so `wtd revoke --label L` can end
//! exactly those. It is written (atomically) after the log append: if it is ever lost,
//! `wtd revoke --class roster.txt` still finds the grants from the log by their students.

use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use wtd_keys::GrantId;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    lesson: Vec<Lesson>,
}

/// One `wtd grant --class` run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Lesson {
    pub label: String,
    /// The roster file it came from, as given.
    pub roster: String,
    pub mission: String,
    /// The grant ids, `grant-...`.
    pub grants: Vec<String>,
}

impl Lesson {
    pub fn grant_ids(&self) -> anyhow::Result<Vec<GrantId>> {
        self.grants
            .iter()
            .map(|g| {
                g.parse()
                    .with_context(|| format!("lesson `{}` in lessons.toml", self.label))
            })
            .collect()
    }
}

pub fn load(path: &Path) -> anyhow::Result<Vec<Lesson>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let file: File = toml::from_str(&text).with_context(|| {
        format!(
            "{} is damaged; move it aside (`wtd revoke --class <roster>` still works without it)",
            path.display()
        )
    })?;
    Ok(file.lesson)
}

/// Adds a lesson (a label used again adds its grants to the same lesson).
pub fn add(path: &Path, lesson: Lesson) -> anyhow::Result<()> {
    let mut lessons = load(path)?;
    match lessons.iter_mut().find(|l| l.label == lesson.label) {
        Some(l) => l.grants.extend(lesson.grants),
        None => lessons.push(lesson),
    }
    let text = format!(
        "# Lessons granted with `wtd grant --class`, for `wtd revoke --label`. Written by wtd.\n{}",
        toml::to_string(&File { lesson: lessons }).expect("serializable")
    );
    wtd_store::atomic::write_atomic(path, text.as_bytes(), 0o600)?;
    Ok(())
}
