//! The store: a directory of immutable, content-addressed objects and the
//! database that says which of them are valid.
//!
//! Layout under the store root (see `store-format.md`): `store/` (objects),
//! `db.sqlite` (WAL), `logs/`, `roots/`, `tmp/`, `locks/`. An object becomes
//! valid only once its files are complete, synced, renamed into `store/` and
//! registered in one transaction; a crash at any point leaves either nothing
//! or a valid object, and leftovers in `tmp/` are removed by the next process
//! that opens the store.

pub mod db;
pub mod gc;
pub mod import;
pub mod layout;
pub mod outputs;
pub mod roots;
pub mod tree_hash;
pub mod verify;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::derivation::{Derivation, DrvHash, ObjectKind, StoreDir, StorePath, StorePathError};
pub use db::{Db, NewObject, ObjectInfo};

/// Everything that can go wrong in the store, naming the path concerned.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store root exists and is not a directory.
    #[error("the store root {path} is not a directory")]
    NotADirectory {
        /// The root.
        path: PathBuf,
    },
    /// A source file no one may read.
    #[error(
        "{path} has no read permission for anyone (mode 000): it is not copied into the store, \
         where every file is readable by all; make it readable, or leave it out of the source \
         (`exclude`)"
    )]
    UnreadableSource {
        /// The file.
        path: PathBuf,
    },
    /// The database's path holds something else than a file.
    #[error(
        "the store database {path} is {kind}, not a database file: cbuild leaves it alone; remove or move it to start the store with an empty database"
    )]
    DbNotAFile {
        /// The path.
        path: PathBuf,
        /// What is there.
        kind: &'static str,
    },
    /// The store root is a directory with other things in it.
    #[error(
        "{path} is not a cbuild store: it is not empty and has no `{marker}` file; a store is \
         made only in a new or empty directory (choose one with --store or CBUILD_STORE)",
        marker = layout::MARKER
    )]
    NotAStore {
        /// The root.
        path: PathBuf,
    },
    /// A store directory could not be created or written.
    #[error("cannot create or write the store directory {path}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The database could not be opened.
    #[error("cannot open the store database {path}")]
    OpenDb {
        /// The database file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// The database file is not a (healthy) SQLite database.
    #[error("the store database {path} is corrupt or not a cbuild database")]
    CorruptDb {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer cbuild.
    #[error(
        "the store database {path} has schema version {found}; this cbuild knows versions up to {known}"
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// Its version.
        found: usize,
        /// Ours.
        known: usize,
    },
    /// The store's file system cannot be written.
    #[error(
        "the store {root} cannot be written (a read-only file system, or not yours): {what} \
         needs to write to it; queries (path-info, roots, verify, log, show-derivation) work"
    )]
    ReadOnly {
        /// The store root.
        root: PathBuf,
        /// What wanted to write.
        what: String,
    },
    /// The database fails its own integrity check: nothing is deleted.
    #[error(
        "the store database {path} fails its integrity check ({first}); `cbuild gc` deletes \
         nothing until `cbuild store verify` passes"
    )]
    Unsound {
        /// The database file.
        path: PathBuf,
        /// The first problem SQLite reported.
        first: String,
    },
    /// A database operation failed.
    #[error("store database error in {path}")]
    Db {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// Reading a file failed.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Writing a file failed.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A device, fifo or socket in a tree to import.
    #[error(
        "{path} is a device, fifo or socket; only files, directories and symlinks can be stored"
    )]
    Unsupported {
        /// The file.
        path: PathBuf,
    },
    /// A file changed while it was imported.
    #[error("{path} changed while it was being imported; try again")]
    Changed {
        /// The file.
        path: PathBuf,
    },
    /// The store root is not valid UTF-8 (store paths are strings).
    #[error("the store root {path} is not valid UTF-8; choose another directory")]
    NotUtf8 {
        /// The root.
        path: PathBuf,
    },
    /// An `exclude` pattern is not valid gitignore syntax.
    #[error("invalid exclude pattern `{pattern}`: {reason}")]
    BadPattern {
        /// The pattern.
        pattern: String,
        /// What is wrong.
        reason: String,
    },
    /// Renaming a finished object into the store failed.
    #[error("cannot move {from} to {to}")]
    Rename {
        /// The scratch path.
        from: PathBuf,
        /// The store path.
        to: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A path to import does not exist.
    #[error("{path} does not exist")]
    NoSuchPath {
        /// The path.
        path: PathBuf,
    },
    /// An object refers to one that is not registered.
    #[error("store object {object} refers to {reference}, which is not in the store")]
    MissingReference {
        /// The referrer.
        object: String,
        /// The missing reference.
        reference: String,
    },
    /// A path is not a valid store path.
    #[error(transparent)]
    Path(#[from] StorePathError),
    /// A path names no registered object.
    #[error("{path} is not a valid object in the store {store}")]
    NotValid {
        /// The path.
        path: String,
        /// The store directory.
        store: String,
    },
    /// A `.drv` file in the store does not parse.
    #[error("the derivation {path} is corrupt: {source}")]
    CorruptDrv {
        /// The `.drv` path.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: crate::derivation::canonical::ParseError,
    },
}

impl StoreError {
    /// Whether this is the store's file system refusing a write: read-only,
    /// or not writable by the caller.
    pub fn is_read_only(&self) -> bool {
        let io = match self {
            StoreError::Create { source, .. } | StoreError::Write { source, .. } => source,
            StoreError::OpenDb { source, .. } | StoreError::Db { source, .. } => {
                return matches!(
                    source.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen)
                );
            }
            StoreError::ReadOnly { .. } => return true,
            _ => return false,
        };
        matches!(
            io.raw_os_error(),
            Some(nix::libc::EROFS | nix::libc::EACCES | nix::libc::EPERM)
        )
    }
}

