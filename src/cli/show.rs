//! `cbuild show-derivation`: a stored derivation as JSON.

use std::path::PathBuf;

use cbuild_lang::Evaluator;

use super::args::{DrvTarget, GlobalArgs};
use super::error::CliError;
use super::{Output, open_store, targets};
use crate::derivation::{Derivation, StoreDir, StorePath};
use crate::instantiate::Instantiator;
use crate::store::Store;

/// Runs `cbuild show-derivation`.
pub fn run(global: &GlobalArgs, args: DrvTarget, out: &mut Output) -> Result<(), CliError> {
    let mut store = open_store(global)?;
    let paths = drv_targets(&mut store, args)?;
    let mut all = serde_json::Map::new();
    let mut shown = Vec::new();
    for p in &paths {
        shown.push(store.parse_valid(p)?.0);
    }
    store.materialize_targets(&shown)?;
    for p in paths {
        let (sp, _) = store.parse_valid(&p)?;
        let drv = store.read_derivation(&sp)?;
        let (meta, run_inputs) = store
            .db()
            .derivation_meta(&sp.base_name())?
            .unwrap_or_else(|| ("{}".into(), "[]".into()));
        all.insert(
            p,
            derivation_json(store.dir(), &sp, &drv, &meta, &run_inputs),
        );
    }
    out.line(&serde_json::to_string_pretty(&serde_json::Value::Object(all)).unwrap_or_default())
}

/// The `.drv` paths a command names: `.drv` store paths given directly, or
/// the targets of a recipe (default `./recipe.cb`) selected with `-A`, whose
/// derivations are written to the store first.
pub fn drv_targets(store: &mut Store, args: DrvTarget) -> Result<Vec<String>, CliError> {
    if let Some(t) = &args.target {
        let s = t.to_string_lossy();
        if args.attrs.is_empty() && s.ends_with(".drv") && t.is_absolute() {
            return Ok(vec![s.into_owned()]);
        }
    }
    let file = args.target.unwrap_or_else(|| PathBuf::from("recipe.cb"));
    Ok(evaluate(store, &file, &args.attrs, None)?.paths)
}

/// The derivations a recipe and its `-A` attributes select, written to the
/// store.
pub fn targets_of(
    store: &mut Store,
    target: &super::args::Target,
) -> Result<Vec<StorePath>, CliError> {
    let paths = drv_targets(
        store,
        DrvTarget {
            target: Some(target.file.clone()),
            attrs: target.attrs.clone(),
        },
    )?;
    let mut out = Vec::new();
    for p in &paths {
        out.push(store.parse_valid(p)?.0);
    }
    Ok(out)
}

/// The targets to check or audit: each target itself when its outputs are
/// built (or nothing of it is), else its export derivation when that one is
/// built, since `export --conda` builds that and never the target itself:
/// what is there is used rather than compiled a second time, and a line on
/// stderr says which derivation stands for which.
pub fn built_or_exported(
    store: &mut Store,
    targets: Vec<StorePath>,
    quiet: bool,
) -> Result<Vec<StorePath>, CliError> {
    let mut out = Vec::with_capacity(targets.len());
    for t in targets {
        if is_built(store, &t)? {
            out.push(t);
            continue;
        }
        // A target that cannot be exported (no package) has no export build.
        let export = crate::export::plan::plan(store, std::slice::from_ref(&t))
            .ok()
            .and_then(|p| p.nodes.into_iter().find(|n| n.original == t))
            .map(|n| n.export_path);
        match export {
            Some(e) if is_built(store, &e)? => {
                if !quiet {
                    eprintln!(
                        "{} is not built but its export build is (from `cbuild export --conda`): \
                         using {}, the output that was packaged",
                        store.dir().path_of(&t),
                        store.dir().path_of(&e)
                    );
                }
                out.push(e);
            }
            _ => out.push(t),
        }
    }
    Ok(out)
}

