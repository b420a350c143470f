//! Conda export: targets rebuilt hermetically into a conda prefix
//! ([`plan`]), packaged as `.conda` or `.tar.bz2` files that are the same
//! bytes wherever and whenever they are made ([`package`], [`archive`]), and
//! written into channels ([`channel`]). What the ELF files load is checked
//! against what the package depends on ([`linkage`]), and what dependents
//! get from a package is in [`run_exports`].
//!
//! What is hashed is store-independent ([`portable`]): two users whose
//! stores live in different directories get the same file.

pub mod archive;
pub mod channel;
pub mod elf;
pub mod linkage;
pub mod package;
pub mod plan;
pub mod platform;
pub mod portable;
pub mod run;
pub mod run_exports;

pub use run::{Exported, Options, Outcome, export};

use std::path::PathBuf;

use crate::build::realise::BuildError;
use crate::store::StoreError;

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A store path could not be computed.
    #[error(transparent)]
    Path(#[from] crate::derivation::StorePathError),
    /// The export builds could not run.
    #[error(transparent)]
    Build(Box<BuildError>),
    /// A `host_inputs` entry that is not a derivation's output.
    #[error(
        "{drv}: host input `{input}` is not the output of a derivation, so it cannot become a package"
    )]
    HostInputNotADerivation {
        /// The `.drv` path.
        drv: String,
        /// The entry.
        input: String,
    },
    /// A `run_inputs` entry that names no derivation.
    #[error("{drv}: run input `{input}` is not a derivation")]
    BadRunInput {
        /// The `.drv` path.
        drv: String,
        /// The entry.
        input: String,
    },
    /// Two packages of one name in one host environment.
    #[error(
        "{drv}: its host environment would hold two packages named `{name}`, from {}; conda \
         installs one package of a name",
        drvs.join(" and ")
    )]
    TwoOfOneName {
        /// The derivation being exported.
        drv: String,
        /// The package name.
        name: String,
        /// The two derivations.
        drvs: Vec<String>,
    },
    /// Host inputs need an `out` prefix to be laid into.
    #[error(
        "{drv}: has host inputs but no `out` output; its host inputs are laid into the `out` \
         prefix, so export needs one"
    )]
    NoOutOutput {
        /// The derivation.
        drv: String,
    },
    /// Run inputs that need each other.
    #[error("run inputs form a cycle: {}", drvs.join(" -> "))]
    Cycle {
        /// The derivations on the cycle.
        drvs: Vec<String>,
    },
    /// A subdir conda does not know.
    #[error("unknown subdir `{subdir}`; conda's subdirs are {}", platform::SUBDIRS.join(", "))]
    UnknownSubdir {
        /// As given.
        subdir: String,
    },
    /// A package name, version or field conda would refuse.
    #[error("{what}: {reason}")]
    BadMetadata {
        /// Which package and field.
        what: String,
        /// Why.
        reason: String,
    },
    /// Files in the package still name the store (or, with `--strict`,
    /// the build directory): every mention found, at once.
    #[error(
        "{package}: {} mention(s) of the build machine; a package must not depend on the build \
         machine's store or build directory:\n  {}",
        mentions.len(),
        mentions.join("\n  ")
    )]
    Leaks {
        /// Package name.
        package: String,
        /// Each mention: file, what, offset and the bytes around it.
        mentions: Vec<String>,
    },
    /// ELF files load shared libraries that only the build machine has.
    #[error(
        "{package}: its files load libraries that neither the package, its host and run inputs nor \
         the C library provide, so they would come from the build machine:\n  {}\nadd the \
         package that provides each to `host_inputs`, or list its soname in \
         `missing_dso_allowlist` when a dependency provides it at run time",
        missing.join("\n  ")
    )]
    Overlinking {
        /// Package name.
        package: String,
        /// `file needs library`, each.
        missing: Vec<String>,
    },
    /// A link that leads out of the prefix, directly or through others.
    #[error(
        "{package}: `{file}` {what}; a package's links must stay inside the prefix (an installer \
         would follow it out)"
    )]
    LinkOutside {
        /// Package name.
        package: String,
        /// File inside the package.
        file: String,
        /// Where it leads.
        what: String,
    },
    /// An ELF search path outside the prefix.
    #[error(
        "{package}: `{file}` has the RPATH/RUNPATH entry `{entry}`, outside the prefix; only \
         entries inside it ({prefix}/...) can be made relative"
    )]
    RpathOutsidePrefix {
        /// Package name.
        package: String,
        /// File.
        file: String,
        /// The entry.
        entry: String,
        /// `$PREFIX` as the build saw it.
        prefix: String,
    },
    /// An ELF search path whose bytes another string shares.
    #[error(
        "{package}: the RPATH/RUNPATH `{text}` of `{file}` shares its bytes with another string \
         of the ELF string table, so it cannot be rewritten in place; link with \
         -Wl,-rpath,'$ORIGIN/...' instead"
    )]
    RpathShared {
        /// Package name.
        package: String,
        /// File.
        file: String,
        /// The search path.
        text: String,
    },
    /// An ELF file for another machine than the subdir's.
    #[error(
        "{package}: `{file}` is an ELF file for {machine}, which does not run in subdir {subdir}"
    )]
    WrongMachine {
        /// Package name.
        package: String,
        /// File.
        file: String,
        /// Its machine.
        machine: String,
        /// The subdir.
        subdir: String,
    },
    /// A file name that is not UTF-8 (conda's paths.json cannot hold it).
    #[error("{package}: the file name {path:?} is not UTF-8")]
    NonUtf8Path {
        /// Package name.
        package: String,
        /// The path.
        path: PathBuf,
    },
    /// A licence file that cannot be found.
    #[error("{package}: license_file `{file}` not found{}", if within.is_empty() { String::new() } else { format!(" in {within}") })]
    NoLicenseFile {
        /// Package name.
        package: String,
        /// As given.
        file: String,
        /// Where it was looked for.
        within: String,
    },
    /// Writing a package or channel failed.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Reading a file failed.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The channel cannot be written to.
    #[error("{path}: {reason}")]
    Channel {
        /// The channel directory or file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl From<BuildError> for ExportError {
    fn from(e: BuildError) -> Self {
        ExportError::Build(Box::new(e))
    }
}

/// `ExportError::Write` for `path`.
pub(crate) fn write_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ExportError {
    let path = path.into();
    move |source| ExportError::Write { path, source }
}

/// `ExportError::Read` for `path`.
pub(crate) fn read_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ExportError {
    let path = path.into();
    move |source| ExportError::Read { path, source }
}

/// Writes `dest` atomically: `fill` writes a temporary file beside it, which
/// is then made readable by all (0644), flushed and renamed into place, so
/// that nobody ever sees half a package or repodata file.
pub(crate) fn write_atomically(
    dest: &std::path::Path,
    fill: impl FnOnce(&mut std::fs::File) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = dest.parent().unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".cbuild-")
        .suffix(".part")
        .tempfile_in(dir)
        .map_err(write_err(dir))?;
    fill(tmp.as_file_mut()).map_err(|e| match e {
        ExportError::Write { source, .. } => ExportError::Write {
            path: dest.to_path_buf(),
            source,
        },
        e => e,
    })?;
    let f = tmp.as_file();
    f.set_permissions(std::fs::Permissions::from_mode(0o644))
        .and_then(|()| f.sync_all())
        .map_err(write_err(dest))?;
    tmp.persist(dest).map_err(|e| ExportError::Write {
        path: dest.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}
