//! Canonical mission and function names.
//!
//! A name is 1 to 64 bytes of lowercase ASCII letters, digits, `-` and `_`, starting with a
//! letter or digit: `demo`, `sys`, `echo`, `led-blink`. Nothing else is accepted, so there is
//! exactly one spelling of each name: no `..` or `/` to escape a directory, no `Demo` vs
//! `demo`, no Cyrillic `е` that looks like a Latin `e`. A grant for `demo` can therefore be
//! compared byte for byte with a call to `demo`.

use std::fmt;

use crate::defaults::MAX_NAME_LEN;

/// Why a name is not canonical.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name is {0} bytes long; the limit is {MAX_NAME_LEN}")]
    TooLong(usize),
    #[error("name `{0}` has uppercase letters; names are lowercase (try `{lower}`)", lower = .0.to_ascii_lowercase())]
    Uppercase(String),
    #[error("name has a character that is not allowed at byte {at} (use a-z, 0-9, `-` and `_`)")]
    BadChar { at: usize },
    #[error("name must start with a letter or a digit")]
    BadStart,
    #[error("`{0}` is not `mission/function` (for example `demo/echo`)")]
    NotATarget(String),
}

fn check(s: &str) -> Result<(), NameError> {
    let b = s.as_bytes();
    if b.is_empty() {
        return Err(NameError::Empty);
    }
    if b.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(b.len()));
    }
    if s.is_ascii() && b.iter().any(u8::is_ascii_uppercase) {
        return Err(NameError::Uppercase(s.to_string()));
    }
    if let Some(at) = b
        .iter()
        .position(|&c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_'))
    {
        return Err(NameError::BadChar { at });
    }
    if !b[0].is_ascii_alphanumeric() {
        return Err(NameError::BadStart);
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn new(s: &str) -> Result<Self, NameError> {
                check(s)?;
                Ok($name(s.to_string()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:?})"), self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                $name::new(s)
            }
        }
    };
}

name_type!(
    /// The name of a mission: a group of functions an agent offers (`demo`).
    MissionName
);
name_type!(
    /// The name of one function inside a mission (`echo`).
    FunctionName
);
name_type!(
    /// The topic of a signed mission event (`unfriend`, `posted`): what kind of thing
    /// happened, so a subscriber can ask for `social/unfriend` only.
    TopicName
);
name_type!(
    /// A local nickname for someone's key in the keyring (`bob`).
    Nickname
);

/// Parses `mission/function`, as typed in `wtd call demo/echo`.
pub fn parse_target(s: &str) -> Result<(MissionName, FunctionName), NameError> {
    let (m, f) = s
        .split_once('/')
        .ok_or_else(|| NameError::NotATarget(s.to_string()))?;
    Ok((MissionName::new(m)?, FunctionName::new(f)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_canonical_names() {
        for ok in ["demo", "sys", "led-blink", "a_b", "0", &"x".repeat(64)] {
            assert!(MissionName::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_every_non_canonical_form() {
        assert_eq!(MissionName::new(""), Err(NameError::Empty));
        assert_eq!(MissionName::new(&"x".repeat(65)), Err(NameError::TooLong(65)));
        assert_eq!(MissionName::new("Demo"), Err(NameError::Uppercase("Demo".into())));
        assert_eq!(MissionName::new(".."), Err(NameError::BadChar { at: 0 }));
        assert_eq!(MissionName::new("de/mo"), Err(NameError::BadChar { at: 2 }));
        assert_eq!(MissionName::new("demo "), Err(NameError::BadChar { at: 4 }));
        assert_eq!(MissionName::new("-demo"), Err(NameError::BadStart));
        assert_eq!(MissionName::new("_demo"), Err(NameError::BadStart));
        // Cyrillic "е" (U+0435) looks like Latin "e".
        assert_eq!(MissionName::new("d\u{435}mo"), Err(NameError::BadChar { at: 1 }));
        // Fullwidth and dotless-i tricks.
        assert!(MissionName::new("ｄｅｍｏ").is_err());
        assert!(MissionName::new("\u{131}o").is_err());
        assert!(MissionName::new("demo\0").is_err());
    }

    #[test]
    fn parses_targets() {
        let (m, f) = parse_target("demo/echo").unwrap();
        assert_eq!((m.as_str(), f.as_str()), ("demo", "echo"));
        assert!(matches!(parse_target("demo"), Err(NameError::NotATarget(_))));
        assert!(parse_target("demo/../x").is_err());
        assert!(parse_target("demo/echo/x").is_err());
    }
}
