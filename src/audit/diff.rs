//! Two trees compared file by file: what differs, how (content, mode,
//! symlink target, type, present in one only) and where the first
//! difference is, as a unified diff for text and a hexdump for binary.
//!
//! The trees are two builds of one derivation: each mentions its own store
//! path (self-references), which differ by design, so the rebuilt tree's
//! hash part is read as the stored one's before comparing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How a file differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Other bytes.
    Content,
    /// Executable in one only.
    Mode,
    /// A symlink to elsewhere.
    SymlinkTarget,
    /// A file in one, a directory or symlink in the other.
    Type,
    /// Only in the stored output.
    OnlyStored,
    /// Only in the rebuilt output.
    OnlyRebuilt,
}

impl Kind {
    /// The word reports use.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Content => "content",
            Kind::Mode => "mode",
            Kind::SymlinkTarget => "symlink target",
            Kind::Type => "type",
            Kind::OnlyStored => "only in the stored output",
            Kind::OnlyRebuilt => "only in the rebuild",
        }
    }
}

/// One file that differs.
#[derive(Clone, Debug)]
pub struct FileDiff {
    /// Relative path (empty for an output that is a single file).
    pub path: String,
    /// How.
    pub kind: Kind,
    /// The likely cause, where it can be told.
    pub cause: Cause,
    /// The first difference, shown.
    pub detail: String,
}

/// The likely cause of a difference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// Bytes that read as a time near now.
    Timestamp,
    /// A run of bytes with nothing in common.
    Random,
    /// The build directory or a scratch path.
    BuildPath,
    /// The same lines in another order.
    Ordering,
    /// The same text but for number formatting (decimal and thousands
    /// separators), as another `LANG`/`LC_NUMERIC` writes it.
    Locale,
    /// Not told.
    Unknown,
}

impl Cause {
    /// The words reports use.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Timestamp => "embedded timestamp",
            Cause::Random => "random bytes",
            Cause::BuildPath => "build or scratch path",
            Cause::Ordering => "ordering or parallelism (the same lines in another order)",
            Cause::Locale => "locale (the same text with other number separators)",
            Cause::Unknown => "unknown",
        }
    }
}

/// Differences as JSON objects: `path`, `kind`, `cause`, `detail`.
pub fn to_json(diffs: &[FileDiff]) -> Vec<serde_json::Value> {
    diffs
        .iter()
        .map(|d| {
            serde_json::json!({
                "path": d.path,
                "kind": d.kind.as_str(),
                "cause": d.cause.as_str(),
                "detail": d.detail,
            })
        })
        .collect()
}

/// A file's bytes: mapped (a large file is neither copied nor zeroed
/// first), or owned.
enum Content {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Content {
    fn read(path: &Path) -> std::io::Result<Content> {
        let file = std::fs::File::open(path)?;
        if file.metadata()?.len() < 1 << 20 {
            return Ok(Content::Owned(std::fs::read(path)?));
        }
        // SAFETY: store objects are read-only and the rebuilt tree is this
        // process's own scratch directory; nothing truncates them meanwhile.
        Ok(Content::Mapped(unsafe { memmap2::Mmap::map(&file) }?))
    }
}

impl std::ops::Deref for Content {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Content::Mapped(m) => m,
            Content::Owned(v) => v,
        }
    }
}

/// The likely cause of `x` and `y` differing, and their first difference
/// shown: [`classify`] and [`first_difference`], reading each byte string
/// as few times as it can (outputs hold files of gigabytes).
pub fn explain(x: &[u8], y: &[u8]) -> (Cause, String) {
    let texts = texts(x, y);
    (
        classify_with(x, y, texts),
        first_difference_with(x, y, texts),
    )
}

/// Both as text, when both are.
fn texts<'a>(x: &'a [u8], y: &'a [u8]) -> Option<(&'a str, &'a str)> {
    Some((text(x)?, text(y)?))
}

