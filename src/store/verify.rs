//! `cbuild store verify`: every registered object re-hashed (in parallel)
//! against its recorded tree digest and size, its modes and mtimes checked
//! against the store's normal form, every `.drv` against the database's
//! copy, and the database itself (`PRAGMA integrity_check` and
//! `foreign_key_check`). Paths in `store/` that are not registered are
//! garbage (a crash's leftovers), reported and left for `gc`. A `gc`
//! running meanwhile raises no alarm: what it collects is unregistered
//! before it is touched, and a finding about an object no longer
//! registered is dropped.
//!
//! Repairs that need no build live here: a `.drv` file is written again
//! from the database, modes and mtimes are set again. Objects whose content
//! is wrong are rebuilt by the build layer (`crate::build::repair`).

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use rayon::prelude::*;

use super::{STORE_MTIME, Store, StoreError, drv_tree_digest, make_writable_recursive};
use crate::derivation::{DrvHash, ObjectKind, StorePath};

/// What is wrong with an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// Registered, but nothing is at its path.
    Missing,
    /// Its content hashes to another tree digest (or size).
    Content,
    /// Its files are as recorded, but a mode or mtime is not the store's.
    Metadata,
    /// A `.drv` whose file or database record does not match its hash.
    Derivation,
}

impl Problem {
    /// The word reports use.
    pub fn as_str(self) -> &'static str {
        match self {
            Problem::Missing => "missing",
            Problem::Content => "content differs",
            Problem::Metadata => "modes or mtimes",
            Problem::Derivation => "derivation",
        }
    }
}

/// One object that does not verify.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The object (base name).
    pub object: String,
    /// Its kind.
    pub kind: ObjectKind,
    /// What is wrong.
    pub problem: Problem,
    /// The recorded digest (hex) and size.
    pub expected: String,
    /// What is on disk (hex digest and size), where it could be read.
    pub actual: String,
    /// More, in words (the first file whose mode is wrong, ...).
    pub detail: String,
}

/// What a verification found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Objects checked.
    pub checked: usize,
    /// Bytes hashed.
    pub bytes: u64,
    /// Objects that do not verify.
    pub failures: Vec<Failure>,
    /// Unregistered entries of `store/`.
    pub garbage: Vec<String>,
    /// What the database's own checks reported.
    pub database: Vec<String>,
}

/// Verifies every registered object of `store`.
pub fn verify(store: &Store) -> Result<Report, StoreError> {
    let mut report = Report {
        database: store.db().integrity()?,
        ..Report::default()
    };
    let graph = store.db().graph()?;
    let drvs: HashMap<String, (DrvHash, Vec<u8>)> = store.db().derivation_records()?;
    let store_dir = Path::new(store.dir().as_str());
    let results: Vec<(u64, Option<Failure>)> = graph
        .objects
        .par_iter()
        .map(|o| check_object(store_dir, o, &drvs))
        .collect();
    report.checked = results.len();
    for (bytes, f) in results {
        report.bytes += bytes;
        // A collection unregisters an object (and commits) before it
        // removes a byte of it: one that is no longer registered was being
        // collected while it was read, and is nothing to report.
        if let Some(f) = f
            && store.db().is_valid(&f.object)?
        {
            report.failures.push(f);
        }
    }
    report.failures.sort_by(|a, b| a.object.cmp(&b.object));
    report.garbage = unregistered(store)?;
    Ok(report)
}

/// Checks one registered object: its bytes read again against its
/// digest and size, its modes and mtimes; a `.drv` against its record.
/// Returns the bytes hashed and what is wrong, if anything.
fn check_object(
    store_dir: &Path,
    o: &super::ObjectInfo,
    drvs: &HashMap<String, (DrvHash, Vec<u8>)>,
) -> (u64, Option<Failure>) {
    let path = store_dir.join(&o.path);
    let expected = format!("{} ({} bytes)", o.digest.to_hex(), o.size);
    let fail = |problem, actual: String, detail: String| Failure {
        object: o.path.clone(),
        kind: o.kind,
        problem,
        expected: expected.clone(),
        actual,
        detail,
    };
    if o.kind == ObjectKind::Drv {
        return (
            0,
            check_drv(&path, o, drvs.get(&o.path)).map(|(p, a, d)| fail(p, a, d)),
        );
    }
    if std::fs::symlink_metadata(&path).is_err() {
        return (
            0,
            Some(fail(Problem::Missing, "nothing".into(), String::new())),
        );
    }
    match super::tree_hash::hash_tree(&path) {
        Err(e) => (
            0,
            Some(fail(Problem::Content, "unreadable".into(), e.to_string())),
        ),
        Ok(node) => {
            let (digest, size) = (node.tree_digest(), node.size());
            if digest != o.digest || size != o.size {
                let actual = format!("{} ({size} bytes)", digest.to_hex());
                let detail = first_changed_file(&path);
                return (size, Some(fail(Problem::Content, actual, detail)));
            }
            let bad = metadata_problem(&path);
            (
                size,
                bad.map(|d| fail(Problem::Metadata, expected.clone(), d)),
            )
        }
    }
}

/// Checks the objects named by `bases` (outputs and sources; `.drv`s are
/// skipped) the way `verify` does, in parallel: what `realise
/// --check-outputs` runs over what it hands back. Objects no longer
/// registered are skipped.
pub fn check_objects(store: &Store, bases: &[String]) -> Result<Vec<Failure>, StoreError> {
    let mut objects = Vec::new();
    for b in bases {
        if let Some(o) = store.db().object(b)?
            && o.kind != ObjectKind::Drv
        {
            objects.push(o);
        }
    }
    let store_dir = Path::new(store.dir().as_str());
    let none = HashMap::new();
    let mut failures: Vec<Failure> = objects
        .par_iter()
        .filter_map(|o| check_object(store_dir, o, &none).1)
        .collect();
    failures.sort_by(|a, b| a.object.cmp(&b.object));
    Ok(failures)
}

