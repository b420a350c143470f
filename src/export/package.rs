//! One package: the payload an export build produced, checked and made
//! relocatable, and the `info/` files that describe it.
//!
//! Payload: every file and symlink of the export output (the files the
//! build added to the prefix), with the mode the build gave it (0755 when
//! executable, else 0644). Empty directories are left out, as conda-build
//! and rattler-build leave them out: conda clients create the directories of
//! the files they install and no others (py-rattler refuses a `directory`
//! entry); export warns about each. Files that hold the placeholder prefix
//! are listed with it ([`Rewrite`]: `text`, `binary` where the prefix is a
//! C string, never in length-prefixed formats such as Python bytecode); ELF
//! RPATH/RUNPATH entries inside the prefix become `$ORIGIN`-relative;
//! absolute symlinks into the prefix become relative. Every mention of the
//! store or an ELF search path outside the prefix fails the export, all of
//! them named at once; the build directory `/build` is a warning (an error
//! with `--strict`).

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
    /// What the user should know but does not fail the export.
    pub warnings: Vec<String>,
    /// The shared libraries each ELF file loads (`DT_NEEDED`), by file.
    pub needed: Vec<(String, Vec<String>)>,
}

/// How an installer may rewrite the placeholder prefix in a file that
/// holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewrite {
    /// Valid UTF-8 without NUL bytes: replaced by the install prefix.
    Text,
    /// C strings (ELF files and other binaries): the prefix is replaced and
    /// the string padded with NUL bytes to its old length.
    Binary,
    /// A format whose strings carry their length (Python bytecode, Java
    /// class files): padding would corrupt it, so it is not rewritten and
    /// `paths.json` lists no placeholder for it, as conda-build and
    /// rattler-build do for `.pyc`. Python puts the real source path into a
    /// code object's `co_filename` when it loads bytecode beside its
    /// source, so the placeholder left there is never seen.
    Never,
}

impl Rewrite {
    /// How `rel`, with contents `data`, is rewritten.
    pub fn of(rel: &str, data: &[u8], is_elf: bool) -> Rewrite {
        let ext = rel.rsplit_once('.').map(|(_, e)| e).unwrap_or_default();
        if matches!(ext, "pyc" | "pyo")
            || (ext == "class" && data.starts_with(&[0xca, 0xfe, 0xba, 0xbe]))
        {
            Rewrite::Never
        } else if !is_elf && !data.contains(&0) && std::str::from_utf8(data).is_ok() {
            Rewrite::Text
        } else {
            Rewrite::Binary
        }
    }

    /// Its `file_mode` in `paths.json` (`None`: listed without a
    /// placeholder).
    pub fn file_mode(self) -> Option<&'static str> {
        match self {
            Rewrite::Text => Some("text"),
            Rewrite::Binary => Some("binary"),
            Rewrite::Never => None,
        }
    }
}

/// A mention of the build machine found in a file.
struct Mention {
    file: String,
    what: &'static str,
    offset: usize,
    snippet: String,
    /// Mentions of the same kind further on in the file, not listed.
    more: usize,
}

