//! `cbuild realise`: build what is missing, print the outputs.

use std::path::PathBuf;

use super::args::{DrvTarget, GlobalArgs, RealiseArgs};
use super::error::CliError;
use super::progress::Progress;
use super::{Output, open_store, show};
use crate::build::realise::{Options, realise};

/// Runs `cbuild realise`.
pub fn run(global: &GlobalArgs, args: RealiseArgs, out: &mut Output) -> Result<(), CliError> {
    let mut store = open_store(global)?;
    let drv_paths: Vec<String> = if !args.targets.is_empty()
        && args.attrs.is_empty()
        && args
            .targets
            .iter()
            .all(|t| t.is_absolute() && t.to_string_lossy().ends_with(".drv"))
    {
        args.targets
            .iter()
            .map(|t| t.to_string_lossy().into_owned())
            .collect()
    } else {
        show::drv_targets(
            &mut store,
            DrvTarget {
                target: args.targets.first().cloned(),
                attrs: args.attrs.clone(),
            },
        )?
    };
    let mut targets = Vec::new();
    for p in &drv_paths {
        let (sp, _) = store.parse_valid(p)?;
        targets.push(sp);
    }
    // The `.drv` files of what the user named exist, as `eval` leaves them.
    store.materialize_targets(&targets)?;
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("cbuild"));
    let opts = Options {
        keep_going: args.keep_going,
        keep_failed: args.keep_failed,
        namespaces: args.sandbox != "off",
        ..global.realise_options()
    };
    let mut progress = Progress::new(store.dir().clone(), global.quiet, opts.live.clone());
    let result = realise(&mut store, &exe, &targets, &opts, &mut |e| {
        progress.event(e)
    });
    progress.finish();
    let outcome = result.map_err(|e| CliError::Build(Box::new(e)))?;
    let dir = store.dir().clone();
    let mut first_links = Vec::new();
    for t in &targets {
        for (k, (_, p)) in outcome.outputs.get(t).into_iter().flatten().enumerate() {
            if k == 0 {
                first_links.push(dir.path_of(p));
            }
        }
    }
    if args.check_outputs {
        check_outputs(&store, &targets, &outcome)?;
    }
    if let Some(link) = &args.out_link {
        make_links(&store, link, &targets, &outcome)?;
    }
    let failure = (!outcome.failed.is_empty()).then(|| CliError::BuildsFailed {
        failed: outcome.failed.len(),
        skipped: outcome.skipped.len(),
    });
    if global.json {
        let outputs: serde_json::Map<String, serde_json::Value> = targets
            .iter()
            .zip(&drv_paths)
            .filter(|(t, _)| outcome.outputs.contains_key(*t))
            .map(|(t, shown)| {
                let m: serde_json::Map<String, serde_json::Value> = outcome
                    .outputs
                    .get(t)
                    .into_iter()
                    .flatten()
                    .map(|(o, p)| (o.clone(), dir.path_of(p).into()))
                    .collect();
                (shown.clone(), serde_json::Value::Object(m))
            })
            .collect();
        let list = |v: &[crate::derivation::StorePath]| {
            v.iter().map(|p| dir.path_of(p)).collect::<Vec<_>>()
        };
        let failed: Vec<crate::derivation::StorePath> =
            outcome.failed.iter().map(|(p, _)| p.clone()).collect();
        out.line(
            &serde_json::to_string_pretty(&serde_json::json!({
                "outputs": outputs,
                "built": list(&outcome.built),
                "cached": list(&outcome.cached),
                "failed": list(&failed),
                "skipped": list(&outcome.skipped),
            }))
            .unwrap_or_default(),
        )?;
    } else {
        for t in &targets {
            for (_, p) in outcome.outputs.get(t).into_iter().flatten() {
                out.line(&dir.path_of(p))?;
            }
        }
    }
    failure.map_or(Ok(()), Err)
}

/// `--check-outputs`: every object of the targets' outputs' closure read
/// again against its registered digest (as `store verify` does, for that
/// closure only); one that differs fails the command naming it.
fn check_outputs(
    store: &crate::store::Store,
    targets: &[crate::derivation::StorePath],
    outcome: &crate::build::realise::Outcome,
) -> Result<(), CliError> {
    let outputs = targets
        .iter()
        .flat_map(|t| outcome.outputs.get(t).into_iter().flatten())
        .map(|(_, p)| p.base_name());
    let closure: Vec<String> = store.closure(outputs)?.into_iter().collect();
    let failures = crate::store::verify::check_objects(store, &closure)?;
    for f in &failures {
        super::report_error(&format!(
            "{}/{}: {} ({}; registered {}, found {}){}",
            store.dir().as_str(),
            f.object,
            f.problem.as_str(),
            f.kind.as_str(),
            f.expected,
            f.actual,
            if f.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", f.detail)
            }
        ));
    }
    if failures.is_empty() {
        return Ok(());
    }
    Err(CliError::VerifyFailed {
        failed: failures.len(),
    })
}

/// `-o LINK`: a symlink to each target's first output (`LINK-<output>` for
/// the others), each registered as a GC root under `roots/`.
fn make_links(
    store: &crate::store::Store,
    link: &std::path::Path,
    targets: &[crate::derivation::StorePath],
    outcome: &crate::build::realise::Outcome,
) -> Result<(), CliError> {
    let abs = std::env::current_dir()
        .map(|d| d.join(link))
        .unwrap_or(link.to_path_buf());
    let abs = cbuild_lang::eval::normalize(&abs);
    let mut k = 0;
    for t in targets {
        for (i, (o, p)) in outcome.outputs.get(t).into_iter().flatten().enumerate() {
            let name = if k == 0 && i == 0 {
                abs.clone()
            } else {
                PathBuf::from(format!("{}-{o}", abs.display()))
            };
            k += 1;
            store.add_root(p, Some(&name))?;
        }
    }
    Ok(())
}
