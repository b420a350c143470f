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
    companions: HashMap<String, Vec<(String, HostTool)>>,
}

/// Compilers, and the programs they run by name from `PATH`.
const COMPANIONS: [(&str, &[&str]); 8] = [
    ("cc", &["as", "ld"]),
    ("gcc", &["as", "ld"]),
    ("c++", &["as", "ld"]),
    ("g++", &["as", "ld"]),
    ("gfortran", &["as", "ld"]),
    ("clang", &["as", "ld"]),
    ("clang++", &["as", "ld"]),
    ("go", &["as", "ld"]),
];

impl Tools {
    pub(super) fn new(path: Option<OsString>) -> Tools {
        Tools {
            path,
            pinned: HashMap::new(),
            companions: HashMap::new(),
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
        if let Some((_, names)) = COMPANIONS.iter().find(|(n, _)| *n == name) {
            let mut found = Vec::new();
            for c in *names {
                // A companion that is missing is the compiler's problem at
                // build time, not an evaluation error.
                if let Ok((_, pin)) = self.pin(c) {
                    found.push((c.to_string(), pin));
                }
            }
            self.companions.insert(name.to_string(), found);
        }
        Ok(entry)
    }

    /// The programs pinned along with `name`.
    pub(super) fn companions(&self, name: &str) -> &[(String, HostTool)] {
        self.companions.get(name).map_or(&[], Vec::as_slice)
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
