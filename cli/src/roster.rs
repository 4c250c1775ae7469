//! A class roster: the file a teacher collects, one student per line.
//!
//! ```text
//! # Year 9, room 2 (a comment; blank lines are fine too)
//! ada   wtd1q3vx...
//! grace wtd1m7rk...
//! ```
//!
//! Each line is a name (as in `wtd keys`: lowercase letters, digits, `-`, `_`) and an id,
//! pasted however it came (`wtd:` prefix, capitals, `fingerprint:` after it; see
//! `wtd_keys::paste`). Parsing is all or nothing: every bad line is reported, with its
//! number, and a roster with one is not used at all, so a lesson never starts with half
//! the class granted.

use std::path::Path;

use wtd_keys::names::Nickname;
use wtd_keys::paste::from_pasted;
use wtd_keys::{PublicId, UserKey};

use crate::defaults::{MAX_ROSTER_BYTES, MAX_ROSTER_STUDENTS};

/// One student of a roster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Student {
    /// The line it was on, from 1.
    pub line: usize,
    pub name: String,
    pub id: UserKey,
}

/// Reads and checks a roster file. The error lists every bad line.
pub fn load(path: &Path) -> anyhow::Result<Vec<Student>> {
    let meta = std::fs::metadata(path)
        .map_err(|e| anyhow::anyhow!("cannot read the roster {}: {e}", path.display()))?;
    if meta.len() > MAX_ROSTER_BYTES {
        anyhow::bail!(
            "the roster {} is {} bytes; a roster of {MAX_ROSTER_STUDENTS} students is far smaller. Is it the right file?",
            path.display(),
            meta.len()
        );
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read the roster {}: {e}", path.display()))?;
    parse(&text).map_err(|problems| {
        anyhow::anyhow!(
            "the roster {} has {} problem(s); nothing was done:\n{}",
            path.display(),
            problems.len(),
            problems.join("\n")
        )
    })
}

/// Parses a roster's text; `Err` holds one message per problem, each starting `line N:`.
pub fn parse(text: &str) -> Result<Vec<Student>, Vec<String>> {
    let mut students: Vec<Student> = Vec::new();
    let mut problems = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let Some((name, rest)) = content.split_once(char::is_whitespace) else {
            problems.push(format!(
                "line {line}: `{}` needs a name and an id, like `ada wtd1...`",
                short(content)
            ));
            continue;
        };
        if let Err(e) = Nickname::new(name) {
            problems.push(format!(
                "line {line}: `{}` is not a usable name: {e}",
                short(name)
            ));
            continue;
        }
        let id = match from_pasted(rest) {
            Ok(p) if p.before.is_empty() => p.id,
            Ok(_) => {
                problems.push(format!(
                    "line {line}: expected `name id`, found more words before the id"
                ));
                continue;
            }
            Err(e) => {
                problems.push(format!("line {line} ({name}): {e}"));
                continue;
            }
        };
        if let Some(s) = students.iter().find(|s| s.name == name) {
            problems.push(format!(
                "line {line}: the name `{name}` is also on line {}",
                s.line
            ));
            continue;
        }
        if let Some(s) = students.iter().find(|s| *s.id.key() == id) {
            problems.push(format!(
                "line {line}: {name}'s id is also {}'s, on line {}: one of them copied the wrong id",
                s.name, s.line
            ));
            continue;
        }
        students.push(Student {
            line,
            name: name.to_string(),
            id: UserKey(id),
        });
    }
    if students.is_empty() && problems.is_empty() {
        problems.push("the roster lists no students (one `name id` per line)".to_string());
    }
    if students.len() > MAX_ROSTER_STUDENTS {
        problems.push(format!(
            "{} students; one lesson grants at most {MAX_ROSTER_STUDENTS} (split the roster)",
            students.len()
        ));
    }
    if problems.is_empty() {
        Ok(students)
    } else {
        Err(problems)
    }
}

fn short(text: &str) -> String {
    let cut: String = text.chars().take(30).collect();
    if cut.len() < text.len() {
        format!("{cut}...")
    } else {
        cut
    }
}

/// The ids of a roster, for lookups.
pub fn ids(students: &[Student]) -> Vec<PublicId> {
    students.iter().map(|s| *s.id.key()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wtd_keys::SecretKey;

    fn id(n: u8) -> String {
        SecretKey::from_seed(&[n; 32]).public().to_string()
    }

    #[test]
    fn a_roster_with_comments_blank_lines_and_pasted_ids_parses() {
        let text = format!(
            "# Year 9\n\nada {}\n  grace   wtd:{}   # back row\nalan {}\nfingerprint: {}\n",
            id(1),
            id(2),
            id(3).to_ascii_uppercase(),
            SecretKey::from_seed(&[3; 32]).public().fingerprint(),
        );
        // The stray fingerprint line is a bad line, not a student.
        let problems = parse(&text).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("line 6:"), "{problems:?}");
        let text = format!(
            "# Year 9\n\nada {}\n  grace   wtd:{}   # back row\nalan {}\n",
            id(1),
            id(2),
            id(3)
        );
        let s = parse(&text).unwrap();
        assert_eq!(
            s.iter().map(|s| (s.line, s.name.as_str())).collect::<Vec<_>>(),
            [(3, "ada"), (4, "grace"), (5, "alan")]
        );
        assert_eq!(s[1].id.to_string(), id(2));
    }

    #[test]
    fn every_bad_line_is_reported_with_its_number() {
        let text = id(1);
        let typo = format!(
            "{}{}",
            &text[..text.len() - 1],
            if text.ends_with('a') { 'b' } else { 'a' }
        );
        let mut weak = [0u8; 32];
        weak[0] = 1;
        let roster = format!(
            "ada {}\nlonely\nBad-Name {}\nbob {typo}\nada {}\ncarol {}\neve {}\n",
            id(1),
            id(2),
            id(3),
            id(1),
            PublicId::text_of_any_bytes(&weak),
        );
        let problems = parse(&roster).unwrap_err();
        let want = [
            ("line 2:", "needs a name and an id"),
            ("line 3:", "not a usable name"),
            ("line 4 (bob):", "typo"),
            ("line 5:", "also on line 1"),
            ("line 6:", "also ada's, on line 1"),
            ("line 7 (eve):", "weak"),
        ];
        assert_eq!(problems.len(), want.len(), "{problems:#?}");
        for (p, (start, has)) in problems.iter().zip(want) {
            assert!(p.starts_with(start) && p.contains(has), "{p}");
        }
        assert!(parse("# only comments\n\n").is_err());
    }

    #[test]
    fn a_roster_too_big_for_one_record_is_refused() {
        let text: String = (0..=MAX_ROSTER_STUDENTS)
            .map(|n| {
                let mut seed = [7u8; 32];
                seed[..2].copy_from_slice(&(n as u16).to_be_bytes());
                format!("s{n} {}\n", SecretKey::from_seed(&seed).public())
            })
            .collect();
        let problems = parse(&text).unwrap_err();
        assert!(problems[0].contains("split the roster"), "{problems:?}");
    }
}
