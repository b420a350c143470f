//! `cbuild audit PKG.conda|PKG.tar.bz2|URL`: the package's structure, then
//! its origin: rebuilt from the provenance it carries (sources from the
//! store, or imported by evaluating `--recipe`) and compared file by file.
//! `--attest FILE` writes the verdict as an in-toto v1 statement.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::args::{AuditArgs, GlobalArgs};
use super::check::print_diffs;
use super::error::CliError;
use super::progress::Progress;
use super::{Output, open_store, show};
use crate::audit::origin::{self, Verdict};
use crate::audit::output::Severity;
use crate::audit::package::{MAX_UNPACKED, inspect};

/// Runs `cbuild audit` on a package file or URL.
pub fn run(global: &GlobalArgs, args: &AuditArgs, out: &mut Output) -> Result<(), CliError> {
    let given = args.target.file.to_string_lossy().into_owned();
    let download = if given.starts_with("http://") || given.starts_with("https://") {
        Some(download(&given)?)
    } else {
        None
    };
    let pkg: PathBuf = match &download {
        Some(d) => d.path.clone(),
        None => args.target.file.clone(),
    };
    let inspected = inspect(&pkg).map_err(|e| CliError::Package(Box::new(e)))?;
    let (sha256, _, _) =
        crate::export::run::digests_of(&pkg).map_err(|e| CliError::Export(Box::new(e)))?;
    let file_name = pkg
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let structure_ok = !inspected
        .findings
        .iter()
        .any(|f| f.severity == Severity::Error);
    if !structure_ok {
        if let Some(a) = &args.attest {
            write_attestation(
                a,
                &file_name,
                &sha256,
                "not reproduced",
                None,
                &inspected.findings,
            )?;
        }
        return super::audit::finish(global, out, vec![(given, inspected.findings)]);
    }
    let mut store = open_store(global)?;
    if let Some(recipe) = &args.recipe {
        // Evaluating imports the recipe's sources into the store; the
        // provenance then finds them by digest.
        let index: serde_json::Value = inspected
            .info
            .get("info/index.json")
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default();
        let subdir = index["subdir"].as_str().filter(|s| *s != "noarch");
        show::evaluate(&mut store, recipe, &args.target.attrs, subdir)?;
    }
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("cbuild"));
    let realise_opts = global.realise_options();
    let mut progress = Progress::new(store.dir().clone(), global.quiet, realise_opts.live.clone());
    let report = origin::audit(
        &mut store,
        &exe,
        &pkg,
        &inspected.info,
        &realise_opts,
        args.keep_failed,
        &mut |e| progress.event(e),
    );
    progress.finish();
    let report = report.map_err(|e| CliError::Origin(Box::new(e)))?;
    let mut findings = inspected.findings.clone();
    findings.extend(report.findings.iter().cloned());
    if let Some(a) = &args.attest {
        write_attestation(
            a,
            &file_name,
            &sha256,
            report.verdict.as_str(),
            Some(&report),
            &findings,
        )?;
    }
    let no_provenance = report.export_drv.is_none() && report.closure.is_empty();
    if global.json {
        let v = serde_json::json!({
            "package": given,
            "sha256": sha256,
            "verdict": report.verdict.as_str(),
            "export_drv": report.export_drv,
            "built": report.built,
            "compared": report.compared,
            "kept": report.kept,
            "findings": findings.iter().map(|f| serde_json::json!({
                "severity": f.severity.as_str(),
                "file": f.file,
                "what": f.what,
            })).collect::<Vec<_>>(),
            "differences": crate::audit::diff::to_json(&report.diffs),
            "host_tools": report.tools.iter().map(|t| serde_json::json!({
                "name": t.name,
                "path": t.path,
                "recorded": t.recorded,
                "here": t.here,
            })).collect::<Vec<_>>(),
        });
        out.line(&serde_json::to_string_pretty(&v).unwrap_or_default())?;
    } else {
        out.line(&format!("{given}: structure passes (sha256 {sha256})"))?;
        for f in &findings {
            let at = if f.file.is_empty() {
                String::new()
            } else {
                format!(" {}:", f.file)
            };
            out.line(&format!("  {}{at} {}", f.severity.as_str(), f.what))?;
        }
        if let Some(d) = &report.export_drv {
            let how = if report.built {
                "built"
            } else {
                "rebuilt beside the stored output"
            };
            match report.verdict {
                Verdict::Reproduced => out.line(&format!(
                    "reproduced: all {} of {file_name} match{} a rebuild of {d} ({how}); its \
                     metadata is what its recorded inputs give",
                    entries(report.compared),
                    if report.compared == 1 { "es" } else { "" }
                ))?,
                Verdict::NotReproduced => {
                    out.line(&format!(
                        "NOT reproduced: {} of {} differ from a rebuild of {d} ({how}); \
                         \"stored\" below is the package",
                        report.diffs.len(),
                        entries(report.compared)
                    ))?;
                    print_diffs(out, &report.diffs, "  ")?;
                    if report
                        .diffs
                        .iter()
                        .any(|d| d.kind != crate::audit::diff::Kind::Mode)
                    {
                        out.line(
                            "  if the build is not reproducible, `cbuild check` on the recipe \
                             says why",
                        )?;
                    }
                }
                Verdict::Unverifiable => out.line(&format!(
                    "unverifiable: {file_name} could not be rebuilt here"
                ))?,
            }
        } else if report.verdict == Verdict::Unverifiable && !no_provenance {
            out.line(&format!(
                "unverifiable: {file_name} could not be rebuilt here"
            ))?;
        } else if report.verdict == Verdict::NotReproduced {
            out.line(&format!(
                "NOT reproduced: {file_name} contradicts its own records"
            ))?;
        }
        if let Some(k) = &report.kept {
            out.line(&format!(
                "  the package's payload and the rebuild are kept in {}",
                k.display()
            ))?;
        }
    }
    match report.verdict {
        Verdict::Reproduced => Ok(()),
        Verdict::NotReproduced => Err(CliError::AuditFailed {
            errors: findings
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .count()
                + report.diffs.len(),
        }),
        // A package without provenance was audited for its structure only:
        // that passed (warned above).
        Verdict::Unverifiable if no_provenance => Ok(()),
        Verdict::Unverifiable => Err(CliError::AuditUnverifiable {
            reason: report
                .findings
                .first()
                .map(|f| f.what.clone())
                .unwrap_or_default(),
        }),
    }
}

