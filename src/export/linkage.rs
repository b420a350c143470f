//! The linkage check of an export, after rattler-build's overlinking and
//! overdepending checks: every shared library an ELF file of the package
//! loads (`DT_NEEDED`) must come from the package itself, from a package it
//! depends on (its host and run inputs, its sibling outputs), from the C
//! library that conda's `__glibc` virtual package stands for, or from the
//! recipe's `missing_dso_allowlist`. Anything else is a library of the build
//! machine that the package would silently need (Debian's `libbz2` linked
//! because a recipe forgot its host input): the export fails naming each
//! file and library. A host input that ships shared libraries none of the
//! package's files loads is reported (overdepending).

use std::collections::{BTreeMap, BTreeSet};

/// The C library's own sonames: what `__glibc` gives on every conda
/// system, so no package provides them.
pub const C_LIBRARY: [&str; 11] = [
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "libpthread.so.0",
    "librt.so.1",
    "libresolv.so.2",
    "libutil.so.1",
    "libanl.so.1",
    "libmvec.so.1",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
];

/// A package that the checked one depends on, as the check sees it.
pub struct Dependency<'a> {
    /// Its package name.
    pub name: &'a str,
    /// Whether it is a host input (else a run input or a sibling output).
    pub host: bool,
    /// The names of its files and symlinks ([`file_names`]).
    pub files: &'a BTreeSet<String>,
}

/// The names of a package's files and symlinks (its members' last path
/// components): what a needed soname is looked up in.
pub fn file_names(members: &[super::archive::Member]) -> BTreeSet<String> {
    members
        .iter()
        .map(|m| m.path.rsplit('/').next().unwrap_or_default().to_string())
        .collect()
}

/// What the check found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Linkage {
    /// `file needs library` for each library found nowhere allowed.
    pub missing: Vec<String>,
    /// Host inputs with shared libraries that no file loads.
    pub unused: Vec<String>,
}

/// Checks `needed` (file to the sonames it loads) against the package's
/// own file names `own`, its dependencies and the recipe's `allow` globs.
pub fn check(
    needed: &[(String, Vec<String>)],
    own: &BTreeSet<String>,
    deps: &[Dependency<'_>],
    allow: &[globset::GlobMatcher],
) -> Linkage {
    let mut found = Linkage::default();
    let mut used: BTreeMap<&str, bool> = deps.iter().map(|d| (d.name, false)).collect();
    for (file, libs) in needed {
        for lib in libs {
            if own.contains(lib) || C_LIBRARY.contains(&lib.as_str()) {
                continue;
            }
            let providers: Vec<&Dependency<'_>> =
                deps.iter().filter(|d| d.files.contains(lib)).collect();
            for d in &providers {
                used.insert(d.name, true);
            }
            if providers.is_empty() && !allow.iter().any(|g| g.is_match(lib)) {
                found.missing.push(format!("`{file}` needs `{lib}`"));
            }
        }
    }
    if !needed.is_empty() {
        for d in deps.iter().filter(|d| d.host) {
            let has_shared = d.files.iter().any(|f| is_shared_library(f));
            if has_shared && !used.get(d.name).copied().unwrap_or(false) {
                found.unused.push(d.name.to_string());
            }
        }
    }
    found
}

/// Whether a file name is a shared library's (`libx.so`, `libx.so.1.2`).
fn is_shared_library(name: &str) -> bool {
    name.ends_with(".so") || name.contains(".so.")
}

/// The recipe's `missing_dso_allowlist` as matchers: globs over sonames
/// (`libstdc++.so*`), as rattler-build takes them.
pub fn allowlist(globs: &[String]) -> Result<Vec<globset::GlobMatcher>, String> {
    globs
        .iter()
        .map(|g| {
            globset::Glob::new(g)
                .map(|g| g.compile_matcher())
                .map_err(|e| format!("`{g}` is not a glob: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(files: &[&str]) -> BTreeSet<String> {
        files.iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn libraries_resolve_in_the_package_its_inputs_the_c_library_or_the_allowlist() {
        let needed = vec![
            (
                "bin/app".to_string(),
                vec![
                    "libc.so.6".to_string(),
                    "libown.so.1".to_string(),
                    "libz.so.1".to_string(),
                    "libbz2.so.1.0".to_string(),
                    "libstdc++.so.6".to_string(),
                ],
            ),
            ("lib/libown.so.1".to_string(), vec!["libm.so.6".to_string()]),
        ];
        let own: BTreeSet<String> = ["libown.so.1".to_string(), "app".to_string()].into();
        let (zlib, png, headers) = (
            names(&["libz.so.1", "libz.so", "zlib.h"]),
            names(&["libpng16.so.16"]),
            names(&["h.h"]),
        );
        let dep = |name, files| Dependency {
            name,
            host: true,
            files,
        };
        let deps = [
            dep("zlib", &zlib),
            dep("libpng", &png),
            dep("headers", &headers),
        ];
        let allow = allowlist(&["libstdc++.so*".to_string()]).unwrap();
        let found = check(&needed, &own, &deps, &allow);
        assert_eq!(found.missing, ["`bin/app` needs `libbz2.so.1.0`"]);
        assert_eq!(found.unused, ["libpng"]);
    }
}
