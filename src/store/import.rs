//! Importing paths from outside into the store: `source(path, exclude,
//! gitignore)` and interpolated path literals.
//!
//! A source is addressed by content only: the walk applies the filters, the
//! tree digest is computed from the file bytes and executable bits, and
//! nothing of mtimes, owners or the absolute location enters it. When the
//! resulting path is already valid nothing is copied; a cache of file
//! digests keyed by stat data lets an unchanged tree be recognised without
//! reading its files.

use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rayon::prelude::*;

use super::db::{FileStat, NewObject};
use super::tree_hash::{self, Node, Walk, WalkedFile};
use super::{Store, StoreError, make_writable_recursive, now, set_mtime, sync_dir, sync_fs};
use crate::derivation::{FileDigest, ObjectKind, StorePath};

/// What to leave out of an imported directory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Filter {
    /// Gitignore-style patterns, relative to the imported directory.
    pub exclude: Vec<String>,
    /// Honour `.gitignore` files inside the imported directory.
    pub gitignore: bool,
    /// Leave out recipe files (`*.cb`) inside the imported directory: what
    /// `source()` does unless asked for them, so that a recipe beside its
    /// sources can change without changing the source.
    pub skip_recipes: bool,
}

impl Filter {
    /// Whether importing the directory `root` with this filter would take
    /// the file `path` (inside it) — what `cbuild export` asks of the
    /// packages it writes, which must not feed the next import.
    pub fn includes(&self, root: &Path, path: &Path) -> bool {
        let Ok(rel) = path.strip_prefix(root) else {
            return false;
        };
        if rel.components().any(|c| c.as_os_str() == ".git") {
            return false;
        }
        if self.skip_recipes && path.as_os_str().as_encoded_bytes().ends_with(b".cb") {
            return false;
        }
        let mut excludes = ignore::gitignore::GitignoreBuilder::new(root);
        for pat in &self.exclude {
            let _ = excludes.add_line(None, pat);
        }
        if let Ok(ex) = excludes.build()
            && ex.matched_path_or_any_parents(path, false).is_ignore()
        {
            return false;
        }
        if !self.gitignore {
            return true;
        }
        // `.gitignore` files from the root down; a deeper one decides.
        let mut ignored = false;
        let mut dir = root.to_path_buf();
        let mut parts = rel.parent().map(|p| p.components()).into_iter().flatten();
        loop {
            let (gi, _) = ignore::gitignore::Gitignore::new(dir.join(".gitignore"));
            match gi.matched_path_or_any_parents(path, false) {
                ignore::Match::Ignore(_) => ignored = true,
                ignore::Match::Whitelist(_) => ignored = false,
                ignore::Match::None => {}
            }
            match parts.next() {
                Some(c) => dir.push(c),
                None => break,
            }
        }
        !ignored
    }
}

/// Files changed less than this long before they are hashed are not cached:
/// a change within the same timestamp tick would go unnoticed.
const RACY_NS: i64 = 2_000_000_000;