/// The offset of the first byte where `x` and `y` differ (the shorter
/// length when one is a prefix of the other).
fn first_mismatch(x: &[u8], y: &[u8]) -> usize {
    let n = x.len().min(y.len());
    let mut i = 0;
    // Whole blocks by memcmp first, then bytes.
    while i + 4096 <= n && x[i..i + 4096] == y[i..i + 4096] {
        i += 4096;
    }
    i + x[i..n]
        .iter()
        .zip(&y[i..n])
        .position(|(a, b)| a != b)
        .unwrap_or(n - i)
}

/// The likely cause of `x` and `y` differing.
pub fn classify(x: &[u8], y: &[u8]) -> Cause {
    classify_with(x, y, texts(x, y))
}

fn classify_with(x: &[u8], y: &[u8], texts: Option<(&str, &str)>) -> Cause {
    if let Some((a, b)) = texts {
        let (mut la, mut lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
        la.sort_unstable();
        lb.sort_unstable();
        if la == lb {
            return Cause::Ordering;
        }
    }
    let at = first_mismatch(x, y);
    // The tokens around the first difference.
    let token = |b: &[u8]| -> Vec<u8> {
        let word = |c: u8| c.is_ascii_alphanumeric() || b":.-_/".contains(&c);
        // At most 256 bytes either side: a time, an id or a path is
        // shorter, and a run of word bytes may be the whole file.
        let mut lo = at.min(b.len());
        while lo > 0 && word(b[lo - 1]) && at - lo < 256 {
            lo -= 1;
        }
        let mut hi = at.min(b.len());
        while hi < b.len() && word(b[hi]) && hi - at < 256 {
            hi += 1;
        }
        b[lo..hi].to_vec()
    };
    let (ta, tb) = (token(x), token(y));
    let has_path = |t: &[u8]| {
        t.ends_with(b"/build")
            || t.windows(7).any(|w| w == b"/build/")
            || t.windows(5).any(|w| w == b"/tmp/")
            || t.windows(9).any(|w| w == b"/.cbuild/")
    };
    if has_path(&ta) || has_path(&tb) {
        return Cause::BuildPath;
    }
    if looks_like_time(&ta) && looks_like_time(&tb) {
        return Cause::Timestamp;
    }
    if let Some((a, b)) = texts
        && same_but_separators(line_at(a, at), line_at(b, at))
    {
        return Cause::Locale;
    }
    if random_token(&ta, &tb) {
        return Cause::Random;
    }
    // Binary: from the first difference, a run of at least 4 differing
    // bytes and at least 8 differing in the next 64.
    if texts.is_none() {
        let differ: Vec<bool> = x[at.min(x.len())..]
            .iter()
            .zip(&y[at.min(y.len())..])
            .take(64)
            .map(|(a, b)| a != b)
            .collect();
        let run = differ.iter().take_while(|d| **d).count();
        if run >= 4 && differ.iter().filter(|d| **d).count() >= 8 {
            return Cause::Random;
        }
    }
    Cause::Unknown
}

/// The line of `s` that holds byte `at`.
fn line_at(s: &str, at: usize) -> &str {
    let at = at.min(s.len());
    let start = s.as_bytes()[..at]
        .iter()
        .rposition(|&c| c == b'\n')
        .map_or(0, |i| i + 1);
    let end = s.as_bytes()[at..]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(s.len(), |i| at + i);
    s.get(start..end).unwrap_or("")
}

/// Whether two lines differ only in how numbers are written: `,` and `.`
/// swapped as decimal marks, thousands separators (`,` `.` `'`, spaces)
/// present in one only.
fn same_but_separators(a: &str, b: &str) -> bool {
    if a == b || a.len() > 4096 || b.len() > 4096 {
        return false;
    }
    // Separators inside numbers dropped, the rest kept as it is.
    let norm = |s: &str| -> String {
        let c: Vec<char> = s.chars().collect();
        let mut out = String::new();
        for (i, &ch) in c.iter().enumerate() {
            let between_digits =
                i > 0 && i + 1 < c.len() && c[i - 1].is_ascii_digit() && c[i + 1].is_ascii_digit();
            let sep = matches!(ch, ',' | '.' | '\'' | '\u{a0}' | '\u{202f}' | ' ');
            if !(sep && between_digits) {
                out.push(ch);
            }
        }
        out
    };
    let has_number_sep = |s: &str| {
        s.as_bytes()
            .windows(3)
            .any(|w| w[0].is_ascii_digit() && matches!(w[1], b',' | b'.') && w[2].is_ascii_digit())
    };
    (has_number_sep(a) || has_number_sep(b)) && norm(a) == norm(b)
}

/// Whether two text tokens read as random numbers or identifiers: hex or
/// decimal digits (with a digit in each), at least 4 long, differing in
/// most places (`$RANDOM`, a UUID part, a temp name).
fn random_token(a: &[u8], b: &[u8]) -> bool {
    let digits = |t: &[u8]| {
        t.len() >= 4 && t.iter().all(u8::is_ascii_hexdigit) && t.iter().any(u8::is_ascii_digit)
    };
    if !digits(a) || !digits(b) {
        return false;
    }
    let differ = a.iter().zip(b).filter(|(x, y)| x != y).count();
    differ * 2 >= a.len().min(b.len())
}

/// Whether a token reads as a time: seconds, milliseconds, microseconds or
/// nanoseconds since 1970 within a year of now, or `HH:MM:SS`-like text.
fn looks_like_time(t: &[u8]) -> bool {
    let s = String::from_utf8_lossy(t);
    if let Ok(n) = s.parse::<u128>() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()) as u128;
        let year = 366 * 86_400;
        return [1, 1_000, 1_000_000, 1_000_000_000]
            .iter()
            .any(|&unit| (n / unit).abs_diff(now) <= year);
    }
    s.split(|c: char| !c.is_ascii_digit() && c != ':').any(|w| {
        let parts: Vec<&str> = w.split(':').collect();
        parts.len() >= 2 && parts.iter().all(|p| p.len() == 2)
    })
}

