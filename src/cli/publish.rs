//! `cbuild publish`: package files, or a recipe's targets exported first
//! (from cache), onto a channel.

use std::path::PathBuf;

use super::Output;
use super::args::{ExportArgs, GlobalArgs, PublishArgs, Target};
use super::error::CliError;
use crate::publish::{Dest, publish};

/// Runs `cbuild publish`.
pub fn run(global: &GlobalArgs, args: PublishArgs, out: &mut Output) -> Result<(), CliError> {
    let err = |e| CliError::Publish(Box::new(e));
    let dest = Dest::parse(&args.to).map_err(err)?;
    let is_package = |p: &PathBuf| {
        let s = p.to_string_lossy();
        s.ends_with(".conda") || s.ends_with(".tar.bz2")
    };
    // Exported into a scratch folder first when given a recipe.
    let scratch = tempfile::Builder::new()
        .prefix("cbuild-publish-")
        .tempdir()
        .map_err(|source| crate::store::StoreError::Create {
            path: std::env::temp_dir(),
            source,
        })?;
    let files: Vec<PathBuf> = if !args.inputs.is_empty() && args.inputs.iter().all(is_package) {
        if !args.attrs.is_empty() {
            return Err(CliError::Usage(
                "-A selects targets of a recipe; package files are published as they are".into(),
            ));
        }
        args.inputs.clone()
    } else {
        if args.inputs.len() > 1 {
            return Err(CliError::Usage(
                "give package files, or one recipe file with -A (not both)".into(),
            ));
        }
        let export_args = ExportArgs {
            conda: true,
            target: Target {
                file: args
                    .inputs
                    .first()
                    .cloned()
                    .unwrap_or_else(|| PathBuf::from("recipe.cb")),
                attrs: args.attrs.clone(),
            },
            output_dir: scratch.path().to_path_buf(),
            channel: None,
            subdir: None,
            format: "conda".into(),
            zstd_level: crate::export::archive::DEFAULT_ZSTD_LEVEL,
            strict: args.strict,
        };
        super::export::export_packages(global, &export_args)?
            .into_iter()
            .map(|p| p.path)
            .collect()
    };
    let published = publish(&files, &dest, args.force).map_err(err)?;
    if global.json {
        let v: Vec<serde_json::Value> = published
            .iter()
            .map(|p| {
                serde_json::json!({
                    "file": p.file,
                    "path": p.path,
                    "subdir": p.subdir,
                    "sha256": p.sha256,
                    "result": p.done.as_str(),
                    "listed": p.listed,
                })
            })
            .collect();
        return out.line(&serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    for p in &published {
        let pending = if p.listed {
            ""
        } else {
            " (the server has not indexed it yet: clients see it once it has)"
        };
        out.line(&format!(
            "{}: {}{pending}",
            p.path.display(),
            p.done.as_str()
        ))?;
    }
    Ok(())
}
