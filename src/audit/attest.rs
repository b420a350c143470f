//! The in-toto v1 statement `cbuild audit PKG --attest FILE` writes: the
//! package's sha256 as the subject, the rebuild's verdict, the recorded
//! derivation closure, sources and host tools as the predicate.

use serde_json::{Value, json};

use super::diff;
use super::origin::Report;
use super::output::Finding;

/// The in-toto predicate type of a cbuild rebuild verdict.
pub const PREDICATE_TYPE: &str = "https://cbuild.dev/attestation/rebuild/v1";

/// The statement for the package `file_name` (`sha256`), audited at
/// `audited_at` (RFC 3339); `report` is `None` when the structure checks
/// failed and nothing was rebuilt.
pub fn statement(
    file_name: &str,
    sha256: &str,
    verdict: &str,
    report: Option<&Report>,
    findings: &[Finding],
    audited_at: &str,
) -> Value {
    let mut predicate = json!({
        "verdict": verdict,
        "builder": {"id": "cbuild", "version": env!("CARGO_PKG_VERSION")},
        "audited_at": audited_at,
        "findings": findings.iter().map(|f| json!({
            "severity": f.severity.as_str(),
            "file": f.file,
            "what": f.what,
        })).collect::<Vec<_>>(),
    });
    if let Some(r) = report {
        predicate["rebuild"] = json!({
            "export_drv": r.export_drv,
            "built": r.built,
            "compared_entries": r.compared,
            "differences": diff::to_json(&r.diffs),
        });
        predicate["derivations"] = Value::Object(
            r.closure
                .iter()
                .map(|(k, v)| (k.clone(), json!({"blake3": v})))
                .collect(),
        );
        predicate["sources"] = Value::Object(
            r.sources
                .iter()
                .map(|(k, v)| (k.clone(), json!({"tree_blake3": v})))
                .collect(),
        );
        predicate["host_tools"] = r
            .tools
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "path": t.path,
                    "blake3": t.recorded,
                    "same_here": t.here.as_deref() == Some(t.recorded.as_str()),
                })
            })
            .collect();
    }
    json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": file_name, "digest": {"sha256": sha256}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    })
}
