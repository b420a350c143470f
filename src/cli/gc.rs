//! `cbuild gc`: delete what no root keeps alive, or (`--dry-run`) say what
//! each root keeps and what would go.

use super::args::{GcArgs, GlobalArgs};
use super::error::CliError;
use super::{Output, open_store};
use crate::store::gc::{Options, collect};

/// `n` bytes for people: `512 B`, `1.5 KiB`, `3.2 GiB`.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Runs `cbuild gc`.
pub fn run(global: &GlobalArgs, args: GcArgs, out: &mut Output) -> Result<(), CliError> {
    let mut store = open_store(global)?;
    let opts = Options {
        dry_run: args.dry_run,
        max_freed: args.max_freed,
        keep_days: args.keep_days,
        keep_derivations: args.keep_derivations,
    };
    let r = collect(&mut store, &opts)?;
    let dir = store.dir().clone();
    let full = |b: &str| format!("{}/{b}", dir.as_str());
    if global.json {
        let v = serde_json::json!({
            "dry_run": args.dry_run,
            "roots": r.roots.iter().map(|k| serde_json::json!({
                "kind": k.root.kind.as_str(),
                "name": k.root.name,
                "target": full(&k.root.target),
                "closure_bytes": k.closure_bytes,
                "closure_objects": k.closure_objects,
            })).collect::<Vec<_>>(),
            "stale_roots": r.stale_roots,
            "deleted": r.deleted.iter().map(|b| full(b)).collect::<Vec<_>>(),
            "freed": r.freed,
            "leftovers": r.leftovers,
            "leftovers_refused": r.leftovers_refused,
            "leftovers_stuck": r.leftovers_stuck.iter().map(|(p, why)| serde_json::json!({
                "path": full(p), "error": why,
            })).collect::<Vec<_>>(),
            "pruned_logs": r.pruned_logs,
            "pruned_packages": r.pruned_packages,
            "pruned_file_cache": r.pruned_file_cache,
            "live": r.live,
        });
        return out.line(&serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    if args.dry_run {
        out.line(&format!("{} root(s):", r.roots.len()))?;
        for k in &r.roots {
            out.line(&format!(
                "  {:9} {} -> {} (keeps {} in {} object(s))",
                k.root.kind.as_str(),
                k.root.name,
                full(&k.root.target),
                human(k.closure_bytes),
                k.closure_objects
            ))?;
        }
        for s in &r.stale_roots {
            out.line(&format!("  stale, would be removed: {}", s.display()))?;
        }
        out.line(&format!(
            "would delete {} object(s), freeing {}; {} stay",
            r.deleted.len(),
            human(r.freed),
            r.live
        ))?;
        for b in &r.deleted {
            out.line(&format!("  {}", full(b)))?;
        }
        return Ok(());
    }
    if global.verbose > 0 {
        for b in &r.deleted {
            eprintln!("deleted {}", full(b));
        }
    }
    for (p, why) in &r.leftovers_stuck {
        eprintln!(
            "warning: {} is not registered and cannot be removed ({why}); remove it by hand",
            full(p)
        );
    }
    if r.leftovers_refused > 0 {
        eprintln!(
            "warning: {} paths in {} are not registered, more than are: the database may have \
             lost rows, so they were left alone; `cbuild store verify` says more",
            r.leftovers_refused,
            dir.as_str()
        );
    }
    out.line(&format!(
        "deleted {} object(s), freed {}; {} stay{}{}",
        r.deleted.len(),
        human(r.freed),
        r.live,
        if r.leftovers.is_empty() {
            String::new()
        } else {
            format!("; removed {} unregistered leftover(s)", r.leftovers.len())
        },
        if r.stale_roots.is_empty() {
            String::new()
        } else {
            format!("; removed {} stale root(s)", r.stale_roots.len())
        }
    ))
}