impl std::fmt::Display for Mention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` names {} at byte offset {} (`{}`)",
            self.file, self.what, self.offset, self.snippet
        )?;
        if self.more > 0 {
            write!(f, ", and {} more times further on", self.more)?;
        }
        Ok(())
    }
}

/// Reads, checks and relocates the export output at `root` for package
/// `package` of `subdir`; `store_dir` is the store the build saw.
pub fn payload(
    root: &Path,
    package: &str,
    subdir: &str,
    store_dir: &str,
    strict: bool,
) -> Result<Payload, ExportError> {
    let store_needle = format!("{store_dir}/");
    let needles = AhoCorasick::new([store_needle.as_str(), "/build", PREFIX])
        .map_err(|e| read_err(root)(std::io::Error::other(e.to_string())))?;
    let mut members = Vec::new();
    let mut paths = Vec::new();
    let mut glibc = None;
    let mut warnings = Vec::new();
    let mut needed = Vec::new();
    let (mut store_mentions, mut build_mentions) = (Vec::new(), Vec::new());
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
                warnings.push(format!(
                    "`{rel}` is an empty directory: left out of the package, as conda clients \
                     create only the directories of the files they install; put a file in it \
                     (conda-forge uses `.keep`) to ship it"
                ));
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
            let label = format!("{rel} (symlink target)");
            scan(
                &needles,
                target.as_bytes(),
                &label,
                &mut store_mentions,
                &mut build_mentions,
            );
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
            if !info.needed.is_empty() {
                needed.push((rel.clone(), info.needed.clone()));
            }
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
        let has_prefix = scan(
            &needles,
            data,
            &rel,
            &mut store_mentions,
            &mut build_mentions,
        );
        let sha = hex(&sha2::Sha256::digest(data));
        let mut entry = BTreeMap::from([
            ("_path".to_string(), json!(rel)),
            ("path_type".into(), json!("hardlink")),
            ("sha256".into(), json!(sha)),
            ("size_in_bytes".into(), json!(data.len())),
        ]);
        if let Some(mode) = has_prefix
            .then(|| Rewrite::of(&rel, data, is_elf).file_mode())
            .flatten()
        {
            entry.insert("file_mode".into(), json!(mode));
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
    // Every mention at once, not one per rebuild: the store is an error
    // (a run-time dependency on this machine); `/build` is the same fixed
    // path on every machine, so it is seldom more than a compiled-in flag
    // (OpenSSL's CFLAGS, CPython's sysconfigdata) and is a warning unless
    // `--strict`.
    if strict {
        store_mentions.append(&mut build_mentions);
    }
    warnings.extend(shown(&build_mentions).into_iter().map(|m| {
        format!(
            "{m}: the build directory is the same on every machine, but nothing is there once \
             installed (an error with --strict)"
        )
    }));
    if !store_mentions.is_empty() {
        return Err(ExportError::Leaks {
            package: package.into(),
            mentions: shown(&store_mentions),
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
        warnings,
        needed,
    })
}

/// Most mentions of one kind named per file: the first says where, the
/// count says how many more.
const MENTIONS_PER_FILE: usize = 3;

/// Most mentions named in one message (a package of thousands of files
/// would print thousands of lines); the last line counts the rest.
const MENTIONS_SHOWN: usize = 50;

/// The lines that name `mentions`, at most [`MENTIONS_SHOWN`] and a count.
fn shown(mentions: &[Mention]) -> Vec<String> {
    let mut lines: Vec<String> = mentions
        .iter()
        .take(MENTIONS_SHOWN)
        .map(ToString::to_string)
        .collect();
    if mentions.len() > MENTIONS_SHOWN {
        lines.push(format!(
            "and {} more mention(s) in other files",
            mentions.len() - MENTIONS_SHOWN
        ));
    }
    lines
}

/// Collects the mentions of the store and of the build directory in
/// `data` (file `file`, or a symlink's target); says whether the
/// placeholder prefix occurs.
fn scan(
    needles: &AhoCorasick,
    data: &[u8],
    file: &str,
    store: &mut Vec<Mention>,
    build: &mut Vec<Mention>,
) -> bool {
    let mut has_prefix = false;
    let (mut in_store, mut in_build) = (0usize, 0usize);
    for m in needles.find_overlapping_iter(data) {
        let (list, count, what) = match m.pattern().as_usize() {
            0 => (&mut *store, &mut in_store, "a store path"),
            1 if crate::util::mention::stands_alone(data, m.start(), m.end()) => {
                (&mut *build, &mut in_build, "the build directory /build")
            }
            1 => continue,
            _ => {
                has_prefix = true;
                continue;
            }
        };
        *count += 1;
        if *count > MENTIONS_PER_FILE {
            continue;
        }
        let lo = m.start().saturating_sub(20);
        let hi = (m.end() + 40).min(data.len());
        let snippet: String = String::from_utf8_lossy(&data[lo..hi])
            .chars()
            .map(|c| if c.is_control() { '.' } else { c })
            .collect();
        list.push(Mention {
            file: file.into(),
            what,
            offset: m.start(),
            snippet,
            more: 0,
        });
    }
    for (list, count) in [(store, in_store), (build, in_build)] {
        if count > MENTIONS_PER_FILE
            && let Some(last) = list.last_mut()
        {
            last.more = count - MENTIONS_PER_FILE;
        }
    }
    has_prefix
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
