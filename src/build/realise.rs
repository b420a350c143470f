//! Realising derivations: building what is missing, in dependency order,
//! into content-addressed outputs, and reusing what is already built.
//!
//! For each derivation: if its hash is realised, nothing runs. Otherwise its
//! inputs' placeholders are replaced by their real output paths (the
//! *resolved* derivation); if the resolved hash is realised (an input was
//! rebuilt to identical bytes), nothing runs either: early cutoff. Otherwise
//! it is built in the sandbox at scratch output paths, normalised, hashed
//! modulo self-references, rewritten to its final path, scanned for
//! references and registered, and both hashes are recorded as realised.
//!
//! This first version builds one derivation at a time; parallel builds,
//! fetching and per-derivation locks come next (issue 5).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::build::ca;
use crate::build::normalise::{NormaliseError, normalise};
use crate::build::refscan::{ScanError, scan};
use crate::build::sandbox::linux::{SandboxError, run};
use crate::build::sandbox::spec::{host_toolchain_binds, in_host_toolchain};
use crate::build::sandbox::{Bind, SandboxSpec};
use crate::derivation::{Derivation, DrvHash, ObjectKind, StorePath, base32, placeholder};
use crate::store::{Store, StoreError, make_writable_recursive};

/// Why a realise failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The sandbox could not be set up.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// An output could not be normalised.
    #[error(transparent)]
    Normalise(#[from] NormaliseError),
    /// An output could not be scanned.
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// The builder failed.
    #[error("building {drv} failed with exit code {code}\n{tail}\nthe whole log: cbuild log {drv}")]
    Failed {
        /// The `.drv` path.
        drv: String,
        /// The builder's exit code.
        code: i32,
        /// The end of its log.
        tail: String,
    },
    /// The builder succeeded without producing an output.
    #[error("building {drv} did not produce its output `{output}` (${output} was never created)")]
    MissingOutput {
        /// The `.drv` path.
        drv: String,
        /// The output.
        output: String,
    },
    /// A fixed-output derivation: fetching is not there yet.
    #[error("{drv} is a fixed-output derivation (fetch); this version cannot build those yet")]
    Unsupported {
        /// The `.drv` path.
        drv: String,
    },
}

/// What a realise did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Output paths of every derivation realised, by `.drv` path, in the
    /// order of its `outputs` list.
    pub outputs: BTreeMap<StorePath, Vec<(String, StorePath)>>,
    /// Derivations whose builder ran.
    pub built: Vec<StorePath>,
    /// Derivations reused (already realised, or cut off).
    pub cached: Vec<StorePath>,
}

/// Realises `targets` and everything they need.
pub fn realise(
    store: &mut Store,
    exe: &Path,
    targets: &[StorePath],
) -> Result<Outcome, BuildError> {
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    let mut drvs: HashMap<StorePath, (Derivation, DrvHash)> = HashMap::new();
    for t in targets {
        visit(store, t, &mut seen, &mut order, &mut drvs)?;
    }
    let mut out = Outcome::default();
    for p in order {
        let (d, hash) = &drvs[&p];
        let hash = *hash;
        if let Some(paths) = realised(store, &hash, d)? {
            out.outputs.insert(p.clone(), paths);
            out.cached.push(p);
            continue;
        }
        let resolved = resolve(store, d, &drvs, &out.outputs)?;
        let rhash = resolved.drv_hash();
        // One builder per derivation across processes: whoever holds the
        // lock builds, the others find it realised when they get it.
        let _lock = crate::store::lock_object(store.root(), &p)?;
        let paths = match realised(store, &rhash, &resolved)? {
            Some(paths) => {
                out.cached.push(p.clone());
                paths
            }
            None => {
                let paths = build(store, exe, &p, &resolved)?;
                for (o, sp) in &paths {
                    store.db_mut().add_realisation(&rhash, o, &sp.base_name())?;
                }
                out.built.push(p.clone());
                paths
            }
        };
        for (o, sp) in &paths {
            store.db_mut().add_realisation(&hash, o, &sp.base_name())?;
        }
        out.outputs.insert(p, paths);
    }
    Ok(out)
}