impl Store {
    /// Imports `src` under `name`, applying `filter` to a directory. `.git/`
    /// is always left out. Returns the object's path; nothing is copied when
    /// it is valid already.
    pub fn import(
        &mut self,
        src: &Path,
        name: &str,
        filter: &Filter,
    ) -> Result<StorePath, StoreError> {
        let meta = std::fs::symlink_metadata(src).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                StoreError::NoSuchPath {
                    path: src.to_path_buf(),
                }
            } else {
                StoreError::Read {
                    path: src.to_path_buf(),
                    source,
                }
            }
        })?;
        let walk = if meta.is_dir() {
            walk_filtered(src, filter, &self.root)?
        } else {
            let mut w = Walk::default();
            readable(src, &meta)?;
            tree_hash::add_entry(&mut w, src, Vec::new(), &meta)?;
            w
        };
        // Digests: from the cache when the stat data is unchanged.
        let prefix = if walk.root_is_dir {
            format!("{}/", src.display())
        } else {
            src.display().to_string()
        };
        let cache = self.db.file_cache(&prefix).unwrap_or_default();
        let stats: Vec<Option<FileStat>> = walk
            .files
            .par_iter()
            .map(|f| std::fs::metadata(&f.abs).ok().map(|m| stat_of(&m)))
            .collect();
        let fresh: Mutex<Vec<(String, FileStat, FileDigest)>> = Mutex::new(Vec::new());
        let now_ns = now() as i128 * 1_000_000_000;
        let node = tree_hash::build_tree(&walk, &|k, f: &WalkedFile| {
            let key = f.abs.to_string_lossy().into_owned();
            if let (Some(st), Some((cst, digest))) = (stats[k], cache.get(&key))
                && st == *cst
            {
                return Ok((*digest, st.size));
            }
            let (digest, size) = tree_hash::hash_file(&f.abs)?;
            if let Some(st) = stats[k]
                && (now_ns - i128::from(st.mtime_ns.max(st.ctime_ns))) > i128::from(RACY_NS)
            {
                fresh.lock().map(|mut v| v.push((key, st, digest))).ok();
            }
            Ok((digest, size))
        })?;
        let fresh = fresh.into_inner().unwrap_or_default();
        // A failing cache update costs speed next time, never correctness.
        let _ = self.db.update_file_cache(&fresh);

        let digest = node.tree_digest();
        let path = StorePath::compute(self.dir(), ObjectKind::Source, &digest.0, name)?;
        // A temporary GC root before the validity check: valid now, valid
        // for as long as this process runs.
        self.protect([path.base_name()])?;
        if self.is_valid(&path)? {
            return Ok(path);
        }
        let tmp = self.scratch_path("import");
        // Each file's stat data is compared before hashing and after copying,
        // so the copy is what was hashed (a file changed meanwhile fails the
        // import rather than storing content under another content's name).
        if let Err(e) = copy_tree(&walk, &tmp, &stats) {
            make_writable_recursive(&tmp);
            let _ = std::fs::remove_dir_all(&tmp).or_else(|_| std::fs::remove_file(&tmp));
            return Err(e);
        }
        self.commit_object(&tmp, &path, &node, ObjectKind::Source, Vec::new(), None)?;
        Ok(path)
    }

    /// Moves a complete, normalised tree at `tmp` to `path` and registers it.
    pub(crate) fn commit_object(
        &mut self,
        tmp: &Path,
        path: &StorePath,
        node: &Node,
        kind: ObjectKind,
        references: Vec<String>,
        deriver: Option<String>,
    ) -> Result<(), StoreError> {
        // Flush through the scratch directory: `tmp` itself may be a
        // symlink to anything.
        sync_fs(self.scratch_dir())?;
        let dest = self.real_path(path);
        let discard = |p: &Path| {
            make_writable_recursive(p);
            let _ = std::fs::remove_dir_all(p).or_else(|_| std::fs::remove_file(p));
        };
        self.protect([path.base_name()])?;
        let _lock = super::lock_object(self.root(), path)?;
        if self.is_valid(path)? {
            // Another process got there first: its object has the same content.
            discard(tmp);
            return Ok(());
        }
        if std::fs::symlink_metadata(&dest).is_ok() {
            // An unregistered leftover of an interrupted import (nobody else
            // can be registering it: we hold its lock).
            discard(&dest);
        }
        super::rename_object(tmp, &dest).map_err(|source| StoreError::Rename {
            from: tmp.to_path_buf(),
            to: dest.clone(),
            source,
        })?;
        sync_dir(self.dir().as_str().as_ref())?;
        self.db.register(
            &[NewObject {
                path: path.base_name(),
                kind,
                digest: node.tree_digest(),
                size: node.size(),
                deriver,
                references,
                derivation: None,
                sandboxed: true,
            }],
            now(),
        )
    }
}

fn stat_of(m: &std::fs::Metadata) -> FileStat {
    // Saturating: a file dated after 2262 must not overflow.
    let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
    FileStat {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime_ns: ns(m.mtime(), m.mtime_nsec()),
        ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        mode: m.mode(),
    }
}

