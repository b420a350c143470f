//! `cbuild publish`: packages onto a channel, one name for one content.
//!
//! A package is checked as `cbuild audit PKG` checks a stranger's before it
//! goes anywhere. A local channel directory (`DIR` or `file://DIR`) gets it
//! the way `export --channel` adds packages (one code path: a staged copy
//! moved in and `repodata.json` rewritten under the channel's lock); a file
//! name already listed there with the same sha256 is a success that copies
//! nothing, and with another sha256 is refused unless forced, saying
//! whether the two packages record the same inputs (a build that is not
//! reproducible) or not.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::audit::output::{Finding, Severity};
use crate::audit::package::{PackageError, inspect};
use crate::export::ExportError;
use crate::export::archive::Format;
use crate::export::channel::{self, Entry};
use crate::export::run::digests_of;

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The destination is not one cbuild can publish to.
    #[error("cannot publish to `{dest}`: {reason}")]
    Dest {
        /// What was given.
        dest: String,
        /// Why not.
        reason: String,
    },
    /// A package fails the structure checks: it does not leave the machine.
    #[error(
        "{file} is not published: it fails the package checks ({first}; `cbuild audit {file}` lists all)"
    )]
    Broken {
        /// The package.
        file: String,
        /// The first error found.
        first: String,
    },
    /// Another package is published under the same file name.
    #[error(
        "{file_name} is already in {channel} with sha256 {published}, and this one has sha256 \
         {new}: {why} (--force replaces it)"
    )]
    Conflict {
        /// The file name.
        file_name: String,
        /// The channel.
        channel: String,
        /// The published package's sha256.
        published: String,
        /// This package's sha256.
        new: String,
        /// Whether they record the same inputs, in words.
        why: String,
    },
    /// The server refused the API key, or there is none.
    #[error("{server}: {reason}")]
    Auth {
        /// The server and channel.
        server: String,
        /// Why.
        reason: String,
    },
    /// The server failed or could not be reached.
    #[error("{server} ({file}): {reason}")]
    Server {
        /// The server and channel.
        server: String,
        /// The package.
        file: String,
        /// Why.
        reason: String,
    },
    /// A package file cannot be read.
    #[error(transparent)]
    Package(#[from] PackageError),
    /// Writing the channel failed.
    #[error(transparent)]
    Channel(#[from] ExportError),
}

pub mod quetz;

/// Where packages go.
#[derive(Clone, Debug)]
pub enum Dest {
    /// A channel directory.
    Dir(PathBuf),
    /// A channel of a Quetz server.
    Quetz(quetz::Server),
}

impl Dest {
    /// Parses `DIR`, `file://DIR`; other URL schemes are named as not
    /// supported yet.
    pub fn parse(s: &str) -> Result<Dest, PublishError> {
        let dir = |path: &str| {
            // An empty name (`--to ''`, an unset variable) is not "here".
            if path.trim().is_empty() {
                return Err(PublishError::Dest {
                    dest: s.into(),
                    reason: "names no directory (an empty path); say `--to .` to publish into \
                             the current directory"
                        .into(),
                });
            }
            Ok(Dest::Dir(PathBuf::from(path)))
        };
        if let Some(path) = s.strip_prefix("file://") {
            return dir(path);
        }
        if let Some(url) = s.strip_prefix("quetz+") {
            return Ok(Dest::Quetz(quetz::Server::parse(url, s)?));
        }
        if let Some((scheme, _)) = s.split_once("://") {
            return Err(PublishError::Dest {
                dest: s.into(),
                reason: format!(
                    "`{scheme}://` destinations are not supported (a channel directory, DIR or \
                     file://DIR, and a Quetz channel, quetz+http(s)://HOST/CHANNEL, are; \
                     prefix.dev's and anaconda.org's upload APIs are not, until they can be \
                     tested against a real server)"
                ),
            });
        }
        dir(s)
    }
}

/// What happened to one package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Done {
    /// Added to the channel.
    Added,
    /// The same file was there already: nothing copied.
    AlreadyThere,
    /// Another package under its name was replaced (`--force`).
    Replaced,
}

