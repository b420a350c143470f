//! `cbuild audit`: inspect built outputs without building (ELF search paths
//! and libraries, paths outside the store, undeclared store references,
//! modes, embedded dates) and exit 1 when any finding is an error. Package
//! files go to [`super::audit_package`].

use super::args::{AuditArgs, GlobalArgs};
use super::error::CliError;
use super::{Output, open_store, show};
use crate::audit::output::{Severity, audit};
use crate::derivation::{ObjectKind, StorePath};

/// Runs `cbuild audit`.
pub fn run(global: &GlobalArgs, args: AuditArgs, out: &mut Output) -> Result<(), CliError> {
    let file = args.target.file.to_string_lossy().into_owned();
    if file.ends_with(".conda") || file.ends_with(".tar.bz2") {
        return super::audit_package::run(global, &args, out);
    }
    let mut store = open_store(global)?;
    let targets = show::targets_of(&mut store, &args.target)?;
    let targets = show::built_or_exported(&mut store, targets, global.quiet)?;
    let dir = store.dir().clone();
    // The targets' outputs, as realised: audit never builds.
    let mut objects: Vec<StorePath> = Vec::new();
    for drv_path in &targets {
        let p = dir.path_of(drv_path);
        let d = store.read_derivation(drv_path)?;
        let h = d.drv_hash();
        for o in &d.outputs {
            let base = store.db().realisation(&h, o)?.ok_or_else(|| {
                crate::store::StoreError::NotValid {
                    path: format!("output `{o}` of {p} (not built: run cbuild realise first)"),
                    store: dir.as_str().into(),
                }
            })?;
            objects.extend(StorePath::from_base_name(&base));
        }
    }
    if args.closure {
        let all = store.closure(objects.iter().map(StorePath::base_name))?;
        objects = Vec::new();
        for base in all {
            let is_output = store
                .db()
                .object(&base)?
                .is_some_and(|i| i.kind == ObjectKind::Output);
            if is_output {
                objects.extend(StorePath::from_base_name(&base));
            }
        }
    }
    let mut report = Vec::new();
    for o in &objects {
        report.push((dir.path_of(o), audit(&store, o)?));
    }
    finish(global, out, report)
}

/// Prints the findings of each audited object; exit 1 when any is an error.
pub(super) fn finish(
    global: &GlobalArgs,
    out: &mut Output,
    report: Vec<(String, Vec<crate::audit::output::Finding>)>,
) -> Result<(), CliError> {
    let errors: usize = report
        .iter()
        .map(|(_, f)| f.iter().filter(|f| f.severity == Severity::Error).count())
        .sum();
    if global.json {
        let v: Vec<serde_json::Value> = report
            .iter()
            .map(|(object, findings)| {
                serde_json::json!({
                    "object": object,
                    "findings": findings.iter().map(|f| serde_json::json!({
                        "severity": f.severity.as_str(),
                        "file": f.file,
                        "offset": f.offset,
                        "what": f.what,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        out.line(&serde_json::to_string_pretty(&v).unwrap_or_default())?;
    } else {
        for (object, findings) in &report {
            let errs = findings
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .count();
            out.line(&format!(
                "{object}: {}",
                if errs == 0 {
                    "passes".to_string()
                } else {
                    format!("{errs} error(s)")
                }
            ))?;
            for f in findings {
                let at = match (f.file.is_empty(), f.offset) {
                    (true, Some(n)) => format!(" (byte {n})"),
                    (true, None) => String::new(),
                    (false, Some(n)) => format!(" {}, byte {n}:", f.file),
                    (false, None) => format!(" {}:", f.file),
                };
                out.line(&format!("  {}{at} {}", f.severity.as_str(), f.what))?;
            }
        }
    }
    if errors > 0 {
        Err(CliError::AuditFailed { errors })
    } else {
        Ok(())
    }
}
