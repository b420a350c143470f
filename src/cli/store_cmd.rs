//! `cbuild store ...`: inspect the store.

use super::args::{GlobalArgs, StoreCommand};
use super::error::CliError;
use super::{Output, open_store};
use crate::store::Store;

/// Runs `cbuild store SUBCOMMAND`.
pub fn run(global: &GlobalArgs, cmd: StoreCommand, out: &mut Output) -> Result<(), CliError> {
    match cmd {
        StoreCommand::Verify => Err(CliError::NotImplemented("store verify")),
        StoreCommand::Add { path, name } => {
            let mut store = open_store(global)?;
            let abs = cbuild_lang::eval::normalize(
                &std::env::current_dir()
                    .map(|d| d.join(&path))
                    .unwrap_or(path.clone()),
            );
            let is_dir = std::fs::symlink_metadata(&abs)
                .map(|m| m.is_dir())
                .unwrap_or(false);
            let name = name.unwrap_or_else(|| {
                if is_dir {
                    "source".into()
                } else {
                    abs.file_name().map_or("source".into(), |n| {
                        crate::instantiate::sanitize_name(&n.to_string_lossy())
                    })
                }
            });
            let p = store.import(&abs, &name, &crate::store::import::Filter::default())?;
            out.line(&store.dir().path_of(&p))
        }
        StoreCommand::PathInfo { path, closure } => {
            let store = open_store(global)?;
            let text = path.to_string_lossy().into_owned();
            let (sp, _) = store.parse_valid(&text)?;
            let mut paths = vec![sp.base_name()];
            if closure {
                paths = store.closure([sp.base_name()])?.into_iter().collect();
            }
            let mut infos = Vec::new();
            for base in &paths {
                infos.push(info_json(&store, base)?);
            }
            if global.json {
                let v = if closure {
                    serde_json::Value::Array(infos)
                } else {
                    infos.pop().unwrap_or_default()
                };
                out.line(&serde_json::to_string_pretty(&v).unwrap_or_default())
            } else {
                for (k, i) in infos.iter().enumerate() {
                    if k > 0 {
                        out.line("")?;
                    }
                    print_info(out, i)?;
                }
                Ok(())
            }
        }
    }
}

fn info_json(store: &Store, base: &str) -> Result<serde_json::Value, CliError> {
    let dir = store.dir();
    let info = store
        .db()
        .object(base)?
        .ok_or_else(|| crate::store::StoreError::NotValid {
            path: base.into(),
            store: dir.as_str().into(),
        })?;
    let refs: Vec<String> = store
        .db()
        .references(info.id)?
        .into_iter()
        .map(|r| format!("{}/{r}", dir.as_str()))
        .collect();
    Ok(serde_json::json!({
        "path": format!("{}/{}", dir.as_str(), info.path),
        "kind": info.kind.as_str(),
        "size": info.size,
        "digest": info.digest.to_hex(),
        "references": refs,
        "deriver": info.deriver.map(|d| format!("{}/{d}", dir.as_str())),
        "registered": info.registered,
        "sandboxed": info.sandboxed,
        "checks": store
            .db()
            .checks(info.id)?
            .into_iter()
            .map(|(checked, rounds, verdict)| {
                serde_json::json!({"checked": checked, "rounds": rounds, "verdict": verdict})
            })
            .collect::<Vec<_>>(),
    }))
}

fn print_info(out: &mut Output, i: &serde_json::Value) -> Result<(), CliError> {
    let s = |k: &str| i[k].as_str().unwrap_or("").to_string();
    out.line(&s("path"))?;
    out.line(&format!("  kind:       {}", s("kind")))?;
    out.line(&format!("  size:       {} bytes", i["size"]))?;
    out.line(&format!("  digest:     blake3-tree:{}", s("digest")))?;
    out.line(&format!(
        "  deriver:    {}",
        i["deriver"].as_str().unwrap_or("(none)")
    ))?;
    out.line(&format!("  registered: {} (unix time)", i["registered"]))?;
    // The last check, and how many there were.
    let checks = i["checks"].as_array().cloned().unwrap_or_default();
    if let Some(c) = checks.first() {
        out.line(&format!(
            "  checked:    {} at {} (unix time), {} rebuild(s){}",
            c["verdict"].as_str().unwrap_or(""),
            c["checked"],
            c["rounds"],
            if checks.len() > 1 {
                format!("; {} checks in all", checks.len())
            } else {
                String::new()
            }
        ))?;
    }
    let refs = i["references"].as_array().cloned().unwrap_or_default();
    if refs.is_empty() {
        out.line("  references: (none)")?;
    } else {
        out.line("  references:")?;
        for r in refs {
            out.line(&format!("    {}", r.as_str().unwrap_or("")))?;
        }
    }
    Ok(())
}
