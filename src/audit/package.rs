//! Auditing a conda package file (`.conda` or `.tar.bz2`) as a stranger's:
//! its container, every tar member, and `info/paths.json` against the
//! payload, read as a stream and never unpacked to disk, so that a member
//! that would unpack to gigabytes is refused after a bounded amount of work.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use sha2::Digest;

use super::output::{Finding, Severity};

/// Decompressed bytes a package may hold in all, and per compressed byte:
/// past either, reading stops and the package is refused as a bomb.
pub const MAX_UNPACKED: u64 = 8 << 30;
/// See [`MAX_UNPACKED`]; real packages stay far below (text compresses
/// about 10:1).
pub const MAX_RATIO: u64 = 2_000;
/// Under this many decompressed bytes the ratio is not held against a
/// package (tiny files compress oddly).
const RATIO_FREE: u64 = 64 << 20;

/// Why a package could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// The file cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A tar member, as much as the audit keeps of it.
struct Member {
    kind: char,
    /// A link's target, as stored.
    link: Option<String>,
    size: u64,
    sha256: String,
    data: Option<Vec<u8>>,
}

/// `info/` bytes kept in memory for the metadata checks, in all: past it, a
/// member is hashed but not kept (and a metadata file it is then reads as
/// missing).
const MAX_INFO_KEPT: usize = 64 << 20;

/// Counts what a reader yields and stops it past the limits.
struct Bounded<R> {
    inner: R,
    read: u64,
    compressed: u64,
    exceeded: bool,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > MAX_UNPACKED
            || (self.read > RATIO_FREE && self.read / self.compressed.max(1) > MAX_RATIO)
        {
            self.exceeded = true;
            return Err(std::io::Error::other("too much unpacked data"));
        }
        Ok(n)
    }
}

fn err(file: &str, what: String) -> Finding {
    Finding {
        severity: Severity::Error,
        file: file.to_string(),
        offset: None,
        what,
    }
}

/// Audits the package at `path`; its file name must be the conda one.
pub fn audit(path: &Path) -> Result<Vec<Finding>, PackageError> {
    Ok(inspect(path)?.findings)
}

/// What [`inspect`] found.
pub struct Inspected {
    /// The findings of the structure checks.
    pub findings: Vec<Finding>,
    /// The `info/` files (each up to 64 MiB), by path.
    pub info: BTreeMap<String, Vec<u8>>,
}

/// Audits the package at `path` and keeps its `info/` files.
pub fn inspect(path: &Path) -> Result<Inspected, PackageError> {
    let mut members = BTreeMap::new();
    let findings = read_members(path, &mut members)?;
    let info = members
        .into_iter()
        .filter_map(|(k, m)| Some((k, m.data?)))
        .collect();
    Ok(Inspected { findings, info })
}

/// How a failure to read the package at `path` is reported.
fn read_error(path: &Path) -> impl Fn(std::io::Error) -> PackageError + '_ {
    move |source| PackageError::Read {
        path: path.display().to_string(),
        source,
    }
}

/// The package file's name, and the file opened.
fn open(path: &Path) -> Result<(String, std::fs::File), PackageError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let file = std::fs::File::open(path).map_err(read_error(path))?;
    Ok((name, file))
}

