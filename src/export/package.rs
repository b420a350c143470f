//! One package: the payload an export build produced, checked and made
//! relocatable, and the `info/` files that describe it.
//!
//! Payload: every file and symlink of the export output (the files the
//! build added to the prefix) and its empty directories. Files that hold the
//! placeholder prefix are listed with it (`text` when valid UTF-8 without
//! NUL bytes, else `binary`); ELF RPATH/RUNPATH entries inside the prefix
//! become `$ORIGIN`-relative; absolute symlinks into the prefix become
//! relative. A file that still names the store, the build directory or an
//! ELF search path outside the prefix fails the export.

use std::collections::BTreeMap;
use std::path::Path;

use aho_corasick::AhoCorasick;
use serde_json::{Value, json};
use sha2::Digest;

use super::archive::{Data, Kind, Member};
use super::{ExportError, elf, read_err};
use crate::derivation::prefix::PREFIX;
use crate::util::links;

/// The payload of a package, ready to archive.
pub struct Payload {
    /// Members, sorted by path.
    pub members: Vec<Member>,
    /// `paths.json` entries, sorted by path.
    pub paths: Vec<Value>,
    /// The highest `GLIBC_X.Y` any ELF file needs.
    pub glibc: Option<Vec<u32>>,
}

/// Reads, checks and relocates the export output at `root` for package
/// `package` of `subdir`; `store_dir` is the store the build saw.
pub fn payload(
    root: &Path,
    package: &str,
    subdir: &str,
    store_dir: &str,
) -> Result<Payload, ExportError> {
    let store_needle = format!("{store_dir}/");
    let needles = AhoCorasick::new([store_needle.as_str(), "/build", PREFIX])
        .map_err(|e| read_err(root)(std::io::Error::other(e.to_string())))?;
    let mut members = Vec::new();
    let mut paths = Vec::new();
    let mut glibc = None;
    let walk = walkdir::WalkDir::new(root)
        .follow_links(false)
        .follow_root_links(false)
        .sort_by(|a, b| a.file_name().cmp(b.file_name()))
        .min_depth(1);
    let entries: Vec<walkdir::DirEntry> =
        walk.into_iter().collect::<Result<_, _>>().map_err(|e| {
            let (path, source) = crate::store::walk_error(root, e);
            ExportError::Read { path, source }
        })?;
    for (k, e) in entries.iter().enumerate() {
        let rel_path = e.path().strip_prefix(root).unwrap_or(e.path());
        let Some(rel) = rel_path.to_str().map(str::to_string) else {
            return Err(ExportError::NonUtf8Path {
                package: package.into(),
                path: rel_path.to_path_buf(),
            });
        };
        let ft = e.file_type();
        if ft.is_dir() {
            let empty = entries
                .get(k + 1)
                .is_none_or(|n| !n.path().starts_with(e.path()));
            if empty {
                members.push(Member {
                    path: rel.clone(),
                    kind: Kind::Dir,
                });
                paths.push(json!({"_path": rel, "path_type": "directory"}));
            }
            continue;
        }
        if ft.is_symlink() {
            let target = std::fs::read_link(e.path()).map_err(read_err(e.path()))?;
            let mut target = target.to_string_lossy().into_owned();
            if let Some(inside) = target.strip_prefix(PREFIX) {
                // Absolute into the prefix: relative to the link's folder.
                let up = "../".repeat(rel.matches('/').count());
                target = format!("{up}{}", inside.trim_start_matches('/'));
                if target.is_empty() {
                    target = ".".into();
                }
            }
            check_leaks(&needles, target.as_bytes(), package, &rel, false)?;
            members.push(Member {
                path: rel.clone(),
                kind: Kind::Symlink(target),
            });
            paths.push(json!({"_path": rel, "path_type": "softlink"}));
            continue;
        }
        let (executable, len) = {
            use std::os::unix::fs::PermissionsExt;
            let m = e.metadata().map_err(|err| {
                let (path, source) = crate::store::walk_error(root, err);
                ExportError::Read { path, source }
            })?;
            (m.permissions().mode() & 0o111 != 0, m.len())
        };
        let file = std::fs::File::open(e.path()).map_err(read_err(e.path()))?;
        // SAFETY: store objects are read-only and never change once
        // registered (cbuild writes them once, with modes 0444/0555), so
        // the mapping cannot change under the slice. Mapped rather than
        // read: a large package's files stay out of memory.
        let map = if len == 0 {
            None
        } else {
            Some(unsafe { memmap2::Mmap::map(&file) }.map_err(read_err(e.path()))?)
        };
        let mapped: &[u8] = map.as_deref().unwrap_or(&[]);
        // Only a file the export changes (a relocated ELF file) is copied.
        let mut changed: Option<Vec<u8>> = None;
        let is_elf = elf::is_elf(mapped);
        if is_elf && let Some(info) = elf::inspect(mapped) {
            let subdirs = elf::machine_subdirs(info.machine);
            if !subdirs.contains(&subdir) {
                return Err(ExportError::WrongMachine {
                    package: package.into(),
                    file: rel,
                    machine: elf::machine_name(info.machine),
                    subdir: subdir.into(),
                });
            }
            glibc = glibc.max(info.glibc.clone());
            let mut copy = mapped.to_vec();
            let relocated = elf::relocate(&mut copy, &info, &rel, PREFIX).map_err(|e| match e {
                elf::RelocateError::OutsidePrefix { entry } => ExportError::RpathOutsidePrefix {
                    package: package.into(),
                    file: rel.clone(),
                    entry,
                    prefix: PREFIX.into(),
                },
                elf::RelocateError::Shared { text } => ExportError::RpathShared {
                    package: package.into(),
                    file: rel.clone(),
                    text,
                },
            })?;
            if relocated {
                changed = Some(copy);
            }
        }
        let data: &[u8] = changed.as_deref().unwrap_or(mapped);
        let has_prefix = check_leaks(&needles, data, package, &rel, true)?;
        let sha = hex(&sha2::Sha256::digest(data));
        let mut entry = BTreeMap::from([
            ("_path".to_string(), json!(rel)),
            ("path_type".into(), json!("hardlink")),
            ("sha256".into(), json!(sha)),
            ("size_in_bytes".into(), json!(data.len())),
        ]);
        if has_prefix {
            let text = !is_elf && !data.contains(&0) && std::str::from_utf8(data).is_ok();
            entry.insert(
                "file_mode".into(),
                json!(if text { "text" } else { "binary" }),
            );
            entry.insert("prefix_placeholder".into(), json!(PREFIX));
        }
        paths.push(serde_json::to_value(entry).unwrap_or_default());
        let data = match changed {
            Some(bytes) => Data::Bytes(bytes),
            None => Data::File(e.path().to_path_buf(), len),
        };
        members.push(Member {
            path: rel,
            kind: Kind::File { data, executable },
        });
    }
    // What an extractor would follow out of the prefix is refused here, as
    // `cbuild audit PKG` would refuse it in the package (a `passwd ->
    // /etc/passwd` shipped, exit 0).
    let tree: BTreeMap<String, links::Entry> = members
        .iter()
        .map(|m| {
            let entry = match &m.kind {
                Kind::Symlink(t) => links::Entry::Symlink(t.clone()),
                _ => links::Entry::Plain,
            };
            (m.path.clone(), entry)
        })
        .collect();
    if let Some(e) = links::escapes(&tree, "the prefix").into_iter().next() {
        return Err(ExportError::LinkOutside {
            package: package.into(),
            file: e.path,
            what: e.what,
        });
    }
    // By the bytes of the path, as the tars are and conda-build sorts
    // (`a-c` before `a/b`), not by path component as the walk went.
    members.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    paths.sort_by(|a, b| {
        let p = |v: &Value| v["_path"].as_str().unwrap_or_default().as_bytes().to_vec();
        p(a).cmp(&p(b))
    });
    Ok(Payload {
        members,
        paths,
        glibc,
    })
}

