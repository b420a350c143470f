//! `cbuild store verify --repair` for objects whose content is wrong or
//! missing: an output is built again from the derivation that made it
//! (its inputs from the store) and, when the rebuild gives the registered
//! digest, put back in place of the broken copy. What needs no build (a
//! `.drv` file, modes and mtimes) is repaired by
//! [`crate::store::verify::repair_in_place`]. Sources cannot be rebuilt:
//! they are left, and said.

use std::path::Path;
use std::sync::OnceLock;

use super::realise::BuildError;
use super::rebuild::rebuild;
use super::sandbox::spec::Variation;
use crate::derivation::{ObjectKind, StorePath};
use crate::store::verify::{Failure, Problem, repair_in_place};
use crate::store::{Store, StoreError, make_writable_recursive};

/// Repairs what it can of `failures`; returns those it could not repair.
pub fn repair(store: &Store, exe: &Path, failures: &[Failure]) -> Result<Vec<Failure>, BuildError> {
    let (builds, simple): (Vec<&Failure>, Vec<&Failure>) = failures.iter().partition(|f| {
        f.kind == ObjectKind::Output && matches!(f.problem, Problem::Content | Problem::Missing)
    });
    let simple: Vec<Failure> = simple.into_iter().cloned().collect();
    let mut left = repair_in_place(store, &simple)?;
    let sandboxes = OnceLock::new();
    // Inputs may be broken too: repeat while a pass repairs something.
    let mut todo: Vec<Failure> = builds.into_iter().cloned().collect();
    loop {
        let mut next = Vec::new();
        for f in todo.iter() {
            if !rebuild_one(store, &sandboxes, exe, f)? {
                next.push(f.clone());
            }
        }
        if next.len() == todo.len() {
            left.extend(next);
            break;
        }
        todo = next;
        if todo.is_empty() {
            break;
        }
    }
    Ok(left)
}

/// Rebuilds the output `f` names; true when it is back in place.
fn rebuild_one(
    store: &Store,
    sandboxes: &OnceLock<super::sandbox::linux::Sandboxes>,
    exe: &Path,
    f: &Failure,
) -> Result<bool, BuildError> {
    let Some(obj) = StorePath::from_base_name(&f.object) else {
        return Ok(false);
    };
    let Some(info) = store.db().object(&f.object)? else {
        return Ok(false);
    };
    let Some(drv) = info.deriver.as_deref().and_then(StorePath::from_base_name) else {
        return Ok(false);
    };
    if !store.is_valid(&drv)? {
        return Ok(false);
    }
    let rebuilt = match rebuild(store, sandboxes, exe, &drv, Variation::default()) {
        Ok(r) => r,
        // An input that is itself broken, or a build that fails: not now.
        Err(_) => return Ok(false),
    };
    let mut done = false;
    for o in &rebuilt.outputs {
        if o.stored != obj || o.path != obj {
            continue;
        }
        // The same bytes as registered (outputs are content-addressed):
        // swap them in under the object's lock.
        let _lock = crate::store::lock_path(store.root(), &obj, &mut || Ok(()))?;
        let dest = store.real_path(&obj);
        let trash = store.scratch_path("repair");
        if std::fs::symlink_metadata(&dest).is_ok() {
            make_writable_recursive(&dest);
            std::fs::rename(&dest, &trash).map_err(|source| StoreError::Rename {
                from: dest.clone(),
                to: trash.clone(),
                source,
            })?;
        }
        crate::store::rename_object(&o.tree, &dest).map_err(|source| StoreError::Rename {
            from: o.tree.clone(),
            to: dest.clone(),
            source,
        })?;
        crate::store::verify::normalise_modes(&dest)?;
        make_writable_recursive(&trash);
        let _ = std::fs::remove_dir_all(&trash).or_else(|_| std::fs::remove_file(&trash));
        let node = crate::store::tree_hash::hash_tree(&dest)?;
        done = node.tree_digest() == info.digest;
    }
    super::job::discard(&rebuilt.work);
    Ok(done)
}