#[derive(Debug)]
enum Entry {
    File { path: PathBuf, executable: bool },
    Symlink(Vec<u8>),
    Dir,
}

fn entries(root: &Path) -> std::io::Result<BTreeMap<String, Entry>> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root)
        .follow_links(false)
        .follow_root_links(false)
    {
        let e = e.map_err(std::io::Error::other)?;
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap_or(e.path())
            .to_string_lossy()
            .into_owned();
        let ft = e.file_type();
        let entry = if ft.is_symlink() {
            Entry::Symlink(
                std::fs::read_link(e.path())?
                    .into_os_string()
                    .into_encoded_bytes(),
            )
        } else if ft.is_dir() {
            Entry::Dir
        } else {
            Entry::File {
                path: e.path().to_path_buf(),
                executable: e
                    .metadata()
                    .map_err(std::io::Error::other)?
                    .permissions()
                    .mode()
                    & 0o111
                    != 0,
            }
        };
        out.insert(rel, entry);
    }
    Ok(out)
}

/// Compares the stored tree at `stored` (whose store hash part is
/// `stored_part`) with the rebuilt tree at `rebuilt` (`rebuilt_part`).
pub fn compare(
    stored: &Path,
    stored_part: &str,
    rebuilt: &Path,
    rebuilt_part: &str,
) -> std::io::Result<Vec<FileDiff>> {
    let a = entries(stored)?;
    let b = entries(rebuilt)?;
    let mut diffs = Vec::new();
    let finder = (rebuilt_part.len() == stored_part.len() && !rebuilt_part.is_empty())
        .then(|| aho_corasick::AhoCorasick::new([rebuilt_part]).ok())
        .flatten();
    let same_part = |bytes: Content| -> Content {
        let Some(f) = &finder else { return bytes };
        let at: Vec<usize> = f.find_iter(&*bytes).map(|m| m.start()).collect();
        if at.is_empty() {
            return bytes;
        }
        let mut v = bytes.to_vec();
        for i in at {
            v[i..i + stored_part.len()].copy_from_slice(stored_part.as_bytes());
        }
        Content::Owned(v)
    };
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for k in keys {
        let d = |kind, detail: String| FileDiff {
            path: k.clone(),
            kind,
            cause: Cause::Unknown,
            detail,
        };
        match (a.get(k), b.get(k)) {
            (Some(_), None) => diffs.push(d(Kind::OnlyStored, String::new())),
            (None, Some(_)) => diffs.push(d(Kind::OnlyRebuilt, String::new())),
            (Some(Entry::Dir), Some(Entry::Dir)) | (None, None) => {}
            (Some(Entry::Symlink(x)), Some(Entry::Symlink(y))) => {
                let y = same_part(Content::Owned(y.clone()));
                if **x != *y {
                    diffs.push(d(
                        Kind::SymlinkTarget,
                        format!(
                            "stored -> {}\nrebuilt -> {}",
                            String::from_utf8_lossy(x),
                            String::from_utf8_lossy(&y)
                        ),
                    ));
                }
            }
            (
                Some(Entry::File {
                    path: p,
                    executable: ex,
                }),
                Some(Entry::File {
                    path: q,
                    executable: ey,
                }),
            ) => {
                let x = Content::read(p)?;
                let y = same_part(Content::read(q)?);
                if *x != *y {
                    // An archive is compared member by member, where both
                    // read as one.
                    match (members(&x), members(&y)) {
                        (Some(mx), Some(my)) => {
                            let inner = compare_members(k, &mx, &my);
                            if inner.is_empty() {
                                // Same members, other bytes: the container.
                                diffs.push(d(
                                    Kind::Content,
                                    "the same members; the archive's own bytes differ \
                                     (member order, times, owners or compression)"
                                        .into(),
                                ));
                            }
                            diffs.extend(inner);
                        }
                        _ => {
                            let (cause, shown) = explain(&x, &y);
                            diffs.push(FileDiff {
                                cause,
                                ..d(Kind::Content, shown)
                            })
                        }
                    }
                }
                if ex != ey {
                    let m = |e: &bool| if *e { "executable" } else { "not executable" };
                    diffs.push(d(
                        Kind::Mode,
                        format!("stored {}, rebuilt {}", m(ex), m(ey)),
                    ));
                }
            }
            (Some(x), Some(y)) => {
                let t = |e: &Entry| match e {
                    Entry::File { .. } => "a file",
                    Entry::Symlink(_) => "a symlink",
                    Entry::Dir => "a directory",
                };
                diffs.push(d(Kind::Type, format!("stored {}, rebuilt {}", t(x), t(y))));
            }
        }
    }
    Ok(diffs)
}

