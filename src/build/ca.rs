//! Content-addressed outputs: hashing an output modulo its self-references,
//! and rewriting them to the final path.
//!
//! A build writes its output at a scratch path of the same length as a final
//! store path. The output may mention that path (an RPATH, a script that
//! runs its own files). To name the output by its content, every occurrence
//! of the scratch hash part is replaced by 32 zero bytes before hashing, and
//! the offsets of the occurrences are hashed too, so that a file holding
//! zeros and a file holding a self-reference never collide. The final path
//! follows from that digest; the occurrences are then rewritten to the final
//! hash part, which has the same length, so binaries stay valid.

use std::path::{Path, PathBuf};

use aho_corasick::AhoCorasick;

use crate::derivation::{FileDigest, TreeDigest};
use crate::store::StoreError;
use crate::store::tree_hash::{self, Node};

/// An output hashed modulo its self-references.
pub struct Hashed {
    /// The digest the output's store path is computed from.
    pub digest: TreeDigest,
    /// The tree, with the digests modulo self-references.
    pub node: Node,
    /// Files and symlinks that mention the scratch hash part.
    pub self_referencing: Vec<PathBuf>,
}

/// Hashes the tree at `root` with every occurrence of `self_hash` (the
/// scratch path's 32-character hash part) taken out.
pub fn hash_modulo(root: &Path, self_hash: &str) -> Result<Hashed, StoreError> {
    let mut walk = tree_hash::walk_object(root)?;
    let mut self_referencing = Vec::new();
    for (rel, target) in &mut walk.symlinks {
        if let Some(masked) = mask(target, self_hash.as_bytes()) {
            *target = masked;
            self_referencing.push(join(root, rel));
        }
    }
    let hits = std::sync::Mutex::new(Vec::new());
    let ac = AhoCorasick::new([self_hash]).map_err(|e| StoreError::Read {
        path: root.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let node = tree_hash::build_tree(&walk, &|_, f| {
        let read_err = |source| StoreError::Read {
            path: f.abs.clone(),
            source,
        };
        let file = std::fs::File::open(&f.abs).map_err(read_err)?;
        let (digest, size, masked) = hash_masked(file, &ac, self_hash.len()).map_err(read_err)?;
        if masked && let Ok(mut h) = hits.lock() {
            h.push(f.abs.clone());
        }
        Ok((digest, size))
    })?;
    self_referencing.extend(hits.into_inner().unwrap_or_default());
    self_referencing.sort();
    Ok(Hashed {
        digest: node.tree_digest(),
        node,
        self_referencing,
    })
}

/// BLAKE3 of a file's bytes with every occurrence of the pattern `ac`
/// finds (`len` bytes long) zeroed and the offsets appended (`|<offset>`
/// each): what [`mask`] gives, read in bounded memory (an output file may
/// be larger than memory). Returns the digest, the file's length, and
/// whether the pattern occurred.
fn hash_masked(
    file: std::fs::File,
    ac: &AhoCorasick,
    len: usize,
) -> std::io::Result<(FileDigest, u64, bool)> {
    let mut h = blake3::Hasher::new();
    let mut offsets: Vec<u64> = Vec::new();
    let size = crate::util::stream::windows(file, len - 1, |w, at, settled| {
        // Zeros never match: what was masked is not found again in the
        // overlap.
        let found: Vec<usize> = ac.find_iter(&*w).map(|m| m.start()).collect();
        for o in found {
            w[o..o + len].fill(0);
            offsets.push(at + o as u64);
        }
        h.update(&w[..settled]);
        Ok(())
    })?;
    for o in &offsets {
        h.update(format!("|{o}").as_bytes());
    }
    Ok((
        FileDigest(*h.finalize().as_bytes()),
        size,
        !offsets.is_empty(),
    ))
}

/// `bytes` with every occurrence of `pattern` zeroed and the offsets
/// appended (`|<offset>` each), or `None` when it does not occur.
fn mask(bytes: &[u8], pattern: &[u8]) -> Option<Vec<u8>> {
    let ac = AhoCorasick::new([pattern]).ok()?;
    let offsets: Vec<usize> = ac.find_iter(bytes).map(|m| m.start()).collect();
    if offsets.is_empty() {
        return None;
    }
    let mut out = bytes.to_vec();
    for &o in &offsets {
        out[o..o + pattern.len()].fill(0);
    }
    for o in offsets {
        out.extend_from_slice(format!("|{o}").as_bytes());
    }
    Some(out)
}

/// Rewrites `from` to `to` (same length) in the files and symlinks listed.
pub fn rewrite(paths: &[PathBuf], from: &str, to: &str) -> Result<(), StoreError> {
    assert_eq!(
        from.len(),
        to.len(),
        "self-references are rewritten in place"
    );
    let ac = AhoCorasick::new([from]).map_err(|e| StoreError::Write {
        path: PathBuf::new(),
        source: std::io::Error::other(e.to_string()),
    })?;
    for p in paths {
        let write_err = |source| StoreError::Write {
            path: p.clone(),
            source,
        };
        let meta = std::fs::symlink_metadata(p).map_err(write_err)?;
        if meta.file_type().is_symlink() {
            use std::os::unix::ffi::{OsStrExt, OsStringExt};
            let target = std::fs::read_link(p).map_err(write_err)?;
            let new = ac.replace_all_bytes(target.as_os_str().as_bytes(), &[to.as_bytes()]);
            std::fs::remove_file(p).map_err(write_err)?;
            std::os::unix::fs::symlink(std::ffi::OsString::from_vec(new), p).map_err(write_err)?;
        } else {
            // Rewritten in place, window by window (the same length in and
            // out), in bounded memory.
            let mode = meta.permissions();
            use std::io::{Seek, Write};
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644))
                .map_err(write_err)?;
            let reader = std::fs::File::open(p).map_err(write_err)?;
            let mut writer = std::fs::OpenOptions::new()
                .write(true)
                .open(p)
                .map_err(write_err)?;
            let n = from.len();
            // Whether the overlap this window starts with was changed in
            // the previous one (and so is not written yet).
            let mut pending = false;
            crate::util::stream::windows(reader, n - 1, |w, at, settled| {
                let found: Vec<usize> = ac.find_iter(&*w).map(|m| m.start()).collect();
                if found.is_empty() && !pending {
                    return Ok(());
                }
                pending = !found.is_empty();
                for o in found {
                    w[o..o + n].copy_from_slice(to.as_bytes());
                }
                writer.seek(std::io::SeekFrom::Start(at))?;
                writer.write_all(&w[..settled])
            })
            .map_err(write_err)?;
            std::fs::set_permissions(p, mode).map_err(write_err)?;
        }
    }
    Ok(())
}

