//! Store path syntax: `<store dir>/<32 base-32 chars>-<name>`.
//!
//! The hash part is the first 160 bits of BLAKE3 of a *fingerprint* that
//! names the kind of object, its inner digest, the store directory and the
//! name (`cbuild-store-path-v1:<kind>:<hex digest>:<store dir>:<name>`), so
//! the same content under another store or name gets another path.

use std::fmt;

use super::base32;

/// Longest name a store object may have.
pub const MAX_NAME_LEN: usize = 211;

/// Longest derivation name: room is left for `.drv`.
pub const MAX_DRV_NAME_LEN: usize = 200;

/// Length of the hash part.
pub const HASH_LEN: usize = 32;

/// Why a name or path is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorePathError {
    /// The name is empty, too long, starts with `.` or has a character
    /// outside `[A-Za-z0-9+._-]`.
    #[error("invalid name `{name}`: {reason}")]
    BadName {
        /// The name.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The path is not `<store dir>/<hash>-<name>`.
    #[error("`{path}` is not a path in the store {store}: {reason}")]
    NotInStore {
        /// The path.
        path: String,
        /// The store directory.
        store: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// What a store object is; part of its path's fingerprint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    /// A `.drv` file; the inner digest is the derivation hash.
    Drv,
    /// An imported source; the inner digest is its tree digest.
    Source,
    /// A build output; the inner digest is its tree digest modulo
    /// self-references.
    Output,
}

impl ObjectKind {
    /// The word used in fingerprints and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Drv => "drv",
            ObjectKind::Source => "source",
            ObjectKind::Output => "output",
        }
    }

    /// Parses [`Self::as_str`].
    pub fn parse(s: &str) -> Option<ObjectKind> {
        Some(match s {
            "drv" => ObjectKind::Drv,
            "source" => ObjectKind::Source,
            "output" => ObjectKind::Output,
            _ => return None,
        })
    }
}

/// A store object's identity without its directory: hash part and name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath {
    hash: [u8; 20],
    name: Box<str>,
}

impl StorePath {
    /// The path of an object of `kind` with inner digest `digest` named
    /// `name` in `store`.
    pub fn compute(
        store: &StoreDir,
        kind: ObjectKind,
        digest: &[u8; 32],
        name: &str,
    ) -> Result<StorePath, StorePathError> {
        validate_name(name)?;
        let fingerprint = format!(
            "cbuild-store-path-v1:{}:{}:{}:{}",
            kind.as_str(),
            super::hash::hex(digest),
            store.as_str(),
            name
        );
        let full = blake3::hash(fingerprint.as_bytes());
        let mut hash = [0u8; 20];
        hash.copy_from_slice(&full.as_bytes()[..20]);
        Ok(StorePath {
            hash,
            name: name.into(),
        })
    }

    /// The 32-character hash part.
    pub fn hash_part(&self) -> String {
        base32::encode(&self.hash)
    }

    /// The name after the hash part.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `<hash>-<name>`: the file name in the store directory.
    pub fn base_name(&self) -> String {
        format!("{}-{}", self.hash_part(), self.name)
    }

    /// Parses `<hash>-<name>`.
    pub fn from_base_name(base: &str) -> Option<StorePath> {
        let (hash, name) = (base.get(..HASH_LEN)?, base.get(HASH_LEN + 1..)?);
        if base.as_bytes().get(HASH_LEN) != Some(&b'-') || validate_name(name).is_err() {
            return None;
        }
        let bytes = base32::decode(hash)?;
        Some(StorePath {
            hash: bytes.try_into().ok()?,
            name: name.into(),
        })
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorePath({})", self.base_name())
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base_name())
    }
}

/// Checks a store object name: `[A-Za-z0-9+._-]`, 1 to 211 characters, not
/// starting with `.`.
pub fn validate_name(name: &str) -> Result<(), StorePathError> {
    let bad = |reason| {
        Err(StorePathError::BadName {
            name: name.into(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("it is longer than 211 characters");
    }
    if name.starts_with('.') {
        return bad("it starts with `.`");
    }
    if !name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'.' | b'_' | b'-'))
    {
        return bad("only letters, digits and `+ . _ -` are allowed");
    }
    Ok(())
}

/// The absolute directory store objects live in (`<root>/store`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreDir(String);

impl StoreDir {
    /// A store directory; `dir` must be absolute and normalised (the caller
    /// makes it so), without a trailing slash.
    pub fn new(dir: impl Into<String>) -> StoreDir {
        let mut d: String = dir.into();
        while d.len() > 1 && d.ends_with('/') {
            d.pop();
        }
        StoreDir(d)
    }

    /// The directory.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The full path of `p` in this store.
    pub fn path_of(&self, p: &StorePath) -> String {
        format!("{}/{}", self.0, p.base_name())
    }

    /// Parses a full path in this store (a path inside an object, such as
    /// `<store>/<hash>-x/bin/x`, is not a store path).
    pub fn parse(&self, path: &str) -> Result<StorePath, StorePathError> {
        let err = |reason| StorePathError::NotInStore {
            path: path.into(),
            store: self.0.clone(),
            reason,
        };
        let rest = path
            .strip_prefix(&self.0)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| err("it is not under the store directory"))?;
        if rest.contains('/') {
            return Err(err("it names a file inside a store object"));
        }
        StorePath::from_base_name(rest).ok_or_else(|| err("it is not `<32-char hash>-<name>`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_depend_on_kind_digest_store_and_name() {
        let a = StoreDir::new("/s/store");
        let b = StoreDir::new("/t/store");
        let d = [7u8; 32];
        let p = StorePath::compute(&a, ObjectKind::Source, &d, "x").unwrap();
        assert_eq!(p.hash_part().len(), 32);
        for other in [
            StorePath::compute(&b, ObjectKind::Source, &d, "x").unwrap(),
            StorePath::compute(&a, ObjectKind::Drv, &d, "x").unwrap(),
            StorePath::compute(&a, ObjectKind::Source, &[8; 32], "x").unwrap(),
        ] {
            assert_ne!(p.hash_part(), other.hash_part());
        }
        assert_eq!(a.parse(&a.path_of(&p)).unwrap(), p);
    }

    #[test]
    fn names_and_paths_are_validated() {
        for bad in ["", ".x", "a/b", "a b", &"x".repeat(212)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        validate_name(&"x".repeat(211)).unwrap();
        let s = StoreDir::new("/s/store/");
        assert_eq!(s.as_str(), "/s/store");
        assert!(s.parse("/s/store/short-x").is_err());
        assert!(
            s.parse("/elsewhere/0000000000000000000000000000000a-x")
                .is_err()
        );
        assert!(
            s.parse("/s/store/00000000000000000000000000000000-x/bin")
                .is_err()
        );
        assert!(
            s.parse("/s/store/0000000000000000000000000000000e-x")
                .is_err()
        );
        assert!(
            s.parse("/s/store/00000000000000000000000000000000-x")
                .is_ok()
        );
    }
}