/// A member of an archive: its bytes (or link target) and mode.
#[derive(PartialEq, Eq)]
struct Member {
    data: Vec<u8>,
    mode: u32,
    link: bool,
}

/// Reading stops past this many bytes of members: a rebuild is compared,
/// not unpacked without bound.
const MEMBER_BYTES: u64 = 1 << 30;

/// The members of a tar (plain, gzip or zstd) or zip archive, by name;
/// `None` for anything else or an archive that does not read.
fn members(b: &[u8]) -> Option<BTreeMap<String, Member>> {
    use std::io::Read;
    let mut out = BTreeMap::new();
    let mut budget = MEMBER_BYTES;
    let take = |r: &mut dyn Read, budget: &mut u64| -> Option<Vec<u8>> {
        let mut v = Vec::new();
        r.take(*budget + 1).read_to_end(&mut v).ok()?;
        *budget = budget.checked_sub(v.len() as u64)?;
        Some(v)
    };
    if b.starts_with(b"PK\x03\x04") {
        let mut z = zip::ZipArchive::new(std::io::Cursor::new(b)).ok()?;
        for i in 0..z.len() {
            let mut f = z.by_index(i).ok()?;
            let name = f.name().to_string();
            let mode = f.unix_mode().unwrap_or(0);
            let data = take(&mut f, &mut budget)?;
            out.insert(
                name,
                Member {
                    data,
                    mode,
                    link: false,
                },
            );
        }
        return Some(out);
    }
    let reader: Box<dyn Read + '_> = if b.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(b))
    } else if b.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::new(b).ok()?)
    } else if b.len() > 262 && &b[257..262] == b"ustar" {
        Box::new(b)
    } else {
        return None;
    };
    let mut t = tar::Archive::new(reader);
    for e in t.entries().ok()? {
        let mut e = e.ok()?;
        let name = e.path().ok()?.to_string_lossy().into_owned();
        let mode = e.header().mode().ok()?;
        let link = e.header().entry_type().is_symlink();
        let data = if link {
            e.link_name_bytes()?.into_owned()
        } else {
            take(&mut e, &mut budget)?
        };
        out.insert(name, Member { data, mode, link });
    }
    Some(out)
}