/// Reads every member of the package at `path` into `members`; returns
/// the findings.
fn read_members(
    path: &Path,
    members: &mut BTreeMap<String, Member>,
) -> Result<Vec<Finding>, PackageError> {
    let read_err = read_error(path);
    let (name, file) = open(path)?;
    let compressed = file.metadata().map_err(read_err)?.len();
    let mut findings = Vec::new();
    if let Some(stem) = name.strip_suffix(".conda") {
        let mut zip = match zip::ZipArchive::new(file) {
            Ok(z) => z,
            Err(e) => return Ok(vec![err("", format!("is not a zip file: {e}"))]),
        };
        let want = [
            "metadata.json".to_string(),
            format!("pkg-{stem}.tar.zst"),
            format!("info-{stem}.tar.zst"),
        ];
        let have: BTreeSet<String> = zip.file_names().map(str::to_string).collect();
        if have != want.iter().cloned().collect::<BTreeSet<_>>() {
            findings.push(err(
                "",
                format!(
                    "holds {:?}; a .conda holds exactly metadata.json, pkg-{stem}.tar.zst and \
                     info-{stem}.tar.zst",
                    have
                ),
            ));
            return Ok(findings);
        }
        for inner in &want[1..] {
            let Ok(entry) = zip.by_name(inner) else {
                findings.push(err(inner, "cannot be read".into()));
                continue;
            };
            if entry.compression() != zip::CompressionMethod::Stored {
                findings.push(err(
                    inner,
                    "is compressed in the zip (conda stores it)".into(),
                ));
            }
            // What the zip says a stored member holds is only a claim: the
            // file's own size bounds it (a member declaring 4 GiB switched
            // the ratio check off).
            let size = entry.size().min(compressed);
            let Ok(dec) = zstd::stream::read::Decoder::new(entry) else {
                findings.push(err(inner, "is not zstd".into()));
                continue;
            };
            read_tar(dec, size, inner, members, &mut findings);
        }
    } else if name.ends_with(".tar.bz2") {
        let dec = bzip2::read::BzDecoder::new(std::io::BufReader::new(file));
        read_tar(dec, compressed, &name, members, &mut findings);
    } else {
        findings.push(err("", "is neither a .conda nor a .tar.bz2 file".into()));
        return Ok(findings);
    }
    // Links are judged together, as an extractor meets them: a chain of
    // links that each look harmless may lead out.
    let tree: BTreeMap<String, crate::util::links::Entry> = members
        .iter()
        .map(|(path, m)| {
            let entry = match (m.kind, &m.link) {
                ('l', Some(t)) => crate::util::links::Entry::Symlink(t.clone()),
                ('h', Some(t)) => crate::util::links::Entry::HardLink(t.clone()),
                _ => crate::util::links::Entry::Plain,
            };
            (path.clone(), entry)
        })
        .collect();
    for e in crate::util::links::escapes(&tree, "the prefix") {
        findings.push(err(&e.path, e.what));
    }
    if findings.iter().any(|f| f.severity == Severity::Error) {
        return Ok(findings);
    }
    check_metadata(&name, members, &mut findings);
    Ok(findings)
}

/// Unpacks the payload (everything but `info/`) of the package at `path`,
/// which [`inspect`] passed, into the empty directory `dest`.
pub fn unpack_payload(path: &Path, dest: &Path) -> Result<(), PackageError> {
    let read_err = read_error(path);
    let (name, file) = open(path)?;
    let unpack = |reader: &mut dyn Read| -> std::io::Result<()> {
        let mut tar = tar::Archive::new(reader);
        tar.set_preserve_mtime(false);
        for entry in tar.entries()? {
            let mut e = entry?;
            let p = e.path()?.to_string_lossy().into_owned();
            if p.trim_start_matches("./").starts_with("info/") {
                continue;
            }
            // `unpack_in` refuses a member that would land outside `dest`.
            if !e.unpack_in(dest)? {
                return Err(std::io::Error::other(format!("{p} would unpack outside")));
            }
        }
        Ok(())
    };
    if let Some(stem) = name.strip_suffix(".conda") {
        let mut zip = zip::ZipArchive::new(file).map_err(|e| read_err(e.into()))?;
        let entry = zip
            .by_name(&format!("pkg-{stem}.tar.zst"))
            .map_err(|e| read_err(e.into()))?;
        let mut dec = zstd::stream::read::Decoder::new(entry).map_err(&read_err)?;
        unpack(&mut dec).map_err(read_err)
    } else {
        let mut dec = bzip2::read::BzDecoder::new(std::io::BufReader::new(file));
        unpack(&mut dec).map_err(read_err)
    }
}

