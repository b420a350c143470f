//! Channels on disk: `<channel>/<subdir>/` folders of packages, each with a
//! `repodata.json` that lists them. Adding packages takes the channel's lock
//! (`<channel>/.cbuild-channel.lock`, `flock`) for as long as it writes, not
//! while packages are built, checks every repodata file it will touch before
//! changing anything, moves the packages in, then replaces each
//! `repodata.json` atomically (a package moved in but not listed, should
//! that fail, is invisible to clients and replaced by the next export).
//! `noarch/` and the packages' subdirs always have one. A
//! `repodata.json.zst` is rewritten with it; sharded repodata and
//! `current_repodata.json`, which cbuild does not write, are removed rather
//! than left stale.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::package::json_bytes;
use super::{ExportError, write_err};

/// A package to add: its file (anywhere on the same file system, moved in),
/// subdir, repodata key (`packages` or `packages.conda`) and record.
pub struct Entry {
    /// The package file to move in.
    pub file: PathBuf,
    /// Its file name in the channel.
    pub file_name: String,
    /// Its subdir.
    pub subdir: String,
    /// `packages.conda` or `packages`.
    pub key: &'static str,
    /// Its repodata record.
    pub record: Value,
}

/// The channel directory, created if missing; an error naming it when it is
/// a file or cannot be written, or when the repodata of `subdirs` (and
/// `noarch`) is not valid: all checked before anything is built.
pub fn open(channel: &Path, subdirs: &[&str]) -> Result<Channel, ExportError> {
    known_subdirs(channel, subdirs.iter().copied())?;
    match std::fs::metadata(channel) {
        Ok(m) if !m.is_dir() => {
            return Err(ExportError::Channel {
                path: channel.into(),
                reason: "is not a directory, so it cannot be a channel".into(),
            });
        }
        Ok(_) => {}
        Err(_) => std::fs::create_dir_all(channel).map_err(write_err(channel))?,
    }
    let c = Channel {
        dir: channel.to_path_buf(),
    };
    c.lock_file()?;
    for s in subdirs.iter().chain(&["noarch"]) {
        c.read_repodata(s)?;
    }
    Ok(c)
}

/// Whether to add an entry, given the record listed under its file name.
pub type Decide<'a> = dyn FnMut(&Entry, Option<&Value>) -> Result<bool, ExportError> + 'a;

/// A channel directory.
pub struct Channel {
    dir: PathBuf,
}

