//! Host tools: programs found on the evaluating machine's `PATH`, pinned by
//! path and by the BLAKE3 of the file they resolve to.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cbuild_lang::HostError;

use crate::derivation::{FileDigest, HostTool};
use crate::store::tree_hash::hash_file;

/// Tools pinned so far in this run.
pub(super) struct Tools {
    path: Option<OsString>,
    pinned: HashMap<String, (String, HostTool)>,
}

impl Tools {
    pub(super) fn new(path: Option<OsString>) -> Tools {
        Tools {
            path,
            pinned: HashMap::new(),
        }
    }

    /// Finds and pins `name`; returns the path it was found at and the pin.
    pub(super) fn pin(&mut self, name: &str) -> Result<(String, HostTool), HostError> {
        if let Some(p) = self.pinned.get(name) {
            return Ok(p.clone());
        }
        if name.is_empty() || name.contains('/') {
            return Err(
                HostError::new(format!("`host_tool`: `{name}` is not a program name")).with_help(
                    "give the name as found on PATH, e.g. host_tool(\"cc\"); paths are not allowed",
                ),
            );
        }
        let found = find_on_path(name, self.path.as_deref()).ok_or_else(|| {
            let dirs = self
                .path
                .as_ref()
                .map(|p| p.to_string_lossy().replace(':', ", "))
                .unwrap_or_else(|| "PATH is not set".into());
            HostError::new(format!("host tool `{name}` is not on PATH"))
                .with_help(format!("searched: {dirs}"))
        })?;
        let resolved = std::fs::canonicalize(&found).map_err(|e| {
            HostError::new(format!(
                "host tool `{name}`: cannot resolve {}: {e}",
                found.display()
            ))
        })?;
        let (digest, _) =
            hash_file(&resolved).map_err(|e| HostError::new(format!("host tool `{name}`: {e}")))?;
        let pin = HostTool {
            path: found.to_string_lossy().into_owned(),
            resolved: resolved.to_string_lossy().into_owned(),
            digest: FileDigest(digest.0),
        };
        let entry = (pin.path.clone(), pin);
        self.pinned.insert(name.to_string(), entry.clone());
        Ok(entry)
    }

    /// A tool pinned earlier in this run.
    pub(super) fn get(&self, name: &str) -> Option<&HostTool> {
        self.pinned.get(name).map(|(_, t)| t)
    }
}

/// The first executable regular file named `name` in the directories of
/// `path` (colon-separated), as `which` finds it.
pub fn find_on_path(name: &str, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    let path = path?;
    std::env::split_paths(path)
        .filter(|d| d.is_absolute())
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
