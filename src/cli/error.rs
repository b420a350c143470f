//! The command line's error type: every way a command can fail, with the exit
//! code the CLI contract gives it.

use std::io;

use cbuild_lang::Diagnostic;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A recipe that does not parse or evaluate, or a file that cannot be read.
    #[error("{0}")]
    Recipe(Box<Diagnostic>),
    /// `-A PATH` names nothing in the recipe's value.
    #[error("attribute `{attr}` not found in {file}: {reason}")]
    Attr {
        /// The path as given.
        attr: String,
        /// The recipe.
        file: String,
        /// What is missing, with the fields that exist.
        reason: String,
    },
    /// `-A PATH` is not a valid attribute path.
    #[error("invalid attribute path `{attr}`: {reason}")]
    AttrSyntax {
        /// The path as given.
        attr: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Arguments that parse but do not go together.
    #[error("{0}")]
    Usage(String),
    /// The store could not be opened or used.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A target is not a derivation.
    #[error("{what} is {found}, not a derivation")]
    NotADerivation {
        /// The attribute or path.
        what: String,
        /// What it is.
        found: String,
    },
    /// No build log is stored for a derivation.
    #[error("no build log for {0}: it was never built in this store (it may have been reused)")]
    NoLog(String),
    /// A realise could not go on (the store, or the sandbox).
    #[error("{0}")]
    Build(Box<crate::build::realise::BuildError>),
    /// Builds failed; each was reported as it failed.
    #[error("{failed} build(s) failed{}", if *.skipped > 0 { format!(", {skipped} not built because of them") } else { String::new() })]
    BuildsFailed {
        /// How many builders failed.
        failed: usize,
        /// How many derivations were skipped because an input failed.
        skipped: usize,
    },
    /// An export failed.
    #[error(transparent)]
    Export(Box<crate::export::ExportError>),
    /// `cbuild check` found a rebuild that differs (reported on stdout).
    #[error("a rebuild differs from what is stored: the build is not reproducible")]
    NotReproducible,
    /// A package file that cannot be read at all.
    #[error(transparent)]
    Package(Box<crate::audit::package::PackageError>),
    /// `cbuild audit` found errors (reported on stdout).
    #[error("the audit found {errors} error(s)")]
    AuditFailed {
        /// How many.
        errors: usize,
    },
    /// `cbuild audit PKG` could not rebuild the package here (reported on
    /// stdout).
    #[error("the package's origin could not be checked here: {reason}")]
    AuditUnverifiable {
        /// The first reason.
        reason: String,
    },
    /// An origin audit could not run.
    #[error(transparent)]
    Origin(Box<crate::audit::origin::OriginError>),
    /// A package could not be downloaded.
    #[error("cannot download {url}: {reason}")]
    Download {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// `store verify` found objects that do not match (reported on stdout).
    #[error("{failed} store object(s) or database check(s) do not verify")]
    VerifyFailed {
        /// How many.
        failed: usize,
    },
    /// Publishing failed.
    #[error(transparent)]
    Publish(Box<crate::publish::PublishError>),
    /// Writing the result to stdout failed.
    #[error("cannot write to standard output")]
    Stdout(#[source] io::Error),
}

impl CliError {
    /// The exit code: 2 when the command could not run, 0 for a closed pipe.
    pub fn exit_code(&self) -> u8 {
        use crate::build::realise::BuildError;
        match self {
            CliError::Stdout(e) if e.kind() == io::ErrorKind::BrokenPipe => 0,
            CliError::BuildsFailed { .. }
            | CliError::NotReproducible
            | CliError::AuditFailed { .. }
            | CliError::VerifyFailed { .. } => 1,
            // A broken package or a name taken by other bytes: a finding,
            // not a command that could not run.
            CliError::Publish(e)
                if matches!(
                    **e,
                    crate::publish::PublishError::Broken { .. }
                        | crate::publish::PublishError::Conflict { .. }
                ) =>
            {
                1
            }
            CliError::Export(e) => match &**e {
                crate::export::ExportError::Build(b)
                    if matches!(
                        **b,
                        BuildError::Failed { .. }
                            | BuildError::MissingOutput { .. }
                            | BuildError::Stopped { .. }
                    ) =>
                {
                    1
                }
                // The build made something that cannot be a package.
                crate::export::ExportError::Leaks { .. }
                | crate::export::ExportError::Overlinking { .. }
                | crate::export::ExportError::LinkOutside { .. }
                | crate::export::ExportError::RpathOutsidePrefix { .. }
                | crate::export::ExportError::RpathShared { .. }
                | crate::export::ExportError::WrongMachine { .. } => 1,
                _ => 2,
            },
            CliError::Build(b)
                if matches!(
                    **b,
                    BuildError::Failed { .. }
                        | BuildError::MissingOutput { .. }
                        | BuildError::Stopped { .. }
                ) =>
            {
                1
            }
            _ => 2,
        }
    }
}

impl From<Box<Diagnostic>> for CliError {
    fn from(d: Box<Diagnostic>) -> Self {
        CliError::Recipe(d)
    }
}

impl From<crate::export::ExportError> for CliError {
    fn from(e: crate::export::ExportError) -> Self {
        CliError::Export(Box::new(e))
    }
}