/// Fails on a mention of the store or the build directory; says whether
/// the placeholder prefix occurs.
fn check_leaks(
    needles: &AhoCorasick,
    data: &[u8],
    package: &str,
    file: &str,
    is_file: bool,
) -> Result<bool, ExportError> {
    let mut has_prefix = false;
    for m in needles.find_overlapping_iter(data) {
        let what = match m.pattern().as_usize() {
            0 => "a store path",
            1 => {
                // `/build` as a path of its own, not `cmake/build` or `/buildx`.
                let before = m.start().checked_sub(1).map(|i| data[i]);
                let after = data.get(m.end()).copied();
                let part = |c: u8| c.is_ascii_alphanumeric() || b"._-+/".contains(&c);
                if before.is_some_and(part) || after.is_some_and(|c| c != b'/' && part(c)) {
                    continue;
                }
                "the build directory /build"
            }
            _ => {
                has_prefix = true;
                continue;
            }
        };
        let lo = m.start().saturating_sub(20);
        let hi = (m.end() + 40).min(data.len());
        let snippet: String = String::from_utf8_lossy(&data[lo..hi])
            .chars()
            .map(|c| if c.is_control() { '.' } else { c })
            .collect();
        return Err(ExportError::Leak {
            package: package.into(),
            file: if is_file {
                file.into()
            } else {
                format!("{file} (symlink target)")
            },
            what: what.into(),
            offset: m.start(),
            snippet,
        });
    }
    Ok(has_prefix)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// JSON as conda writes it: keys sorted, two-space indent.
pub fn json_bytes(v: &Value) -> Vec<u8> {
    let sorted = sort_keys(v);
    let mut out = serde_json::to_vec_pretty(&sorted).unwrap_or_default();
    out.push(b'\n');
    out
}

fn sort_keys(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let b: BTreeMap<&String, Value> = m.iter().map(|(k, v)| (k, sort_keys(v))).collect();
            serde_json::to_value(b).unwrap_or_default()
        }
        Value::Array(a) => Value::Array(a.iter().map(sort_keys).collect()),
        other => other.clone(),
    }
}