impl Channel {
    /// The channel directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock_file(&self) -> Result<std::fs::File, ExportError> {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(".cbuild-channel.lock"))
            .map_err(|e| ExportError::Channel {
                path: self.dir.clone(),
                reason: format!("cannot be written ({e})"),
            })
    }

    /// Adds `entries` under the channel's lock; `noarch/` and `subdirs`
    /// get a repodata.json even when nothing is added to them. Every
    /// repodata file is read and the new ones made before anything moves;
    /// then the packages are moved in and the repodata files replaced.
    pub fn add(&self, entries: Vec<Entry>, subdirs: &[&str]) -> Result<(), ExportError> {
        self.add_with(entries, subdirs, &mut |_, _| Ok(true))
            .map(|_| ())
    }

    /// [`Channel::add`], asking `decide(entry, record already listed under
    /// its file name)` under the lock whether to add each entry; returns,
    /// per entry, whether it was added (the caller removes the file of one
    /// that was not). An error from `decide` changes nothing.
    pub fn add_with(
        &self,
        entries: Vec<Entry>,
        subdirs: &[&str],
        decide: &mut Decide<'_>,
    ) -> Result<Vec<bool>, ExportError> {
        // Held until this returns: writers of one channel take turns.
        let _lock = nix::fcntl::Flock::lock(self.lock_file()?, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| ExportError::Channel {
                path: self.dir.join(".cbuild-channel.lock"),
                reason: format!("cannot be locked ({e})"),
            })?;
        remove_stale_staged(&self.dir);
        known_subdirs(
            &self.dir,
            subdirs
                .iter()
                .copied()
                .chain(entries.iter().map(|e| e.subdir.as_str())),
        )?;
        let mut touched: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        touched.entry("noarch".into()).or_default();
        for s in subdirs {
            touched.entry((*s).to_string()).or_default();
        }
        // Decided against what is listed now, under the lock.
        let mut added = Vec::with_capacity(entries.len());
        let mut listed: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        for e in entries {
            if !listed.contains_key(&e.subdir) {
                listed.insert(e.subdir.clone(), self.read_repodata(&e.subdir)?);
            }
            let existing = listed
                .get(&e.subdir)
                .and_then(|r| r.get(e.key))
                .and_then(|m| m.get(&e.file_name));
            let yes = decide(&e, existing)?;
            added.push(yes);
            if yes {
                touched.entry(e.subdir.clone()).or_default().push(e);
            }
        }
        let mut plans = Vec::new();
        for (subdir, entries) in touched {
            let mut repodata = match listed.remove(&subdir) {
                Some(r) => r,
                None => self.read_repodata(&subdir)?,
            };
            let dir = self.dir.join(&subdir);
            let changed = !entries.is_empty() || !dir.join("repodata.json").exists();
            let mut moves = Vec::new();
            for e in entries {
                let map = repodata
                    .entry(e.key)
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(m) = map {
                    m.insert(e.file_name.clone(), e.record);
                }
                moves.push((e.file, dir.join(&e.file_name)));
            }
            plans.push((subdir, dir, repodata, changed, moves));
        }
        for (subdir, dir, repodata, changed, moves) in plans {
            std::fs::create_dir_all(&dir).map_err(write_err(&dir))?;
            for (from, to) in moves {
                std::fs::rename(&from, &to).map_err(write_err(&to))?;
            }
            if changed {
                self.write_repodata(&subdir, &repodata)?;
            }
        }
        Ok(added)
    }

    fn read_repodata(&self, subdir: &str) -> Result<Map<String, Value>, ExportError> {
        let path = self.dir.join(subdir).join("repodata.json");
        let mut m = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(m)) => m,
                Ok(_) => {
                    return Err(ExportError::Channel {
                        path,
                        reason: "is not a repodata file (not a JSON object); fix or remove it"
                            .into(),
                    });
                }
                Err(e) => {
                    return Err(ExportError::Channel {
                        path,
                        reason: format!("is not valid JSON ({e}); fix or remove it"),
                    });
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
            Err(e) => return Err(super::read_err(path)(e)),
        };
        for key in ["packages", "packages.conda"] {
            match m.get(key) {
                None => {
                    m.insert(key.into(), json!({}));
                }
                Some(Value::Object(records)) => {
                    if let Some((name, _)) = records.iter().find(|(_, r)| !r.is_object()) {
                        return Err(ExportError::Channel {
                            path,
                            reason: format!(
                                "the record of `{name}` in `{key}` is not an object; fix or \
                                 remove the file"
                            ),
                        });
                    }
                }
                Some(_) => {
                    return Err(ExportError::Channel {
                        path,
                        reason: format!("`{key}` is not an object; fix or remove the file"),
                    });
                }
            }
        }
        m.entry("info").or_insert_with(|| json!({"subdir": subdir}));
        m.entry("repodata_version").or_insert(json!(1));
        Ok(m)
    }

    fn write_repodata(&self, subdir: &str, m: &Map<String, Value>) -> Result<(), ExportError> {
        let dir = self.dir.join(subdir);
        let bytes = json_bytes(&Value::Object(m.clone()));
        atomic_write(&dir.join("repodata.json"), &bytes)?;
        let zst = dir.join("repodata.json.zst");
        if zst.exists() {
            let written = zstd::bulk::compress(&bytes, 19)
                .map_err(write_err(&zst))
                .and_then(|c| atomic_write(&zst, &c));
            if let Err(e) = written {
                // Clients read it first: better none than a stale one.
                let _ = std::fs::remove_file(&zst);
                return Err(e);
            }
        }
        for stale in ["repodata_shards.msgpack.zst", "current_repodata.json"] {
            let p = dir.join(stale);
            if p.exists() {
                std::fs::remove_file(&p).map_err(write_err(&p))?;
            }
        }
        let shards = dir.join("shards");
        if shards.is_dir() {
            std::fs::remove_dir_all(&shards).map_err(write_err(&shards))?;
        }
        Ok(())
    }
}

/// The prefix of a package file staged in the channel's folder by the
/// process `<pid>` before it is moved in: `.cbuild-staged-<pid>-<file>`.
pub const STAGED_PREFIX: &str = ".cbuild-staged-";

/// Removes staged files whose process is gone (killed between staging and
/// moving in): under the channel's lock, which every writer holds to move.
/// A pid in use again by another process keeps its file until that one
/// ends; nothing that is not named so is touched.
fn remove_stale_staged(channel: &Path) {
    let Ok(entries) = std::fs::read_dir(channel) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(STAGED_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest
            .split_once('-')
            .and_then(|(pid, _)| pid.parse::<i32>().ok())
        else {
            continue;
        };
        if crate::util::process::gone(pid) && e.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Refuses any subdir that is not a platform conda knows: a subdir names a
/// folder of the channel (`../x` or an absolute path would be outside it).
fn known_subdirs<'a>(
    channel: &Path,
    mut subdirs: impl Iterator<Item = &'a str>,
) -> Result<(), ExportError> {
    match subdirs.find(|s| s.parse::<rattler_conda_types::Subdir>().is_err()) {
        Some(bad) => Err(ExportError::Channel {
            path: channel.to_path_buf(),
            reason: format!(
                "cannot take a package for subdir {bad:?}, which is not a platform conda knows"
            ),
        }),
        None => Ok(()),
    }
}

/// Writes `path` through a temporary file beside it and a rename.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    super::write_atomically(path, |f| f.write_all(bytes).map_err(write_err(path)))
}