/// The members of one archive (`path` inside the output) that differ.
fn compare_members(
    path: &str,
    x: &BTreeMap<String, Member>,
    y: &BTreeMap<String, Member>,
) -> Vec<FileDiff> {
    let names: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
    let mut out = Vec::new();
    for n in names {
        let at = if path.is_empty() {
            n.clone()
        } else {
            format!("{path}:{n}")
        };
        let diff = |kind, cause, detail| FileDiff {
            path: at.clone(),
            kind,
            cause,
            detail,
        };
        match (x.get(n), y.get(n)) {
            (Some(_), None) => out.push(diff(Kind::OnlyStored, Cause::Unknown, String::new())),
            (None, Some(_)) => out.push(diff(Kind::OnlyRebuilt, Cause::Unknown, String::new())),
            (Some(a), Some(b)) if a != b => {
                if a.link != b.link {
                    out.push(diff(Kind::Type, Cause::Unknown, String::new()));
                } else if a.data != b.data {
                    let (cause, shown) = explain(&a.data, &b.data);
                    if a.link {
                        out.push(diff(Kind::SymlinkTarget, Cause::Unknown, shown));
                    } else {
                        out.push(diff(Kind::Content, cause, shown));
                    }
                } else {
                    out.push(diff(
                        Kind::Mode,
                        Cause::Unknown,
                        format!("stored {:o}, rebuilt {:o}", a.mode, b.mode),
                    ));
                }
            }
            _ => {}
        }
    }
    out
}

/// `b` as text: valid UTF-8 without NUL bytes.
fn text(b: &[u8]) -> Option<&str> {
    (!b.contains(&0))
        .then(|| std::str::from_utf8(b).ok())
        .flatten()
}

/// Bytes of text around a first difference that are diffed at most, per side.
const DIFF_WINDOW: usize = 256 * 1024;

