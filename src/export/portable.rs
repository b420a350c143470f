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

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::derivation::{
    Derivation, DrvHash, ObjectKind, StoreDir, StorePath, StorePathError, placeholder,
};
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
        let mut moved = Moved::default();
        for (input, outs) in &d.input_drvs {
            let id = store.read_derivation(input)?;
            let (p, h) = self.rebase_drv(store, input, &id)?;
            moved.input(&id, id.drv_hash(), p, h, outs);
        }
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
            moved.source(dir.path_of(s), fixed.path_of(&p), p);
        }
        let (bytes, h, p) = moved.apply(d, dir, &fixed)?;
        self.drvs.insert(p.base_name(), bytes);
        self.memo.insert(path.clone(), (p.clone(), h));
        Ok((p, h))
    }
}

/// One derivation's move from one store directory to another, collected
/// input by input.
#[derive(Default)]
struct Moved {
    subst: Vec<(String, String)>,
    input_drvs: BTreeMap<StorePath, BTreeSet<String>>,
    input_sources: BTreeSet<StorePath>,
}

impl Moved {
    /// The input derivation `id` (hash `old`) is `path` (hash `new`) there.
    fn input(
        &mut self,
        id: &Derivation,
        old: DrvHash,
        path: StorePath,
        new: DrvHash,
        used: &BTreeSet<String>,
    ) {
        for o in &id.outputs {
            self.subst.push((
                placeholder::input_output(&old, o),
                placeholder::input_output(&new, o),
            ));
        }
        self.input_drvs.insert(path, used.clone());
    }

    /// The source at `from` (full path) is `path`, at `to`, there.
    fn source(&mut self, from: String, to: String, path: StorePath) {
        self.subst.push((from, to));
        self.input_sources.insert(path);
    }

    /// `d` moved from `from` to `to`: its canonical bytes, hash and path.
    /// Anything else naming the old directory (a path written by hand) is
    /// moved by its directory alone.
    fn apply(
        mut self,
        d: &Derivation,
        from: &StoreDir,
        to: &StoreDir,
    ) -> Result<(Vec<u8>, DrvHash, StorePath), StorePathError> {
        self.subst
            .push((format!("{}/", from.as_str()), format!("{}/", to.as_str())));
        let mut r = d.with_replaced_at_once(&self.subst);
        r.input_drvs = self.input_drvs;
        r.input_sources = self.input_sources;
        let bytes = r.to_canonical_bytes();
        let h = DrvHash(*blake3::hash(&bytes).as_bytes());
        let p = r.drv_path(to, &h)?;
        Ok((bytes, h, p))
    }
}

/// A package's provenance (`info/cbuild/`), read back.
pub struct Provenance {
    /// The rebased base name of the target's `.drv`.
    pub drv: String,
    /// The rebased base name of the export `.drv`.
    pub export_drv: String,
    /// The export output the package holds.
    pub output: String,
    /// Sources by rebased base name: their tree digests (hex).
    pub sources: BTreeMap<String, String>,
    /// Rebased `.drv` files by base name.
    pub drvs: BTreeMap<String, Vec<u8>>,
}

/// Why a package's provenance cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProvenanceError {
    /// `export.json` is not what an export writes.
    #[error("info/cbuild/export.json {0}")]
    Malformed(String),
    /// A derivation the closure needs is not in the package.
    #[error("info/cbuild/drv/{missing} is missing (it is an input of {of})")]
    MissingDrv {
        /// The base name.
        missing: String,
        /// What needs it.
        of: String,
    },
    /// A `.drv` file does not parse.
    #[error("info/cbuild/drv/{base} is corrupt: {source}")]
    Corrupt {
        /// The base name.
        base: String,
        /// Why.
        #[source]
        source: crate::derivation::canonical::ParseError,
    },
    /// A `.drv` file's bytes do not give its name: it was changed.
    #[error("info/cbuild/drv/{base} has been altered: its content hashes to {actual}")]
    Altered {
        /// The base name.
        base: String,
        /// The name its bytes give.
        actual: String,
    },
    /// A source of the closure has no recorded digest.
    #[error("info/cbuild/export.json lists no digest for the source {0}")]
    NoDigest(String),
    /// Writing into the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Provenance {
    /// Reads the provenance from `info/` files (by path from the package
    /// root); `None` when the package has none (not exported by cbuild).
    pub fn from_info(
        info: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Option<Provenance>, ProvenanceError> {
        let Some(bytes) = info.get("info/cbuild/export.json") else {
            return Ok(None);
        };
        let bad = |what: &str| ProvenanceError::Malformed(what.to_string());
        let v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| bad(&format!("is not JSON: {e}")))?;
        if v["format"] != 1 {
            return Err(bad(
                "has a format other than 1 (written by a newer cbuild?)",
            ));
        }
        if v["store"] != PORTABLE_STORE {
            return Err(bad(&format!("names a store other than {PORTABLE_STORE}")));
        }
        let text = |k: &str| {
            v[k].as_str()
                .map(str::to_string)
                .ok_or_else(|| bad(&format!("has no `{k}`")))
        };
        let mut sources = BTreeMap::new();
        for (k, d) in v["sources"]
            .as_object()
            .ok_or_else(|| bad("has no `sources`"))?
        {
            let d = d
                .as_str()
                .filter(|d| crate::derivation::TreeDigest::from_hex(d).is_some())
                .ok_or_else(|| bad(&format!("has a malformed digest for {k}")))?;
            sources.insert(k.clone(), d.to_string());
        }
        let drvs = info
            .iter()
            .filter_map(|(k, b)| Some((k.strip_prefix("info/cbuild/drv/")?.to_string(), b.clone())))
            .collect();
        Ok(Some(Provenance {
            drv: text("drv")?,
            export_drv: text("export_drv")?,
            output: text("output")?,
            sources,
            drvs,
        }))
    }
}

