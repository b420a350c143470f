//! Building a realised derivation again, for `cbuild check`: the same
//! resolved derivation, in the same sandbox, at fresh scratch paths, with
//! its inputs from the store. Nothing is registered or replaced: the result
//! stays in a work directory for the caller to compare and then discard
//! (or keep).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::build::job::{self, Context, Job, JobResult};
use crate::build::realise::{BuildError, resolve_with, start_sandboxes};
use crate::build::sandbox::linux::Sandboxes;
use crate::build::sandbox::spec::Variation;
use crate::derivation::StorePath;
use crate::store::{Store, StoreError};

/// One output of a rebuild beside the stored one.
pub struct RebuiltOutput {
    /// The output name.
    pub output: String,
    /// The stored object.
    pub stored: StorePath,
    /// The rebuilt tree (self-references rewritten to `path`'s hash part).
    pub tree: PathBuf,
    /// The store path its content gives: equal to `stored` exactly when the
    /// rebuild reproduced it (outputs are content-addressed).
    pub path: StorePath,
}

/// A rebuild.
pub struct Rebuilt {
    /// Its outputs.
    pub outputs: Vec<RebuiltOutput>,
    /// The work directory holding them (remove with [`crate::build::job::discard`]).
    pub work: PathBuf,
}

/// Rebuilds `drv`, which must be realised with its inputs, once, under
/// `vary` (no change by default).
pub fn rebuild(
    store: &Store,
    sandboxes: &OnceLock<Sandboxes>,
    exe: &Path,
    drv: &StorePath,
    vary: Variation,
) -> Result<Rebuilt, BuildError> {
    let dir = store.dir();
    let d = store.read_derivation(drv)?;
    let db = store.db();
    let not_realised = |p: &StorePath| StoreError::NotValid {
        path: format!(
            "{} (not realised: run cbuild realise first)",
            dir.path_of(p)
        ),
        store: dir.as_str().into(),
    };
    // Inputs come from the store, by their realisations.
    let missing = std::cell::RefCell::new(None);
    let resolved = resolve_with(&d, dir, |input, o| {
        let found = store.read_derivation(input).ok().and_then(|id| {
            let h = id.drv_hash();
            let base = db.realisation(&h, o).ok()??;
            Some((h, StorePath::from_base_name(&base)?))
        });
        if found.is_none() {
            *missing.borrow_mut() = Some(input.clone());
        }
        found
    });
    if let Some(m) = missing.into_inner() {
        return Err(not_realised(&m).into());
    }
    let rhash = resolved.drv_hash();
    let mut stored = Vec::new();
    for o in &resolved.outputs {
        let base = db
            .realisation(&rhash, o)?
            .or(db.realisation(&d.drv_hash(), o)?)
            .ok_or_else(|| not_realised(drv))?;
        stored.push(StorePath::from_base_name(&base).ok_or_else(|| not_realised(drv))?);
    }
    let inputs = store.closure_with(
        resolved.input_sources.iter().map(StorePath::base_name),
        &std::collections::HashMap::new(),
    )?;
    start_sandboxes(sandboxes, exe, true)?;
    let cx = Context::new(store, sandboxes, true, false)?;
    let job = Job {
        drv_path: drv.clone(),
        drv: resolved,
        resolved_hash: rhash,
        inputs,
        work: store.scratch_path("check"),
        again: true,
        vary,
        timeout: crate::build::realise::recipe_timeout(store, drv)?,
    };
    match job::run(&cx, db, job, &mut || Ok(()))? {
        JobResult::Built { outputs, work, .. } => Ok(Rebuilt {
            outputs: outputs
                .into_iter()
                .filter_map(|r| {
                    let k = d.outputs.iter().position(|o| *o == r.output)?;
                    Some(RebuiltOutput {
                        stored: stored.get(k)?.clone(),
                        output: r.output,
                        tree: r.tmp,
                        path: r.path,
                    })
                })
                .collect(),
            work,
        }),
        // Never with `again`.
        JobResult::Done => Err(BuildError::Sandbox(
            crate::build::sandbox::linux::SandboxError::Lost,
        )),
    }
}