fn join(root: &Path, rel: &[Vec<u8>]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let mut p = root.to_path_buf();
    for c in rel {
        p.push(std::ffi::OsStr::from_bytes(c));
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same build at two scratch paths gives one digest, and after the
    /// rewrite the files mention the final path.
    #[test]
    fn outputs_that_differ_only_by_their_scratch_path_hash_alike() {
        let d = tempfile::tempdir().unwrap();
        let build = |scratch: &str| {
            let out = d.path().join(format!("{scratch}-hello"));
            std::fs::create_dir_all(out.join("bin")).unwrap();
            std::fs::write(
                out.join("bin/run"),
                format!("#!/bin/sh\nexec /s/store/{scratch}-hello/bin/real\n"),
            )
            .unwrap();
            let mut elf = b"\x7fELF\0\0RPATH=".to_vec();
            elf.extend_from_slice(format!("/s/store/{scratch}-hello/lib\0").as_bytes());
            std::fs::write(out.join("bin/real"), elf).unwrap();
            std::os::unix::fs::symlink(
                format!("/s/store/{scratch}-hello/bin/real"),
                out.join("self"),
            )
            .unwrap();
            std::fs::write(out.join("zeros"), [0u8; 32]).unwrap();
            out
        };
        let a = "a".repeat(32);
        let b = "b".repeat(32);
        let ha = hash_modulo(&build(&a), &a).unwrap();
        let hb = hash_modulo(&build(&b), &b).unwrap();
        assert_eq!(ha.digest, hb.digest);
        assert_eq!(ha.self_referencing.len(), 3, "{:?}", ha.self_referencing);
        // A file of zeros is not a self-reference in disguise.
        let c = "c".repeat(32);
        let out_c = build(&c);
        std::fs::write(out_c.join("zeros"), c.as_bytes()).unwrap();
        assert_ne!(hash_modulo(&out_c, &c).unwrap().digest, ha.digest);
        // Rewriting makes the files mention the final hash part.
        let fin = "f".repeat(32);
        rewrite(&ha.self_referencing, &a, &fin).unwrap();
        let out_a = d.path().join(format!("{a}-hello"));
        let run = std::fs::read_to_string(out_a.join("bin/run")).unwrap();
        assert!(run.contains(&fin) && !run.contains(&a), "{run}");
        assert!(
            std::fs::read_link(out_a.join("self"))
                .unwrap()
                .to_string_lossy()
                .contains(&fin)
        );
    }
}