/// The parts of `a` and `b` to diff: from two lines before the first
/// difference, to two lines after the last (at most [`DIFF_WINDOW`] bytes
/// each), with the byte offset and line number where they start.
fn diff_window<'a>(a: &'a str, b: &'a str) -> (usize, usize, &'a str, &'a str) {
    let (x, y) = (a.as_bytes(), b.as_bytes());
    let at = first_mismatch(x, y);
    let mut start = at;
    for _ in 0..3 {
        match memchr::memrchr(b'\n', &x[..start]) {
            Some(nl) => start = nl,
            None => {
                start = 0;
                break;
            }
        }
    }
    if start > 0 {
        start += 1;
    }
    let line = 1 + memchr::memchr_iter(b'\n', &x[..start]).count();
    // The common tail, not reaching into the window's start.
    let mut tail = 0;
    while tail < x.len() - start
        && tail < y.len() - start
        && x[x.len() - 1 - tail] == y[y.len() - 1 - tail]
    {
        tail += 1;
    }
    let end = |s: &'a str| -> &'a str {
        let bytes = s.as_bytes();
        let mut e = bytes.len() - tail;
        for _ in 0..3 {
            match memchr::memchr(b'\n', &bytes[e..]) {
                Some(nl) => e += nl + 1,
                None => {
                    e = bytes.len();
                    break;
                }
            }
        }
        let mut e = e.min(start + DIFF_WINDOW);
        while !s.is_char_boundary(e) {
            e -= 1;
        }
        &s[start..e]
    };
    (start, line, end(a), end(b))
}

/// The first difference of two byte strings: a unified diff of text
/// (at most 40 lines), else a hexdump of both around the first differing
/// byte.
pub fn first_difference(x: &[u8], y: &[u8]) -> String {
    first_difference_with(x, y, texts(x, y))
}