fn entries(n: usize) -> String {
    if n == 1 {
        "1 payload entry".into()
    } else {
        format!("{n} payload entries")
    }
}

/// A downloaded package, removed when dropped.
struct Download {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

/// Downloads `url` into a temporary directory under its own file name,
/// refusing more than a package may unpack to.
fn download(url: &str) -> Result<Download, CliError> {
    let fail = |reason: String| CliError::Download {
        url: url.to_string(),
        reason,
    };
    let name = url
        .split(['?', '#'])
        .next()
        .and_then(|u| u.rsplit('/').next())
        .filter(|n| !n.is_empty() && !n.starts_with('.'))
        .ok_or_else(|| fail("the URL does not end in a package file name".into()))?
        .to_string();
    let dir = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
    let path = dir.path().join(&name);
    let resp = crate::build::fetch::http_agent()
        .get(url)
        .call()
        .map_err(|e| fail(e.to_string()))?;
    let mut reader = resp.into_body().into_reader().take(MAX_UNPACKED + 1);
    let mut file = std::fs::File::create(&path).map_err(|e| fail(e.to_string()))?;
    let n = std::io::copy(&mut reader, &mut file).map_err(|e| fail(e.to_string()))?;
    if n > MAX_UNPACKED {
        return Err(fail(format!(
            "it is larger than {} GiB",
            MAX_UNPACKED >> 30
        )));
    }
    Ok(Download { _dir: dir, path })
}

/// Writes the in-toto statement of the verdict to `path`.
fn write_attestation(
    path: &Path,
    file_name: &str,
    sha256: &str,
    verdict: &str,
    report: Option<&origin::Report>,
    findings: &[crate::audit::output::Finding],
) -> Result<(), CliError> {
    let st = crate::audit::attest::statement(
        file_name,
        sha256,
        verdict,
        report,
        findings,
        &crate::store::rfc3339(crate::store::now()),
    );
    let bytes = crate::export::package::json_bytes(&st);
    crate::export::channel::atomic_write(path, &bytes).map_err(|e| CliError::Export(Box::new(e)))
}