/// A source file nobody may read (mode 000, readable to root only) is not
/// copied into the store, where every file is readable by all (0444): what
/// its owner hid would be published. Files readable by their owner only
/// (0600) are copied, and are then as readable as any store file; see
/// store-format.md.
fn readable(path: &Path, meta: &std::fs::Metadata) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    if meta.is_file() && meta.permissions().mode() & 0o444 == 0 {
        return Err(StoreError::UnreadableSource {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Walks `root` applying the filter; entries come out in sorted order.
fn walk_filtered(root: &Path, filter: &Filter, store_root: &Path) -> Result<Walk, StoreError> {
    // A store inside the imported folder (`CBUILD_STORE=.cbuild`) is never
    // part of it: it changes with every command that uses it.
    let store_id = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(store_root)
            .ok()
            .map(|m| (m.dev(), m.ino()))
    };
    // `exclude` is gitignore syntax, `!` negations included.
    let mut excludes = ignore::gitignore::GitignoreBuilder::new(root);
    for pat in &filter.exclude {
        excludes
            .add_line(None, pat)
            .map_err(|e| StoreError::BadPattern {
                pattern: pat.clone(),
                reason: e.to_string(),
            })?;
    }
    let excludes = excludes.build().map_err(|e| StoreError::BadPattern {
        pattern: filter.exclude.join(" "),
        reason: e.to_string(),
    })?;
    let skip_recipes = filter.skip_recipes;
    let mut builder = ignore::WalkBuilder::new(root);
    builder
        .standard_filters(false)
        .hidden(false)
        .parents(false)
        .git_ignore(filter.gitignore)
        .require_git(false)
        .follow_links(false)
        .sort_by_file_name(|a, b| a.cmp(b))
        .filter_entry(move |e| {
            let is_store = || {
                use std::os::unix::fs::MetadataExt;
                e.file_type().is_some_and(|t| t.is_dir())
                    && store_id.is_some_and(|(dev, ino)| {
                        e.ino() == Some(ino) && e.metadata().is_ok_and(|m| m.dev() == dev)
                    })
            };
            let is_dir = e.file_type().is_some_and(|t| t.is_dir());
            let is_recipe = || !is_dir && e.file_name().as_encoded_bytes().ends_with(b".cb");
            let left_out = e.file_name() == ".git"
                || is_store()
                || (skip_recipes && is_recipe())
                || excludes
                    .matched_path_or_any_parents(e.path(), is_dir)
                    .is_ignore();
            !left_out
        });
    let mut walk = Walk {
        root_is_dir: true,
        ..Walk::default()
    };
    for entry in builder.build() {
        let entry = entry.map_err(|e| StoreError::Read {
            path: root.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?;
        if entry.depth() == 0 {
            continue;
        }
        let meta = std::fs::symlink_metadata(entry.path()).map_err(|source| StoreError::Read {
            path: entry.path().to_path_buf(),
            source,
        })?;
        let rel = tree_hash::relative(root, entry.path());
        readable(entry.path(), &meta)?;
        tree_hash::add_entry(&mut walk, entry.path(), rel, &meta)?;
    }
    Ok(walk)
}

/// Copies what the walk found to `dest`, normalised: files 0444 or 0555
/// (created so, and given the store mtime through their open descriptor),
/// directories 0555, every mtime the store's.
fn copy_tree(walk: &Walk, dest: &Path, stats: &[Option<FileStat>]) -> Result<(), StoreError> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let write_err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| StoreError::Write { path: p, source }
    };
    let join = |base: &Path, rel: &[Vec<u8>]| -> PathBuf {
        let mut p = base.to_path_buf();
        for c in rel {
            p.push(std::ffi::OsStr::from_bytes(c));
        }
        p
    };
    let copy_file = |k: usize, f: &WalkedFile, to: &Path| -> Result<(), StoreError> {
        let read_err = |source| StoreError::Read {
            path: f.abs.clone(),
            source,
        };
        let mut from = std::fs::File::open(&f.abs).map_err(read_err)?;
        let mut out = std::fs::File::options()
            .write(true)
            .create_new(true)
            .mode(if f.executable { 0o555 } else { 0o444 })
            .open(to)
            .map_err(write_err(to))?;
        std::io::copy(&mut from, &mut out).map_err(write_err(to))?;
        // The mode given at creation is masked by the umask; the store's is not.
        out.set_permissions(std::fs::Permissions::from_mode(if f.executable {
            0o555
        } else {
            0o444
        }))
        .map_err(write_err(to))?;
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(super::STORE_MTIME as u64);
        out.set_times(std::fs::FileTimes::new().set_accessed(t).set_modified(t))
            .map_err(write_err(to))?;
        let after = from.metadata().ok().map(|m| stat_of(&m));
        if after != stats[k] {
            return Err(StoreError::Changed {
                path: f.abs.clone(),
            });
        }
        Ok(())
    };
    if !walk.root_is_dir {
        if let Some(f) = walk.files.first() {
            copy_file(0, f, dest)?;
        } else if let Some((_, target)) = walk.symlinks.first() {
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), dest)
                .map_err(write_err(dest))?;
            set_mtime(dest)?;
        }
        return Ok(());
    }
    std::fs::create_dir(dest).map_err(write_err(dest))?;
    for d in &walk.dirs {
        let p = join(dest, d);
        std::fs::create_dir_all(&p).map_err(write_err(&p))?;
    }
    walk.files
        .par_iter()
        .enumerate()
        .try_for_each(|(k, f)| copy_file(k, f, &join(dest, &f.rel)))?;
    for (rel, target) in &walk.symlinks {
        let p = join(dest, rel);
        std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &p)
            .map_err(write_err(&p))?;
        set_mtime(&p)?;
    }
    // Directories last, deepest first: adding entries changes their mtime.
    let mut dirs: Vec<&Vec<Vec<u8>>> = walk.dirs.iter().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.len()));
    for d in dirs.into_iter().chain(std::iter::once(&Vec::new())) {
        let p = join(dest, d);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o555))
            .map_err(write_err(&p))?;
        set_mtime(&p)?;
    }
    Ok(())
}
