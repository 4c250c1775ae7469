//! Names for other people's keys, like ssh's known_hosts.
//!
//! ```toml
//! # keyring.toml, managed by `wtd keys`
//! [keys]
//! bob = "wtd1..."
//! ```
//!
//! Each name maps to one key and each key to one name, so `wtd grant bob` can never
//! silently mean two people.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use wtd_keys::names::{NameError, Nickname};
use wtd_keys::{KeyError, PublicId};

use crate::atomic::{ensure_dir, write_atomic};
use crate::IoError;

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("`{name}` is already in your keyring as {existing}; remove it first with `wtd keys rm {name}`")]
    DuplicateName { name: String, existing: PublicId },
    #[error("that id is already in your keyring as `{existing}`")]
    DuplicateKey { existing: String },
    #[error("no one called `{0}` in your keyring; see `wtd keys ls`, or add them with `wtd keys add {0} <their id>`")]
    UnknownName(String),
    #[error("`{0}` is not a valid name: {1}")]
    BadName(String, NameError),
    #[error("{0}")]
    BadKey(#[from] KeyError),
    #[error("the keyring {path} is damaged ({reason}); fix or remove that file")]
    Damaged { path: PathBuf, reason: String },
    #[error(transparent)]
    Io(#[from] IoError),
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct File {
    #[serde(default)]
    keys: BTreeMap<String, String>,
}

/// The keyring, loaded. Changes are written back with [`Keyring::save`].
#[derive(Debug, Clone)]
pub struct Keyring {
    path: PathBuf,
    keys: BTreeMap<Nickname, PublicId>,
}

impl Keyring {
    /// Loads the keyring; a missing file is an empty keyring.
    pub fn load(path: &Path) -> Result<Self, KeyringError> {
        let damaged = |reason: String| KeyringError::Damaged {
            path: path.to_path_buf(),
            reason,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(IoError::new("read", path, e).into()),
        };
        let file: File = toml::from_str(&text).map_err(|e| damaged(e.message().to_string()))?;
        let mut keys = BTreeMap::new();
        for (name, id) in file.keys {
            let nick = Nickname::new(&name).map_err(|e| damaged(format!("name `{name}`: {e}")))?;
            let key = id.parse().map_err(|e| damaged(format!("key of `{name}`: {e}")))?;
            keys.insert(nick, key);
        }
        Ok(Keyring {
            path: path.to_path_buf(),
            keys,
        })
    }

    pub fn save(&self) -> Result<(), KeyringError> {
        if let Some(dir) = self.path.parent() {
            ensure_dir(dir, 0o700)?;
        }
        let file = File {
            keys: self
                .keys
                .iter()
                .map(|(n, k)| (n.to_string(), k.to_string()))
                .collect(),
        };
        let body = toml::to_string(&file).expect("a map of strings always serializes");
        let text = format!("# Names for other people's wtd ids. Managed by `wtd keys`.\n{body}");
        write_atomic(&self.path, text.as_bytes(), 0o600)?;
        Ok(())
    }

    pub fn add(&mut self, name: &str, id: &str) -> Result<PublicId, KeyringError> {
        let nick = Nickname::new(name).map_err(|e| KeyringError::BadName(name.to_string(), e))?;
        let key: PublicId = id.parse()?;
        if let Some(existing) = self.keys.get(&nick) {
            return Err(KeyringError::DuplicateName {
                name: name.to_string(),
                existing: *existing,
            });
        }
        if let Some((existing, _)) = self.keys.iter().find(|(_, k)| **k == key) {
            return Err(KeyringError::DuplicateKey {
                existing: existing.to_string(),
            });
        }
        self.keys.insert(nick, key);
        Ok(key)
    }

    pub fn remove(&mut self, name: &str) -> Result<PublicId, KeyringError> {
        let nick = Nickname::new(name).map_err(|e| KeyringError::BadName(name.to_string(), e))?;
        self.keys
            .remove(&nick)
            .ok_or_else(|| KeyringError::UnknownName(name.to_string()))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Nickname, &PublicId)> {
        self.keys.iter()
    }

    /// `who` is a name in the keyring, or a full `wtd1...` id.
    pub fn resolve(&self, who: &str) -> Result<PublicId, KeyringError> {
        if who.starts_with(wtd_keys::identity::PUBLIC_PREFIX) {
            return Ok(who.parse()?);
        }
        let nick = Nickname::new(who).map_err(|e| KeyringError::BadName(who.to_string(), e))?;
        self.keys
            .get(&nick)
            .copied()
            .ok_or_else(|| KeyringError::UnknownName(who.to_string()))
    }

    /// The name for `key`, if it has one.
    pub fn name_of(&self, key: &PublicId) -> Option<&Nickname> {
        self.keys.iter().find(|(_, k)| *k == key).map(|(n, _)| n)
    }
}
