//! The Merkle tree hash of store objects.
//!
//! A file's digest is BLAKE3 of its bytes; a symlink's is BLAKE3 of its
//! target; a directory's is BLAKE3 of its sorted, length-prefixed entries;
//! the object's tree digest wraps its root node. The exact encoding is in
//! `store-format.md` ("Tree digest"), and `encode_entry` is the only code
//! that writes it.
//!
//! Files hash in parallel (rayon), each read once with BLAKE3's SIMD
//! implementation.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::StoreError;
use crate::derivation::{FileDigest, TreeDigest};

/// Domain separation for directory digests.
pub const DIR_DOMAIN: &[u8] = b"cbuild-dir-v1\0";
/// Domain separation for the tree digest of an object.
pub const TREE_DOMAIN: &[u8] = b"cbuild-tree-v1\0";

/// A node of a file tree, with digests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// A regular file.
    File {
        /// Whether any execute bit is set.
        executable: bool,
        /// BLAKE3 of the content.
        digest: FileDigest,
        /// Content length.
        size: u64,
    },
    /// A symbolic link.
    Symlink {
        /// Its target, as bytes.
        target: Vec<u8>,
    },
    /// A directory: entries by name (bytes, sorted).
    Dir(BTreeMap<Vec<u8>, Node>),
}

impl Node {
    /// The kind byte and 32-byte digest that stand for this node in its
    /// parent's entry list.
    pub fn encode(&self) -> (u8, [u8; 32]) {
        match self {
            Node::File {
                executable: false,
                digest,
                ..
            } => (b'f', digest.0),
            Node::File {
                executable: true,
                digest,
                ..
            } => (b'x', digest.0),
            Node::Symlink { target } => (b'l', *blake3::hash(target).as_bytes()),
            Node::Dir(entries) => {
                let mut h = blake3::Hasher::new();
                h.update(DIR_DOMAIN);
                for (name, node) in entries {
                    let mut buf = Vec::with_capacity(name.len() + 41);
                    encode_entry(&mut buf, name, node.encode());
                    h.update(&buf);
                }
                (b'd', *h.finalize().as_bytes())
            }
        }
    }

    /// Total bytes of file content.
    pub fn size(&self) -> u64 {
        match self {
            Node::File { size, .. } => *size,
            Node::Symlink { .. } => 0,
            Node::Dir(entries) => entries.values().map(Node::size).sum(),
        }
    }

    /// The tree digest of an object whose root is this node.
    pub fn tree_digest(&self) -> TreeDigest {
        let (kind, digest) = self.encode();
        let mut h = blake3::Hasher::new();
        h.update(TREE_DOMAIN);
        h.update(&[kind]);
        h.update(&digest);
        TreeDigest(*h.finalize().as_bytes())
    }
}

/// One directory entry: u64 little-endian name length, the name, the kind
/// byte, the 32-byte digest.
pub fn encode_entry(buf: &mut Vec<u8>, name: &[u8], (kind, digest): (u8, [u8; 32])) {
    buf.extend_from_slice(&(name.len() as u64).to_le_bytes());
    buf.extend_from_slice(name);
    buf.push(kind);
    buf.extend_from_slice(&digest);
}

/// BLAKE3 of a file's content, and its length. Files are read, never
/// memory-mapped: a file truncated while it is hashed must give an error, not
/// a SIGBUS.
pub fn hash_file(path: &Path) -> Result<(FileDigest, u64), StoreError> {
    let read_err = |source| StoreError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut h = blake3::Hasher::new();
    h.update_reader(&file).map_err(read_err)?;
    let len = h.count();
    Ok((FileDigest(*h.finalize().as_bytes()), len))
}

/// A file found while walking a tree, before it is hashed.
#[derive(Clone, Debug)]
pub struct WalkedFile {
    /// Path relative to the root, as name components.
    pub rel: Vec<Vec<u8>>,
    /// Absolute path.
    pub abs: PathBuf,
    /// Whether any execute bit is set.
    pub executable: bool,
}

/// What a walk found: files (hashed later), symlinks and directories, each
/// by its relative components.
#[derive(Default, Debug)]
pub struct Walk {
    /// Regular files.
    pub files: Vec<WalkedFile>,
    /// Symlinks and their targets.
    pub symlinks: Vec<(Vec<Vec<u8>>, Vec<u8>)>,
    /// Directories (the root is `[]`).
    pub dirs: Vec<Vec<Vec<u8>>>,
    /// Whether the root itself is a single file or symlink rather than a
    /// directory.
    pub root_is_dir: bool,
}

/// Gives a walked file's digest and size, possibly from a cache; it gets the
/// file's index in the walk.
pub type DigestOf<'a> =
    dyn Fn(usize, &WalkedFile) -> Result<(FileDigest, u64), StoreError> + Sync + 'a;

