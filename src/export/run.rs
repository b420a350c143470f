//! One `cbuild export --conda`: plan the export derivations, realise them
//! (cached like any build), then write a package per output, dependencies
//! first, so each dependent can pin the exact builds it was built against.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::Digest;

use super::archive::{self, Format, Kind, Member};
use super::channel::{self, Entry};
use super::package::{self, check_match_spec, check_name, check_version, hex, json_bytes};
use super::plan::{self, PackageRef, Plan};
use super::portable::{PORTABLE_STORE, Portable};
use super::run_exports::{
    IgnoreRunExports, RUN_EXPORT_KEYS, normalise_run_exports, specs_from, strings,
};
use super::{ExportError, read_err};
use super::{linkage, platform};
use crate::build::realise::{self, Event};
use crate::derivation::StorePath;
use crate::derivation::prefix::PREFIX;
use crate::store::Store;

/// The `timestamp` (ms) and tar mtime (s) of packages when
/// `SOURCE_DATE_EPOCH` is not set: 2023-01-01T00:00:00Z, never the clock.
pub const DEFAULT_EPOCH: u64 = 1_672_531_200;

/// How to export.
pub struct Options {
    /// Where packages go without a channel.
    pub output_dir: PathBuf,
    /// A channel to add them to instead.
    pub channel: Option<PathBuf>,
    /// The subdir of platform packages.
    pub subdir: String,
    /// The package format.
    pub format: Format,
    /// zstd level of `.conda` packages.
    pub zstd_level: i32,
    /// Seconds since the epoch for `timestamp` and tar mtimes.
    pub epoch: u64,
    /// Each derivation's recipe files (by `.drv` path): the file it is
    /// written in and what that imports, by name relative to that file's
    /// folder ([`cbuild_lang::eval::Evaluator::recipe_files`]).
    pub recipe_files: HashMap<String, RecipeRecord>,
    /// How to realise the export builds.
    pub realise: realise::Options,
    /// Mentions of the build directory fail the export (else they are
    /// warnings).
    pub strict: bool,
}

/// The recipe files of the derivations written in one file, as
/// `info/recipe/` holds them: name and bytes, sorted by name.
pub type RecipeRecord = std::sync::Arc<Vec<(String, Vec<u8>)>>;

/// One package written.
#[derive(Debug, Clone)]
pub struct Exported {
    /// Where it is.
    pub path: PathBuf,
    /// Package name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Build string.
    pub build: String,
    /// Subdir.
    pub subdir: String,
    /// sha256 of the file.
    pub sha256: String,
    /// Whether a selected target (else a host or run input of one).
    pub target: bool,
    /// The export derivation.
    pub export_drv: String,
    /// Whether its export build ran in this export (else it was cached).
    pub built: bool,
    /// What the user should know about it (an empty directory left out,
    /// the build directory named in a file).
    pub warnings: Vec<String>,
}

/// What an export did.
pub struct Outcome {
    /// Packages, dependencies first.
    pub packages: Vec<Exported>,
    /// Export builds that failed, and those skipped because of them.
    pub failed: usize,
    /// Skipped builds.
    pub skipped: usize,
}

