//! Package files, byte for byte: `.conda` (a STORED zip of `metadata.json`,
//! `pkg-<stem>.tar.zst` and `info-<stem>.tar.zst`) and `.tar.bz2`. Members
//! are sorted, every tar header has uid/gid 0, no owner names, mode 0644 or
//! 0755 and one mtime; zstd runs at a fixed level on one thread; the zip's
//! entry times are that mtime. So the same members give the same bytes
//! whatever the machine, clock or time zone.
//!
//! Written by hand on the `tar`, `zstd`, `bzip2` and `zip` crates rather
//! than with `rattler_package_streaming`, whose writer brings an async HTTP
//! stack into the build; `tests/it/export.rs` pins the bytes.

use std::io::{Seek, Write};
use std::path::Path;

use super::{ExportError, write_err};

/// Default zstd level of `.conda` tars: rattler-build's. conda-build and
/// conda-forge use 19 (`--zstd-level 19`): about 10% smaller, three times
/// slower to write, which is most of a warm export.
pub const DEFAULT_ZSTD_LEVEL: i32 = 15;
/// bzip2 level of `.tar.bz2` packages.
pub const BZIP2_LEVEL: u32 = 9;

/// A package format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `.conda` (v2).
    Conda,
    /// `.tar.bz2` (v1).
    TarBz2,
}

impl Format {
    /// The file extension, with its dot.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Conda => ".conda",
            Format::TarBz2 => ".tar.bz2",
        }
    }

    /// The repodata key packages of this format are listed under.
    pub fn repodata_key(self) -> &'static str {
        match self {
            Format::Conda => "packages.conda",
            Format::TarBz2 => "packages",
        }
    }
}

/// The content of a file member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Data {
    /// Bytes in memory (metadata, and payload files the export changed).
    Bytes(Vec<u8>),
    /// A file read when the tar is written, of this size: payload files
    /// stay on disk, so a large package does not fill memory.
    File(std::path::PathBuf, u64),
}

impl Data {
    /// Its size in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Data::Bytes(b) => b.len() as u64,
            Data::File(_, n) => *n,
        }
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Vec<u8>> for Data {
    fn from(b: Vec<u8>) -> Data {
        Data::Bytes(b)
    }
}

/// What a member is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File {
        /// Its content.
        data: Data,
        /// Mode 0755 rather than 0644.
        executable: bool,
    },
    /// A symbolic link and its target.
    Symlink(String),
}

/// One member of a package, by its path relative to the prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The path, `/`-separated, relative.
    pub path: String,
    /// What it is.
    pub kind: Kind,
}

/// Writes the package `dest` (its file name is `<stem><extension>`)
/// atomically: into a temporary file beside it, then renamed.
pub fn write(
    dest: &Path,
    stem: &str,
    info: &[Member],
    payload: &[Member],
    mtime: u64,
    format: Format,
    zstd_level: i32,
) -> Result<(), ExportError> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    super::write_atomically(dest, |file| {
        let file = file.try_clone().map_err(write_err(dest))?;
        match format {
            Format::Conda => write_conda(file, dir, stem, info, payload, mtime, zstd_level),
            Format::TarBz2 => {
                let w = bzip2::write::BzEncoder::new(
                    std::io::BufWriter::new(file),
                    bzip2::Compression::new(BZIP2_LEVEL),
                );
                let all: Vec<&Member> = sorted(info).into_iter().chain(sorted(payload)).collect();
                let w = write_tar(w, &all, mtime)?;
                w.finish()
                    .and_then(|mut b| b.flush())
                    .map_err(write_err(dest))
            }
        }
    })
}

fn sorted(members: &[Member]) -> Vec<&Member> {
    let mut v: Vec<&Member> = members.iter().collect();
    v.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    v
}