/// Below this many files, work is done on the calling thread.
pub const PARALLEL_FROM: usize = 32;

/// Hashes the files of a walk in parallel and assembles the tree.
pub fn build_tree(walk: &Walk, digest_of: &DigestOf<'_>) -> Result<Node, StoreError> {
    // A few files hash faster here than through the thread pool, whose
    // hand-off and wake-ups cost more than they save (most build outputs).
    let digests: Vec<(FileDigest, u64)> = if walk.files.len() < PARALLEL_FROM {
        walk.files
            .iter()
            .enumerate()
            .map(|(k, f)| digest_of(k, f))
            .collect::<Result<_, _>>()?
    } else {
        walk.files
            .par_iter()
            .enumerate()
            .map(|(k, f)| digest_of(k, f))
            .collect::<Result<_, _>>()?
    };
    if !walk.root_is_dir {
        if let (Some(f), Some((d, size))) = (walk.files.first(), digests.first()) {
            return Ok(Node::File {
                executable: f.executable,
                digest: *d,
                size: *size,
            });
        }
        if let Some((_, target)) = walk.symlinks.first() {
            return Ok(Node::Symlink {
                target: target.clone(),
            });
        }
    }
    let mut root = Node::Dir(BTreeMap::new());
    for d in &walk.dirs {
        insert(&mut root, d, Node::Dir(BTreeMap::new()));
    }
    for (f, (digest, size)) in walk.files.iter().zip(digests) {
        insert(
            &mut root,
            &f.rel,
            Node::File {
                executable: f.executable,
                digest,
                size,
            },
        );
    }
    for (rel, target) in &walk.symlinks {
        insert(
            &mut root,
            rel,
            Node::Symlink {
                target: target.clone(),
            },
        );
    }
    Ok(root)
}

fn insert(root: &mut Node, rel: &[Vec<u8>], node: Node) {
    let Some((last, parents)) = rel.split_last() else {
        return;
    };
    let mut cur = root;
    for p in parents {
        let Node::Dir(entries) = cur else { return };
        cur = entries
            .entry(p.clone())
            .or_insert_with(|| Node::Dir(BTreeMap::new()));
    }
    if let Node::Dir(entries) = cur {
        entries.entry(last.clone()).or_insert(node);
    }
}

/// Walks a store object (no filters, symlinks not followed).
pub fn walk_object(root: &Path) -> Result<Walk, StoreError> {
    let mut walk = Walk::default();
    let meta = std::fs::symlink_metadata(root).map_err(|source| StoreError::Read {
        path: root.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        add_entry(&mut walk, root, Vec::new(), &meta)?;
        return Ok(walk);
    }
    walk.root_is_dir = true;
    for entry in walkdir::WalkDir::new(root)
        // A symlink at the top is an entry, never followed.
        .follow_root_links(false)
        .follow_links(false)
        .min_depth(1)
    {
        let entry = entry.map_err(|e| {
            let (path, source) = super::walk_error(root, e);
            StoreError::Read { path, source }
        })?;
        let rel = relative(root, entry.path());
        let meta = entry.metadata().map_err(|e| StoreError::Read {
            path: entry.path().to_path_buf(),
            source: e
                .into_io_error()
                .unwrap_or_else(|| std::io::Error::other("stat failed")),
        })?;
        add_entry(&mut walk, entry.path(), rel, &meta)?;
    }
    Ok(walk)
}

/// Relative path components of `path` under `root`.
pub fn relative(root: &Path, path: &Path) -> Vec<Vec<u8>> {
    path.strip_prefix(root)
        .map(|r| {
            r.components()
                .map(|c| c.as_os_str().as_bytes().to_vec())
                .collect()
        })
        .unwrap_or_default()
}

/// Adds one entry to a walk by its metadata; devices, fifos and sockets are
/// refused.
pub fn add_entry(
    walk: &mut Walk,
    abs: &Path,
    rel: Vec<Vec<u8>>,
    meta: &std::fs::Metadata,
) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let ft = meta.file_type();
    if ft.is_dir() {
        walk.dirs.push(rel);
    } else if ft.is_file() {
        walk.files.push(WalkedFile {
            rel,
            abs: abs.to_path_buf(),
            executable: meta.permissions().mode() & 0o111 != 0,
        });
    } else if ft.is_symlink() {
        let target = std::fs::read_link(abs).map_err(|source| StoreError::Read {
            path: abs.to_path_buf(),
            source,
        })?;
        walk.symlinks
            .push((rel, target.as_os_str().as_bytes().to_vec()));
    } else {
        return Err(StoreError::Unsupported {
            path: abs.to_path_buf(),
        });
    }
    Ok(())
}

/// The tree of a store object on disk, hashed.
pub fn hash_tree(root: &Path) -> Result<Node, StoreError> {
    let walk = walk_object(root)?;
    build_tree(&walk, &|_, f| hash_file(&f.abs))
}