fn first_difference_with(x: &[u8], y: &[u8], texts: Option<(&str, &str)>) -> String {
    if let Some((a, b)) = texts {
        // Only the lines around the first difference are diffed: a diff of
        // two large files costs far more than reading them.
        let (start, line, a, b) = diff_window(a, b);
        let diff = similar::TextDiff::from_lines(a, b);
        let header = |side: &str| {
            if start == 0 {
                side.to_string()
            } else {
                format!("{side} (from line {line})")
            }
        };
        let unified = diff
            .unified_diff()
            .context_radius(2)
            .header(&header("stored"), &header("rebuilt"))
            .to_string();
        let mut lines: Vec<&str> = unified.lines().take(40).collect();
        if unified.lines().count() > 40 {
            lines.push("...");
        }
        return lines.join("\n");
    }
    let at = first_mismatch(x, y);
    let from = at.saturating_sub(16) & !15;
    let dump = |b: &[u8]| -> String {
        let end = (from + 48).min(b.len());
        b.get(from..end)
            .unwrap_or_default()
            .chunks(16)
            .enumerate()
            .map(|(k, c)| {
                let hex: Vec<String> = c.iter().map(|v| format!("{v:02x}")).collect();
                let ascii: String = c
                    .iter()
                    .map(|&v| {
                        if v.is_ascii_graphic() || v == b' ' {
                            v as char
                        } else {
                            '.'
                        }
                    })
                    .collect();
                format!("  {:08x}  {:<47}  {ascii}", from + 16 * k, hex.join(" "))
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    format!(
        "first difference at byte {at} (sizes {} and {})\nstored:\n{}\nrebuilt:\n{}",
        x.len(),
        y.len(),
        dump(x),
        dump(y)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_text_is_diffed_around_its_difference_only() {
        let mut a = String::new();
        for i in 0..200_000 {
            a.push_str(&format!("line {i} stays\n"));
        }
        let b = a.replace("line 150000 stays", "line 150000 moved");
        let shown = first_difference(a.as_bytes(), b.as_bytes());
        assert!(shown.contains("--- stored (from line 149999)"), "{shown}");
        assert!(
            shown.contains("-line 150000 stays") && shown.contains("+line 150000 moved"),
            "{shown}"
        );
        assert!(shown.contains(" line 150001 stays"), "{shown}");
        assert!(!shown.contains("line 149990"), "{shown}");
    }

    #[test]
    fn number_separators_are_told_as_locale() {
        assert_eq!(
            classify(b"total: 1,234.5 s\n", b"total: 1.234,5 s\n"),
            Cause::Locale
        );
        assert_eq!(classify(b"ratio 0.75\n", b"ratio 0,75\n"), Cause::Locale);
        assert_ne!(classify(b"ratio 0.75\n", b"ratio 0.76\n"), Cause::Locale);
        assert_ne!(classify(b"a, b\n", b"a. b\n"), Cause::Locale);
    }

    #[test]
    fn random_numbers_are_told_from_versions_and_words() {
        assert_eq!(
            classify(b"seed 2718281828\n", b"seed 9031415926\n"),
            Cause::Random
        );
        assert_eq!(classify(b"id 5f3a9c\n", b"id e81b07\n"), Cause::Random);
        assert_eq!(
            classify(b"version 1.2.3\n", b"version 1.2.4\n"),
            Cause::Unknown
        );
        assert_eq!(classify(b"mode fast\n", b"mode slow\n"), Cause::Unknown);
        assert_eq!(classify(b"n 10000\n", b"n 10001\n"), Cause::Unknown);
    }

    #[test]
    fn archives_are_compared_member_by_member() {
        let tar = |stamp: &str| {
            let mut b = tar::Builder::new(Vec::new());
            for (name, data) in [("a.txt", "same\n"), ("stamp", stamp)] {
                let mut h = tar::Header::new_gnu();
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                b.append_data(&mut h, name, data.as_bytes()).unwrap();
            }
            b.into_inner().unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        for (root, stamp) in [(&a, "one\n"), (&b, "two\n")] {
            std::fs::create_dir_all(root).unwrap();
            std::fs::write(root.join("x.tar"), tar(stamp)).unwrap();
        }
        let diffs = compare(&a, "", &b, "").unwrap();
        let got: Vec<(&str, Kind)> = diffs.iter().map(|d| (d.path.as_str(), d.kind)).collect();
        assert_eq!(got, [("x.tar:stamp", Kind::Content)]);
    }

    #[test]
    fn causes_are_told_where_they_can_be() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let t = |s: String| s.into_bytes();
        assert_eq!(
            classify(
                &t(format!("built {now}\n")),
                &t(format!("built {}\n", now + 7))
            ),
            Cause::Timestamp
        );
        assert_eq!(
            classify(b"at 12:01:07 today", b"at 12:01:09 today"),
            Cause::Timestamp
        );
        assert_eq!(classify(b"a\nb\nc\n", b"c\na\nb\n"), Cause::Ordering);
        assert_eq!(
            classify(b"cc /build/x1/a.c", b"cc /build/x2/a.c"),
            Cause::BuildPath
        );
        assert_eq!(
            classify(
                &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
                &[0, 9, 8, 7, 6, 5, 4, 3, 2, 1]
            ),
            Cause::Random
        );
        assert_eq!(classify(b"version 1", b"version 2"), Cause::Unknown);
    }

    #[test]
    fn text_and_binary_differences_are_shown() {
        let t = first_difference(b"a\nb\nc\n", b"a\nB\nc\n");
        assert!(t.contains("-b") && t.contains("+B"), "{t}");
        let b = first_difference(&[0, 1, 2, 3], &[0, 1, 9, 3]);
        assert!(b.starts_with("first difference at byte 2"), "{b}");
    }

    #[test]
    fn trees_differ_by_kind_and_self_references_do_not_count() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        for (root, part, extra) in [(&a, "AAAA", "x"), (&b, "BBBB", "y")] {
            std::fs::create_dir_all(root.join("bin")).unwrap();
            std::fs::write(root.join("bin/self"), format!("/s/{part}-x/bin")).unwrap();
            std::fs::write(root.join("stamp"), extra).unwrap();
            std::fs::write(root.join(format!("only-{extra}")), "").unwrap();
        }
        let diffs = compare(&a, "AAAA", &b, "BBBB").unwrap();
        let got: Vec<(&str, Kind)> = diffs.iter().map(|d| (d.path.as_str(), d.kind)).collect();
        assert_eq!(
            got,
            [
                ("only-x", Kind::OnlyStored),
                ("only-y", Kind::OnlyRebuilt),
                ("stamp", Kind::Content)
            ]
        );
    }
}
