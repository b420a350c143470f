//! Whether a package file came from its recipe: the provenance the export
//! wrote (`info/cbuild/`) is moved into the store, the host tools it
//! pinned are checked against this machine's, the export derivation is
//! built again and its payload compared file by file with the package's;
//! and the metadata beside the payload must be what the recorded inputs
//! give (`info/hash_input.json`, whose hash is the build string).
//!
//! The package must have passed [`super::package::inspect`] first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;
use sha2::Digest;

use super::diff::{self, FileDiff};
use super::output::{Finding, Severity};
use super::package::{PackageError, unpack_payload};
use crate::build::realise::{self, BuildError, Event};
use crate::build::rebuild::rebuild;
use crate::build::sandbox::spec::Variation;
use crate::export::archive::{Data, Kind, Member};
use crate::export::package::{hex, payload};
use crate::export::portable::{Provenance, ProvenanceError, Restored, restore};
use crate::store::{Store, StoreError};

/// What the rebuild showed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every payload file and all metadata reproduced.
    Reproduced,
    /// Something differs, or the package contradicts its own records.
    NotReproduced,
    /// The rebuild could not be attempted or finished here (sources or
    /// host tools missing or different, a failed build): no verdict.
    Unverifiable,
}

impl Verdict {
    /// The word reports and attestations use.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Reproduced => "reproduced",
            Verdict::NotReproduced => "not reproduced",
            Verdict::Unverifiable => "unverifiable",
        }
    }
}

/// A host tool as recorded and as found here.
#[derive(Clone, Debug)]
pub struct ToolCheck {
    /// The name it was asked for.
    pub name: String,
    /// Its path.
    pub path: String,
    /// The recorded BLAKE3 (hex).
    pub recorded: String,
    /// What this machine has there (hex), if anything.
    pub here: Option<String>,
}

/// The result of auditing a package's origin.
pub struct Report {
    /// The verdict.
    pub verdict: Verdict,
    /// Why it is not [`Verdict::Reproduced`], and metadata contradictions.
    pub findings: Vec<Finding>,
    /// Payload files that differ from the rebuild.
    pub diffs: Vec<FileDiff>,
    /// Payload entries compared.
    pub compared: usize,
    /// The export derivation, in this store.
    pub export_drv: Option<String>,
    /// The recorded derivation closure: rebased base name to BLAKE3 (hex).
    pub closure: BTreeMap<String, String>,
    /// The recorded sources: rebased base name to tree digest (hex).
    pub sources: BTreeMap<String, String>,
    /// The host tools the closure pins (differing where `here` is not
    /// `recorded`).
    pub tools: Vec<ToolCheck>,
    /// Whether the export build ran (else its output was rebuilt beside the
    /// stored one).
    pub built: bool,
    /// The two trees, when kept.
    pub kept: Option<PathBuf>,
}