/// Depth-first, inputs before their dependents.
fn visit(
    store: &Store,
    p: &StorePath,
    seen: &mut BTreeSet<StorePath>,
    order: &mut Vec<StorePath>,
    drvs: &mut HashMap<StorePath, (Derivation, DrvHash)>,
) -> Result<(), BuildError> {
    if !seen.insert(p.clone()) {
        return Ok(());
    }
    let d = store.read_derivation(p)?;
    for input in d.input_drvs.keys() {
        visit(store, input, seen, order, drvs)?;
    }
    let hash = d.drv_hash();
    drvs.insert(p.clone(), (d, hash));
    order.push(p.clone());
    Ok(())
}

/// The realised outputs of `key`, if every output is.
fn realised(
    store: &Store,
    key: &DrvHash,
    d: &Derivation,
) -> Result<Option<Vec<(String, StorePath)>>, BuildError> {
    let mut paths = Vec::new();
    for o in &d.outputs {
        let Some(base) = store.db().realisation(key, o)? else {
            return Ok(None);
        };
        let Some(sp) = StorePath::from_base_name(&base) else {
            return Ok(None);
        };
        paths.push((o.clone(), sp));
    }
    Ok(Some(paths))
}

/// `d` with its inputs' placeholders replaced by their output paths.
fn resolve(
    store: &Store,
    d: &Derivation,
    drvs: &HashMap<StorePath, (Derivation, DrvHash)>,
    outputs: &BTreeMap<StorePath, Vec<(String, StorePath)>>,
) -> Result<Derivation, BuildError> {
    let mut subst: Vec<(String, String)> = Vec::new();
    let mut sources = d.input_sources.clone();
    for (input, outs) in &d.input_drvs {
        let ihash = drvs[input].1;
        for o in outs {
            if let Some((_, sp)) = outputs[input].iter().find(|(name, _)| name == o) {
                subst.push((
                    placeholder::input_output(&ihash, o),
                    store.dir().path_of(sp),
                ));
                sources.insert(sp.clone());
            }
        }
    }
    let r = |s: &String| {
        subst
            .iter()
            .fold(s.clone(), |acc, (from, to)| acc.replace(from, to))
    };
    Ok(Derivation {
        builder: r(&d.builder),
        args: d.args.iter().map(r).collect(),
        env: d.env.iter().map(|(k, v)| (k.clone(), r(v))).collect(),
        input_drvs: BTreeMap::new(),
        input_sources: sources,
        path_inputs: d.path_inputs.iter().map(r).collect(),
        host_inputs: d.host_inputs.iter().map(r).collect(),
        ..d.clone()
    })
}

/// Builds a resolved derivation; returns its registered outputs.
fn build(
    store: &mut Store,
    exe: &Path,
    drv_path: &StorePath,
    d: &Derivation,
) -> Result<Vec<(String, StorePath)>, BuildError> {
    let shown = store.dir().path_of(drv_path);
    if d.fixed.is_some() {
        return Err(BuildError::Unsupported { drv: shown });
    }
    let dir = store.dir().clone();
    let work = store.scratch_path("build");
    let (root, build_dir, scratch_store, path_dir) = (
        work.join("root"),
        work.join("build"),
        work.join("store"),
        work.join("path"),
    );
    for p in [
        &root,
        &build_dir,
        &build_dir.join("tmp"),
        &scratch_store,
        &path_dir,
    ] {
        std::fs::create_dir_all(p).map_err(|source| StoreError::Write {
            path: p.clone(),
            source,
        })?;
    }
    let result = build_in(
        store,
        exe,
        drv_path,
        d,
        &dir,
        &root,
        &build_dir,
        &scratch_store,
        &path_dir,
    );
    make_writable_recursive(&work);
    let _ = std::fs::remove_dir_all(&work);
    result
}