/// Exports `targets` (original `.drv` paths).
pub fn export(
    store: &mut Store,
    exe: &Path,
    targets: &[StorePath],
    opts: &Options,
    report: &mut dyn FnMut(Event<'_>),
) -> Result<Outcome, ExportError> {
    if !platform::is_known(&opts.subdir) {
        return Err(ExportError::UnknownSubdir {
            subdir: opts.subdir.clone(),
        });
    }
    let plan = plan::plan(store, targets)?;
    check_metadata(store, &plan)?;
    let channel = match &opts.channel {
        Some(c) => Some(channel::open(c, &[opts.subdir.as_str()])?),
        None => {
            std::fs::create_dir_all(&opts.output_dir)
                .map_err(super::write_err(&opts.output_dir))?;
            None
        }
    };
    let export_paths: Vec<StorePath> = plan.nodes.iter().map(|n| n.export_path.clone()).collect();
    let outcome = realise::realise(store, exe, &export_paths, &opts.realise, report)?;
    if !outcome.failed.is_empty() {
        return Ok(Outcome {
            packages: Vec::new(),
            failed: outcome.failed.len(),
            skipped: outcome.skipped.len(),
        });
    }
    let built: std::collections::HashSet<&StorePath> = outcome.built.iter().collect();
    let staging = match &channel {
        Some(l) => l.dir().to_path_buf(),
        None => opts.output_dir.clone(),
    };
    let mut done: HashMap<PackageRef, Done> = HashMap::new();
    let mut packages = Vec::new();
    let mut entries = Vec::new();
    let mut subdirs_used = Vec::new();
    // Staged files that did not make it into the channel go when this
    // returns, whatever happens.
    let mut staged = Staged(Vec::new());
    for (i, n) in plan.nodes.iter().enumerate() {
        let outs = outcome
            .outputs
            .get(&n.export_path)
            .cloned()
            .unwrap_or_default();
        // `out` first: the other outputs pin it.
        let mut order: Vec<&(String, StorePath)> = outs.iter().collect();
        order.sort_by_key(|(o, _)| o != "out");
        for (o, path) in order {
            let p = PackageRef {
                node: i,
                output: o.clone(),
            };
            let w = write_package(store, &plan, &p, path, opts, &staging, &done)?;
            // `gc` keeps what was exported recently (`--keep-days`): a
            // re-export then gives the same bytes even for a build that is
            // not reproducible.
            store.add_export_root(path)?;
            let mut ex = w.exported;
            ex.built = built.contains(&n.export_path);
            ex.target = n.target;
            if let Some(tmp) = w.staged {
                staged.0.push(tmp.clone());
                subdirs_used.push(ex.subdir.clone());
                entries.push(Entry {
                    file: tmp,
                    file_name: file_name(&ex, opts.format),
                    subdir: ex.subdir.clone(),
                    key: opts.format.repodata_key(),
                    record: w.record,
                });
                if let Some(l) = &channel {
                    ex.path = l.dir().join(&ex.subdir).join(file_name(&ex, opts.format));
                }
            }
            packages.push(ex.clone());
            done.insert(
                p,
                Done {
                    spec: w.spec,
                    exported: ex,
                    run_exports: w.run_exports,
                    file_names: w.file_names,
                },
            );
        }
    }
    if let Some(l) = &channel {
        let mut subdirs: Vec<&str> = subdirs_used.iter().map(String::as_str).collect();
        subdirs.push(opts.subdir.as_str());
        l.add(entries, &subdirs)?;
    }
    Ok(Outcome {
        packages,
        failed: 0,
        skipped: 0,
    })
}

/// What conda would refuse, found before anything is built: package names,
/// versions, match specs, `run_exports` and `noarch`.
fn check_metadata(store: &Store, plan: &Plan) -> Result<(), ExportError> {
    for (i, n) in plan.nodes.iter().enumerate() {
        for o in &n.drv.outputs {
            let name = plan.package_name(&PackageRef {
                node: i,
                output: o.clone(),
            });
            check_name(&name).map_err(|reason| ExportError::BadMetadata {
                what: store.dir().path_of(&n.original),
                reason,
            })?;
        }
        let bad = |field: &str, reason: String| ExportError::BadMetadata {
            what: format!("{} ({field})", store.dir().path_of(&n.original)),
            reason,
        };
        check_version(n.drv.version.as_deref().unwrap_or("")).map_err(|r| bad("version", r))?;
        for field in ["depends", "constrains"] {
            for spec in strings(n.meta.get(field)) {
                check_match_spec(&spec).map_err(|r| bad(field, r))?;
            }
        }
        match n.meta.get("run_exports").and_then(normalise_run_exports) {
            Some(Value::Object(m)) => {
                for (k, v) in &m {
                    if !RUN_EXPORT_KEYS.contains(&k.as_str()) {
                        return Err(bad(
                            "run_exports",
                            format!(
                                "unknown key `{k}`; the keys are {}",
                                RUN_EXPORT_KEYS.join(", ")
                            ),
                        ));
                    }
                    if !matches!(v, Value::Array(_) | Value::String(_)) {
                        return Err(bad(
                            "run_exports",
                            format!("`{k}` must be a list of match specs"),
                        ));
                    }
                    for spec in strings(Some(v)) {
                        check_match_spec(&spec).map_err(|r| bad("run_exports", r))?;
                    }
                }
            }
            Some(_) | None if n.meta.get("run_exports").is_some_and(|v| !v.is_null()) => {
                return Err(bad(
                    "run_exports",
                    "must be a list of match specs or a record of them".into(),
                ));
            }
            _ => {}
        }
        IgnoreRunExports::of(&n.meta).map_err(|r| bad("ignore_run_exports", r))?;
        if let Some(v) = n.meta.get("missing_dso_allowlist").filter(|v| !v.is_null()) {
            if !matches!(v, Value::Array(a) if a.iter().all(Value::is_string)) {
                return Err(bad(
                    "missing_dso_allowlist",
                    "must be a list of globs over sonames (\"libstdc++.so*\")".into(),
                ));
            }
            linkage::allowlist(&strings(Some(v))).map_err(|r| bad("missing_dso_allowlist", r))?;
        }
        if let Some(na) = n.meta.get("noarch").filter(|v| !v.is_null())
            && na.as_str() != Some("generic")
        {
            return Err(bad(
                "noarch",
                format!("{na} is not supported; noarch packages are \"generic\""),
            ));
        }
    }
    Ok(())
}

/// Files to remove when dropped (those already moved away are gone).
struct Staged(Vec<PathBuf>);

impl Drop for Staged {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn file_name(e: &Exported, format: Format) -> String {
    format!("{}-{}-{}{}", e.name, e.version, e.build, format.extension())
}

/// Match specs a dependent gets from `dep` (see [`specs_from`]).
fn dep_specs(dep: &Done, keys: [&str; 2]) -> Vec<String> {
    specs_from(&dep.spec, &dep.run_exports, keys)
}

/// A package written, as the packages written after it see it.
struct Done {
    /// Its exact-pin match spec.
    spec: String,
    exported: Exported,
    run_exports: Option<Value>,
    /// Its files' names, for the linkage check of its dependents.
    file_names: std::collections::BTreeSet<String>,
}

struct Written {
    exported: Exported,
    /// The exact-pin match spec of this package.
    spec: String,
    run_exports: Option<Value>,
    record: Value,
    /// With a channel: the file to move in.
    staged: Option<PathBuf>,
    /// Its files' names, for the linkage check of its dependents.
    file_names: std::collections::BTreeSet<String>,
}

/// The linkage check of package `p` ([`linkage`]): its ELF files' needed
/// libraries against its own files (`own`), the packages it depends on
/// (written before it, in `done`) and the recipe's `missing_dso_allowlist`.
fn check_linkage(
    plan: &Plan,
    p: &PackageRef,
    needed: &[(String, Vec<String>)],
    own: &std::collections::BTreeSet<String>,
    done: &HashMap<PackageRef, Done>,
) -> linkage::Linkage {
    if needed.is_empty() {
        return linkage::Linkage::default();
    }
    let n = &plan.nodes[p.node];
    // Checked before anything was built (check_metadata).
    let allow =
        linkage::allowlist(&strings(n.meta.get("missing_dso_allowlist"))).unwrap_or_default();
    let deps: Vec<linkage::Dependency<'_>> = plan
        .package_deps(p)
        .iter()
        .filter_map(|d| {
            let dep = done.get(d)?;
            Some(linkage::Dependency {
                name: &dep.exported.name,
                host: d.node != p.node && n.host.contains(d) && !n.run.contains(d),
                files: &dep.file_names,
            })
        })
        .collect();
    linkage::check(needed, own, &deps, &allow)
}

fn write_package(
    store: &Store,
    plan: &Plan,
    p: &PackageRef,
    output_path: &StorePath,
    opts: &Options,
    dest_dir: &Path,
    done: &HashMap<PackageRef, Done>,
) -> Result<Written, ExportError> {
    let n = &plan.nodes[p.node];
    let meta = &n.meta;
    let name = plan.package_name(p);
    let version = n.drv.version.clone().unwrap_or_default();
    // Only "generic" gets here (check_metadata).
    let noarch = meta
        .get("noarch")
        .and_then(Value::as_str)
        .map(str::to_string);
    let subdir = if noarch.is_some() {
        "noarch".to_string()
    } else {
        opts.subdir.clone()
    };
    let root = PathBuf::from(store.dir().path_of(output_path));
    let payload = package::payload(&root, &name, &subdir, store.dir().as_str(), opts.strict)?;
    let mut warnings = payload.warnings.clone();
    let file_names = linkage::file_names(&payload.members);
    let linkage = check_linkage(plan, p, &payload.needed, &file_names, done);
    if !linkage.missing.is_empty() {
        return Err(ExportError::Overlinking {
            package: name,
            missing: linkage.missing,
        });
    }
    for u in linkage.unused {
        warnings.push(format!(
            "host input `{u}` ships shared libraries that no file of the package loads \
             (overdepending): it is still a run dependency; drop it, or ignore its run exports"
        ));
    }

    // depends: what it was built against, its run inputs, its own specs,
    // and the glibc its ELF files need.
    let mut depends: Vec<String> = Vec::new();
    let mut extra_constrains: Vec<String> = Vec::new();
    // Checked before anything was built (check_metadata).
    let ignore = IgnoreRunExports::of(meta).unwrap_or_default();
    for d in plan.package_deps(p) {
        if let Some(dep) = done.get(&d) {
            if d.node == p.node {
                depends.push(dep.spec.clone());
                continue;
            }
            // Only what host inputs export is ignored; run inputs are run
            // dependencies by the recipe's own word.
            let host = n.host.contains(&d) && !n.run.contains(&d);
            if host && ignore.from_package.contains(&dep.exported.name) {
                continue;
            }
            let keep = |s: &String| !(host && ignore.drops(s));
            depends.extend(dep_specs(dep, ["weak", "strong"]).into_iter().filter(keep));
            extra_constrains.extend(
                dep_specs(dep, ["weak_constrains", "strong_constrains"])
                    .into_iter()
                    .filter(keep),
            );
        }
    }
    depends.extend(strings(meta.get("depends")));
    if let Some(v) = &payload.glibc
        && noarch.is_none()
    {
        let v: Vec<String> = v.iter().map(u32::to_string).collect();
        depends.push(format!("__glibc >={}", v.join(".")));
    }
    depends.sort();
    depends.dedup();
    let mut constrains = strings(meta.get("constrains"));
    constrains.extend(extra_constrains);
    constrains.sort();
    constrains.dedup();
    let build_number = meta
        .get("build_number")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let (arch, platform) = platform::arch_platform(&subdir);
    let license = meta.get("license").and_then(Value::as_str);
    let run_exports = if p.output == "out" {
        meta.get("run_exports").and_then(normalise_run_exports)
    } else {
        None
    };

    let mut index = serde_json::Map::new();
    index.insert("name".into(), json!(name));
    index.insert("version".into(), json!(version));
    index.insert("build_number".into(), json!(build_number));
    index.insert("depends".into(), json!(depends));
    if !constrains.is_empty() {
        index.insert("constrains".into(), json!(constrains));
    }
    index.insert("subdir".into(), json!(subdir));
    index.insert("arch".into(), json!(arch));
    index.insert("platform".into(), json!(platform));
    index.insert("timestamp".into(), json!(opts.epoch * 1000));
    if let Some(l) = license {
        index.insert("license".into(), json!(l));
    }
    if let Some(na) = &noarch {
        index.insert("noarch".into(), json!(na));
    }

    let mut about = serde_json::Map::new();
    for (from, to) in [
        ("summary", "summary"),
        ("description", "description"),
        ("license", "license"),
        ("homepage", "home"),
        ("repository", "dev_url"),
    ] {
        if let Some(v) = meta.get(from).filter(|v| !v.is_null()) {
            about.insert(to.into(), v.clone());
        }
    }

    let licenses = license_files(store, n, &name)?;
    let recipe_files: &[(String, Vec<u8>)] = opts
        .recipe_files
        .get(&store.dir().path_of(&n.original))
        .map_or(&[], |r| r.as_slice());
    // Rebased once: the hashes, and the closure the provenance lists.
    let mut closure = Portable::default();
    let (target_drv, _) = closure.rebase(store, &n.original)?;
    let (export_drv, export_hash) = closure.rebase_drv(store, &n.export_path, &n.export_drv)?;

    let digests = |files: &[(String, Vec<u8>)]| -> BTreeMap<String, String> {
        files
            .iter()
            .map(|(k, v)| (k.clone(), hex(&sha2::Sha256::digest(v))))
            .collect()
    };
    // Everything that goes into the package but the payload (which the
    // export derivation determines) and the build string itself.
    let hash_input = json!({
        "cbuild_export": 1,
        "export_drv": export_drv.base_name(),
        "export_drv_hash": export_hash.to_hex(),
        "output": p.output,
        "index": Value::Object(index.clone()),
        "about": Value::Object(about.clone()),
        "run_exports": run_exports,
        "licenses": digests(&licenses),
        "recipe": digests(recipe_files),
        "zstd_level": (opts.format == Format::Conda).then_some(opts.zstd_level),
    });
    let hash_input_bytes = json_bytes(&hash_input);
    let digest = blake3::hash(&hash_input_bytes);
    let build = format!("h{}_{build_number}", &digest.to_hex()[..12]);
    index.insert("build".into(), json!(build));

    let mut info: Vec<Member> = Vec::new();
    let file = |path: &str, data: Vec<u8>| Member {
        path: format!("info/{path}"),
        kind: Kind::File {
            data: data.into(),
            executable: false,
        },
    };
    info.push(file(
        "index.json",
        json_bytes(&Value::Object(index.clone())),
    ));
    info.push(file(
        "paths.json",
        json_bytes(&json!({"paths": payload.paths, "paths_version": 1})),
    ));
    let mut files_list = String::new();
    for m in &payload.members {
        files_list.push_str(&m.path);
        files_list.push('\n');
    }
    info.push(file("files", files_list.into_bytes()));
    info.push(file("about.json", json_bytes(&Value::Object(about))));
    info.push(file("hash_input.json", hash_input_bytes));
    if let Some(re) = &run_exports {
        info.push(file("run_exports.json", json_bytes(re)));
    }
    for (k, v) in &licenses {
        info.push(file(&format!("licenses/{k}"), v.clone()));
    }
    for (k, v) in recipe_files {
        info.push(file(&format!("recipe/{k}"), v.clone()));
    }
    // Provenance: the rebased closures of the original and the export
    // derivation, and the sources' digests.
    info.push(file(
        "cbuild/export.json",
        json_bytes(&json!({
            "format": 1,
            "store": PORTABLE_STORE,
            "prefix_placeholder": PREFIX,
            "drv": target_drv.base_name(),
            "export_drv": export_drv.base_name(),
            "output": p.output,
            "sources": closure.sources,
        })),
    ));
    for (base, bytes) in &closure.drvs {
        info.push(file(&format!("cbuild/drv/{base}"), bytes.clone()));
    }

    let stem = format!("{name}-{version}-{build}");
    let fname = format!("{stem}{}", opts.format.extension());
    let (dest, staged) = if opts.channel.is_some() {
        // Per process: two exports of one package into one channel at once
        // each move their own file in.
        let tmp = dest_dir.join(format!(
            "{}{}-{fname}",
            super::channel::STAGED_PREFIX,
            std::process::id()
        ));
        (tmp.clone(), Some(tmp))
    } else {
        (dest_dir.join(&fname), None)
    };
    // The same export output and file name give the same bytes: a package
    // written before is copied rather than compressed again.
    let cached = store
        .root()
        .join("packages")
        .join(format!("{}-{fname}", output_path.hash_part()));
    if std::fs::metadata(&cached).is_ok_and(|m| m.is_file()) {
        copy_atomically(&cached, &dest)?;
    } else {
        archive::write(
            &dest,
            &stem,
            &info,
            &payload.members,
            opts.epoch,
            opts.format,
            opts.zstd_level,
        )?;
        // Best effort: a cache that cannot be written only costs time.
        if let Some(dir) = cached.parent()
            && std::fs::create_dir_all(dir).is_ok()
        {
            let _ = copy_atomically(&dest, &cached);
        }
    }
    let (sha256, md5, size) = digests_of(&dest)?;
    let mut record = index.clone();
    record.insert("sha256".into(), json!(sha256));
    record.insert("md5".into(), json!(md5));
    record.insert("size".into(), json!(size));
    if let Some(re) = &run_exports {
        record.insert("run_exports".into(), re.clone());
    }
    Ok(Written {
        exported: Exported {
            path: dest,
            name: name.clone(),
            version: version.clone(),
            build: build.clone(),
            subdir,
            sha256,
            target: n.target,
            export_drv: store.dir().path_of(&n.export_path),
            built: false,
            warnings,
        },
        spec: format!("{name} =={version} {build}"),
        run_exports,
        record: Value::Object(record),
        staged,
        file_names,
    })
}

/// `license_file`: a store path (an imported file or folder), a list of
/// them, or a path inside the derivation's `src`.
fn license_files(
    store: &Store,
    n: &plan::Node,
    package: &str,
) -> Result<Vec<(String, Vec<u8>)>, ExportError> {
    let mut out = Vec::new();
    let dir = store.dir().as_str();
    for f in strings(n.meta.get("license_file")) {
        let (path, within) = if f.starts_with(&format!("{dir}/")) {
            (PathBuf::from(&f), String::new())
        } else {
            let Some(src) = n.drv.env.get("src") else {
                return Err(ExportError::NoLicenseFile {
                    package: package.into(),
                    file: f,
                    within: "the package's src (it has none)".into(),
                });
            };
            (resolve(store, &n.drv, src)?.join(&f), "src".to_string())
        };
        let meta = std::fs::metadata(&path).map_err(|_| ExportError::NoLicenseFile {
            package: package.into(),
            file: f.clone(),
            within: within.clone(),
        })?;
        if meta.is_dir() {
            for e in walkdir::WalkDir::new(&path).sort_by_file_name() {
                let e = e.map_err(|e| {
                    let (path, source) = crate::store::walk_error(&path, e);
                    ExportError::Read { path, source }
                })?;
                if e.file_type().is_file() {
                    let rel = e.path().strip_prefix(&path).unwrap_or(e.path());
                    let data = std::fs::read(e.path()).map_err(read_err(e.path()))?;
                    out.push((rel.to_string_lossy().into_owned(), data));
                }
            }
        } else {
            let base = path
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            // An imported file's object name is `<hash>-<name>`.
            let base = if within.is_empty() {
                base.split_once('-')
                    .map_or(base.clone(), |(_, n)| n.to_string())
            } else {
                base
            };
            let data = std::fs::read(&path).map_err(read_err(&path))?;
            out.push((base, data));
        }
    }
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    Ok(out)
}

/// Copies `from` to `to` through a temporary file beside `to`.
fn copy_atomically(from: &Path, to: &Path) -> Result<(), ExportError> {
    super::write_atomically(to, |f| {
        let mut src = std::fs::File::open(from).map_err(read_err(from))?;
        std::io::copy(&mut src, f).map_err(super::write_err(to))?;
        Ok(())
    })
}

/// `text` with the placeholder of an input's output (a `src` that is a
/// `fetch`, say) replaced by the path it was realised at.
fn resolve(
    store: &Store,
    d: &crate::derivation::Derivation,
    text: &str,
) -> Result<PathBuf, ExportError> {
    for input in d.input_drvs.keys() {
        let id = store.read_derivation(input)?;
        let h = id.drv_hash();
        for o in &id.outputs {
            let ph = crate::derivation::placeholder::input_output(&h, o);
            if let Some(rest) = text.strip_prefix(&ph)
                && let Some(base) = store.db().realisation(&h, o)?
            {
                return Ok(PathBuf::from(format!(
                    "{}/{base}{rest}",
                    store.dir().as_str()
                )));
            }
        }
    }
    Ok(PathBuf::from(text))
}

/// sha256 and md5 (hex) and size of the file at `path`, read once.
pub fn digests_of(path: &Path) -> Result<(String, String, u64), ExportError> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(read_err(path))?;
    let (mut sha, mut md5) = (sha2::Sha256::new(), md5::Md5::new());
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(read_err(path))?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        md5.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex(&sha.finalize()), hex(&md5.finalize()), size))
}