/// Why an origin audit could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Building failed to start.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The package could not be read again.
    #[error(transparent)]
    Package(#[from] PackageError),
    /// A scratch directory could not be used.
    #[error("cannot write {path}")]
    Write {
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn finding(severity: Severity, file: &str, what: String) -> Finding {
    Finding {
        severity,
        file: file.to_string(),
        offset: None,
        what,
    }
}

/// Audits where the package at `pkg` (with `info` from
/// [`super::package::inspect`]) came from, rebuilding it in `store`.
pub fn audit(
    store: &mut Store,
    exe: &Path,
    pkg: &Path,
    info: &BTreeMap<String, Vec<u8>>,
    opts: &realise::Options,
    keep: bool,
    report_event: &mut dyn FnMut(Event<'_>),
) -> Result<Report, OriginError> {
    let mut r = Report {
        verdict: Verdict::Unverifiable,
        findings: Vec::new(),
        diffs: Vec::new(),
        compared: 0,
        export_drv: None,
        closure: BTreeMap::new(),
        sources: BTreeMap::new(),
        tools: Vec::new(),
        built: false,
        kept: None,
    };
    let prov = match Provenance::from_info(info) {
        Ok(Some(p)) => p,
        Ok(None) => {
            r.findings.push(finding(
                Severity::Warning,
                "info/cbuild/export.json",
                "is missing: the package was not exported by cbuild, so its origin cannot be \
                 checked (its structure was)"
                    .into(),
            ));
            return Ok(r);
        }
        Err(e) => {
            r.verdict = Verdict::NotReproduced;
            r.findings.push(finding(Severity::Error, "", e.to_string()));
            return Ok(r);
        }
    };
    r.closure = prov
        .drvs
        .iter()
        .map(|(k, b)| (k.clone(), blake3::hash(b).to_hex().to_string()))
        .collect();
    r.sources = prov.sources.clone();
    let contradictions = metadata(info, &prov);
    if !contradictions.is_empty() {
        r.verdict = Verdict::NotReproduced;
        r.findings = contradictions;
        return Ok(r);
    }
    let restored = match restore(store, &prov) {
        Ok(x) => x,
        Err(ProvenanceError::Store(e)) => return Err(e.into()),
        Err(e) => {
            r.verdict = Verdict::NotReproduced;
            r.findings.push(finding(Severity::Error, "", e.to_string()));
            return Ok(r);
        }
    };
    r.export_drv = Some(store.dir().path_of(&restored.export_drv));
    r.tools = host_tools(&restored);
    for (name, digest, path) in &restored.missing_sources {
        r.findings.push(finding(
            Severity::Error,
            "",
            format!(
                "source `{name}` (tree digest {digest}) is not in the store (it would be \
                 {path}): pass the recipe with --recipe FILE (-A PATH) so that it is imported \
                 from its checkout"
            ),
        ));
    }
    for t in r
        .tools
        .iter()
        .filter(|t| t.here.as_deref() != Some(t.recorded.as_str()))
    {
        let here = t.here.as_deref().unwrap_or("nothing (missing)");
        r.findings.push(finding(
            Severity::Error,
            "",
            format!(
                "host tool `{}` at {} differs: the package was built with BLAKE3 {}, this \
                 machine has {here}; a rebuild here would not use the recorded inputs",
                t.name, t.path, t.recorded
            ),
        ));
    }
    if !r.findings.is_empty() {
        return Ok(r);
    }
    compare_rebuild(
        store,
        exe,
        pkg,
        info,
        &prov,
        &restored,
        opts,
        keep,
        report_event,
        &mut r,
    )?;
    Ok(r)
}

/// Builds the export derivation again and compares its payload with the
/// package's; sets the verdict.
#[allow(clippy::too_many_arguments)]
fn compare_rebuild(
    store: &mut Store,
    exe: &Path,
    pkg: &Path,
    info: &BTreeMap<String, Vec<u8>>,
    prov: &Provenance,
    restored: &Restored,
    opts: &realise::Options,
    keep: bool,
    report_event: &mut dyn FnMut(Event<'_>),
    r: &mut Report,
) -> Result<(), OriginError> {
    let drv = &restored.export_drv;
    let shown = store.dir().path_of(drv);
    let outcome = realise::realise(store, exe, std::slice::from_ref(drv), opts, report_event)?;
    if let Some((p, e)) = outcome.failed.first() {
        r.findings.push(finding(
            Severity::Error,
            "",
            format!(
                "the rebuild failed ({}: {e}); see `cbuild log {}`",
                store.dir().path_of(p),
                store.dir().path_of(p)
            ),
        ));
        return Ok(());
    }
    r.built = outcome.built.contains(drv);
    let index: Value = json_of(info, "info/index.json").unwrap_or(Value::Null);
    let name = index["name"].as_str().unwrap_or_default().to_string();
    let subdir = index["subdir"].as_str().unwrap_or_default().to_string();
    // What the package is compared with: a fresh build of the export
    // derivation, never only an output this store had (which could be the
    // very build the package was made from).
    let sandboxes = OnceLock::new();
    let (tree, work) = if r.built {
        let out = outcome
            .outputs
            .get(drv)
            .and_then(|o| o.iter().find(|(n, _)| *n == prov.output))
            .map(|(_, p)| store.real_path(p));
        (out, None)
    } else {
        let rebuilt = rebuild(store, &sandboxes, exe, drv, Variation::default())?;
        let out = rebuilt
            .outputs
            .iter()
            .find(|o| o.output == prov.output)
            .map(|o| o.tree.clone());
        (out, Some(rebuilt.work))
    };
    let Some(tree) = tree else {
        r.findings.push(finding(
            Severity::Error,
            "",
            format!("{shown} has no output `{}`", prov.output),
        ));
        r.verdict = Verdict::NotReproduced;
        return Ok(());
    };
    let scratch = store.scratch_path("audit");
    let result = compare_payloads(store, pkg, info, &tree, &name, &subdir, &scratch, r);
    if keep && r.verdict == Verdict::NotReproduced {
        // Both trees stay for a closer look: the package's and the rebuild's.
        let to = store.root().join("kept").join(format!(
            "audit-{}-{}",
            drv.base_name(),
            std::process::id()
        ));
        let _ = std::fs::create_dir_all(store.root().join("kept"));
        if std::fs::rename(&scratch, &to).is_ok() {
            r.kept = Some(to);
        }
    }
    crate::build::job::discard(&scratch);
    if let Some(w) = work {
        crate::build::job::discard(&w);
    }
    result
}

/// Unpacks the package's payload and writes the rebuilt one beside it
/// (as the export would package it), then compares the two.
#[allow(clippy::too_many_arguments)]
fn compare_payloads(
    store: &Store,
    pkg: &Path,
    info: &BTreeMap<String, Vec<u8>>,
    tree: &Path,
    name: &str,
    subdir: &str,
    scratch: &Path,
    r: &mut Report,
) -> Result<(), OriginError> {
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| OriginError::Write { path, source }
    };
    let (ours, theirs) = (scratch.join("package"), scratch.join("rebuild"));
    for d in [&ours, &theirs] {
        std::fs::create_dir_all(d).map_err(write_err(d))?;
    }
    // Not strict: what export let through as a warning, the rebuild does too.
    let rebuilt = match payload(tree, name, subdir, store.dir().as_str(), false) {
        Ok(p) => p,
        Err(e) => {
            r.verdict = Verdict::NotReproduced;
            r.findings.push(finding(
                Severity::Error,
                "",
                format!("the rebuild cannot be packaged: {e}"),
            ));
            return Ok(());
        }
    };
    unpack_payload(pkg, &ours)?;
    write_members(&theirs, &rebuilt.members).map_err(write_err(&theirs))?;
    r.diffs = diff::compare(&ours, "", &theirs, "").map_err(write_err(scratch))?;
    r.compared = rebuilt.members.len();
    // paths.json says more than the files do (placeholders, file modes).
    let listed = json_of(info, "info/paths.json").unwrap_or(Value::Null);
    let by_path = |v: &[Value]| -> BTreeMap<String, Value> {
        v.iter()
            .map(|e| {
                (
                    e["_path"].as_str().unwrap_or_default().to_string(),
                    e.clone(),
                )
            })
            .collect()
    };
    let package_paths = by_path(listed["paths"].as_array().map_or(&[], Vec::as_slice));
    let rebuilt_paths = by_path(&rebuilt.paths);
    for (p, e) in &rebuilt_paths {
        if let Some(x) = package_paths.get(p)
            && x != e
            && !r.diffs.iter().any(|d| d.path == *p)
        {
            r.findings.push(finding(
                Severity::Error,
                "info/paths.json",
                format!("describes {p} as {x}, the rebuild gives {e}"),
            ));
        }
    }
    r.verdict = if r.diffs.is_empty() && r.findings.is_empty() {
        Verdict::Reproduced
    } else {
        Verdict::NotReproduced
    };
    Ok(())
}

/// Writes payload members under `dir` as a conda client would unpack them.
fn write_members(dir: &Path, members: &[Member]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for m in members {
        let p = dir.join(&m.path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match &m.kind {
            Kind::Symlink(t) => std::os::unix::fs::symlink(t, &p)?,
            Kind::File { data, executable } => {
                match data {
                    Data::Bytes(b) => std::fs::write(&p, b)?,
                    Data::File(src, _) => {
                        std::fs::copy(src, &p)?;
                    }
                }
                let mode = if *executable { 0o755 } else { 0o644 };
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
            }
        }
    }
    Ok(())
}

fn json_of(info: &BTreeMap<String, Vec<u8>>, path: &str) -> Option<Value> {
    serde_json::from_slice(info.get(path)?).ok()
}

/// The host tools the closure pins, with what this machine has.
fn host_tools(restored: &Restored) -> Vec<ToolCheck> {
    let mut out: Vec<ToolCheck> = Vec::new();
    for (_, _, d) in &restored.drvs {
        for (name, t) in &d.host_tools {
            if out.iter().any(|c| c.path == t.path) {
                continue;
            }
            let here = std::fs::canonicalize(&t.path)
                .ok()
                .and_then(|p| crate::store::tree_hash::hash_file(&p).ok())
                .map(|(d, _)| d.to_hex());
            out.push(ToolCheck {
                name: name.clone(),
                path: t.path.clone(),
                recorded: t.digest.to_hex(),
                here,
            });
        }
    }
    out
}

/// What the metadata beside the payload contradicts in the package's own
/// records: `hash_input.json` must give the build string, and hold
/// `index.json`, `about.json`, `run_exports.json`, the recipe and license
/// files and the export derivation that are in the package.
fn metadata(info: &BTreeMap<String, Vec<u8>>, prov: &Provenance) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut bad = |file: &str, what: String| out.push(finding(Severity::Error, file, what));
    let (Some(index), Some(hash_input_bytes)) = (
        json_of(info, "info/index.json"),
        info.get("info/hash_input.json"),
    ) else {
        bad(
            "info/hash_input.json",
            "is missing or index.json is not JSON: the build string cannot be checked".into(),
        );
        return out;
    };
    let Ok(hi) = serde_json::from_slice::<Value>(hash_input_bytes) else {
        bad("info/hash_input.json", "is not JSON".into());
        return out;
    };
    let build = index["build"].as_str().unwrap_or_default();
    let digest = blake3::hash(hash_input_bytes).to_hex();
    let want_prefix = format!("h{}_", &digest[..12]);
    if !build.starts_with(&want_prefix) {
        bad(
            "info/index.json",
            format!(
                "has the build string {build}, but info/hash_input.json gives {want_prefix}<n>: \
                 the metadata was changed after the export"
            ),
        );
    }
    let mut index_wo_build = index.clone();
    if let Some(m) = index_wo_build.as_object_mut() {
        m.remove("build");
    }
    let same = |file: &str, key: &str, have: Value, bad: &mut dyn FnMut(&str, String)| {
        if hi[key] != have {
            bad(
                file,
                format!("differs from what info/hash_input.json records under `{key}`"),
            );
        }
    };
    same("info/index.json", "index", index_wo_build, &mut bad);
    same(
        "info/about.json",
        "about",
        json_of(info, "info/about.json").unwrap_or(Value::Null),
        &mut bad,
    );
    same(
        "info/run_exports.json",
        "run_exports",
        json_of(info, "info/run_exports.json").unwrap_or(Value::Null),
        &mut bad,
    );
    for (dir, key) in [("info/recipe/", "recipe"), ("info/licenses/", "licenses")] {
        let have: serde_json::Map<String, Value> = info
            .iter()
            .filter_map(|(k, v)| {
                let rel = k.strip_prefix(dir)?;
                Some((rel.to_string(), Value::from(hex(&sha2::Sha256::digest(v)))))
            })
            .collect();
        same(
            dir.trim_end_matches('/'),
            key,
            Value::Object(have),
            &mut bad,
        );
    }
    if hi["export_drv"] != prov.export_drv.as_str() || hi["output"] != prov.output.as_str() {
        bad(
            "info/cbuild/export.json",
            "names another export derivation or output than info/hash_input.json".into(),
        );
    }
    if let Some(b) = prov.drvs.get(&prov.export_drv)
        && hi["export_drv_hash"] != blake3::hash(b).to_hex().as_str()
    {
        bad(
            &format!("info/cbuild/drv/{}", prov.export_drv),
            "is not the export derivation info/hash_input.json records".into(),
        );
    }
    // `files` lists the payload's files and symlinks: those of paths.json.
    if let (Some(files), Some(paths)) = (info.get("info/files"), json_of(info, "info/paths.json")) {
        let listed: Vec<&str> = paths["paths"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["path_type"] != "directory")
            .filter_map(|p| p["_path"].as_str())
            .collect();
        let files: Vec<&str> = std::str::from_utf8(files)
            .unwrap_or_default()
            .lines()
            .collect();
        if files != listed {
            bad(
                "info/files",
                "does not list what info/paths.json does".into(),
            );
        }
    }
    out
}
