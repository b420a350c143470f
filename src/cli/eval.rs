//! `cbuild eval`: evaluate a recipe, write its derivations, print one `.drv`
//! path per target (or `--json`); with `--expr`, print a value as JSON.

use std::path::PathBuf;

use cbuild_lang::Evaluator;

use super::args::{EvalArgs, GlobalArgs};
use super::error::CliError;
use super::{Output, open_store, targets};
use crate::instantiate::Instantiator;

/// Runs `cbuild eval`.
pub fn run(global: &GlobalArgs, args: EvalArgs, out: &mut Output) -> Result<(), CliError> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
    let mut store = open_store(global)?;
    let mut host = Instantiator::new(&mut store, cwd.clone());
    if let Some(expr) = &args.expr {
        let mut ev = Evaluator::new(&mut host, cwd)?;
        let v = ev.eval_expr("<expr>", expr)?;
        let json = ev.to_json(&v)?;
        std::mem::forget(v);
        std::mem::forget(ev);
        host.flush(&[])?;
        return out.line(&json);
    }
    let file = args.file.unwrap_or_else(|| PathBuf::from("recipe.cb"));
    let shown = file.display().to_string();
    let started = std::time::Instant::now();
    let mut ev = Evaluator::new(&mut host, cwd)?;
    let root = ev.eval_file(&file)?;
    let selected = targets::select(&mut ev, &root, &args.attrs, &shown)?;
    if selected.is_empty() && !global.quiet {
        eprintln!(
            "note: {shown} holds no derivation; `cbuild eval --expr 'import(./{shown})'` prints its value"
        );
    }
    // The process ends soon: freeing every value one by one would cost more
    // than the evaluation of a large recipe.
    std::mem::forget(root);
    std::mem::forget(ev);
    let dir = host.store().dir().clone();
    let target_paths = selected
        .iter()
        .map(|t| dir.parse(&t.drv.drv_path.text))
        .collect::<Result<Vec<_>, _>>()
        .map_err(crate::store::StoreError::from)?;
    let evaluated = started.elapsed();
    host.flush(&target_paths)?;
    if global.verbose > 0 {
        eprintln!(
            "evaluated {shown} in {:.1} ms ({} derivations); registered them in {:.1} ms",
            evaluated.as_secs_f64() * 1e3,
            host.made_count(),
            (started.elapsed() - evaluated).as_secs_f64() * 1e3
        );
    }
    if global.json {
        let mut items = Vec::new();
        for t in &selected {
            let path = dir
                .parse(&t.drv.drv_path.text)
                .map_err(crate::store::StoreError::from)?;
            let Some(made) = host.get(&path) else {
                continue;
            };
            let d = made
                .derivation()
                .map_err(|e| crate::store::StoreError::CorruptDrv {
                    path: dir.path_of(&made.path).into(),
                    source: e,
                })?;
            items.push(serde_json::json!({
                "attr": t.attr,
                "name": d.name,
                "version": d.version,
                "drv_path": dir.path_of(&made.path),
                "drv_hash": made.hash.to_hex(),
                "outputs": d.outputs,
                "input_drvs": d.input_drvs.iter()
                    .map(|(p, o)| (dir.path_of(p), serde_json::json!(o)))
                    .collect::<serde_json::Map<_, _>>(),
                "input_sources": d.input_sources.iter().map(|p| dir.path_of(p)).collect::<Vec<_>>(),
                "meta": made.meta,
            }));
        }
        out.line(&serde_json::to_string_pretty(&items).unwrap_or_default())?;
    } else {
        for t in &selected {
            out.line(&t.drv.drv_path.text)?;
        }
    }
    std::mem::forget(selected);
    // Freeing every derivation of a large recipe one by one costs more than
    // the process's exit.
    std::mem::forget(host);
    Ok(())
}
