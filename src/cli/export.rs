//! `cbuild export --conda`: evaluate, build each target into a conda prefix
//! and write its packages (and its host inputs'), into a folder or a channel.

use std::path::PathBuf;

use super::args::{ExportArgs, GlobalArgs};
use super::error::CliError;
use super::progress::Progress;
use super::{Output, open_store, show};
use crate::export::archive::Format;
use crate::export::{ExportError, Options, export, platform};

/// Runs `cbuild export`.
pub fn run(global: &GlobalArgs, args: ExportArgs, out: &mut Output) -> Result<(), CliError> {
    let packages = export_packages(global, &args)?;
    if global.json {
        let list: Vec<serde_json::Value> = packages
            .iter()
            .map(|p| {
                serde_json::json!({
                    "path": p.path,
                    "name": p.name,
                    "version": p.version,
                    "build": p.build,
                    "subdir": p.subdir,
                    "sha256": p.sha256,
                    "target": p.target,
                    "host_input": !p.target,
                    "export_drv": p.export_drv,
                    "built": p.built,
                    "warnings": p.warnings,
                })
            })
            .collect();
        out.line(&serde_json::to_string_pretty(&list).unwrap_or_default())?;
    } else {
        for p in &packages {
            out.line(&p.path.display().to_string())?;
        }
    }
    Ok(())
}

/// Exports what `args` selects, as `cbuild export` does (and `cbuild
/// publish` before publishing); returns the packages written.
pub fn export_packages(
    global: &GlobalArgs,
    args: &ExportArgs,
) -> Result<Vec<crate::export::Exported>, CliError> {
    let subdir = args
        .subdir
        .clone()
        .unwrap_or_else(|| cbuild_lang::host::host_subdir().to_string());
    // Before anything is evaluated or built.
    if subdir == "noarch" {
        return Err(ExportError::BadMetadata {
            what: "--subdir noarch".into(),
            reason: "a recipe makes a package noarch (`noarch = \"generic\"`); --subdir names \
                     the platform the others are built for"
                .into(),
        }
        .into());
    }
    if !platform::is_known(&subdir) {
        return Err(ExportError::UnknownSubdir { subdir }.into());
    }
    let epoch = source_date_epoch()?;
    let mut store = open_store(global)?;
    let file = args.target.file.clone();
    let evaluated = show::evaluate(&mut store, &file, &args.target.attrs, Some(&subdir))?;
    let mut targets = Vec::new();
    for p in &evaluated.paths {
        targets.push(store.parse_valid(p)?.0);
    }
    // Each derivation's recipe files, named from the folder of the file it
    // is written in: read once per file, and shared by every derivation
    // written in the same file (a package set holds thousands).
    let rf = &evaluated.recipe_files;
    let mut bytes: std::collections::HashMap<&PathBuf, Vec<u8>> = Default::default();
    for f in rf.closures.values().flatten() {
        if !bytes.contains_key(f) {
            let data = std::fs::read(f).map_err(|source| crate::store::StoreError::Read {
                path: f.clone(),
                source,
            })?;
            bytes.insert(f, data);
        }
    }
    let by_file: std::collections::HashMap<&PathBuf, crate::export::run::RecipeRecord> = rf
        .closures
        .iter()
        .map(|(defined_in, files)| {
            let dir = defined_in
                .parent()
                .map(cbuild_lang::eval::normalize)
                .unwrap_or_default();
            let mut named: Vec<(String, Vec<u8>)> = files
                .iter()
                .map(|f| (recipe_file_name(&dir, f), bytes[f].clone()))
                .collect();
            named.sort();
            (defined_in, std::sync::Arc::new(named))
        })
        .collect();
    let recipe_files = rf
        .defined_in
        .iter()
        .map(|(drv, file)| (drv.clone(), by_file[file].clone()))
        .collect();
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("cbuild"));
    // Absolute, so that printed paths can be used from anywhere.
    let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
    let opts = Options {
        output_dir: cbuild_lang::eval::normalize(&cwd.join(&args.output_dir)),
        channel: args
            .channel
            .as_ref()
            .map(|c| cbuild_lang::eval::normalize(&cwd.join(c))),
        subdir,
        format: if args.format == "tar.bz2" {
            Format::TarBz2
        } else {
            Format::Conda
        },
        zstd_level: args.zstd_level,
        epoch,
        recipe_files,
        realise: global.realise_options(),
        strict: args.strict,
    };
    let mut progress = Progress::new(store.dir().clone(), global.quiet, opts.realise.live.clone());
    let result = export(&mut store, &exe, &targets, &opts, &mut |e| {
        progress.event(e)
    });
    progress.finish();
    let outcome = result?;
    if outcome.failed > 0 {
        return Err(CliError::BuildsFailed {
            failed: outcome.failed,
            skipped: outcome.skipped,
        });
    }
    if !global.quiet {
        for p in &outcome.packages {
            for w in &p.warnings {
                eprintln!("warning: {}: {w}", p.name);
            }
        }
        warn_about_sources(
            &evaluated.imported_dirs,
            &outcome.packages,
            opts.channel.as_deref(),
        );
    }
    Ok(outcome.packages)
}

/// `SOURCE_DATE_EPOCH` when set (whole seconds), else the fixed default.
fn source_date_epoch() -> Result<u64, CliError> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse::<u64>()
            .ok()
            // Up to 9999-12-31: a millisecond timestamp and a zip date must
            // hold it.
            .filter(|&s| s <= 253_402_300_799)
            .ok_or_else(|| {
                CliError::from(ExportError::BadMetadata {
                    what: "SOURCE_DATE_EPOCH".into(),
                    reason: format!(
                        "`{v}` is not a whole number of seconds since 1970 (up to year 9999)"
                    ),
                })
            }),
        _ => Ok(crate::export::run::DEFAULT_EPOCH),
    }
}

/// The name of a recipe file in `info/recipe/`: its path relative to
/// `recipe_dir` (the folder of the file the package is written in), with
/// each `..` written `_up_` (tar members cannot go up),
/// so that the package does not depend on where the checkout is and two
/// files never share a name.
fn recipe_file_name(recipe_dir: &std::path::Path, file: &std::path::Path) -> String {
    use std::path::Component;
    let dir: Vec<Component<'_>> = recipe_dir.components().collect();
    let f: Vec<Component<'_>> = file.components().collect();
    let common = dir.iter().zip(&f).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["_up_".to_string(); dir.len() - common];
    parts.extend(
        f[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
}

/// Warns when what this export wrote lies inside a directory the recipe
/// imports (the default `-o .` beside a `source(./.)`): the next export
/// would import it too, and rebuild everything for nothing.
fn warn_about_sources(
    imported: &[(PathBuf, crate::store::import::Filter)],
    packages: &[crate::export::Exported],
    channel: Option<&std::path::Path>,
) {
    let mut written: Vec<PathBuf> = packages.iter().map(|p| p.path.clone()).collect();
    if let Some(c) = channel {
        written.push(c.join(".cbuild-channel.lock"));
        for p in packages {
            written.push(c.join(&p.subdir).join("repodata.json"));
        }
        written.push(c.join("noarch/repodata.json"));
    }
    for (root, filter) in imported {
        if let Some(w) = written.iter().find(|w| filter.includes(root, w)) {
            eprintln!(
                "warning: {} is inside {}, which the recipe imports with source(): the next \
                 export would import it too and build again. Leave packages out of the source \
                 (a .gitignore line such as `*.conda` with `gitignore = true`, or `exclude`) or \
                 write them elsewhere (-o DIR, --channel DIR).",
                w.display(),
                root.display()
            );
        }
    }
}