impl Done {
    /// The word reports use.
    pub fn as_str(&self) -> &'static str {
        match self {
            Done::Added => "added",
            Done::AlreadyThere => "already there",
            Done::Replaced => "replaced",
        }
    }
}

/// One package published.
#[derive(Clone, Debug)]
pub struct Published {
    /// The file given.
    pub file: PathBuf,
    /// Where it is in the channel.
    pub path: PathBuf,
    /// Its subdir.
    pub subdir: String,
    /// Its sha256.
    pub sha256: String,
    /// What happened.
    pub done: Done,
    /// Whether the channel's index lists it (a server that indexes in the
    /// background may not yet, when the wait for it ran out).
    pub listed: bool,
}

/// A package checked and read, ready to add.
pub(crate) struct Checked {
    file: PathBuf,
    file_name: String,
    subdir: String,
    key: &'static str,
    record: Value,
    sha256: String,
    export_drv: Option<String>,
}

/// Checks `file` as a stranger's package and makes its repodata record.
pub(crate) fn check(file: &Path) -> Result<Checked, PublishError> {
    let shown = file.display().to_string();
    let found = inspect(file)?;
    if let Some(f) = found
        .findings
        .iter()
        .find(|f| f.severity == Severity::Error)
    {
        return Err(PublishError::Broken {
            file: shown,
            first: describe(f),
        });
    }
    let json = |p: &str| -> Option<Value> { serde_json::from_slice(found.info.get(p)?).ok() };
    let Some(Value::Object(mut record)) = json("info/index.json") else {
        return Err(PublishError::Broken {
            file: shown,
            first: "info/index.json is missing".into(),
        });
    };
    let subdir = record
        .get("subdir")
        .and_then(Value::as_str)
        .unwrap_or("noarch")
        .to_string();
    let (sha256, md5, size) = digests_of(file)?;
    record.insert("sha256".into(), sha256.clone().into());
    record.insert("md5".into(), md5.into());
    record.insert("size".into(), size.into());
    if let Some(re) = json("info/run_exports.json") {
        record.insert("run_exports".into(), re);
    }
    let file_name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let key = repodata_key(&file_name);
    let export_drv =
        json("info/cbuild/export.json").and_then(|v| v["export_drv"].as_str().map(str::to_string));
    Ok(Checked {
        file: file.to_path_buf(),
        file_name,
        subdir,
        key,
        record: Value::Object(record),
        sha256,
        export_drv,
    })
}

/// The repodata key a package file is listed under, by its name.
pub(crate) fn repodata_key(file_name: &str) -> &'static str {
    if file_name.ends_with(".tar.bz2") {
        Format::TarBz2.repodata_key()
    } else {
        Format::Conda.repodata_key()
    }
}

fn describe(f: &Finding) -> String {
    if f.file.is_empty() {
        f.what.clone()
    } else {
        format!("{}: {}", f.file, f.what)
    }
}

/// Publishes `files` to `dest`; `force` replaces a different package
/// published under the same name.
pub fn publish(
    files: &[PathBuf],
    dest: &Dest,
    force: bool,
) -> Result<Vec<Published>, PublishError> {
    // Every package is checked before any is published.
    let checked: Vec<Checked> = files.iter().map(|f| check(f)).collect::<Result<_, _>>()?;
    match dest {
        Dest::Dir(dir) => publish_to_dir(checked, dir, force),
        Dest::Quetz(server) => quetz::publish(checked, server, force),
    }
}

