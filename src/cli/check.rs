//! `cbuild check`: realise the targets, rebuild each again (`--rounds N`
//! times) without replacing what is stored, and compare bit for bit.

use std::path::PathBuf;
use std::sync::OnceLock;

use super::args::{CheckArgs, GlobalArgs};
use super::error::CliError;
use super::progress::Progress;
use super::{Output, open_store, show};
use crate::audit::diff;
use crate::build::realise::realise;
use crate::build::rebuild::rebuild;
use crate::build::sandbox::spec::Variation;

/// Runs `cbuild check`.
pub fn run(global: &GlobalArgs, args: CheckArgs, out: &mut Output) -> Result<(), CliError> {
    let mut store = open_store(global)?;
    let targets = if args.conda {
        // The packages' payloads are the export derivations' outputs.
        let subdir = cbuild_lang::host::host_subdir();
        let evaluated = show::evaluate(
            &mut store,
            &args.target.file,
            &args.target.attrs,
            Some(subdir),
        )?;
        let mut originals = Vec::new();
        for p in &evaluated.paths {
            originals.push(store.parse_valid(p)?.0);
        }
        let plan = crate::export::plan::plan(&mut store, &originals)
            .map_err(|e| CliError::Export(Box::new(e)))?;
        plan.nodes
            .iter()
            .filter(|n| n.target)
            .map(|n| n.export_path.clone())
            .collect()
    } else {
        let targets = show::targets_of(&mut store, &args.target)?;
        show::built_or_exported(&mut store, targets, global.quiet)?
    };
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("cbuild"));
    let opts = global.realise_options();
    // What is compared against: the stored outputs, built first if missing.
    let mut progress = Progress::new(store.dir().clone(), global.quiet, opts.live.clone());
    let outcome = realise(&mut store, &exe, &targets, &opts, &mut |e| {
        progress.event(e)
    });
    progress.finish();
    let outcome = outcome.map_err(|e| CliError::Build(Box::new(e)))?;
    if !outcome.failed.is_empty() {
        return Err(CliError::BuildsFailed {
            failed: outcome.failed.len(),
            skipped: outcome.skipped.len(),
        });
    }
    let dir = store.dir().clone();
    let sandboxes = OnceLock::new();
    let mut all_same = true;
    let mut report = Vec::new();
    for t in &targets {
        let shown = dir.path_of(t);
        let mut rounds = Vec::new();
        let mut same = true;
        // Plain rounds, then one rebuild per variation.
        let plain = (1..=args.rounds.get()).map(|_| (String::new(), Variation::default()));
        let varied = if args.vary { variations() } else { Vec::new() };
        for (round, (what, vary)) in plain.chain(varied).enumerate() {
            if !global.quiet {
                // What is compared: one rebuild against what is stored.
                if what.is_empty() {
                    eprintln!(
                        "checking {shown}: a rebuild against its stored output (round {} of {})",
                        round + 1,
                        args.rounds
                    );
                } else {
                    eprintln!("checking {shown}: a rebuild under {what} against its stored output");
                }
            }
            let rebuilt = rebuild(&store, &sandboxes, &exe, t, vary)
                .map_err(|e| CliError::Build(Box::new(e)))?;
            let mut outputs = Vec::new();
            let mut differs = false;
            for o in &rebuilt.outputs {
                let started = std::time::Instant::now();
                let diffs = if o.path == o.stored {
                    Vec::new()
                } else {
                    diff::compare(
                        &PathBuf::from(dir.path_of(&o.stored)),
                        &o.stored.hash_part(),
                        &o.tree,
                        &o.path.hash_part(),
                    )
                    .map_err(|source| crate::store::StoreError::Read {
                        path: o.tree.clone(),
                        source,
                    })?
                };
                if o.path != o.stored && global.verbose > 0 {
                    // Both trees are read: the stored one's size, twice.
                    let bytes = 2 * store
                        .db()
                        .object(&o.stored.base_name())?
                        .map_or(0, |i| i.size);
                    let secs = started.elapsed().as_secs_f64();
                    eprintln!(
                        "compared {} with the rebuild: {:.1} MB in {:.0} ms ({:.0} MB/s)",
                        dir.path_of(&o.stored),
                        bytes as f64 / 1e6,
                        secs * 1e3,
                        bytes as f64 / 1e6 / secs.max(1e-9)
                    );
                }
                // Content-addressed: another path means other bytes, even
                // when no file shows it (a difference in the tree's shape).
                differs |= o.path != o.stored;
                outputs.push((o.output.clone(), o.stored.clone(), o.path.clone(), diffs));
            }
            let kept = if differs && args.keep_failed {
                let to = store.root().join("kept").join(format!(
                    "check-{}-{}",
                    t.base_name(),
                    std::process::id()
                ));
                let _ = std::fs::create_dir_all(store.root().join("kept"));
                std::fs::rename(&rebuilt.work, &to).ok().map(|_| to)
            } else {
                crate::build::job::discard(&rebuilt.work);
                None
            };
            same &= !differs;
            rounds.push((what, outputs, kept));
        }
        // Recorded per stored output: `store path-info` shows it.
        let now = crate::store::now();
        let mut verdicts: Vec<(String, bool)> = Vec::new();
        for (_, outputs, _) in &rounds {
            for (_, stored, rebuilt, _) in outputs {
                let base = stored.base_name();
                match verdicts.iter_mut().find(|(b, _)| *b == base) {
                    Some((_, ok)) => *ok &= stored == rebuilt,
                    None => verdicts.push((base, stored == rebuilt)),
                }
            }
        }
        for (base, ok) in verdicts {
            store
                .db_mut()
                .add_check(&base, args.rounds.get(), ok, now)?;
        }
        all_same &= same;
        report.push((shown, same, rounds));
    }
    if global.json {
        let v: Vec<serde_json::Value> = report
            .iter()
            .map(|(drv, same, rounds)| {
                serde_json::json!({
                    "drv": drv,
                    "reproducible": same,
                    "rounds": rounds.iter().map(|(what, outputs, kept)| serde_json::json!({
                        "variation": (!what.is_empty()).then_some(what),
                        "kept": kept,
                        "outputs": outputs.iter().map(|(o, stored, rebuilt, diffs)| serde_json::json!({
                            "output": o,
                            "stored": dir.path_of(stored),
                            "rebuilt_path": dir.path_of(rebuilt),
                            "identical": stored == rebuilt,
                            "differences": diff::to_json(diffs),
                        })).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        out.line(&serde_json::to_string_pretty(&v).unwrap_or_default())?;
    } else {
        for (drv, same, rounds) in &report {
            if *same {
                out.line(&format!(
                    "reproducible: {drv} ({} rebuild{})",
                    rounds.len(),
                    if rounds.len() == 1 { "" } else { "s" }
                ))?;
                continue;
            }
            out.line(&format!("NOT reproducible: {drv}"))?;
            for (k, (what, outputs, kept)) in rounds.iter().enumerate() {
                let round = if what.is_empty() {
                    format!("round {}", k + 1)
                } else {
                    format!("under {what}")
                };
                for (o, stored, rebuilt, diffs) in outputs {
                    if stored == rebuilt {
                        continue;
                    }
                    out.line(&format!(
                        "  {round}: output `{o}`: {} (stored {}; the rebuild would be {})",
                        if diffs.len() == 1 {
                            "1 file differs".to_string()
                        } else {
                            format!("{} files differ", diffs.len())
                        },
                        dir.path_of(stored),
                        dir.path_of(rebuilt),
                    ))?;
                    print_diffs(out, diffs, "    ")?;
                }
                if let Some(k) = kept {
                    out.line(&format!("  the rebuilt tree is kept in {}", k.display()))?;
                }
            }
        }
    }
    if args.vary && !global.quiet {
        eprintln!(
            "note: --vary does not change the order of directory listings (that needs a file \
             system of its own){}",
            if faketime_lib().is_none() {
                "; nor the clock: libfaketime is not installed (Debian: faketime)"
            } else {
                ""
            }
        );
    }
    if all_same {
        Ok(())
    } else {
        Err(CliError::NotReproducible)
    }
}

/// The conditions `--vary` changes, one rebuild each.
fn variations() -> Vec<(String, Variation)> {
    let mut v = vec![
        (
            "another build directory (/.cbuild/build-elsewhere)".to_string(),
            Variation {
                build_path: Some("/.cbuild/build-elsewhere".into()),
                ..Variation::default()
            },
        ),
        (
            "another host name".to_string(),
            Variation {
                hostname: Some("cbuild-check-host".into()),
                ..Variation::default()
            },
        ),
        (
            "another uid and gid (2001:2002)".to_string(),
            Variation {
                ids: Some((2001, 2002)),
                ..Variation::default()
            },
        ),
        (
            "umask 077".to_string(),
            Variation {
                umask: Some(0o077),
                ..Variation::default()
            },
        ),
        (
            "one CPU (CBUILD_CORES=1, nproc 1)".to_string(),
            Variation {
                one_cpu: true,
                ..Variation::default()
            },
        ),
    ];
    if let Some(lib) = faketime_lib() {
        v.push((
            "a clock 5 years later (libfaketime; static binaries are not fooled)".to_string(),
            Variation {
                faketime: Some((lib, "+5y".into())),
                ..Variation::default()
            },
        ));
    }
    v
}

/// The host's libfaketime, where Debian's `faketime` puts it.
fn faketime_lib() -> Option<String> {
    let arch = std::env::consts::ARCH;
    [
        format!("/usr/lib/{arch}-linux-gnu/faketime/libfaketime.so.1"),
        "/usr/lib/faketime/libfaketime.so.1".to_string(),
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).is_file())
}

/// Each differing file: its kind of difference, likely cause and first
/// difference, indented by `indent`.
pub(super) fn print_diffs(
    out: &mut Output,
    diffs: &[diff::FileDiff],
    indent: &str,
) -> Result<(), CliError> {
    for d in diffs {
        let name = if d.path.is_empty() {
            "(the output itself)"
        } else {
            &d.path
        };
        let cause = if d.cause == diff::Cause::Unknown {
            String::new()
        } else {
            format!(" ({})", d.cause.as_str())
        };
        out.line(&format!("{indent}{}{cause}: {name}", d.kind.as_str()))?;
        for l in d.detail.lines() {
            out.line(&format!("{indent}  {l}"))?;
        }
    }
    Ok(())
}
