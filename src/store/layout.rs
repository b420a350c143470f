//! What makes a directory a store, and what in it cbuild may delete.
//!
//! A store root holds the marker file [`MARKER`], written first when a
//! store is made, so that every later command can tell a store from any
//! other directory before writing or deleting anything there. A store is
//! made only in a new or empty directory: `--store /` or
//! `CBUILD_STORE=$HOME` is refused rather than filled (or, worse, cleaned).
//! Stores made before the marker existed are recognised by their database
//! and `store/` folder, and get the marker the next time a command writes.
//! In `tmp/`, only the names cbuild gives its scratch space
//! ([`is_scratch_name`]) are ever removed.

use std::path::Path;

use super::StoreError;

/// The marker file at the root of every store.
pub const MARKER: &str = "cbuild-store";

/// What the marker says, for whoever finds it.
const MARKER_TEXT: &str = "This directory is a cbuild store (see cbuild's store-format.md).\n\
cbuild writes and deletes here only what it made.\n";

/// What a would-be store root is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// A store: it holds the marker.
    Store,
    /// A store made before the marker: `db.sqlite` and `store/`, no marker.
    Unmarked,
    /// Nothing there yet.
    Missing,
    /// An empty directory.
    Empty,
    /// A directory with other things in it: never a store.
    Foreign,
}

/// Looks at `root` without changing anything.
pub fn classify(root: &Path) -> Result<Layout, StoreError> {
    let meta = match std::fs::metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Layout::Missing),
        Err(source) => {
            return Err(StoreError::Read {
                path: root.to_path_buf(),
                source,
            });
        }
    };
    if !meta.is_dir() {
        return Err(StoreError::NotADirectory {
            path: root.to_path_buf(),
        });
    }
    if std::fs::symlink_metadata(root.join(MARKER)).is_ok_and(|m| m.is_file()) {
        return Ok(Layout::Store);
    }
    let db = std::fs::symlink_metadata(root.join("db.sqlite")).is_ok_and(|m| m.is_file());
    let objects = std::fs::symlink_metadata(root.join("store")).is_ok_and(|m| m.is_dir());
    if db && objects {
        return Ok(Layout::Unmarked);
    }
    let mut entries = std::fs::read_dir(root).map_err(|source| StoreError::Read {
        path: root.to_path_buf(),
        source,
    })?;
    if entries.next().is_none() {
        return Ok(Layout::Empty);
    }
    // Another process may be making this store right now: it writes the
    // marker before anything else, so whatever of its work the listing saw
    // came after a marker that is there by now (the first look may have
    // come before it: one in six runs of four concurrent first `eval`s).
    if std::fs::symlink_metadata(root.join(MARKER)).is_ok_and(|m| m.is_file()) {
        return Ok(Layout::Store);
    }
    Ok(Layout::Foreign)
}

/// Makes `root` ready to be opened as a store for writing: creates it and
/// its marker when it is new or empty, marks an unmarked store, and refuses
/// a directory that holds anything else.
pub fn prepare(root: &Path) -> Result<(), StoreError> {
    match classify(root)? {
        Layout::Store => Ok(()),
        Layout::Foreign => Err(StoreError::NotAStore {
            path: root.to_path_buf(),
        }),
        Layout::Missing | Layout::Empty | Layout::Unmarked => {
            std::fs::create_dir_all(root).map_err(|source| StoreError::Create {
                path: root.to_path_buf(),
                source,
            })?;
            write_marker(root)
        }
    }
}

/// Writes the marker, first of all in the directory and in one step
/// (`O_EXCL`): a second process making the same store at once sees the
/// marker, or an empty directory, never a directory with other things and
/// no marker. A marker already there (the other process's) is as good.
fn write_marker(root: &Path) -> Result<(), StoreError> {
    use std::io::Write;
    let path = root.join(MARKER);
    let err = |source| StoreError::Create {
        path: path.clone(),
        source,
    };
    match std::fs::File::create_new(&path) {
        Ok(mut f) => f.write_all(MARKER_TEXT.as_bytes()).map_err(err),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(err(e)),
    }
}

/// Whether `name`, an entry of a store's `tmp/`, is one cbuild makes
/// there: `<pid>-<n>` (a process's scratch directory), and that with
/// `.lock` or `.roots`. Nothing else in `tmp/` is ever removed.
pub fn is_scratch_name(name: &str) -> bool {
    let stem = name
        .strip_suffix(".lock")
        .or_else(|| name.strip_suffix(".roots"))
        .unwrap_or(name);
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    stem.split_once('-')
        .is_some_and(|(pid, n)| digits(pid) && digits(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_new_empty_and_marked_directories_are_stores() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("s");
        assert_eq!(classify(&root).unwrap(), Layout::Missing);
        prepare(&root).unwrap();
        assert_eq!(classify(&root).unwrap(), Layout::Store);
        let home = d.path().join("home");
        std::fs::create_dir_all(home.join("tmp")).unwrap();
        std::fs::write(home.join("tmp/notes"), "mine").unwrap();
        assert_eq!(classify(&home).unwrap(), Layout::Foreign);
        assert!(matches!(prepare(&home), Err(StoreError::NotAStore { .. })));
        assert_eq!(std::fs::read_dir(&home).unwrap().count(), 1);
        let old = d.path().join("old");
        std::fs::create_dir_all(old.join("store")).unwrap();
        std::fs::write(old.join("db.sqlite"), "").unwrap();
        assert_eq!(classify(&old).unwrap(), Layout::Unmarked);
        prepare(&old).unwrap();
        assert_eq!(classify(&old).unwrap(), Layout::Store);
    }

    #[test]
    fn scratch_names_are_cbuild_s_own_only() {
        for ok in ["123-0", "123-0.lock", "9-12.roots"] {
            assert!(is_scratch_name(ok), "{ok}");
        }
        for no in [
            "notes",
            "123",
            "x-1",
            "1-x.lock",
            "123-0.txt",
            ".lock",
            "-1",
            "1-",
        ] {
            assert!(!is_scratch_name(no), "{no}");
        }
    }
}