/// An open store.
pub struct Store {
    root: PathBuf,
    dir: StoreDir,
    db: Db,
    /// This process's scratch directory under `tmp/`, held by a lock
    /// (outside the store when it is read-only).
    scratch: PathBuf,
    _scratch_lock: Option<File>,
    counter: AtomicU64,
    /// This process's temporary GC roots (`tmp/<scratch>.roots`).
    temp_roots: roots::TempRoots,
    /// Set when the store's file system cannot be written: queries only.
    read_only: Option<tempfile::TempDir>,
}

/// The store root when none is given: `$XDG_DATA_HOME/cbuild`, else
/// `~/.local/share/cbuild`.
pub fn default_root() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("cbuild");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from);
    home.join(".local/share/cbuild")
}

impl Store {
    /// Opens the store at `root`, creating it on first use.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let root = absolute(root);
        layout::prepare(&root)?;
        Store::open_existing(&root)
    }

    /// Opens the store at `root`, known to be one, creating what is
    /// missing of its layout.
    fn open_existing(root: &Path) -> Result<Store, StoreError> {
        let root = root.to_path_buf();
        for sub in ["", "store", "logs", "roots", "tmp", "locks"] {
            let p = root.join(sub);
            std::fs::create_dir_all(&p).map_err(|source| StoreError::Create {
                path: p.clone(),
                source,
            })?;
            let m = std::fs::metadata(&p).map_err(|source| StoreError::Create {
                path: p.clone(),
                source,
            })?;
            if !m.is_dir() {
                return Err(StoreError::NotADirectory { path: p });
            }
        }
        let dir = store_dir_of(&root)?;
        let db = Db::open(&root.join("db.sqlite"))?;
        clean_stale_scratch(&root.join("tmp"));
        let (scratch, lock) = make_scratch(&root.join("tmp"))?;
        let temp_roots = roots::TempRoots::new(&root, &scratch);
        Ok(Store {
            root,
            dir,
            db,
            scratch,
            _scratch_lock: Some(lock),
            counter: AtomicU64::new(0),
            temp_roots,
            read_only: None,
        })
    }

    /// Opens the store at `root` for queries: as [`Store::open`] does, or,
    /// when its file system cannot be written (mounted read-only, or not
    /// the caller's), read-only: the database opened read-only and scratch
    /// space outside the store. Commands that write then fail with
    /// [`StoreError::ReadOnly`].
    ///
    /// Nothing is made where there is no store yet: a new or empty
    /// directory reads as an empty store (an empty database in temporary
    /// space outside it), and a
    /// directory that is not a store is refused.
    pub fn open_for_reading(root: &Path) -> Result<Store, StoreError> {
        let root = absolute(root);
        let empty = match layout::classify(&root)? {
            layout::Layout::Foreign => return Err(StoreError::NotAStore { path: root }),
            layout::Layout::Missing | layout::Layout::Empty => true,
            layout::Layout::Store | layout::Layout::Unmarked => false,
        };
        if !empty {
            match Store::open_existing(&root) {
                Err(e) if e.is_read_only() => {}
                other => return other,
            }
        }
        let dir = store_dir_of(&root)?;
        let tmp = tempfile::Builder::new()
            .prefix("cbuild-read-only-")
            .tempdir()
            .map_err(|source| StoreError::Create {
                path: std::env::temp_dir(),
                source,
            })?;
        let db = if empty {
            // An empty database of its own, gone with the scratch space.
            Db::open(&tmp.path().join("empty.sqlite"))?
        } else {
            Db::open_read_only(&root.join("db.sqlite"))?
        };
        let scratch = tmp.path().join("scratch");
        std::fs::create_dir_all(&scratch).map_err(|source| StoreError::Create {
            path: scratch.clone(),
            source,
        })?;
        let temp_roots = roots::TempRoots::new(&root, &scratch);
        Ok(Store {
            root,
            dir,
            db,
            scratch,
            _scratch_lock: None,
            counter: AtomicU64::new(0),
            temp_roots,
            read_only: Some(tmp),
        })
    }

    /// Fails with [`StoreError::ReadOnly`] for a store opened read-only.
    pub fn require_writable(&self, what: &str) -> Result<(), StoreError> {
        if self.read_only.is_some() {
            return Err(StoreError::ReadOnly {
                root: self.root.clone(),
                what: what.to_string(),
            });
        }
        Ok(())
    }

    /// Whether the store was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.read_only.is_some()
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The store directory (`<root>/store`).
    pub fn dir(&self) -> &StoreDir {
        &self.dir
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The database, for writing.
    pub fn db_mut(&mut self) -> &mut Db {
        &mut self.db
    }

    /// The file system path of an object.
    pub fn real_path(&self, p: &StorePath) -> PathBuf {
        PathBuf::from(self.dir.path_of(p))
    }

    /// This process's scratch directory.
    pub fn scratch_dir(&self) -> &Path {
        &self.scratch
    }

    /// A fresh path under this process's scratch directory.
    pub fn scratch_path(&self, hint: &str) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.scratch.join(format!("{n}-{hint}"))
    }

    /// Whether `p` is registered.
    pub fn is_valid(&self, p: &StorePath) -> Result<bool, StoreError> {
        self.db.is_valid(&p.base_name())
    }

    /// Parses a full path and checks that it is a registered object.
    pub fn parse_valid(&self, path: &str) -> Result<(StorePath, ObjectInfo), StoreError> {
        let p = self.dir.parse(path)?;
        match self.db.object(&p.base_name())? {
            Some(info) => Ok((p, info)),
            None => Err(StoreError::NotValid {
                path: path.into(),
                store: self.dir.as_str().into(),
            }),
        }
    }

    /// `roots` and every object they refer to, transitively, as base names.
    pub fn closure(
        &self,
        roots: impl IntoIterator<Item = String>,
    ) -> Result<std::collections::BTreeSet<String>, StoreError> {
        self.closure_with(roots, &std::collections::HashMap::new())
    }

    /// [`Store::closure`], where `unregistered` gives the references of
    /// objects that are in place but not registered yet (a realise's
    /// builds between placing and registering them).
    pub fn closure_with(
        &self,
        roots: impl IntoIterator<Item = String>,
        unregistered: &std::collections::HashMap<String, Vec<String>>,
    ) -> Result<std::collections::BTreeSet<String>, StoreError> {
        let mut seen = std::collections::BTreeSet::new();
        let mut todo: Vec<String> = roots.into_iter().collect();
        // Objects placed but not registered yet are followed through
        // `unregistered`; the registered ones are handed to the database in
        // batches, whose closure is complete (a registered object's
        // references are registered before it).
        while !todo.is_empty() {
            let mut registered = Vec::new();
            while let Some(b) = todo.pop() {
                if !seen.insert(b.clone()) {
                    continue;
                }
                match unregistered.get(&b) {
                    Some(refs) => todo.extend(refs.iter().filter(|r| !seen.contains(*r)).cloned()),
                    None => registered.push(b),
                }
            }
            seen.extend(self.db.closure_of(&registered)?);
        }
        Ok(seen)
    }

    /// Reads and parses a registered `.drv`.
    pub fn read_derivation(&self, p: &StorePath) -> Result<Derivation, StoreError> {
        let path = self.real_path(p);
        let bytes =
            self.db
                .derivation_content(&p.base_name())?
                .ok_or_else(|| StoreError::NotValid {
                    path: path.to_string_lossy().into_owned(),
                    store: self.dir.as_str().into(),
                })?;
        crate::derivation::canonical::parse(&bytes)
            .map_err(|source| StoreError::CorruptDrv { path, source })
    }

    /// Registers derivations, in order (each one's inputs before it), in
    /// one transaction: their content goes into the database, which is the
    /// source of truth. Files in `store/` are written for `materialize` only
    /// (the targets a user is shown); the others are written when a command
    /// needs them ([`Store::materialize_drv`]). Creating a file costs far more
    /// than a database row on some file systems (0.1 ms and more per inode
    /// here), so a 10,000-derivation evaluation must not create 10,000.
    /// Derivations already valid are skipped (their meta is refreshed when it
    /// changed).
    pub fn add_derivations(
        &mut self,
        drvs: &[PendingDrv],
        materialize: &[StorePath],
    ) -> Result<(), StoreError> {
        let bases: Vec<String> = drvs.iter().map(|d| d.path.base_name()).collect();
        self.protect(&bases)?;
        let known = self.db.derivation_metas(&bases)?;
        let mut objects = Vec::new();
        for d in drvs {
            let fresh = match known.get(&d.path.base_name()) {
                None => true,
                Some((meta, run)) if *meta != d.meta || *run != d.run_inputs => false,
                Some(_) => continue,
            };
            objects.push(NewObject {
                path: d.path.base_name(),
                kind: ObjectKind::Drv,
                digest: drv_tree_digest(&d.hash, d.bytes.len()),
                size: d.bytes.len() as u64,
                deriver: None,
                references: if fresh {
                    d.references.iter().map(StorePath::base_name).collect()
                } else {
                    Vec::new()
                },
                sandboxed: true,
                derivation: Some(db::NewDerivation {
                    hash: d.hash,
                    content: d.bytes.clone(),
                    meta: d.meta.clone(),
                    run_inputs: d.run_inputs.clone(),
                }),
            });
        }
        self.db.register(&objects, now())?;
        if self.is_read_only() {
            // Nothing is written into a store opened for reading (a new
            // one's database lives in temporary space).
            return Ok(());
        }
        // The contents are at hand: no database read per file.
        let bytes: std::collections::HashMap<&StorePath, &[u8]> =
            drvs.iter().map(|d| (&d.path, d.bytes.as_slice())).collect();
        let mut todo: Vec<(&StorePath, std::borrow::Cow<'_, [u8]>)> = Vec::new();
        for p in materialize {
            match bytes.get(p) {
                Some(b) => todo.push((p, std::borrow::Cow::Borrowed(*b))),
                None => {
                    let content = self.db.derivation_content(&p.base_name())?.ok_or_else(|| {
                        StoreError::NotValid {
                            path: self.dir.path_of(p),
                            store: self.dir.as_str().into(),
                        }
                    })?;
                    todo.push((p, std::borrow::Cow::Owned(content)));
                }
            }
        }
        self.write_drv_files(&todo)
    }

    /// Writes `.drv` files that are not in `store/` yet: each written in
    /// the scratch directory, read-only with the store mtime, then one
    /// `syncfs` for all, then each renamed into place. A file is a copy of
    /// the database's content (the source of truth): a crash before the
    /// sync can leave a short one, which [`Store::materialize_drv`] and
    /// `store verify --repair` replace, and which nothing reads instead of
    /// the database.
    fn write_drv_files(
        &self,
        todo: &[(&StorePath, std::borrow::Cow<'_, [u8]>)],
    ) -> Result<(), StoreError> {
        use rayon::prelude::*;
        use std::os::unix::fs::OpenOptionsExt;
        let missing: Vec<(PathBuf, PathBuf, &[u8])> = todo
            .iter()
            .filter_map(|(p, b)| {
                let dest = self.real_path(p);
                let present =
                    std::fs::symlink_metadata(&dest).is_ok_and(|m| m.len() == b.len() as u64);
                (!present).then(|| (self.scratch_path("drv"), dest, b.as_ref()))
            })
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let write = |(tmp, _, bytes): &(PathBuf, PathBuf, &[u8])| -> Result<(), StoreError> {
            let err = |source| StoreError::Write {
                path: tmp.clone(),
                source,
            };
            let mut f = File::options()
                .write(true)
                .create_new(true)
                .mode(0o444)
                .open(tmp)
                .map_err(err)?;
            f.write_all(bytes).map_err(err)?;
            let t = nix::sys::time::TimeSpec::new(STORE_MTIME, 0);
            nix::sys::stat::futimens(&f, &t, &t).map_err(|e| err(e.into()))
        };
        // Creating files costs far more than writing them: in parallel.
        missing.par_iter().with_min_len(256).try_for_each(write)?;
        sync_fs(self.scratch_dir())?;
        for (tmp, dest, _) in &missing {
            std::fs::rename(tmp, dest).map_err(|source| StoreError::Rename {
                from: tmp.clone(),
                to: dest.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Writes the files of the `.drv`s a command prints or was given, when
    /// they are at most [`DRV_FILES_MAX`] (a package set's are not: each
    /// file is an inode, and commands read the database).
    pub fn materialize_targets(&self, targets: &[StorePath]) -> Result<(), StoreError> {
        if targets.len() > DRV_FILES_MAX || self.is_read_only() {
            return Ok(());
        }
        let mut todo = Vec::new();
        for p in targets {
            if let Some(content) = self.db.derivation_content(&p.base_name())? {
                todo.push((p, std::borrow::Cow::Owned(content)));
            }
        }
        self.write_drv_files(&todo)
    }

    /// Writes the file of a registered `.drv` into `store/` unless it is
    /// there already: scratch file, flushed, renamed into place.
    pub fn materialize_drv(&self, p: &StorePath) -> Result<PathBuf, StoreError> {
        let dest = self.real_path(p);
        let bytes =
            self.db
                .derivation_content(&p.base_name())?
                .ok_or_else(|| StoreError::NotValid {
                    path: dest.to_string_lossy().into_owned(),
                    store: self.dir.as_str().into(),
                })?;
        self.write_drv_files(&[(p, std::borrow::Cow::Owned(bytes))])?;
        Ok(dest)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Normally empty: everything in it was renamed into the store or
        // removed. Leftovers of a crash are removed by the next process.
        if std::fs::remove_dir(&self.scratch).is_err() {
            make_writable_recursive(&self.scratch);
            let _ = std::fs::remove_dir_all(&self.scratch);
        }
        let _ = std::fs::remove_file(self.scratch.with_extension("roots"));
        let _ = std::fs::remove_file(self.scratch.with_extension("lock"));
    }
}

/// `cbuild eval` writes the `.drv` files of the targets it prints when they
/// are at most this many; beyond, only the database rows (store-format.md).
pub const DRV_FILES_MAX: usize = 100;

/// A `.drv` to write: its path, canonical bytes and hash, the objects it
/// refers to, and what the database keeps beside it.
#[derive(Clone, Debug)]
pub struct PendingDrv {
    /// Its store path.
    pub path: StorePath,
    /// The canonical bytes.
    pub bytes: Vec<u8>,
    /// BLAKE3 of the bytes.
    pub hash: DrvHash,
    /// Input derivations and sources.
    pub references: Vec<StorePath>,
    /// Meta, as JSON.
    pub meta: String,
    /// Run inputs, as a JSON array of `.drv` base names.
    pub run_inputs: String,
}

/// The tree digest of a `.drv` object: a non-executable file whose content
/// digest is the derivation hash.
pub fn drv_tree_digest(hash: &DrvHash, size: usize) -> crate::derivation::TreeDigest {
    tree_hash::Node::File {
        executable: false,
        digest: crate::derivation::FileDigest(hash.0),
        size: size as u64,
    }
    .tree_digest()
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `secs` since the epoch as an RFC 3339 UTC time (`2026-11-27T17:10:37Z`).
pub fn rfc3339(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Howard Hinnant's days-to-civil: (year, month, day) of a day number
/// since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The store directory (`<root>/store`), which must be UTF-8.
fn store_dir_of(root: &Path) -> Result<StoreDir, StoreError> {
    match root.join("store").to_str() {
        Some(s) => Ok(StoreDir::new(s.to_string())),
        None => Err(StoreError::NotUtf8 {
            path: root.to_path_buf(),
        }),
    }
}

/// `p` made absolute against the working directory, `..` and `.` resolved.
pub fn absolute(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(p)
    };
    cbuild_lang::eval::normalize(&abs)
}

/// Makes a file read-only (0444, or 0555 when executable) with the fixed
/// store mtime.
pub(crate) fn set_readonly(path: &Path, executable: bool) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = if executable { 0o555 } else { 0o444 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        StoreError::Write {
            path: path.to_path_buf(),
            source,
        }
    })?;
    set_mtime(path)
}

/// The mtime of every store file: one second after the epoch, as Nix.
pub const STORE_MTIME: i64 = 1;

/// Sets the fixed store mtime without following a symlink.
pub(crate) fn set_mtime(path: &Path) -> Result<(), StoreError> {
    set_store_mtime(path).map_err(|source| StoreError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Gives `path` (not following a symlink) the store's mtime.
pub fn set_store_mtime(path: &Path) -> std::io::Result<()> {
    use nix::sys::stat::{UtimensatFlags, utimensat};
    use nix::sys::time::TimeSpec;
    let t = TimeSpec::new(STORE_MTIME, 0);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(Into::into)
}

/// A walkdir error as the path it concerns and an IO error.
pub fn walk_error(root: &Path, e: walkdir::Error) -> (PathBuf, std::io::Error) {
    let path = e
        .path()
        .map_or_else(|| root.to_path_buf(), Path::to_path_buf);
    (
        path,
        e.into_io_error()
            .unwrap_or_else(|| std::io::Error::other("walk failed")),
    )
}

/// Flushes the file system holding `path` to disk (one `syncfs` for a whole
/// object instead of one `fsync` per file).
pub(crate) fn sync_fs(path: &Path) -> Result<(), StoreError> {
    let f = File::open(path).map_err(|source| StoreError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    nix::unistd::syncfs(&f).map_err(|e| StoreError::Write {
        path: path.to_path_buf(),
        source: e.into(),
    })
}

/// Renames `from` to `to`, as an ordinary user can: moving a directory to
/// another parent rewrites its `..` entry, which needs write permission on
/// the directory itself (only root does without). A read-only directory (a
/// store object is 0555) is made writable by its owner for the move and
/// gets its mode back where it lands, flushed before the caller registers
/// it. A plain rename is tried first: it is all root ever needs.
pub(crate) fn rename_object(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let e = match std::fs::rename(from, to) {
        Err(e) if e.raw_os_error() == Some(nix::libc::EACCES) => e,
        r => return r,
    };
    let meta = std::fs::symlink_metadata(from)?;
    let mode = meta.permissions().mode() & 0o7777;
    if !meta.is_dir() || mode & 0o200 != 0 {
        return Err(e);
    }
    std::fs::set_permissions(from, std::fs::Permissions::from_mode(mode | 0o200))?;
    let moved = std::fs::rename(from, to);
    let at = if moved.is_ok() { to } else { from };
    std::fs::set_permissions(at, std::fs::Permissions::from_mode(mode))?;
    moved?;
    File::open(to)?.sync_all()
}

/// Makes a rename in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    let f = File::open(dir).map_err(|source| StoreError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    f.sync_all().map_err(|source| StoreError::Write {
        path: dir.to_path_buf(),
        source,
    })
}

/// Creates this process's scratch directory, locked for its lifetime. The
/// lock file comes first (created exclusively, locked, and checked to still
/// be the file at its path), the directory second, so a cleaner never sees a
/// live directory without a held lock.
fn make_scratch(tmp: &Path) -> Result<(PathBuf, File), StoreError> {
    use std::os::unix::fs::MetadataExt;
    let mut n = 0u32;
    loop {
        let dir = tmp.join(format!("{}-{n}", std::process::id()));
        let lock_path = dir.with_extension("lock");
        let create_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Create { path, source }
        };
        let lock = match File::options()
            .write(true)
            .create_new(true)
            .open(&lock_path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => {
                n += 1;
                continue;
            }
            Err(source) => {
                return Err(StoreError::Create {
                    path: lock_path,
                    source,
                });
            }
        };
        lock.lock().map_err(create_err(&lock_path))?;
        // A cleaner may have taken the file between its creation and our lock.
        let ours = lock.metadata().map_err(create_err(&lock_path))?;
        match std::fs::metadata(&lock_path) {
            Ok(m) if m.ino() == ours.ino() && m.dev() == ours.dev() => {}
            _ => continue,
        }
        std::fs::create_dir(&dir).map_err(create_err(&dir))?;
        return Ok((dir, lock));
    }
}

/// Removes scratch directories whose process is gone: their lock file can be
/// locked. The lock is held while they are deleted.
fn clean_stale_scratch(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for e in entries.flatten() {
        // Only what cbuild names so: anything else there is someone else's.
        if !e.file_name().to_str().is_some_and(layout::is_scratch_name) {
            continue;
        }
        let lock_path = e.path();
        if lock_path.extension().is_none_or(|x| x != "lock") {
            // A directory (or temporary-roots file) is made after its lock
            // file and removed before it, so one without a lock file is a
            // crash's leftover.
            if !lock_path.with_extension("lock").exists() {
                make_writable_recursive(&lock_path);
                let _ = std::fs::remove_dir_all(&lock_path)
                    .or_else(|_| std::fs::remove_file(&lock_path));
            }
            continue;
        }
        let Ok(lock) = File::options().write(true).open(&lock_path) else {
            continue;
        };
        if lock.try_lock().is_err() {
            continue;
        }
        let dir = lock_path.with_extension("");
        make_writable_recursive(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_file(lock_path.with_extension("roots"));
        let _ = std::fs::remove_file(&lock_path);
    }
}

/// An exclusive lock on one store path, held while its object is moved into
/// `store/` and registered, or while a derivation is built (keyed by its
/// `.drv`), so that two processes never build or register the same thing at
/// once. It is a one-byte open-file-description lock in `locks/paths.lock`
/// at an offset derived from the hash part: one file for every path, so
/// taking a lock creates no inode (a file per path cost a file creation per
/// build). Released when the returned file is closed.
pub(crate) fn lock_object(root: &Path, p: &StorePath) -> Result<File, StoreError> {
    lock_path(root, p, &mut || Ok(()))
}

/// The lock of `p` if it is free now, else `None` (never waits).
pub(crate) fn try_lock_path(root: &Path, p: &StorePath) -> Result<Option<File>, StoreError> {
    struct Busy;
    let mut busy = None;
    match lock_path(root, p, &mut || {
        busy = Some(Busy);
        Err(StoreError::Create {
            path: root.join("locks").join("paths.lock"),
            source: std::io::Error::from(std::io::ErrorKind::WouldBlock),
        })
    }) {
        Ok(f) => Ok(Some(f)),
        Err(_) if busy.is_some() => Ok(None),
        Err(e) => Err(e),
    }
}

/// `lock_object`, calling `before_wait` first if another holder makes it
/// wait: a caller that holds locks of its own releases them there, so that
/// two processes never wait on each other.
pub fn lock_path(
    root: &Path,
    p: &StorePath,
    before_wait: &mut dyn FnMut() -> Result<(), StoreError>,
) -> Result<File, StoreError> {
    let path = root.join("locks").join("paths.lock");
    let f = File::options()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| StoreError::Create {
            path: path.clone(),
            source,
        })?;
    let h = blake3::hash(p.hash_part().as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.as_bytes()[..8]);
    // Below 2^62: a valid, positive file offset.
    let offset = (u64::from_le_bytes(first) >> 2) as i64;
    let mut fl: nix::libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = nix::libc::F_WRLCK as i16;
    fl.l_whence = nix::libc::SEEK_SET as i16;
    fl.l_start = offset;
    fl.l_len = 1;
    let err = |e: nix::errno::Errno| StoreError::Create {
        path: path.clone(),
        source: e.into(),
    };
    match nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_OFD_SETLK(&fl)) {
        Ok(_) => return Ok(f),
        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => before_wait()?,
        Err(e) => return Err(err(e)),
    }
    loop {
        match nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_OFD_SETLKW(&fl)) {
            Ok(_) => return Ok(f),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(err(e)),
        }
    }
}

/// Adds the owner write bit everywhere under `p`, so it can be deleted.
pub(crate) fn make_writable_recursive(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for e in walkdir::WalkDir::new(p)
        // A symlink at the top is an entry, never followed.
        .follow_root_links(false)
        .follow_links(false)
        .into_iter()
        .flatten()
    {
        if (e.file_type().is_dir() || e.file_type().is_file())
            && let Ok(m) = e.metadata()
        {
            // Files get no execute bit they did not have: an export output
            // is made writable this way, and a header must stay 0644 in
            // the package (it was 0755).
            let add = if e.file_type().is_dir() { 0o700 } else { 0o600 };
            let mode = m.permissions().mode() | add;
            let _ = std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(mode));
        }
    }
}
