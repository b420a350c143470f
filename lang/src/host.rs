//! The language's only window on the outside world.
//!
//! Evaluation is pure: the builtins that read files, import sources, pin host
//! tools, fetch or create derivations call the [`Host`] the evaluator was given.
//! The root crate implements it with the store; [`FsHost`] is the plain host
//! for `cbuild eval --expr` and the language's own tests: it reads files for
//! real and refuses everything that needs a store.

use std::path::{Path, PathBuf};

use crate::value::{Derivation, Record, Str, Value};

/// An error a host reports; the evaluator places it at the builtin's call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostError {
    /// What went wrong, naming the path or value concerned.
    pub message: String,
    /// A hint, if one helps.
    pub help: Option<String>,
}

impl HostError {
    /// An error with a message and no hint.
    pub fn new(message: impl Into<String>) -> HostError {
        HostError {
            message: message.into(),
            help: None,
        }
    }

    /// Adds a hint.
    pub fn with_help(mut self, help: impl Into<String>) -> HostError {
        self.help = Some(help.into());
        self
    }
}

/// What the evaluator needs from the outside.
pub trait Host {
    /// The text of a file, for `import` and `read_file`. The host records the
    /// read.
    fn read_file(&mut self, path: &Path) -> Result<String, HostError>;

    /// Imports a file or directory named by a path literal interpolated into a
    /// string, and returns its store path with the matching context.
    fn import_path(&mut self, path: &Path) -> Result<Str, HostError>;

    /// `source(path, exclude, gitignore, recipes)`: with `recipes` false,
    /// recipe files (`*.cb`) inside a directory are left out, so that editing
    /// a recipe's metadata rebuilds nothing.
    fn source(
        &mut self,
        path: &Path,
        exclude: &[String],
        gitignore: bool,
        recipes: bool,
    ) -> Result<Str, HostError>;

    /// The conda subdir being built for (`target_platform` in recipes), e.g.
    /// `linux-64`; by default the evaluating machine's own.
    fn target_platform(&self) -> String {
        host_subdir().to_string()
    }

    /// `fetch(url, hash, unpack)`: a fixed-output derivation.
    fn fetch(&mut self, url: &str, hash: &str, unpack: bool) -> Result<Derivation, HostError>;

    /// `host_tool(name)`: the pinned tool's path, with context naming it.
    fn host_tool(&mut self, name: &str) -> Result<Str, HostError>;

    /// `derivation(attrs)`: `attrs` is fully evaluated (every field forced,
    /// deeply), so [`Record::get_forced`] answers for every field. The
    /// evaluator fills the result's `attrs` and `span` itself.
    fn derivation(&mut self, attrs: &Record) -> Result<Derivation, HostError>;

    /// `trace(msg, value)`: shows a message; by default on stderr.
    fn trace(&mut self, location: &str, message: &str) {
        eprintln!("trace: {location}: {message}");
    }
}

/// A host without a store: reads files, refuses the rest with a message that
/// says why. `context` names the situation, e.g. "in `cbuild eval --expr`";
/// paths under `base` are shown relative to it.
pub struct FsHost {
    context: String,
    base: PathBuf,
}

impl FsHost {
    /// A host whose refusals say "`X` is not available {context}".
    pub fn new(context: impl Into<String>, base: PathBuf) -> FsHost {
        FsHost {
            context: context.into(),
            base,
        }
    }

    fn refuse<T>(&self, what: &str) -> Result<T, HostError> {
        Err(HostError::new(format!(
            "{what} is not available {}: it needs a store",
            self.context
        )))
    }

    fn shown(&self, path: &Path) -> String {
        shown_path(path, &self.base)
    }
}

impl Host for FsHost {
    fn read_file(&mut self, path: &Path) -> Result<String, HostError> {
        read_text_file(path, &self.shown(path))
    }

    fn import_path(&mut self, path: &Path) -> Result<Str, HostError> {
        self.refuse(&format!("importing `{}` into the store", self.shown(path)))
    }

    fn source(&mut self, _: &Path, _: &[String], _: bool, _: bool) -> Result<Str, HostError> {
        self.refuse("`source`")
    }

    fn fetch(&mut self, _: &str, _: &str, _: bool) -> Result<Derivation, HostError> {
        self.refuse("`fetch`")
    }

    fn host_tool(&mut self, _: &str) -> Result<Str, HostError> {
        self.refuse("`host_tool`")
    }

    fn derivation(&mut self, _: &Record) -> Result<Derivation, HostError> {
        self.refuse("`derivation`")
    }
}

/// `path` relative to `base` when it is inside it (`./x` style is not
/// added), else absolute: how messages name files.
pub fn shown_path(path: &Path, base: &Path) -> String {
    match path.strip_prefix(base) {
        Ok(rel) if !rel.as_os_str().is_empty() => rel.display().to_string(),
        _ => path.display().to_string(),
    }
}

/// Reads a UTF-8 text file, with errors that name the path (as `shown`) and
/// say what is wrong with it (missing, a directory, not text).
pub fn read_text_file(path: &Path, shown: &str) -> Result<String, HostError> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(HostError::new(format!(
                "cannot read `{shown}`: no such file"
            )));
        }
        Err(e) => return Err(HostError::new(format!("cannot read `{shown}`: {e}"))),
        Ok(m) if m.is_dir() => {
            return Err(HostError::new(format!(
                "cannot read `{shown}`: it is a directory, not a file"
            )));
        }
        // A device or a fifo could block or never end (`/dev/zero`).
        Ok(m) if !m.is_file() => {
            return Err(HostError::new(format!(
                "cannot read `{shown}`: it is not a regular file"
            )));
        }
        Ok(_) => {}
    }
    let bytes =
        std::fs::read(path).map_err(|e| HostError::new(format!("cannot read `{shown}`: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        HostError::new(format!(
            "cannot read `{shown}`: it is not UTF-8 text (invalid byte at offset {at})"
        ))
    })
}

/// A derivation value as a host would return it; a helper for hosts and
/// tests.
pub fn value_of(d: Derivation) -> Value {
    Value::Derivation(std::rc::Rc::new(d))
}

/// The conda subdir of the machine cbuild runs on (`linux-64`, ...).
pub fn host_subdir() -> &'static str {
    match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => "linux-64",
        ("linux", "aarch64") => "linux-aarch64",
        ("linux", "powerpc64") => "linux-ppc64le",
        ("linux", "s390x") => "linux-s390x",
        ("linux", "x86") => "linux-32",
        ("linux", "arm") => "linux-armv7l",
        ("macos", "x86_64") => "osx-64",
        ("macos", "aarch64") => "osx-arm64",
        ("windows", "x86_64") => "win-64",
        ("windows", "aarch64") => "win-arm64",
        _ => "unknown",
    }
}