/// A `.drv` object: its database record must hash to its name's digest;
/// its file, where written, must be that record, read-only, mtime 1.
fn check_drv(
    path: &Path,
    o: &super::ObjectInfo,
    record: Option<&(DrvHash, Vec<u8>)>,
) -> Option<(Problem, String, String)> {
    let Some((hash, content)) = record else {
        return Some((
            Problem::Derivation,
            "no record".into(),
            "the database has no content for this .drv".into(),
        ));
    };
    let actual = DrvHash(*blake3::hash(content).as_bytes());
    if actual != *hash || drv_tree_digest(hash, content.len()) != o.digest {
        return Some((
            Problem::Derivation,
            actual.to_hex(),
            "the database's copy does not hash to what was registered".into(),
        ));
    }
    match std::fs::read(path) {
        // Not written yet: the database is the source of truth.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some((Problem::Derivation, "unreadable".into(), e.to_string())),
        Ok(bytes) if bytes != *content => Some((
            Problem::Derivation,
            blake3::hash(&bytes).to_hex().to_string(),
            "the file differs from the database's copy".into(),
        )),
        Ok(_) => metadata_problem(path).map(|d| (Problem::Metadata, o.digest.to_hex(), d)),
    }
}

/// The first file, symlink or directory whose mode or mtime is not the
/// store's (files 0444 or 0555, directories 0555, mtime 1), described.
fn metadata_problem(root: &Path) -> Option<String> {
    for e in walkdir::WalkDir::new(root)
        .follow_links(false)
        .follow_root_links(false)
    {
        let e = match e {
            Ok(e) => e,
            Err(err) => return Some(err.to_string()),
        };
        let Ok(m) = e.path().symlink_metadata() else {
            return Some(format!("{} cannot be read", e.path().display()));
        };
        let mode = m.permissions().mode() & 0o7777;
        let ok_mode = if m.is_dir() {
            mode == 0o555
        } else if m.is_file() {
            mode == 0o444 || mode == 0o555
        } else {
            true
        };
        if !ok_mode {
            return Some(format!("{} has mode {mode:04o}", e.path().display()));
        }
        if m.mtime() != STORE_MTIME {
            return Some(format!("{} has mtime {}", e.path().display(), m.mtime()));
        }
        if m.is_file() && m.nlink() > 1 && m.mode() & 0o222 != 0 {
            return Some(format!("{} is a writable hard link", e.path().display()));
        }
    }
    None
}

/// Names the first file whose content is not what its neighbours'
/// normal form suggests: the one modified most recently (tampering
/// changes mtimes), else the object itself.
fn first_changed_file(root: &Path) -> String {
    walkdir::WalkDir::new(root)
        .follow_links(false)
        .follow_root_links(false)
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e.path().symlink_metadata().ok()?.mtime(), e)))
        .filter(|(t, _)| *t != STORE_MTIME)
        .max_by_key(|(t, _)| *t)
        .map(|(_, e)| format!("{} was changed", e.path().display()))
        .unwrap_or_default()
}

/// Entries of `store/` that are not registered objects.
fn unregistered(store: &Store) -> Result<Vec<String>, StoreError> {
    let dir = Path::new(store.dir().as_str());
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        // A store not made yet (opened for reading, it stays so) has none.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && store.is_read_only() => {
            return Ok(out);
        }
        Err(source) => {
            return Err(StoreError::Read {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if StorePath::from_base_name(&name).is_none() || !store.db().is_valid(&name)? {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// Repairs what needs no build: a `.drv` file is written again from the
/// database; modes and mtimes are set again (then the object is hashed
/// again, and kept only if it matches). Returns what it could not repair.
pub fn repair_in_place(store: &Store, failures: &[Failure]) -> Result<Vec<Failure>, StoreError> {
    let mut left = Vec::new();
    for f in failures {
        let Some(p) = StorePath::from_base_name(&f.object) else {
            left.push(f.clone());
            continue;
        };
        let path = store.real_path(&p);
        let _lock = super::lock_object(store.root(), &p)?;
        match (f.kind, f.problem) {
            (ObjectKind::Drv, _) => {
                make_writable_recursive(&path);
                let _ = std::fs::remove_file(&path);
                store.materialize_drv(&p)?;
            }
            (_, Problem::Metadata) => {
                normalise_modes(&path)?;
                let node = super::tree_hash::hash_tree(&path)?;
                if node.tree_digest().to_hex() != f.expected.split(' ').next().unwrap_or("") {
                    left.push(f.clone());
                }
            }
            _ => left.push(f.clone()),
        }
    }
    Ok(left)
}

/// Sets the store's modes (keeping each file's execute bit) and mtime on
/// every entry under `root`, deepest first.
pub fn normalise_modes(root: &Path) -> Result<(), StoreError> {
    // chmod and utimensat need no write permission: the execute bits are
    // read as they are.
    let entries: Vec<walkdir::DirEntry> = walkdir::WalkDir::new(root)
        .follow_links(false)
        .follow_root_links(false)
        .contents_first(true)
        .into_iter()
        .flatten()
        .collect();
    for e in entries {
        let ft = e.file_type();
        if ft.is_dir() {
            std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o555)).map_err(
                |source| StoreError::Write {
                    path: e.path().to_path_buf(),
                    source,
                },
            )?;
            super::set_mtime(e.path())?;
        } else if ft.is_file() {
            let exec = e
                .metadata()
                .map(|m| m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false);
            super::set_readonly(e.path(), exec)?;
        } else {
            super::set_mtime(e.path())?;
        }
    }
    Ok(())
}