/// Reads one tar, keeping each member's digest (and the bytes of `info/`
/// files), refusing unsafe members and bombs.
fn read_tar(
    reader: impl Read,
    compressed: u64,
    shown: &str,
    members: &mut BTreeMap<String, Member>,
    findings: &mut Vec<Finding>,
) {
    let mut bounded = Bounded {
        inner: reader,
        read: 0,
        compressed,
        exceeded: false,
    };
    let mut declared_sum = 0u64;
    // `info/` bytes kept so far, this tar's and the other's (a `.conda`
    // has two).
    let mut kept_total: usize = members
        .values()
        .filter_map(|m| m.data.as_ref())
        .map(Vec::len)
        .sum();
    let mut tar = tar::Archive::new(&mut bounded);
    let entries = match tar.entries() {
        Ok(e) => e,
        Err(e) => {
            findings.push(err(shown, format!("is not a tar: {e}")));
            return;
        }
    };
    for entry in entries {
        let mut e = match entry {
            Ok(e) => e,
            Err(e) => {
                findings.push(err(shown, format!("cannot be read: {e}")));
                return;
            }
        };
        let path = match e.path() {
            Ok(p) => p.to_string_lossy().into_owned(),
            Err(_) => {
                findings.push(err(shown, "holds a member whose name is not text".into()));
                return;
            }
        };
        let rel = path
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        if path.starts_with('/') || rel.split('/').any(|c| c == "..") {
            findings.push(err(
                &path,
                "is an absolute or `..` path: it would unpack outside the prefix".into(),
            ));
            continue;
        }
        // What a member says it holds is checked before anything is read:
        // a bomb is refused without being decompressed.
        let declared = e.header().size().unwrap_or(u64::MAX);
        let total = bounded_declared(&mut declared_sum, declared);
        if total > MAX_UNPACKED || (total > RATIO_FREE && total / compressed.max(1) > MAX_RATIO) {
            findings.push(err(
                &rel,
                format!(
                    "declares {declared} bytes, more than the package can hold (over {} GiB in \
                     all, or over {MAX_RATIO} bytes per compressed byte): refused as a bomb",
                    MAX_UNPACKED >> 30
                ),
            ));
            return;
        }
        let et = e.header().entry_type();
        let kind = if et.is_file() {
            'f'
        } else if et.is_dir() {
            'd'
        } else if et.is_symlink() {
            'l'
        } else if et.is_hard_link() {
            'h'
        } else {
            findings.push(err(
                &rel,
                format!("is a {et:?} member, which a package cannot hold"),
            ));
            continue;
        };
        let link = e
            .link_name()
            .ok()
            .flatten()
            .map(|l| l.to_string_lossy().into_owned());
        let mut hasher = sha2::Sha256::new();
        let room = MAX_INFO_KEPT.saturating_sub(kept_total);
        let mut kept = (rel.starts_with("info/") && room > 0).then(Vec::new);
        let mut buf = [0u8; 64 * 1024];
        let mut size = 0u64;
        loop {
            match e.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    hasher.update(&buf[..n]);
                    size += n as u64;
                    if let Some(k) = &mut kept {
                        if k.len() + n > room {
                            // Too much to keep: not kept at all (a cut
                            // metadata file would read as another).
                            kept = None;
                        } else {
                            k.extend_from_slice(&buf[..n]);
                        }
                    }
                }
                Err(e) => {
                    let bomb = bounded_exceeded(&e);
                    findings.push(err(
                        &rel,
                        if bomb {
                            format!(
                                "unpacks to more than the package can hold (over {} GiB, or \
                                 over {MAX_RATIO} bytes per compressed byte): refused as a bomb",
                                MAX_UNPACKED >> 30
                            )
                        } else {
                            format!("cannot be read: {e}")
                        },
                    ));
                    return;
                }
            }
        }
        kept_total += kept.as_ref().map_or(0, Vec::len);
        members.insert(
            rel,
            Member {
                kind,
                link,
                size,
                sha256: hasher
                    .finalize()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect(),
                data: kept,
            },
        );
    }
}

/// Adds a member's declared size to the running total.
fn bounded_declared(sum: &mut u64, size: u64) -> u64 {
    *sum = sum.saturating_add(size);
    *sum
}

fn bounded_exceeded(e: &std::io::Error) -> bool {
    e.to_string().contains("too much unpacked data")
}

