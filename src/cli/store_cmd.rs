//! `cbuild store ...`: inspect the store.

use super::args::{GlobalArgs, StoreCommand};
use super::error::CliError;
use super::{Output, open_store};
use crate::store::Store;

/// Runs `cbuild store SUBCOMMAND`.
pub fn run(global: &GlobalArgs, cmd: StoreCommand, out: &mut Output) -> Result<(), CliError> {
    match cmd {
        StoreCommand::Verify { repair } => verify(global, repair, out),
        StoreCommand::Roots => roots(global, out),
        StoreCommand::AddRoot { path, link } => {
            let store = open_store(global)?;
            let (sp, _) = store.parse_valid(&path.to_string_lossy())?;
            let link = link.map(|l| {
                cbuild_lang::eval::normalize(
                    &std::env::current_dir().map(|d| d.join(&l)).unwrap_or(l),
                )
            });
            let made = store.add_root(&sp, link.as_deref())?;
            out.line(&made.display().to_string())
        }
        StoreCommand::RemoveRoot { path } => {
            let store = open_store(global)?;
            let (sp, _) = store.parse_valid(&path.to_string_lossy())?;
            let n = store.remove_root(&sp)?;
            out.line(&format!(
                "removed {n} root(s) of {}",
                store.dir().path_of(&sp)
            ))
        }
        StoreCommand::Add { paths, name } => {
            if name.is_some() && paths.len() > 1 {
                return Err(CliError::Usage(
                    "--name names one object: give one PATH with it".into(),
                ));
            }
            let mut store = open_store(global)?;
            for path in paths {
                let abs = cbuild_lang::eval::normalize(
                    &std::env::current_dir()
                        .map(|d| d.join(&path))
                        .unwrap_or(path.clone()),
                );
                let is_dir = std::fs::symlink_metadata(&abs)
                    .map(|m| m.is_dir())
                    .unwrap_or(false);
                let name = name.clone().unwrap_or_else(|| {
                    if is_dir {
                        "source".into()
                    } else {
                        abs.file_name().map_or("source".into(), |n| {
                            crate::instantiate::sanitize_name(&n.to_string_lossy())
                        })
                    }
                });
                let p = store.import(&abs, &name, &crate::store::import::Filter::default())?;
                out.line(&store.dir().path_of(&p))?;
            }
            Ok(())
        }
        StoreCommand::PathInfo { path, closure } => {
            let store = super::open_store_for_reading(global)?;
            let text = path.to_string_lossy().into_owned();
            let (sp, _) = store.parse_valid(&text)?;
            let mut paths = vec![sp.base_name()];
            if closure {
                paths = store.closure([sp.base_name()])?.into_iter().collect();
            }
            // Read once for all the objects shown.
            let (roots, _) = store.roots(false)?;
            let mut infos = Vec::new();
            for base in &paths {
                infos.push(info_json(&store, base, &roots)?);
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

/// The subcommand's name as typed.
pub fn name(c: &StoreCommand) -> &'static str {
    match c {
        StoreCommand::Add { .. } => "add",
        StoreCommand::Verify { repair: true } => "verify --repair",
        StoreCommand::Verify { .. } => "verify",
        StoreCommand::Roots => "roots",
        StoreCommand::AddRoot { .. } => "add-root",
        StoreCommand::RemoveRoot { .. } => "remove-root",
        StoreCommand::PathInfo { .. } => "path-info",
    }
}

/// `store verify [--repair]`: exit 1 naming every object that does not
/// verify (after repair: that could not be repaired).
fn verify(global: &GlobalArgs, repair: bool, out: &mut Output) -> Result<(), CliError> {
    let store = if repair {
        open_store(global)?
    } else {
        super::open_store_for_reading(global)?
    };
    let started = std::time::Instant::now();
    let report = crate::store::verify::verify(&store)?;
    let secs = started.elapsed().as_secs_f64();
    let mut left = report.failures.clone();
    let mut repaired = Vec::new();
    if repair && !left.is_empty() {
        let exe = std::env::current_exe().unwrap_or_else(|_| "cbuild".into());
        left = crate::build::repair::repair(&store, &exe, &left)
            .map_err(|e| CliError::Build(Box::new(e)))?;
        repaired = report
            .failures
            .iter()
            .filter(|f| !left.iter().any(|l| l.object == f.object))
            .map(|f| f.object.clone())
            .collect();
    }
    let dir = store.dir().clone();
    let full = |b: &str| format!("{}/{b}", dir.as_str());
    if global.json {
        let v = serde_json::json!({
            "ok": left.is_empty() && report.database.is_empty(),
            "checked": report.checked,
            "bytes": report.bytes,
            "seconds": secs,
            "failures": report.failures.iter().map(|f| serde_json::json!({
                "path": full(&f.object),
                "kind": f.kind.as_str(),
                "problem": f.problem.as_str(),
                "expected": f.expected,
                "actual": f.actual,
                "detail": f.detail,
                "repaired": repaired.contains(&f.object),
            })).collect::<Vec<_>>(),
            "database": report.database,
            "garbage": report.garbage,
        });
        out.line(&serde_json::to_string_pretty(&v).unwrap_or_default())?;
    } else {
        for f in &report.failures {
            let state = if repaired.contains(&f.object) {
                " (repaired)"
            } else if repair {
                " (NOT repaired)"
            } else {
                ""
            };
            out.line(&format!(
                "{}: {} ({}){state}",
                full(&f.object),
                f.problem.as_str(),
                f.kind.as_str()
            ))?;
            out.line(&format!("  expected {}", f.expected))?;
            out.line(&format!("  actual   {}", f.actual))?;
            if !f.detail.is_empty() {
                out.line(&format!("  {}", f.detail))?;
            }
        }
        for d in &report.database {
            out.line(&format!("database: {d}"))?;
        }
        if !report.garbage.is_empty() {
            out.line(&format!(
                "{} unregistered path(s) in the store (left by an interrupted process; `cbuild gc` \
                 removes them): {}",
                report.garbage.len(),
                report.garbage.join(", ")
            ))?;
        }
        out.line(&format!(
            "verified {} object(s), {} in {:.2} s ({:.0} MB/s): {}",
            report.checked,
            super::gc::human(report.bytes),
            secs,
            report.bytes as f64 / 1e6 / secs.max(1e-9),
            if left.is_empty() && report.database.is_empty() {
                if report.failures.is_empty() {
                    "all match".to_string()
                } else {
                    format!("{} repaired", report.failures.len())
                }
            } else {
                format!("{} do not match", left.len() + report.database.len())
            }
        ))?;
    }
    if left.is_empty() && report.database.is_empty() {
        Ok(())
    } else {
        Err(CliError::VerifyFailed {
            failed: left.len() + report.database.len(),
        })
    }
}

/// `store roots`.
fn roots(global: &GlobalArgs, out: &mut Output) -> Result<(), CliError> {
    let store = super::open_store_for_reading(global)?;
    let (roots, stale) = store.roots(true)?;
    let dir = store.dir().clone();
    let mut rows = Vec::new();
    for r in &roots {
        let closure = store.closure([r.target.clone()])?;
        let mut bytes = 0;
        for b in &closure {
            bytes += store.db().object(b)?.map_or(0, |i| i.size);
        }
        rows.push((r, closure.len(), bytes));
    }
    if global.json {
        let v = serde_json::json!({
            "roots": rows.iter().map(|(r, n, bytes)| serde_json::json!({
                "kind": r.kind.as_str(),
                "name": r.name,
                "target": format!("{}/{}", dir.as_str(), r.target),
                "closure_objects": n,
                "closure_bytes": bytes,
                "time": r.time,
            })).collect::<Vec<_>>(),
            "stale": stale,
        });
        return out.line(&serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    for (r, n, bytes) in &rows {
        out.line(&format!(
            "{:9} {} -> {}/{} ({} in {n} object(s))",
            r.kind.as_str(),
            r.name,
            dir.as_str(),
            r.target,
            super::gc::human(*bytes)
        ))?;
    }
    for s in &stale {
        out.line(&format!("stale     {} (gc removes it)", s.display()))?;
    }
    Ok(())
}

fn info_json(
    store: &Store,
    base: &str,
    roots: &[crate::store::roots::Root],
) -> Result<serde_json::Value, CliError> {
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
    let closure = store.closure([base.to_string()])?;
    let mut closure_size = 0;
    for b in &closure {
        closure_size += store.db().object(b)?.map_or(0, |i| i.size);
    }
    let root_kinds: Vec<&str> = roots
        .iter()
        .filter(|r| r.target == base)
        .map(|r| r.kind.as_str())
        .collect();
    Ok(serde_json::json!({
        "path": format!("{}/{}", dir.as_str(), info.path),
        "closure_size": closure_size,
        "closure_objects": closure.len(),
        "root": !root_kinds.is_empty(),
        "roots": root_kinds,
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
    out.line(&format!(
        "  closure:    {} bytes in {} object(s)",
        i["closure_size"], i["closure_objects"]
    ))?;
    let roots: Vec<&str> = i["roots"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str())
        .collect();
    out.line(&format!(
        "  root:       {}",
        if roots.is_empty() {
            "no".to_string()
        } else {
            format!("yes ({})", roots.join(", "))
        }
    ))?;
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
