//! Auditing a built output without building: what it needs that its
//! closure does not give, and what it mentions that it should not.
//!
//! - ELF files: the interpreter, RUNPATH/RPATH entries and NEEDED
//!   libraries must resolve inside the output's closure; the host's C
//!   library and loader are allowed and listed.
//! - Every file: paths outside the store (`/home`, the user's home; as
//!   warnings `/build`, `/tmp`, `/usr/local`), each only where it stands
//!   as a path of its own ([`crate::util::mention`]), store paths that are
//!   not in the closure, and the build's date written into it.
//! - Modes: world-writable or setuid files (the store never makes them; a
//!   tampered store might).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use aho_corasick::AhoCorasick;

use crate::derivation::StorePath;
use crate::store::{Store, StoreError};

/// How much a finding matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Fails the audit.
    Error,
    /// Worth a look.
    Warning,
    /// For the record.
    Info,
}

impl Severity {
    /// The word reports use.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// One finding.
#[derive(Clone, Debug)]
pub struct Finding {
    /// How much it matters.
    pub severity: Severity,
    /// The file inside the output (empty for the output itself).
    pub file: String,
    /// The byte offset, where there is one.
    pub offset: Option<usize>,
    /// What was found.
    pub what: String,
}

/// The C library's own files: they come from the host, as the loader does
/// (what a conda system's `__glibc` stands for, and `libcrypt`, which
/// glibc still ships on the hosts cbuild builds on).
fn is_host_libc(lib: &str) -> bool {
    crate::export::linkage::C_LIBRARY.contains(&lib) || lib == "libcrypt.so.1"
}

/// Audits the output `object` of `store`.
pub fn audit(store: &Store, object: &StorePath) -> Result<Vec<Finding>, StoreError> {
    let dir = store.dir();
    let root = PathBuf::from(dir.path_of(object));
    let closure: BTreeSet<String> = store.closure([object.base_name()])?;
    let closure_parts: BTreeSet<String> = closure
        .iter()
        .map(|b| b[..32.min(b.len())].to_string())
        .collect();
    let info = store.db().object(&object.base_name())?;
    let mut findings = Vec::new();
    let home = std::env::var("HOME").ok().filter(|h| h.len() > 1);
    let store_needle = format!("{}/", dir.as_str());
    let mut needles: Vec<(String, Severity, &str)> = vec![
        (store_needle.clone(), Severity::Error, "store"),
        // The same fixed path on every machine, seldom more than a
        // compiled-in flag: a warning, as export says it.
        (
            "/build/".into(),
            Severity::Warning,
            "the build directory /build",
        ),
        ("/home/".into(), Severity::Error, "a home directory (/home)"),
        ("/tmp/".into(), Severity::Warning, "a path in /tmp"),
        (
            "/usr/local/".into(),
            Severity::Warning,
            "a path in /usr/local",
        ),
    ];
    if let Some(h) = &home {
        needles.push((format!("{h}/"), Severity::Error, "the user's home"));
    }
    // The day the output was registered, as `date -I` and C's __DATE__ write
    // it: a build that embeds its date.
    if let Some(i) = &info {
        let (y, m, d) = crate::store::civil_from_days(i.registered.div_euclid(86_400));
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        needles.push((format!("{y:04}-{m:02}-{d:02}"), Severity::Warning, "date"));
        needles.push((
            format!("{} {d:>2} {y}", MONTHS[(m - 1) as usize]),
            Severity::Warning,
            "date",
        ));
    }
    let ac = AhoCorasick::new(needles.iter().map(|(n, _, _)| n.as_str())).map_err(|e| {
        StoreError::Read {
            path: root.clone(),
            source: std::io::Error::other(e.to_string()),
        }
    })?;
    let links = symlinks_of(&root)?;
    for e in walkdir::WalkDir::new(&root)
        .follow_links(false)
        .follow_root_links(false)
    {
        let e = e.map_err(|e| {
            let (path, source) = crate::store::walk_error(&root, e);
            StoreError::Read { path, source }
        })?;
        let rel = e
            .path()
            .strip_prefix(&root)
            .unwrap_or(e.path())
            .to_string_lossy()
            .into_owned();
        let meta = e
            .path()
            .symlink_metadata()
            .map_err(|source| StoreError::Read {
                path: e.path().into(),
                source,
            })?;
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode();
            if !meta.file_type().is_symlink() && mode & 0o002 != 0 {
                findings.push(finding(
                    Severity::Error,
                    &rel,
                    None,
                    "is world-writable".into(),
                ));
            }
            if mode & 0o6000 != 0 {
                findings.push(finding(
                    Severity::Error,
                    &rel,
                    None,
                    "is setuid or setgid".into(),
                ));
            }
        }
        if meta.file_type().is_symlink()
            && let Some(what) = link_outside(&links, &rel, &closure, dir.as_str())
        {
            findings.push(finding(Severity::Error, &rel, None, what));
        }
        let bytes = if meta.file_type().is_symlink() {
            std::fs::read_link(e.path())
                .map(|t| t.into_os_string().into_encoded_bytes())
                .unwrap_or_default()
        } else if meta.is_file() {
            std::fs::read(e.path()).map_err(|source| StoreError::Read {
                path: e.path().into(),
                source,
            })?
        } else {
            continue;
        };
        // One finding per kind of mention and file: its first offset. A
        // store path is itself a path somewhere (/tmp, /home): what lies
        // inside one is the store's business only.
        let store_spans: Vec<(usize, usize)> = ac
            .find_overlapping_iter(&bytes)
            .filter(|m| m.pattern().as_usize() == 0)
            .map(|m| (m.start(), m.end()))
            .collect();
        let mut seen = BTreeSet::new();
        for m in ac.find_overlapping_iter(&bytes) {
            let (_, severity, what) = &needles[m.pattern().as_usize()];
            if m.pattern().as_usize() != 0
                && store_spans
                    .iter()
                    .any(|&(a, b)| m.start() < b && a < m.end())
            {
                continue;
            }
            if *what == "store" {
                let part = bytes.get(m.end()..m.end() + 32).unwrap_or_default();
                let part = String::from_utf8_lossy(part).into_owned();
                if closure_parts.contains(&part) || !seen.insert(format!("store:{part}")) {
                    continue;
                }
                findings.push(finding(
                    Severity::Error,
                    &rel,
                    Some(m.start()),
                    format!(
                        "mentions the store path {}{part}-..., which is not in its closure (not a \
                         declared input)",
                        store_needle
                    ),
                ));
                continue;
            }
            // A path of its own, by the rule export uses: not
            // `Doc/build/html`, a URL's `/project/build/` or `./root/x`.
            if *what != "date" && !crate::util::mention::stands_alone(&bytes, m.start(), m.end()) {
                continue;
            }
            if !seen.insert((*what).to_string()) {
                continue;
            }
            let what = if *what == "date" {
                "the date it was built".to_string()
            } else {
                format!("mentions {what}")
            };
            findings.push(finding(*severity, &rel, Some(m.start()), what));
        }
        if meta.is_file() && bytes.starts_with(b"\x7fELF") {
            elf_findings(store, &closure, e.path(), &rel, &bytes, &mut findings);
        }
    }
    findings.sort_by(|a, b| (a.severity, &a.file, a.offset).cmp(&(b.severity, &b.file, b.offset)));
    Ok(findings)
}

