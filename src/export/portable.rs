//! Derivations as they would be in a store at [`PORTABLE_STORE`]: what makes
//! a package's build string and provenance independent of where the store
//! that built it is.
//!
//! A derivation names its sources by store path and its input derivations
//! by placeholders made from their hashes, and both depend on the store
//! directory. Rebasing the closure computes every source's path from its
//! tree digest in the portable store, every input's hash from its rebased
//! derivation, and substitutes them; any other mention of the store
//! directory becomes the portable one. Two users with different store
//! directories get the same rebased closure, hence the same hashes.

use std::collections::{BTreeMap, HashMap};

use crate::derivation::{Derivation, DrvHash, ObjectKind, StoreDir, StorePath, placeholder};
use crate::store::{Store, StoreError};

/// The store directory every rebased derivation is written for.
pub const PORTABLE_STORE: &str = "/cbuild/store";

/// A rebased derivation closure.
#[derive(Default)]
pub struct Portable {
    /// Rebased `.drv` files by base name, with their canonical bytes.
    pub drvs: BTreeMap<String, Vec<u8>>,
    /// Sources by rebased base name: their tree digests (hex).
    pub sources: BTreeMap<String, String>,
    memo: HashMap<StorePath, (StorePath, DrvHash)>,
}

impl Portable {
    /// Rebases `path` and its closure; returns its rebased path and hash.
    pub fn rebase(
        &mut self,
        store: &Store,
        path: &StorePath,
    ) -> Result<(StorePath, DrvHash), StoreError> {
        self.rebase_drv(store, path, &store.read_derivation(path)?)
    }

    /// Rebases the derivation `d` (stored or not, at `path`) and the
    /// closure of its inputs.
    pub fn rebase_drv(
        &mut self,
        store: &Store,
        path: &StorePath,
        d: &Derivation,
    ) -> Result<(StorePath, DrvHash), StoreError> {
        if let Some(r) = self.memo.get(path) {
            return Ok(r.clone());
        }
        let fixed = StoreDir::new(PORTABLE_STORE);
        let dir = store.dir();
        let mut subst: Vec<(String, String)> = Vec::new();
        let mut input_drvs = BTreeMap::new();
        for (input, outs) in &d.input_drvs {
            let id = store.read_derivation(input)?;
            let (p, h) = self.rebase_drv(store, input, &id)?;
            let old = id.drv_hash();
            for o in &id.outputs {
                subst.push((
                    placeholder::input_output(&old, o),
                    placeholder::input_output(&h, o),
                ));
            }
            input_drvs.insert(p, outs.clone());
        }
        let mut input_sources = std::collections::BTreeSet::new();
        for s in &d.input_sources {
            let info = store
                .db()
                .object(&s.base_name())?
                .ok_or_else(|| StoreError::NotValid {
                    path: dir.path_of(s),
                    store: dir.as_str().into(),
                })?;
            let p = StorePath::compute(&fixed, ObjectKind::Source, &info.digest.0, s.name())?;
            self.sources.insert(p.base_name(), info.digest.to_hex());
            subst.push((dir.path_of(s), fixed.path_of(&p)));
            input_sources.insert(p);
        }
        // Anything else naming the store (a path written by hand) is
        // rebased by its directory alone.
        subst.push((format!("{}/", dir.as_str()), format!("{PORTABLE_STORE}/")));
        let mut r = d.with_replaced_at_once(&subst);
        r.input_drvs = input_drvs;
        r.input_sources = input_sources;
        let bytes = r.to_canonical_bytes();
        let h = DrvHash(*blake3::hash(&bytes).as_bytes());
        let p = r.drv_path(&fixed, &h)?;
        self.drvs.insert(p.base_name(), bytes);
        self.memo.insert(path.clone(), (p.clone(), h));
        Ok((p, h))
    }
}