/// Whether conda accepts `name` as a package name: lower case
/// `[a-z0-9_.-]`, starting with a letter, digit or `_`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a package name cannot be empty".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(*c)))
    {
        return Err(format!(
            "`{name}` is not a conda package name: `{c}` is not allowed (lower-case letters, \
             digits, `_`, `.` and `-` only)"
        ));
    }
    if name.starts_with(['.', '-']) {
        return Err(format!(
            "`{name}` is not a conda package name: it cannot start with `.` or `-`"
        ));
    }
    Ok(())
}

/// Whether conda accepts `version`: rattler's parser, and no `-` (the
/// file name is split on it).
pub fn check_version(version: &str) -> Result<(), String> {
    if version.is_empty() {
        return Err("a conda package needs a version".into());
    }
    if let Some(c) = version
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_.+!".contains(*c)))
    {
        return Err(format!(
            "`{version}` is not a conda version: `{c}` is not allowed (conda versions hold \
             letters, digits, `.`, `_`, `+` and `!`)"
        ));
    }
    <rattler_conda_types::Version as std::str::FromStr>::from_str(version)
        .map(|_| ())
        .map_err(|e| format!("`{version}` is not a conda version: {e}"))
}

/// Whether conda accepts `spec` as a match spec (rattler's strict parser).
pub fn check_match_spec(spec: &str) -> Result<(), String> {
    if spec.trim().is_empty() {
        return Err("an empty match spec".into());
    }
    rattler_conda_types::MatchSpec::from_str(spec, rattler_conda_types::ParseStrictness::Strict)
        .map(|_| ())
        .map_err(|e| format!("`{spec}` is not a conda match spec: {e}"))
}
