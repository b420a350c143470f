//! Reference scanning: which store objects an output mentions, found by
//! searching every file and symlink target for the 32-character hash parts
//! of the candidates (inputs and the output's own scratch path), in parallel.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use aho_corasick::AhoCorasick;
use rayon::prelude::*;

/// Why a scan failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot scan {path} for references")]
pub struct ScanError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// The indices of the `hash_parts` found anywhere under `root`.
pub fn scan(root: &Path, hash_parts: &[String]) -> Result<BTreeSet<usize>, ScanError> {
    if hash_parts.is_empty() {
        return Ok(BTreeSet::new());
    }
    let ac = AhoCorasick::new(hash_parts).map_err(|e| ScanError {
        path: root.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let entries: Vec<walkdir::DirEntry> = walkdir::WalkDir::new(root)
        // A symlink at the top is an entry, never followed.
        .follow_root_links(false)
        .follow_links(false)
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|e| {
            let (path, source) = crate::store::walk_error(root, e);
            ScanError { path, source }
        })?;
    let scan_one = |e: &walkdir::DirEntry| -> Result<BTreeSet<usize>, ScanError> {
        let err = |source| ScanError {
            path: e.path().to_path_buf(),
            source,
        };
        let bytes = if e.file_type().is_symlink() {
            use std::os::unix::ffi::OsStrExt;
            std::fs::read_link(e.path())
                .map_err(err)?
                .as_os_str()
                .as_bytes()
                .to_vec()
        } else if e.file_type().is_file() {
            std::fs::read(e.path()).map_err(err)?
        } else {
            return Ok(BTreeSet::new());
        };
        Ok(ac
            .find_overlapping_iter(&bytes)
            .map(|m| m.pattern().as_usize())
            .collect())
    };
    if entries.len() < crate::store::tree_hash::PARALLEL_FROM {
        let mut found = BTreeSet::new();
        for e in &entries {
            found.extend(scan_one(e)?);
        }
        return Ok(found);
    }
    let found = entries
        .par_iter()
        .map(scan_one)
        .try_reduce(BTreeSet::new, |mut a, b| {
            a.extend(b);
            Ok(a)
        })?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hash_parts_in_files_and_symlink_targets() {
        let d = tempfile::tempdir().unwrap();
        let a = "0".repeat(31) + "a";
        let b = "0".repeat(31) + "b";
        let c = "0".repeat(31) + "c";
        std::fs::create_dir(d.path().join("bin")).unwrap();
        let mut elf = vec![0x7f, b'E', b'L', b'F', 0, 1, 2];
        elf.extend_from_slice(format!("/s/store/{a}-lib/lib\0").as_bytes());
        std::fs::write(d.path().join("bin/x"), elf).unwrap();
        std::os::unix::fs::symlink(format!("/s/store/{b}-y/share"), d.path().join("link")).unwrap();
        let found = scan(d.path(), &[a, b, c]).unwrap();
        assert_eq!(found.into_iter().collect::<Vec<_>>(), [0, 1]);
    }
}
