//! Export builds: a derivation that builds into conda prefixes instead of
//! store paths (see [`crate::derivation::prefix`]).
//!
//! Before the builder runs, each output gets a fresh directory that the
//! sandbox binds at its placeholder prefix, and the host inputs' exported
//! contents (the layers) are copied into the `out` prefix, as a conda host
//! environment is installed before a build. Afterwards the layers' files are
//! taken out again (a build may add files, never change a host input's), each
//! prefix directory becomes the output's scratch path, and the prefixes of
//! outputs other than `out` are swapped for [`prefix::PREFIX`] (same length),
//! since all outputs install into one prefix.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::build::ca;
use crate::build::job::{Scratch, all_files};
use crate::build::realise::BuildError;
use crate::build::sandbox::Bind;
use crate::derivation::{Derivation, prefix};
use crate::store::{StoreError, make_writable_recursive};

/// One output's prefix directory.
struct OutputPrefix {
    /// Host directory, bound at `prefix` inside the sandbox.
    dir: PathBuf,
    /// The placeholder prefix.
    prefix: String,
}

/// A file or symlink copied from a layer, as it was after copying.
struct Laid {
    rel: PathBuf,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

/// The prefixes of one export build and what was laid into them.
pub struct Prefixes {
    outputs: Vec<OutputPrefix>,
    laid: Vec<Laid>,
    laid_dirs: Vec<PathBuf>,
}

fn write_err(path: &Path, source: std::io::Error) -> BuildError {
    StoreError::Write {
        path: path.to_path_buf(),
        source,
    }
    .into()
}

fn read_err(path: &Path, source: std::io::Error) -> BuildError {
    StoreError::Read {
        path: path.to_path_buf(),
        source,
    }
    .into()
}

impl Prefixes {
    /// Makes a prefix directory per output under `work` and copies the
    /// `layers` (store paths separated by spaces) into the `out` one.
    pub fn lay(work: &Path, d: &Derivation, layers: &str) -> Result<Prefixes, BuildError> {
        let mut outputs = Vec::new();
        for (i, o) in d.outputs.iter().enumerate() {
            let dir = work.join(format!("prefix-{i}"));
            std::fs::create_dir_all(&dir).map_err(|e| write_err(&dir, e))?;
            outputs.push(OutputPrefix {
                dir,
                prefix: prefix::output_prefix(o),
            });
        }
        let mut this = Prefixes {
            outputs,
            laid: Vec::new(),
            laid_dirs: Vec::new(),
        };
        let Some(out) = d.outputs.iter().position(|o| o == "out") else {
            return Ok(this);
        };
        let target = this.outputs[out].dir.clone();
        for layer in layers.split_whitespace() {
            this.copy_layer(Path::new(layer), &target)?;
        }
        Ok(this)
    }

    fn copy_layer(&mut self, layer: &Path, target: &Path) -> Result<(), BuildError> {
        let walk = walkdir::WalkDir::new(layer)
            .follow_links(false)
            .sort_by_file_name()
            .min_depth(1);
        for e in walk {
            let e = e.map_err(|e| {
                let (path, source) = crate::store::walk_error(layer, e);
                read_err(&path, source)
            })?;
            let rel = e
                .path()
                .strip_prefix(layer)
                .unwrap_or(e.path())
                .to_path_buf();
            let to = target.join(&rel);
            let ft = e.file_type();
            // Never through a symlink: this runs on the host, where a link
            // from one layer could point a later layer's files anywhere. A
            // walk is top-down, so every parent of `to` was checked to be a
            // real directory before.
            let existing = std::fs::symlink_metadata(&to).ok();
            if ft.is_dir() {
                match existing {
                    None => {
                        std::fs::create_dir(&to).map_err(|err| write_err(&to, err))?;
                        self.laid_dirs.push(rel);
                    }
                    Some(m) if m.is_dir() => {}
                    Some(_) => {
                        return Err(BuildError::LayerClash {
                            path: rel.to_string_lossy().into(),
                            layer: layer.to_string_lossy().into(),
                        });
                    }
                }
                continue;
            }
            if existing.is_some() {
                // Two layers with the same file: the first one's stays (the
                // later layer is a dependency of an earlier one or a sibling).
                continue;
            }
            if ft.is_symlink() {
                let t = std::fs::read_link(e.path()).map_err(|err| read_err(e.path(), err))?;
                std::os::unix::fs::symlink(&t, &to).map_err(|err| write_err(&to, err))?;
            } else {
                std::fs::copy(e.path(), &to).map_err(|err| write_err(&to, err))?;
            }
            let m = std::fs::symlink_metadata(&to).map_err(|err| read_err(&to, err))?;
            self.laid.push(Laid {
                rel,
                ino: m.ino(),
                size: m.size(),
                mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            });
        }
        Ok(())
    }

    /// The sandbox binds of the prefixes.
    pub fn binds(&self) -> Vec<Bind> {
        self.outputs
            .iter()
            .map(|o| Bind {
                source: o.dir.to_string_lossy().into(),
                target: o.prefix.clone(),
                writable: true,
            })
            .collect()
    }

    /// After a successful build: takes the layers out, moves each prefix to
    /// its output's scratch path (`found`, in output order) and swaps the
    /// other outputs' prefixes for the common one.
    pub fn finish(self, drv: &str, found: &[(Scratch, PathBuf)]) -> Result<(), BuildError> {
        if let Some(out) = found.iter().position(|(s, _)| s.output == "out") {
            let root = &self.outputs[out].dir;
            make_writable_recursive(root);
            for l in &self.laid {
                let p = root.join(&l.rel);
                // The build may have swapped a directory for a symlink: what
                // is removed here on the host must lie inside the prefix.
                let through_link = l.rel.ancestors().skip(1).any(|a| {
                    !a.as_os_str().is_empty()
                        && std::fs::symlink_metadata(root.join(a)).is_ok_and(|m| !m.is_dir())
                });
                let how = match std::fs::symlink_metadata(&p) {
                    _ if through_link => Some("replaced a folder of"),
                    Err(_) => Some("removed"),
                    Ok(m) => {
                        let mtime =
                            i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
                        (m.ino() != l.ino || m.size() != l.size || mtime != l.mtime_ns)
                            .then_some("changed")
                    }
                };
                if let Some(how) = how {
                    return Err(BuildError::ChangedHostFile {
                        drv: drv.to_string(),
                        path: l.rel.to_string_lossy().into(),
                        how,
                    });
                }
                std::fs::remove_file(&p).map_err(|e| write_err(&p, e))?;
            }
            // Deepest first: a directory a layer made goes when the build
            // added nothing to it.
            for rel in self.laid_dirs.iter().rev() {
                let _ = std::fs::remove_dir(root.join(rel));
            }
        }
        for ((_, to), o) in found.iter().zip(&self.outputs) {
            std::fs::rename(&o.dir, to).map_err(|e| write_err(to, e))?;
        }
        let others: Vec<&OutputPrefix> = self
            .outputs
            .iter()
            .filter(|o| o.prefix != prefix::PREFIX)
            .collect();
        if !others.is_empty() {
            for (_, p) in found {
                make_writable_recursive(p);
                let files = all_files(p)?;
                for o in &others {
                    ca::rewrite(&files, &o.prefix, prefix::PREFIX)?;
                }
            }
        }
        Ok(())
    }
}