/// The symlinks of the output at `root` (its root included, as ""), as a
/// tree for [`crate::util::links`].
fn symlinks_of(
    root: &Path,
) -> Result<std::collections::BTreeMap<String, crate::util::links::Entry>, StoreError> {
    let mut tree = std::collections::BTreeMap::new();
    for e in walkdir::WalkDir::new(root)
        .follow_links(false)
        .follow_root_links(false)
    {
        let e = e.map_err(|e| {
            let (path, source) = crate::store::walk_error(root, e);
            StoreError::Read { path, source }
        })?;
        if e.path_is_symlink() {
            let target = std::fs::read_link(e.path()).map_err(|source| StoreError::Read {
                path: e.path().into(),
                source,
            })?;
            let rel = e.path().strip_prefix(root).unwrap_or(e.path());
            tree.insert(
                rel.to_string_lossy().into_owned(),
                crate::util::links::Entry::Symlink(target.to_string_lossy().into_owned()),
            );
        }
    }
    Ok(tree)
}

/// Where the symlink `rel` of an output leads, when that is outside the
/// store or outside the output's closure: followed through the output's
/// other links, a relative link may name a neighbour in the store
/// (`../<object>/...`), which must be in the closure; an absolute one must
/// be a store path of the closure. (The output itself is "" and its folder
/// is the store directory.)
fn link_outside(
    links: &std::collections::BTreeMap<String, crate::util::links::Entry>,
    rel: &str,
    closure: &BTreeSet<String>,
    store_dir: &str,
) -> Option<String> {
    use crate::util::links::{Entry, Resolved, follow};
    let Some(Entry::Symlink(target)) = links.get(rel) else {
        return None;
    };
    let mut from: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    if rel.is_empty() {
        // The output itself: its target is relative to the store directory.
        from.push("..");
    } else {
        from.pop();
    }
    let object = |first: &str| closure.iter().any(|b| b == first);
    match follow(links, &from, target) {
        Resolved::Inside(_) => None,
        Resolved::Above { ups: 1, rest } if rest.first().is_some_and(|f| object(f)) => None,
        Resolved::Above { ups: 1, .. } => Some(format!(
            "links to {target}, a store path outside its closure (not a declared input)"
        )),
        Resolved::Above { .. } => Some(format!("links to {target}, outside the store")),
        Resolved::Absolute(p) => {
            let first = p
                .strip_prefix(store_dir)
                .and_then(|r| r.strip_prefix('/'))
                .map(|r| r.split('/').next().unwrap_or_default());
            match first {
                Some(f) if object(f) => None,
                Some(_) => Some(format!(
                    "links to {target}, a store path outside its closure (not a declared input)"
                )),
                None => Some(format!(
                    "links to {p}, outside the store: whatever the machine has there"
                )),
            }
        }
        Resolved::Loop => Some(format!("links to {target}, a loop of symlinks")),
    }
}