fn write_conda(
    file: std::fs::File,
    dir: &Path,
    stem: &str,
    info: &[Member],
    payload: &[Member],
    mtime: u64,
    zstd_level: i32,
) -> Result<(), ExportError> {
    let io = |e: std::io::Error| ExportError::Write {
        path: stem.into(),
        source: e,
    };
    let zip_err = |e: zip::result::ZipError| io(std::io::Error::other(e.to_string()));
    let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(file));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .last_modified_time(zip_time(mtime))
        .unix_permissions(0o644)
        .large_file(false);
    zip.start_file("metadata.json", options).map_err(zip_err)?;
    zip.write_all(br#"{"conda_pkg_format_version": 2}"#)
        .map_err(io)?;
    for (name, members) in [
        (format!("pkg-{stem}.tar.zst"), payload),
        (format!("info-{stem}.tar.zst"), info),
    ] {
        // The tar goes to a temporary file first, so that zstd knows its
        // size: it then fits its tables to the input (level 19's defaults
        // take ~100 MiB, which a small package would spend most of its
        // time allocating) and records the size in the frame.
        let mut tar = tempfile::tempfile_in(dir).map_err(io)?;
        let mut w = write_tar(std::io::BufWriter::new(&mut tar), &sorted(members), mtime)?;
        w.flush().map_err(io)?;
        drop(w);
        let len = tar.stream_position().map_err(io)?;
        tar.rewind().map_err(io)?;
        // zstd never makes a tar much bigger; a zip64 entry where it might
        // pass 4 GiB.
        let big = len >= u64::from(u32::MAX) - (1 << 20);
        zip.start_file(name, options.large_file(big))
            .map_err(zip_err)?;
        let mut enc = zstd::stream::Encoder::new(&mut zip, zstd_level).map_err(io)?;
        enc.include_checksum(true).map_err(io)?;
        enc.include_contentsize(true).map_err(io)?;
        enc.set_pledged_src_size(Some(len)).map_err(io)?;
        std::io::copy(&mut tar, &mut enc).map_err(io)?;
        enc.finish().map_err(io)?;
    }
    let mut w = zip.finish().map_err(zip_err)?;
    w.flush().map_err(io)
}

fn write_tar<W: Write>(w: W, members: &[&Member], mtime: u64) -> Result<W, ExportError> {
    let io = |e: std::io::Error| ExportError::Write {
        path: "tar".into(),
        source: e,
    };
    let mut b = tar::Builder::new(w);
    for m in members {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime);
        match &m.kind {
            Kind::File { data, executable } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(if *executable { 0o755 } else { 0o644 });
                h.set_size(data.len());
                match data {
                    Data::Bytes(bytes) => b.append_data(&mut h, &m.path, bytes.as_slice()),
                    Data::File(path, len) => {
                        let f = std::fs::File::open(path).map_err(|e| ExportError::Read {
                            path: path.clone(),
                            source: e,
                        })?;
                        // Exactly the size in the header, whatever happens
                        // to the file meanwhile (store files never change).
                        b.append_data(&mut h, &m.path, std::io::Read::take(f, *len))
                    }
                }
                .map_err(io)?;
            }
            Kind::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, &m.path, target).map_err(io)?;
            }
        }
    }
    b.into_inner().map_err(io)
}

/// A zip (DOS) time for unix seconds, in UTC; DOS times start in 1980.
fn zip_time(secs: u64) -> zip::DateTime {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = crate::store::civil_from_days(days);
    zip::DateTime::from_date_and_time(
        y.clamp(1980, 2107) as u16,
        m as u8,
        d as u8,
        (rem / 3600) as u8,
        (rem % 3600 / 60) as u8,
        (rem % 60) as u8,
    )
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn zip_times_are_the_utc_date() {
        // DOS times count seconds in twos.
        let t = super::zip_time(1_672_531_200 + 3_662);
        assert_eq!(
            (
                t.year(),
                t.month(),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            ),
            (2023, 1, 1, 1, 1, 2)
        );
        use crate::store::civil_from_days;
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_358), (2023, 1, 1));
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
    }
}