#[allow(clippy::too_many_arguments)]
fn build_in(
    store: &mut Store,
    exe: &Path,
    drv_path: &StorePath,
    d: &Derivation,
    dir: &crate::derivation::StoreDir,
    root: &Path,
    build_dir: &Path,
    scratch_store: &Path,
    path_dir: &Path,
) -> Result<Vec<(String, StorePath)>, BuildError> {
    let shown = dir.path_of(drv_path);
    // Scratch outputs: random hash parts, final length.
    let mut scratch: Vec<(String, String, String)> = Vec::new(); // output, name, hash part
    for o in &d.outputs {
        let seed = format!(
            "{}:{o}:{}:{:?}",
            drv_path.base_name(),
            std::process::id(),
            std::time::SystemTime::now()
        );
        let part = base32::encode(&blake3::hash(seed.as_bytes()).as_bytes()[..20]);
        let name = if o == "out" {
            d.name.clone()
        } else {
            format!("{}-{o}", d.name)
        };
        scratch.push((o.clone(), name, part));
    }
    let own: Vec<(String, String)> = scratch
        .iter()
        .map(|(o, name, part)| {
            (
                placeholder::own_output(o),
                format!("{}/{part}-{name}", dir.as_str()),
            )
        })
        .collect();
    let r = |s: &String| {
        own.iter()
            .fold(s.clone(), |acc, (from, to)| acc.replace(from, to))
    };
    // What the build sees of the store: its inputs' closure, read-only.
    let inputs = store.closure(d.input_sources.iter().map(StorePath::base_name))?;
    let mut binds = Vec::new();
    if !d.host_tools.is_empty() {
        binds.extend(host_toolchain_binds());
    }
    binds.push(Bind {
        source: scratch_store.to_string_lossy().into(),
        target: dir.as_str().into(),
        writable: true,
    });
    for b in &inputs {
        binds.push(Bind {
            source: format!("{}/{b}", dir.as_str()),
            target: format!("{}/{b}", dir.as_str()),
            writable: false,
        });
    }
    // PATH: the declared tools and the inputs' bin/ folders only.
    let mut path = vec!["/.cbuild/bin".to_string()];
    for p in &d.path_inputs {
        if p.starts_with(dir.as_str()) {
            path.push(format!("{p}/bin"));
        }
    }
    // Every pinned host tool, under the name it was asked for. A tool that
    // lives outside the toolchain layer is bound in by itself (its resolved
    // file, read-only, at its own path).
    for (name, tool) in &d.host_tools {
        let target = if in_host_toolchain(&tool.path) {
            tool.path.clone()
        } else {
            binds.push(Bind {
                source: tool.resolved.clone(),
                target: tool.resolved.clone(),
                writable: false,
            });
            tool.resolved.clone()
        };
        let _ = std::os::unix::fs::symlink(&target, path_dir.join(name));
    }
    binds.push(Bind {
        source: path_dir.to_string_lossy().into(),
        target: "/.cbuild/bin".into(),
        writable: false,
    });
    let mut env: BTreeMap<String, String> = d.env.iter().map(|(k, v)| (k.clone(), r(v))).collect();
    let join = |suffixes: &[&str]| {
        d.host_inputs
            .iter()
            .flat_map(|p| suffixes.iter().map(move |s| format!("{p}/{s}")))
            .collect::<Vec<_>>()
            .join(":")
    };
    if !d.host_inputs.is_empty() {
        env.insert("CPATH".into(), join(&["include"]));
        env.insert("LIBRARY_PATH".into(), join(&["lib"]));
        env.insert(
            "PKG_CONFIG_PATH".into(),
            join(&["lib/pkgconfig", "share/pkgconfig"]),
        );
    }
    for (k, v) in [
        ("PATH", path.join(":")),
        ("HOME", "/homeless-shelter".into()),
        ("TMPDIR", "/build/tmp".into()),
        ("TZ", "UTC".into()),
        ("LC_ALL", "C".into()),
        ("SOURCE_DATE_EPOCH", "1".into()),
        (
            "CBUILD_CORES",
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .to_string(),
        ),
    ] {
        env.insert(k.into(), v);
    }
    let spec = SandboxSpec {
        root: root.to_string_lossy().into(),
        binds,
        build_dir: build_dir.to_string_lossy().into(),
        program: r(&d.builder),
        args: d.args.iter().map(r).collect(),
        env: env.into_iter().collect(),
        network: false,
    };
    let log_path = store
        .root()
        .join("logs")
        .join(format!("{}.log", drv_path.base_name()));
    let log = std::fs::File::create(&log_path).map_err(|source| StoreError::Write {
        path: log_path.clone(),
        source,
    })?;
    let status = run(exe, &spec, log)?;
    let log_tail = tail(&log_path, 25);
    compress_log(&log_path)?;
    if !status.success() {
        return Err(BuildError::Failed {
            drv: shown,
            code: status.code().unwrap_or(-1),
            tail: log_tail,
        });
    }
    // Each output: normalised, hashed modulo self-references, rewritten to
    // its final path, scanned, registered.
    let candidates: Vec<String> = inputs
        .iter()
        .map(|b| b[..32.min(b.len())].to_string())
        .collect();
    let mut outputs = Vec::new();
    for (o, name, part) in &scratch {
        let p = scratch_store.join(format!("{part}-{name}"));
        if std::fs::symlink_metadata(&p).is_err() {
            return Err(BuildError::MissingOutput {
                drv: shown,
                output: o.clone(),
            });
        }
        normalise(&p)?;
        let hashed = ca::hash_modulo(&p, part)?;
        let final_path = StorePath::compute(dir, ObjectKind::Output, &hashed.digest.0, name)
            .map_err(StoreError::from)?;
        make_writable_recursive(&p);
        ca::rewrite(&hashed.self_referencing, part, &final_path.hash_part())?;
        normalise(&p)?;
        let mut cands = candidates.clone();
        cands.push(final_path.hash_part());
        let found = scan(&p, &cands)?;
        let refs: Vec<String> = found
            .into_iter()
            .map(|k| {
                if k == cands.len() - 1 {
                    final_path.base_name()
                } else {
                    inputs.iter().nth(k).cloned().unwrap_or_default()
                }
            })
            .collect();
        let node = crate::store::tree_hash::hash_tree(&p)?;
        store.commit_object(
            &p,
            &final_path,
            &node,
            ObjectKind::Output,
            refs,
            Some(drv_path.base_name()),
        )?;
        outputs.push((o.clone(), final_path));
    }
    Ok(outputs)
}

/// Replaces `logs/<drv>.log` by `logs/<drv>.log.zst`.
fn compress_log(plain: &Path) -> Result<(), BuildError> {
    let zst = plain.with_extension("log.zst");
    let err = |source| StoreError::Write {
        path: zst.clone(),
        source,
    };
    let input = std::fs::File::open(plain).map_err(err)?;
    let output = std::fs::File::create(&zst).map_err(err)?;
    zstd::stream::copy_encode(input, output, 3).map_err(err)?;
    std::fs::remove_file(plain).map_err(err)?;
    Ok(())
}

/// The stored log of the last build of `drv`, if there is one.
pub fn read_log(store: &Store, drv: &StorePath) -> Result<Option<Vec<u8>>, StoreError> {
    let path = store
        .root()
        .join("logs")
        .join(format!("{}.log.zst", drv.base_name()));
    match std::fs::File::open(&path) {
        Ok(f) => zstd::stream::decode_all(f)
            .map(Some)
            .map_err(|source| StoreError::Read { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::Read { path, source }),
    }
}

/// The last `n` lines of a log.
fn tail(path: &Path, n: usize) -> String {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(_) => return String::new(),
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut s = String::new();
    let _ = f.read_to_string(&mut s);
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
