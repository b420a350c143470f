//! Reference scanning: which store objects an output mentions, found by
//! searching every file and symlink target for the 32-character hash parts
//! of the candidates (inputs and the output's own scratch path), in parallel.
//!
//! Every hash part is 32 characters of the store's base32 alphabet, so a
//! scan looks only at runs of such characters and checks each 32-byte
//! window of them in a hash map: no automaton to build, whose cost grew
//! with the number of candidates (a deep input closure) for every build.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::derivation::base32::is_symbol;

/// Length of a hash part.
const HASH_LEN: usize = 32;

/// Adds to `found` the index of every candidate that occurs in `bytes`.
fn find_in(bytes: &[u8], candidates: &HashMap<&[u8], usize>, found: &mut BTreeSet<usize>) {
    let mut i = 0;
    while i + HASH_LEN <= bytes.len() {
        // The last byte of the window that is not base32 decides how far
        // the next window that could match is.
        match (0..HASH_LEN).rev().find(|&j| !is_symbol(bytes[i + j])) {
            Some(j) => i += j + 1,
            None => {
                if let Some(&k) = candidates.get(&bytes[i..i + HASH_LEN]) {
                    found.insert(k);
                }
                i += 1;
            }
        }
    }
}

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
    // A part that is not a hash part (never so in a store) could not be
    // found by the windowed search: no candidate, no match.
    let candidates: HashMap<&[u8], usize> = hash_parts
        .iter()
        .enumerate()
        .filter(|(_, p)| p.len() == HASH_LEN && p.bytes().all(is_symbol))
        .map(|(k, p)| (p.as_bytes(), k))
        .collect();
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
        let mut found = BTreeSet::new();
        if e.file_type().is_symlink() {
            use std::os::unix::ffi::OsStrExt;
            let target = std::fs::read_link(e.path()).map_err(err)?;
            find_in(target.as_os_str().as_bytes(), &candidates, &mut found);
        } else if e.file_type().is_file() {
            // In windows: an output file may be larger than memory.
            let file = std::fs::File::open(e.path()).map_err(err)?;
            crate::util::stream::windows(file, HASH_LEN - 1, |w, _, _| {
                find_in(w, &candidates, &mut found);
                Ok(())
            })
            .map_err(err)?;
        }
        Ok(found)
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

    #[test]
    fn windows_overlap_and_runs_longer_than_a_hash_are_searched_throughout() {
        let parts: Vec<String> = ["0".repeat(32), "1".repeat(31) + "z", "z".repeat(32)].into();
        let candidates: HashMap<&[u8], usize> = parts
            .iter()
            .enumerate()
            .map(|(k, p)| (p.as_bytes(), k))
            .collect();
        let mut found = BTreeSet::new();
        // Inside a longer base32 run, at its very end, after a non-base32
        // byte ('e' is not in the alphabet), and overlapping another.
        let text = format!("xx{}e{}zzzz", "1".repeat(40) + "z", "0".repeat(33));
        find_in(text.as_bytes(), &candidates, &mut found);
        assert_eq!(found.iter().copied().collect::<Vec<_>>(), [0, 1]);
        let mut found = BTreeSet::new();
        find_in("z".repeat(31).as_bytes(), &candidates, &mut found);
        assert!(found.is_empty());
    }
}
