//! Registering what a build produced: its outputs moved into `store/` and
//! made valid together with the realisations that name them.

use std::path::{Path, PathBuf};

use super::{Db, NewObject, Store, StoreError, make_writable_recursive, now, sync_fs};
use crate::derivation::{DrvHash, ObjectKind, StoreDir, StorePath, TreeDigest};

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

/// Outputs moved into `store/` but not registered yet: their locks are
/// held until they are.
pub struct Placed {
    _locks: Vec<std::fs::File>,
    objects: Vec<NewObject>,
    realisations: Vec<(DrvHash, String, String)>,
}

impl Placed {
    /// Holds `lock` (the derivation's build lock) until the build is
    /// registered: another process must find it realised once it gets it.
    pub fn hold(&mut self, lock: std::fs::File) {
        self._locks.push(lock);
    }
}

impl Store {
    /// Moves a build's `objects` to their final paths, holding their locks,
    /// so that the builds that use them can start at once; [`register`]
    /// makes them valid, with `realisations` (key, output name, base name).
    /// An object whose path is valid already (identical bytes built before)
    /// is dropped and the existing one is used. Until it is registered, a
    /// placed object is an unregistered leftover to every other process (and
    /// to the next one, after a crash), which replaces it.
    pub fn place_build(
        &self,
        deriver: &StorePath,
        sandboxed: bool,
        objects: &[BuiltObject],
        realisations: Vec<(DrvHash, String, String)>,
        before_wait: &mut dyn FnMut() -> Result<(), StoreError>,
    ) -> Result<Placed, StoreError> {
        // Locks in a fixed order: two processes placing the same outputs
        // never wait on each other in a cycle.
        let mut order: Vec<&BuiltObject> = objects.iter().collect();
        order.sort_by(|a, b| a.path.cmp(&b.path));
        // Temporary GC roots first: an identical object found valid below,
        // or this one once registered, stays while this process runs.
        self.protect(order.iter().map(|o| o.path.base_name()))?;
        let mut locks = Vec::with_capacity(objects.len());
        for o in order {
            locks.push(super::lock_path(self.root(), &o.path, before_wait)?);
        }
        let mut new = Vec::with_capacity(objects.len());
        for o in objects {
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
            super::rename_object(&o.tmp, &dest).map_err(|source| StoreError::Rename {
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
        Ok(Placed {
            _locks: locks,
            objects: new,
            realisations,
        })
    }
}

/// Makes placed builds durable (one `syncfs` for all of them) and registers
/// them, in order, in one transaction through `db` (any connection to the
/// store's database); then releases their locks.
pub fn register(db: &mut Db, dir: &StoreDir, placed: Vec<Placed>) -> Result<(), StoreError> {
    if placed.is_empty() {
        return Ok(());
    }
    if placed.iter().any(|p| !p.objects.is_empty()) {
        sync_fs(dir.as_str().as_ref())?;
    }
    let objects: Vec<NewObject> = placed.iter().flat_map(|p| p.objects.clone()).collect();
    let realisations: Vec<(DrvHash, String, String)> =
        placed.iter().flat_map(|p| p.realisations.clone()).collect();
    db.register_with(&objects, &realisations, now())
}

fn discard(p: &Path) {
    make_writable_recursive(p);
    let _ = std::fs::remove_dir_all(p).or_else(|_| std::fs::remove_file(p));
}
