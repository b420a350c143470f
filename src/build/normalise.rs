//! Output normalisation: after a build, every file of an output gets the
//! store's mode and mtime, hard links are broken, and special files are
//! refused, so that what is hashed and stored depends on content only.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why an output cannot be stored.
#[derive(Debug, thiserror::Error)]
pub enum NormaliseError {
    /// A device, fifo or socket in the output.
    #[error(
        "the build left {path}, a device, fifo or socket; outputs hold only files, directories and symlinks"
    )]
    Special {
        /// The offending path.
        path: PathBuf,
    },
    /// A file system operation failed.
    #[error("cannot normalise {path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Normalises the tree at `root` in place: files 0444, or 0555 when any
/// execute bit is set (setuid, setgid and sticky bits dropped), directories
/// 0555, every mtime the store's, every hard link broken into its own file,
/// every entry owned by the store's owner (this process: a build run by
/// root wrote as the build user, see [`crate::build::sandbox::user`]).
pub fn normalise(root: &Path) -> Result<(), NormaliseError> {
    let (uid, gid) = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| NormaliseError::Io { path: p, source }
    };
    // Directories are made writable first so that their contents can be
    // changed, and read-only last, after their contents.
    let entries: Vec<walkdir::DirEntry> = walkdir::WalkDir::new(root)
        // A symlink at the top is an entry, never followed.
        .follow_root_links(false)
        .follow_links(false)
        .contents_first(true)
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|e| {
            let (path, source) = crate::store::walk_error(root, e);
            NormaliseError::Io { path, source }
        })?;
    for e in entries.iter().filter(|e| e.file_type().is_dir()) {
        std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(io(e.path()))?;
    }
    for e in &entries {
        let path = e.path();
        let meta = std::fs::symlink_metadata(path).map_err(io(path))?;
        if meta.uid() != uid || meta.gid() != gid {
            // Before the mode: a change of owner clears set-id bits anyway.
            std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(io(path))?;
        }
        let ft = meta.file_type();
        if ft.is_symlink() {
            set_store_mtime(path)?;
        } else if ft.is_file() {
            if meta.nlink() > 1 {
                break_link(path)?;
            }
            let mode = if meta.mode() & 0o111 != 0 {
                0o555
            } else {
                0o444
            };
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(io(path))?;
            set_store_mtime(path)?;
        } else if ft.is_dir() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o555))
                .map_err(io(path))?;
            set_store_mtime(path)?;
        } else {
            return Err(NormaliseError::Special {
                path: path.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// Replaces a hard-linked file by a copy of its own.
fn break_link(path: &Path) -> Result<(), NormaliseError> {
    let io = |source| NormaliseError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_file_name(format!(
        ".{}.cbuild-unlink",
        path.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    ));
    std::fs::copy(path, &tmp).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn set_store_mtime(path: &Path) -> Result<(), NormaliseError> {
    crate::store::set_store_mtime(path).map_err(|source| NormaliseError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_mtimes_links_and_special_files() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path().join("out");
        std::fs::create_dir_all(r.join("sub")).unwrap();
        std::fs::write(r.join("a"), "a").unwrap();
        std::fs::write(r.join("sub/x"), "x").unwrap();
        std::fs::set_permissions(r.join("sub/x"), std::fs::Permissions::from_mode(0o4775)).unwrap();
        std::fs::hard_link(r.join("a"), r.join("b")).unwrap();
        std::os::unix::fs::symlink("a", r.join("l")).unwrap();
        normalise(&r).unwrap();
        let mode = |p: &str| std::fs::metadata(r.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode("a"), 0o444);
        assert_eq!(mode("sub/x"), 0o555, "setuid must be dropped");
        assert_eq!(mode("sub"), 0o555);
        assert_eq!(std::fs::metadata(r.join("a")).unwrap().nlink(), 1);
        assert_eq!(std::fs::read(r.join("b")).unwrap(), b"a");
        for p in ["a", "sub", "sub/x", "l", ""] {
            assert_eq!(
                std::fs::symlink_metadata(r.join(p)).unwrap().mtime(),
                1,
                "{p}"
            );
        }
        // A fifo is refused, naming it.
        let r2 = d.path().join("out2");
        std::fs::create_dir_all(&r2).unwrap();
        nix::unistd::mkfifo(
            &r2.join("p"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let e = normalise(&r2).unwrap_err();
        assert!(e.to_string().contains("out2/p"), "{e}");
    }
}