fn finding(severity: Severity, file: &str, offset: Option<usize>, what: String) -> Finding {
    Finding {
        severity,
        file: file.to_string(),
        offset,
        what,
    }
}

/// The interpreter, search paths and needed libraries of one ELF file.
fn elf_findings(
    store: &Store,
    closure: &BTreeSet<String>,
    path: &Path,
    rel: &str,
    bytes: &[u8],
    out: &mut Vec<Finding>,
) {
    let Ok(elf) = goblin::elf::Elf::parse(bytes) else {
        return;
    };
    let dir = store.dir().as_str();
    // Where a path lies: in the closure, elsewhere in the store, or outside.
    let in_closure = |p: &str| {
        p.strip_prefix(dir)
            .and_then(|r| r.strip_prefix('/'))
            .and_then(|r| r.split('/').next())
            .is_some_and(|base| closure.contains(base))
    };
    if let Some(interp) = elf.interpreter {
        if interp.starts_with(&format!("{dir}/")) {
            if !in_closure(interp) {
                out.push(finding(
                    Severity::Error,
                    rel,
                    None,
                    format!("its interpreter {interp} is not in its closure"),
                ));
            }
        } else {
            out.push(finding(
                Severity::Info,
                rel,
                None,
                format!("its interpreter is the host's {interp}"),
            ));
        }
    }
    let origin = path
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut search: Vec<String> = Vec::new();
    for entry in elf
        .runpaths
        .iter()
        .chain(&elf.rpaths)
        .flat_map(|s| s.split(':'))
    {
        if entry.is_empty() {
            continue;
        }
        let real = entry
            .replace("${ORIGIN}", &origin)
            .replace("$ORIGIN", &origin);
        if !(entry.contains("ORIGIN") || in_closure(&real)) {
            out.push(finding(
                Severity::Error,
                rel,
                None,
                format!("its RUNPATH/RPATH entry {entry} is outside its closure"),
            ));
        }
        search.push(real);
    }
    for lib in &elf.libraries {
        let found = search
            .iter()
            .map(|d| format!("{d}/{lib}"))
            .find(|p| Path::new(p).exists());
        match found {
            Some(p) if p.starts_with(&origin) || in_closure(&p) => {}
            Some(p) => out.push(finding(
                Severity::Error,
                rel,
                None,
                format!("needs {lib}, found at {p}, outside its closure"),
            )),
            None if is_host_libc(lib) => out.push(finding(
                Severity::Info,
                rel,
                None,
                format!("needs {lib} from the host's C library"),
            )),
            None => out.push(finding(
                Severity::Error,
                rel,
                None,
                format!("needs {lib}, which nothing in its closure provides"),
            )),
        }
    }
}
