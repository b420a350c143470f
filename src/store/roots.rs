//! Garbage-collector roots: what `cbuild gc` must keep.
//!
//! - *Link roots* (`roots/<BLAKE3 of the link path>`, a symlink to a user's
//!   link, which points into the store): `realise -o LINK` and
//!   `store add-root PATH --link LINK`. Removing the user's link (or
//!   pointing it elsewhere) makes the root stale; stale roots are removed.
//! - *Explicit roots* (`roots/<base name>`, a symlink straight into the
//!   store): `store add-root PATH`, until `store remove-root PATH`.
//! - *Export roots* (`roots/exports/<base name>`, an empty file whose mtime
//!   is the last export of that output): kept `--keep-days`.
//! - *Temporary roots* of running processes (`tmp/<scratch>.roots`, one
//!   base name per line, beside the scratch lock that shows the process is
//!   alive): everything a process relies on is listed there *before* it
//!   checks that it is valid, and [`Store::protect`] then waits out a
//!   collection in progress (a shared lock on `locks/gc.lock`, which the
//!   collector holds exclusively while it reads temporary roots and
//!   unregisters). So whatever a process found valid after protecting it
//!   stays valid while the process runs.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{Store, StoreError};
use crate::derivation::StorePath;

/// A process's temporary roots.
pub(crate) struct TempRoots {
    /// `tmp/<scratch>.roots`, opened on first use.
    file: Mutex<Option<File>>,
    path: PathBuf,
    /// `locks/gc.lock`, opened on first use.
    gc_lock: Mutex<Option<File>>,
    gc_lock_path: PathBuf,
}

impl TempRoots {
    pub(crate) fn new(root: &Path, scratch: &Path) -> TempRoots {
        TempRoots {
            file: Mutex::new(None),
            path: scratch.with_extension("roots"),
            gc_lock: Mutex::new(None),
            gc_lock_path: root.join("locks").join("gc.lock"),
        }
    }
}

/// Opens (creating) the collector's lock file.
pub(crate) fn open_gc_lock(path: &Path) -> Result<File, StoreError> {
    File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| StoreError::Create {
            path: path.to_path_buf(),
            source,
        })
}

/// What kind of root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootKind {
    /// A user's link (`-o LINK`, `add-root --link`).
    Link,
    /// `store add-root PATH`.
    Explicit,
    /// A recent export.
    Export,
    /// A running process.
    Temporary,
}

impl RootKind {
    /// The word `store roots` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            RootKind::Link => "link",
            RootKind::Explicit => "explicit",
            RootKind::Export => "export",
            RootKind::Temporary => "temporary",
        }
    }
}

/// One root.
#[derive(Clone, Debug)]
pub struct Root {
    /// Its kind.
    pub kind: RootKind,
    /// What names it: the link, `roots/<name>`, or the process's roots file.
    pub name: String,
    /// The object it keeps, as a base name.
    pub target: String,
    /// For export roots: when the output was last exported (unix seconds).
    pub time: Option<i64>,
}