/// index.json against the file name; paths.json against the payload.
fn check_metadata(name: &str, members: &BTreeMap<String, Member>, findings: &mut Vec<Finding>) {
    let json = |p: &str| -> Option<serde_json::Value> {
        serde_json::from_slice(members.get(p)?.data.as_deref()?).ok()
    };
    let Some(index) = json("info/index.json") else {
        findings.push(err("info/index.json", "is missing or not JSON".into()));
        return;
    };
    let stem = name
        .strip_suffix(".conda")
        .or_else(|| name.strip_suffix(".tar.bz2"))
        .unwrap_or(name);
    let field = |k: &str| index[k].as_str().unwrap_or("").to_string();
    let expected = format!("{}-{}-{}", field("name"), field("version"), field("build"));
    if expected != stem {
        findings.push(err(
            "info/index.json",
            format!("names the package {expected}, but the file is {stem}"),
        ));
    }
    // A subdir names a folder of every channel the package goes into: only
    // the platforms conda knows (a `../x` wrote outside the channel).
    match &index["subdir"] {
        serde_json::Value::Null => {}
        serde_json::Value::String(sd) if sd.parse::<rattler_conda_types::Subdir>().is_ok() => {}
        other => findings.push(err(
            "info/index.json",
            format!("has subdir {other}, which is not a platform conda knows"),
        )),
    }
    let Some(paths) = json("info/paths.json") else {
        findings.push(err("info/paths.json", "is missing or not JSON".into()));
        return;
    };
    let mut listed = BTreeSet::new();
    for p in paths["paths"].as_array().into_iter().flatten() {
        let Some(rel) = p["_path"].as_str() else {
            findings.push(err(
                "info/paths.json",
                "has an entry without `_path`".into(),
            ));
            continue;
        };
        listed.insert(rel.to_string());
        let Some(m) = members.get(rel) else {
            findings.push(err(
                rel,
                "is listed in paths.json but not in the package".into(),
            ));
            continue;
        };
        if p["path_type"] == "hardlink" {
            if let Some(want) = p["sha256"].as_str()
                && want != m.sha256
            {
                findings.push(err(
                    rel,
                    format!("has sha256 {}, but paths.json says {want}", m.sha256),
                ));
            }
            if let Some(want) = p["size_in_bytes"].as_u64()
                && want != m.size
            {
                findings.push(err(
                    rel,
                    format!("has {} bytes, but paths.json says {want}", m.size),
                ));
            }
        }
        if p["path_type"] == "softlink" && m.kind != 'l' {
            findings.push(err(rel, "is listed as a softlink but is not one".into()));
        }
    }
    for (rel, m) in members {
        if m.kind != 'd' && !rel.starts_with("info/") && !listed.contains(rel) {
            findings.push(err(rel, "is in the payload but not in paths.json".into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::archive::{self, Format, Kind, Member};
    use proptest::prelude::*;

    /// A small valid package of `format`, as bytes.
    fn package(format: Format) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let file = |path: &str, data: &[u8]| Member {
            path: path.into(),
            kind: Kind::File {
                data: data.to_vec().into(),
                executable: false,
            },
        };
        let data = b"hello\n";
        let sha: String = sha2::Sha256::digest(data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let paths = format!(
            r#"{{"paths": [{{"_path": "share/a", "path_type": "hardlink", "sha256": "{sha}", "size_in_bytes": 6}}, {{"_path": "share/l", "path_type": "softlink"}}], "paths_version": 1}}"#
        );
        let info = vec![
            file(
                "info/index.json",
                br#"{"name": "p", "version": "1", "build": "h0_0"}"#,
            ),
            file("info/paths.json", paths.as_bytes()),
        ];
        let payload = vec![
            file("share/a", data),
            Member {
                path: "share/l".into(),
                kind: Kind::Symlink("a".into()),
            },
        ];
        let dest = dir.path().join(format!("p-1-h0_0{}", format.extension()));
        archive::write(&dest, "p-1-h0_0", &info, &payload, 0, format, 3).unwrap();
        std::fs::read(dest).unwrap()
    }

    /// Audits `bytes` as a package file of `ext`; unpacks it when it passes.
    fn audit_bytes(bytes: &[u8], ext: &str) -> Vec<Finding> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(format!("p-1-h0_0{ext}"));
        std::fs::write(&p, bytes).unwrap();
        let found = inspect(&p).unwrap();
        if !found.findings.iter().any(|f| f.severity == Severity::Error) {
            let to = dir.path().join("unpacked");
            std::fs::create_dir(&to).unwrap();
            // May fail (an error, never a panic), and stays inside `to`.
            let _ = unpack_payload(&p, &to);
        }
        found.findings
    }

    #[test]
    fn the_valid_packages_pass() {
        for f in [Format::Conda, Format::TarBz2] {
            let findings = audit_bytes(&package(f), f.extension());
            assert!(findings.is_empty(), "{findings:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Damaged packages (bytes flipped, cut short, bytes inserted) are
        /// reported or pass, never panic.
        #[test]
        fn damaged_packages_never_panic(
            conda in any::<bool>(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..), 0..6),
            cut in proptest::option::of(any::<prop::sample::Index>()),
            insert in proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
        ) {
            let format = if conda { Format::Conda } else { Format::TarBz2 };
            thread_local! {
                static PACKAGES: (Vec<u8>, Vec<u8>) =
                    (package(Format::Conda), package(Format::TarBz2));
            }
            let mut bytes = PACKAGES.with(|p| if conda { p.0.clone() } else { p.1.clone() });
            for (at, x) in flips {
                let i = at.index(bytes.len());
                bytes[i] ^= x;
            }
            if let Some((at, b)) = insert {
                let i = at.index(bytes.len());
                bytes.insert(i, b);
            }
            if let Some(at) = cut {
                bytes.truncate(at.index(bytes.len()));
            }
            audit_bytes(&bytes, format.extension());
        }
    }
}