/// Whether every output of `drv` is realised.
fn is_built(store: &Store, drv: &StorePath) -> Result<bool, CliError> {
    let d = store.read_derivation(drv)?;
    let h = d.drv_hash();
    for o in &d.outputs {
        if store.db().realisation(&h, o)?.is_none() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// What [`evaluate`] found.
pub struct Evaluated {
    /// The targets' `.drv` paths.
    pub paths: Vec<String>,
    /// The directories it imported as sources, with their filters.
    pub imported_dirs: Vec<(PathBuf, crate::store::import::Filter)>,
    /// Each derivation's recipe files: the file it is written in and what
    /// that file imports and reads, transitively.
    pub recipe_files: cbuild_lang::eval::RecipeFiles,
}

/// Evaluates `file` (for the conda subdir `platform`, default the host's),
/// writes its derivations and returns the `.drv` paths of the targets `attrs`
/// selects, with each derivation's recipe files. With a `platform` (an
/// export), every derivation of the file is evaluated, so that what was
/// read does not depend on `attrs`.
pub fn evaluate(
    store: &mut Store,
    file: &std::path::Path,
    attrs: &[String],
    platform: Option<&str>,
) -> Result<Evaluated, CliError> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
    let shown = file.display().to_string();
    let mut host = Instantiator::new(store, cwd.clone());
    if let Some(p) = platform {
        host = host.with_target_platform(p);
    }
    let mut ev = Evaluator::new(&mut host, cwd)?;
    let root = ev.eval_file(file)?;
    let selected = targets::select(&mut ev, &root, attrs, &shown)?;
    if platform.is_some() {
        // For an export, the recipe files a package records must not depend
        // on which targets were selected (imports are read when first
        // used): evaluate every derivation of the file, whatever fails.
        let _ = targets::select(&mut ev, &root, &[], &shown);
        // The same for every file it imports, until no new one is: a
        // file's recorded imports, and so the recipe files of what is
        // written in it, must not depend on which file imported it and
        // what that one used of it.
        let mut done = std::collections::BTreeSet::new();
        loop {
            let files: Vec<_> = ev
                .file_values()
                .into_iter()
                .filter(|(p, _)| !done.contains(p))
                .collect();
            if files.is_empty() {
                break;
            }
            for (path, value) in files {
                let _ = targets::select(&mut ev, &value, &[], &path.display().to_string());
                done.insert(path);
            }
        }
    }
    let recipe_files = ev.recipe_files();
    std::mem::forget(root);
    std::mem::forget(ev);
    let paths: Vec<String> = selected
        .iter()
        .map(|t| t.drv.drv_path.text.to_string())
        .collect();
    let sps = paths
        .iter()
        .map(|p| store_dir_parse(host.store().dir(), p))
        .collect::<Result<Vec<_>, _>>()?;
    host.flush(&sps)?;
    Ok(Evaluated {
        paths,
        imported_dirs: host.imported_dirs(),
        recipe_files,
    })
}

fn store_dir_parse(dir: &StoreDir, p: &str) -> Result<StorePath, CliError> {
    Ok(dir.parse(p).map_err(crate::store::StoreError::from)?)
}

/// A derivation as `show-derivation` prints it.
pub fn derivation_json(
    dir: &StoreDir,
    path: &StorePath,
    d: &Derivation,
    meta: &str,
    run_inputs: &str,
) -> serde_json::Value {
    let full = |p: &StorePath| dir.path_of(p);
    let run_inputs: Vec<String> = serde_json::from_str::<Vec<String>>(run_inputs)
        .unwrap_or_default()
        .iter()
        .filter_map(|b| StorePath::from_base_name(b))
        .map(|p| full(&p))
        .collect();
    serde_json::json!({
        "drv_path": full(path),
        "drv_hash": d.drv_hash().to_hex(),
        "name": d.name,
        "version": d.version,
        "system": d.system,
        "builder": d.builder,
        "args": d.args,
        "env": d.env,
        "outputs": d.outputs,
        "input_drvs": d.input_drvs.iter().map(|(p, o)| (full(p), serde_json::json!(o))).collect::<serde_json::Map<_, _>>(),
        "input_sources": d.input_sources.iter().map(full).collect::<Vec<_>>(),
        "host_tools": d.host_tools.iter().map(|(n, t)| (n.clone(), serde_json::json!({
            "path": t.path, "resolved": t.resolved, "blake3": t.digest.to_hex(),
        }))).collect::<serde_json::Map<_, _>>(),
        "path_inputs": d.path_inputs,
        "host_inputs": d.host_inputs,
        "fixed": d.fixed.as_ref().map(|f| serde_json::json!({
            "algo": f.algo.as_str(),
            "digest": crate::derivation::hash::hex(&f.digest),
            "unpack": f.unpack,
            "url": f.url,
        })),
        "meta": serde_json::from_str::<serde_json::Value>(meta).unwrap_or(serde_json::Value::Null),
        "run_inputs": run_inputs,
    })
}