impl Store {
    /// Lists `bases` as temporary roots of this process, then waits out a
    /// collection in progress: after this returns, any of them that is
    /// valid stays valid until this process ends.
    pub fn protect<I, S>(&self, bases: I) -> Result<(), StoreError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut text = String::new();
        for b in bases {
            text.push_str(b.as_ref());
            text.push('\n');
        }
        // Nothing can be collected from a store nobody can write.
        if text.is_empty() || self.is_read_only() {
            return Ok(());
        }
        let t = &self.temp_roots;
        let write_err = |source| StoreError::Write {
            path: t.path.clone(),
            source,
        };
        {
            let mut f = t.file.lock().unwrap_or_else(|e| e.into_inner());
            if f.is_none() {
                *f = Some(
                    File::options()
                        .append(true)
                        .create(true)
                        .open(&t.path)
                        .map_err(write_err)?,
                );
            }
            if let Some(f) = f.as_mut() {
                // One write of whole lines: a collector never reads half a
                // name (O_APPEND writes to a regular file are not torn).
                f.write_all(text.as_bytes()).map_err(write_err)?;
            }
        }
        let mut g = t.gc_lock.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            *g = Some(open_gc_lock(&t.gc_lock_path)?);
        }
        if let Some(g) = g.as_ref() {
            let lock_err = |source| StoreError::Create {
                path: t.gc_lock_path.clone(),
                source,
            };
            g.lock_shared().map_err(lock_err)?;
            g.unlock().map_err(lock_err)?;
        }
        Ok(())
    }

    /// Makes `path` an explicit root, or, with `link`, makes `link` a
    /// symlink to it and registers the link (as `realise -o` does).
    pub fn add_root(&self, path: &StorePath, link: Option<&Path>) -> Result<PathBuf, StoreError> {
        let target = self.dir().path_of(path);
        let write_err = |p: &Path| {
            let p = p.to_path_buf();
            move |source| StoreError::Write { path: p, source }
        };
        match link {
            Some(link) => {
                let _ = std::fs::remove_file(link);
                std::os::unix::fs::symlink(&target, link).map_err(write_err(link))?;
                self.register_link(link)?;
                Ok(link.to_path_buf())
            }
            None => {
                let r = self.root().join("roots").join(path.base_name());
                let _ = std::fs::remove_file(&r);
                std::os::unix::fs::symlink(&target, &r).map_err(write_err(&r))?;
                Ok(r)
            }
        }
    }

    /// Registers the user's symlink `link` (absolute) as a root.
    pub fn register_link(&self, link: &Path) -> Result<(), StoreError> {
        let r = self.link_root_file(link);
        let _ = std::fs::remove_file(&r);
        std::os::unix::fs::symlink(link, &r).map_err(|source| StoreError::Write {
            path: r.clone(),
            source,
        })
    }

    /// `roots/<BLAKE3 hex of the link's path>`: where a link root is.
    fn link_root_file(&self, link: &Path) -> PathBuf {
        self.root().join("roots").join(
            blake3::hash(link.as_os_str().as_encoded_bytes())
                .to_hex()
                .to_string(),
        )
    }

    /// Removes the explicit root of `path` and the link roots pointing at
    /// it through `link`; returns how many were removed.
    pub fn remove_root(&self, path: &StorePath) -> Result<usize, StoreError> {
        let (roots, _) = self.roots(false)?;
        let mut n = 0;
        for r in roots {
            if r.target != path.base_name() {
                continue;
            }
            let file = match r.kind {
                RootKind::Explicit => self.root().join("roots").join(&r.name),
                RootKind::Link => self
                    .root()
                    .join("roots")
                    .join(blake3::hash(r.name.as_bytes()).to_hex().to_string()),
                RootKind::Export => self.root().join("roots/exports").join(&r.target),
                RootKind::Temporary => continue,
            };
            if std::fs::remove_file(&file).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Records that `path` was just exported (an export root).
    pub fn add_export_root(&self, path: &StorePath) -> Result<(), StoreError> {
        let dir = self.root().join("roots/exports");
        let write_err = |p: &Path| {
            let p = p.to_path_buf();
            move |source| StoreError::Write { path: p, source }
        };
        std::fs::create_dir_all(&dir).map_err(write_err(&dir))?;
        let f = dir.join(path.base_name());
        // A new file each time: its mtime is the export's time.
        let tmp = dir.join(format!(".{}-{}", std::process::id(), path.base_name()));
        File::create(&tmp).map_err(write_err(&tmp))?;
        std::fs::rename(&tmp, &f).map_err(write_err(&f))
    }

    /// Every root (with `temporary`, those of running processes too) and
    /// the stale root files found (a link removed or pointing elsewhere,
    /// an explicit root whose object is gone), which the caller may delete.
    pub fn roots(&self, temporary: bool) -> Result<(Vec<Root>, Vec<PathBuf>), StoreError> {
        let mut roots = Vec::new();
        let mut stale = Vec::new();
        let dir = self.root().join("roots");
        let read_err = |p: &Path| {
            let p = p.to_path_buf();
            move |source| StoreError::Read { path: p, source }
        };
        let store_prefix = format!("{}/", self.dir().as_str());
        // The base name of an object a path names, if it is one.
        let base_of = |p: &Path| -> Option<String> {
            let s = p.to_str()?;
            let rest = s.strip_prefix(&store_prefix)?;
            let base = rest.split('/').next()?;
            StorePath::from_base_name(base).map(|_| base.to_string())
        };
        for e in std::fs::read_dir(&dir).map_err(read_err(&dir))?.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "exports" || name.starts_with('.') {
                continue;
            }
            let Ok(target) = std::fs::read_link(&p) else {
                stale.push(p);
                continue;
            };
            if let Some(base) = base_of(&target) {
                if self.db().is_valid(&base)? {
                    roots.push(Root {
                        kind: RootKind::Explicit,
                        name,
                        target: base,
                        time: None,
                    });
                } else {
                    stale.push(p);
                }
                continue;
            }
            // A link root: the user's link must still point into the store.
            match std::fs::read_link(&target).ok().and_then(|t| base_of(&t)) {
                Some(base) if self.db().is_valid(&base)? => roots.push(Root {
                    kind: RootKind::Link,
                    name: target.to_string_lossy().into_owned(),
                    target: base,
                    time: None,
                }),
                _ => stale.push(p),
            }
        }
        let exports = dir.join("exports");
        if let Ok(entries) = std::fs::read_dir(&exports) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') || StorePath::from_base_name(&name).is_none() {
                    continue;
                }
                let time = e
                    .metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs() as i64);
                if self.db().is_valid(&name)? {
                    roots.push(Root {
                        kind: RootKind::Export,
                        name: format!("roots/exports/{name}"),
                        target: name,
                        time,
                    });
                } else {
                    stale.push(e.path());
                }
            }
        }
        if temporary {
            for (file, names) in temporary_roots(&self.root().join("tmp"))? {
                for target in names {
                    roots.push(Root {
                        kind: RootKind::Temporary,
                        name: file.to_string_lossy().into_owned(),
                        target,
                        time: None,
                    });
                }
            }
        }
        roots.sort_by(|a, b| (a.kind as u8, &a.name).cmp(&(b.kind as u8, &b.name)));
        Ok((roots, stale))
    }
}

/// The temporary roots of running processes: each `tmp/*.roots` file whose
/// scratch lock is held, with the names it lists.
pub(crate) fn temporary_roots(tmp: &Path) -> Result<Vec<(PathBuf, BTreeSet<String>)>, StoreError> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return Ok(out);
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "roots") {
            continue;
        }
        let lock = p.with_extension("lock");
        let alive = match File::options().write(true).open(&lock) {
            // Held by its process: alive. Free: the process is gone.
            Ok(f) => match f.try_lock() {
                Ok(()) => false,
                Err(_) => true,
            },
            Err(_) => false,
        };
        if !alive {
            continue;
        }
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(StoreError::Read { path: p, source }),
        };
        // A line not ending in a newline is being written: its writer then
        // waits for the collector's lock, and checks validity after it.
        let names: BTreeSet<String> = text
            .split_inclusive('\n')
            .filter_map(|l| l.strip_suffix('\n'))
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        out.push((p, names));
    }
    Ok(out)
}
