//! Registering what a build produced: its outputs moved into `store/` and
//! made valid together with the realisations that name them.

use std::path::{Path, PathBuf};

use super::{
    NewObject, Store, StoreError, lock_object, make_writable_recursive, now, sync_dir, sync_fs,
};
use crate::derivation::{DrvHash, ObjectKind, StorePath, TreeDigest};

/// A finished output, ready to move into the store.
#[derive(Clone, Debug)]
pub struct BuiltObject {
    /// Where it lies now (in this process's scratch space or the store
    /// directory, on the store's file system).
    pub tmp: PathBuf,
    /// Its final path.
    pub path: StorePath,
    /// Its tree digest.
    pub digest: TreeDigest,
    /// Bytes of file content.
    pub size: u64,
    /// Base names it refers to: valid objects, or objects earlier in the
    /// same commit.
    pub references: Vec<String>,
}

impl Store {
    /// Moves `objects` into the store and registers them, with
    /// `realisations` (key, output name, base name), in one transaction. An
    /// object whose path is valid already (identical bytes built before)
    /// is dropped and the existing one is used.
    pub fn commit_build(
        &mut self,
        deriver: &StorePath,
        sandboxed: bool,
        objects: &[BuiltObject],
        realisations: &[(DrvHash, String, String)],
    ) -> Result<(), StoreError> {
        // Flush the new files once, through the store's file system.
        if !objects.is_empty() {
            sync_fs(self.scratch_dir())?;
        }
        let mut locks = Vec::with_capacity(objects.len());
        let mut new = Vec::with_capacity(objects.len());
        for o in objects {
            locks.push(lock_object(self.root(), &o.path)?);
            let dest = self.real_path(&o.path);
            if self.is_valid(&o.path)? {
                discard(&o.tmp);
                continue;
            }
            if std::fs::symlink_metadata(&dest).is_ok() {
                // An unregistered leftover of an interrupted build (nobody
                // else can be registering it: we hold its lock).
                discard(&dest);
            }
            std::fs::rename(&o.tmp, &dest).map_err(|source| StoreError::Rename {
                from: o.tmp.clone(),
                to: dest.clone(),
                source,
            })?;
            new.push(NewObject {
                path: o.path.base_name(),
                kind: ObjectKind::Output,
                digest: o.digest,
                size: o.size,
                deriver: Some(deriver.base_name()),
                references: o.references.clone(),
                derivation: None,
                sandboxed,
            });
        }
        if !new.is_empty() {
            sync_dir(self.dir().as_str().as_ref())?;
        }
        self.db_mut().register_with(&new, realisations, now())
    }
}

fn discard(p: &Path) {
    make_writable_recursive(p);
    let _ = std::fs::remove_dir_all(p).or_else(|_| std::fs::remove_file(p));
}