/// A provenance closure written into a store.
pub struct Restored {
    /// Each derivation: rebased base name, its path in the store, and the
    /// rebased derivation (host tools are as recorded).
    pub drvs: Vec<(String, StorePath, Derivation)>,
    /// The export derivation in the store.
    pub export_drv: StorePath,
    /// The target's derivation in the store.
    pub drv: StorePath,
    /// Sources not in the store: name, tree digest (hex), path they would have.
    pub missing_sources: Vec<(String, String, String)>,
}

/// Moves a package's provenance closure from [`PORTABLE_STORE`] into
/// `store`, the inverse of [`Portable::rebase`]: every `.drv` must hash to
/// its name (else the package was altered), sources are looked up by their
/// tree digests. The derivations are registered only when every source is
/// in the store.
pub fn restore(store: &mut Store, p: &Provenance) -> Result<Restored, ProvenanceError> {
    struct Walk<'a> {
        p: &'a Provenance,
        store: &'a Store,
        memo: HashMap<String, (StorePath, DrvHash, Derivation)>,
        order: Vec<(String, StorePath, Derivation, Vec<u8>, DrvHash)>,
        missing: Vec<(String, String, String)>,
    }
    impl Walk<'_> {
        fn visit(
            &mut self,
            base: &str,
            of: &str,
        ) -> Result<(StorePath, DrvHash, Derivation), ProvenanceError> {
            if let Some(r) = self.memo.get(base) {
                return Ok(r.clone());
            }
            let fixed = StoreDir::new(PORTABLE_STORE);
            let bytes = self
                .p
                .drvs
                .get(base)
                .ok_or_else(|| ProvenanceError::MissingDrv {
                    missing: base.to_string(),
                    of: of.to_string(),
                })?;
            let d = crate::derivation::canonical::parse(bytes).map_err(|source| {
                ProvenanceError::Corrupt {
                    base: base.to_string(),
                    source,
                }
            })?;
            let h = DrvHash(*blake3::hash(bytes).as_bytes());
            let actual = d
                .drv_path(&fixed, &h)
                .map_err(StoreError::from)?
                .base_name();
            if actual != base {
                return Err(ProvenanceError::Altered {
                    base: base.to_string(),
                    actual,
                });
            }
            let dir = self.store.dir().clone();
            let mut moved = Moved::default();
            for (input, outs) in &d.input_drvs {
                let (lp, lh, id) = self.visit(&input.base_name(), base)?;
                let old = DrvHash(*blake3::hash(&self.p.drvs[&input.base_name()]).as_bytes());
                moved.input(&id, old, lp, lh, outs);
            }
            for s in &d.input_sources {
                let digest = self
                    .p
                    .sources
                    .get(&s.base_name())
                    .ok_or_else(|| ProvenanceError::NoDigest(s.base_name()))?;
                let raw = crate::derivation::TreeDigest::from_hex(digest)
                    .ok_or_else(|| ProvenanceError::NoDigest(s.base_name()))?;
                let local = StorePath::compute(&dir, ObjectKind::Source, &raw.0, s.name())
                    .map_err(StoreError::from)?;
                let present = self
                    .store
                    .db()
                    .object(&local.base_name())?
                    .is_some_and(|o| o.digest == raw);
                if !present && !self.missing.iter().any(|(_, d, _)| d == digest) {
                    self.missing
                        .push((s.name().to_string(), digest.clone(), dir.path_of(&local)));
                }
                moved.source(fixed.path_of(s), dir.path_of(&local), local);
            }
            let (lbytes, lh, lp) = moved.apply(&d, &fixed, &dir).map_err(StoreError::from)?;
            self.order
                .push((base.to_string(), lp.clone(), d.clone(), lbytes, lh));
            let r = (lp, lh, d);
            self.memo.insert(base.to_string(), r.clone());
            Ok(r)
        }
    }
    let mut w = Walk {
        p,
        store,
        memo: HashMap::new(),
        order: Vec::new(),
        missing: Vec::new(),
    };
    let (export_drv, _, _) = w.visit(&p.export_drv, "info/cbuild/export.json")?;
    let (drv, _, _) = w.visit(&p.drv, "info/cbuild/export.json")?;
    let (order, missing) = (w.order, w.missing);
    if missing.is_empty() {
        // A derivation the store has keeps its meta (which a `.drv` does
        // not carry).
        let mut pending: Vec<crate::store::PendingDrv> = Vec::new();
        for (_, lp, _, bytes, h) in &order {
            if store.is_valid(lp)? {
                continue;
            }
            pending.push(restored_pending(lp, bytes, *h));
        }
        store.add_derivations(&pending, &[])?;
    }
    Ok(Restored {
        drvs: order
            .into_iter()
            .map(|(b, lp, d, _, _)| (b, lp, d))
            .collect(),
        export_drv,
        drv,
        missing_sources: missing,
    })
}

fn restored_pending(lp: &StorePath, bytes: &[u8], h: DrvHash) -> crate::store::PendingDrv {
    let d = crate::derivation::canonical::parse(bytes);
    crate::store::PendingDrv {
        path: lp.clone(),
        bytes: bytes.to_vec(),
        hash: h,
        references: d
            .map(|d| d.references().cloned().collect())
            .unwrap_or_default(),
        meta: "{}".into(),
        run_inputs: "[]".into(),
    }
}