fn publish_to_dir(
    checked: Vec<Checked>,
    dir: &Path,
    force: bool,
) -> Result<Vec<Published>, PublishError> {
    let subdirs: Vec<String> = checked.iter().map(|c| c.subdir.clone()).collect();
    let subdir_refs: Vec<&str> = subdirs.iter().map(String::as_str).collect();
    let ch = channel::open(dir, &subdir_refs)?;
    // Staged beside the channel's subdirs (same file system), removed
    // whatever happens unless moved in.
    let mut staged = Vec::new();
    let mut entries = Vec::new();
    for c in &checked {
        let tmp = ch.dir().join(format!(
            "{}{}-{}",
            crate::export::channel::STAGED_PREFIX,
            std::process::id(),
            c.file_name
        ));
        staged.push(Staged(tmp.clone()));
        std::fs::copy(&c.file, &tmp).map_err(crate::export::write_err(&tmp))?;
        entries.push(Entry {
            file: tmp,
            file_name: c.file_name.clone(),
            subdir: c.subdir.clone(),
            key: c.key,
            record: c.record.clone(),
        });
    }
    let mut done = Vec::new();
    let mut conflict = None;
    let result = ch.add_with(entries, &subdir_refs, &mut |e, listed| {
        let Some(listed) = listed else {
            done.push(Done::Added);
            return Ok(true);
        };
        let published = listed["sha256"].as_str().unwrap_or_default().to_string();
        let new = e.record["sha256"].as_str().unwrap_or_default().to_string();
        if published == new {
            done.push(Done::AlreadyThere);
            return Ok(false);
        }
        if force {
            done.push(Done::Replaced);
            return Ok(true);
        }
        conflict = Some((e.file_name.clone(), e.subdir.clone(), published, new));
        Err(ExportError::Channel {
            path: dir.to_path_buf(),
            reason: "conflict".into(),
        })
    });
    if let Some((file_name, subdir, published, new)) = conflict {
        let ours = checked
            .iter()
            .find(|c| c.file_name == file_name)
            .and_then(|c| c.export_drv.clone());
        let theirs = check(&dir.join(&subdir).join(&file_name))
            .ok()
            .and_then(|c| c.export_drv);
        let why = conflict_reason(ours.as_deref(), theirs.as_deref());
        return Err(PublishError::Conflict {
            file_name,
            channel: dir.display().to_string(),
            published,
            new,
            why,
        });
    }
    result?;
    let mut out = Vec::new();
    for (c, d) in checked.into_iter().zip(done) {
        out.push(Published {
            path: dir.join(&c.subdir).join(&c.file_name),
            file: c.file,
            subdir: c.subdir,
            sha256: c.sha256,
            done: d,
            listed: true,
        });
    }
    Ok(out)
}

/// Why two packages share a name, from the export derivations they record.
pub(crate) fn conflict_reason(ours: Option<&str>, theirs: Option<&str>) -> String {
    match (ours, theirs) {
        (Some(a), Some(b)) if a == b => format!(
            "both record the same inputs (export derivation {a}), so the build is not \
             reproducible; `cbuild check --conda` says what differs"
        ),
        (Some(_), Some(_)) => {
            "they record different inputs under one name: bump the build number or the version"
                .into()
        }
        _ => "one of them records no cbuild inputs (info/cbuild/)".into(),
    }
}

/// A staged file, removed when dropped if it is still there.
struct Staged(PathBuf);

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `url` as it may be shown: without user information or query, either of
/// which may hold a credential (a signed URL's signature, a token).
pub(crate) fn shown_url(url: &str) -> String {
    let url: String = url
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit('@').next().unwrap_or(authority);
            format!("{scheme}://{host}{path}")
        }
        None => url,
    }
}

#[cfg(test)]
mod url_tests {
    #[test]
    fn shown_urls_lose_credentials() {
        assert_eq!(
            super::shown_url("https://u:secret@evil.example:8443/up/x.conda?sig=abc#f"),
            "https://evil.example:8443/up/x.conda"
        );
        assert_eq!(super::shown_url("/relative?token=1"), "/relative");
    }
}
