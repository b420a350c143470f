//! Uploads to a Quetz server (the mamba-org channel server) through its
//! API: `POST /api/channels/{channel}/upload/{file}?sha256=…` with the
//! `X-API-Key` header, the package streamed from disk. What the channel
//! already lists is read first from `/get/{channel}/{subdir}/repodata.json`,
//! so that the same file again uploads nothing and other bytes under a
//! published name are refused before anything is sent. The key never
//! appears in output, logs or errors.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{Checked, Done, PublishError, Published, conflict_reason};

/// A Quetz channel: `quetz+http(s)://HOST[:PORT]/CHANNEL`.
#[derive(Clone, Debug)]
pub struct Server {
    /// `http(s)://HOST[:PORT]`.
    pub base: String,
    /// The channel's name.
    pub channel: String,
}

impl Server {
    /// Parses the part after `quetz+`.
    pub fn parse(url: &str, given: &str) -> Result<Server, PublishError> {
        let bad = |reason: &str| PublishError::Dest {
            dest: given.into(),
            reason: reason.into(),
        };
        let (scheme, rest) = url
            .split_once("://")
            .filter(|(s, _)| *s == "http" || *s == "https")
            .ok_or_else(|| {
                bad("a Quetz channel is quetz+http://HOST/CHANNEL or quetz+https://…")
            })?;
        let (host, channel) = rest
            .trim_end_matches('/')
            .split_once('/')
            .ok_or_else(|| bad("the URL names no channel (quetz+http://HOST/CHANNEL)"))?;
        if host.is_empty() || channel.is_empty() || channel.contains('/') {
            return Err(bad("the URL must be quetz+http(s)://HOST[:PORT]/CHANNEL"));
        }
        Ok(Server {
            base: format!("{scheme}://{host}"),
            channel: channel.to_string(),
        })
    }

    fn shown(&self) -> String {
        format!("{}/{}", self.base, self.channel)
    }
}

/// The API key: `CBUILD_QUETZ_API_KEY`, else the entry for the server in
/// `$XDG_CONFIG_HOME/cbuild/quetz-keys.json` (`{"http://host:port": "KEY"}`),
/// a file cbuild refuses to read when others than its owner can read it.
pub fn api_key(server: &Server) -> Result<String, PublishError> {
    if let Ok(k) = std::env::var("CBUILD_QUETZ_API_KEY")
        && !k.trim().is_empty()
    {
        return Ok(k.trim().to_string());
    }
    let file = credentials_file();
    let missing = || PublishError::Auth {
        server: server.shown(),
        reason: format!(
            "no API key: set CBUILD_QUETZ_API_KEY, or put {{\"{}\": \"KEY\"}} in {} (mode 0600)",
            server.base,
            file.display()
        ),
    };
    let Ok(meta) = std::fs::metadata(&file) else {
        return Err(missing());
    };
    use std::os::unix::fs::PermissionsExt;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(PublishError::Auth {
            server: server.shown(),
            reason: format!(
                "{} can be read by others than its owner: cbuild does not read keys from it \
                 (chmod 600 it)",
                file.display()
            ),
        });
    }
    let v: Value = std::fs::read(&file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| PublishError::Auth {
            server: server.shown(),
            reason: format!("{} is not a JSON object of server to key", file.display()),
        })?;
    v[&server.base]
        .as_str()
        .map(str::to_string)
        .ok_or_else(missing)
}

fn credentials_file() -> PathBuf {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|x| !x.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/".into())).join(".config")
        });
    config.join("cbuild").join("quetz-keys.json")
}

/// Publishes `checked` to `server`.
pub(super) fn publish(
    checked: Vec<Checked>,
    server: &Server,
    force: bool,
) -> Result<Vec<Published>, PublishError> {
    let key = api_key(server)?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(std::time::Duration::from_secs(30)))
        .timeout_per_read(Some(std::time::Duration::from_secs(300)))
        .build()
        .into();
    let mut out = Vec::new();
    let mut listings: std::collections::HashMap<String, Value> = Default::default();
    for c in checked {
        let unreachable = |e: ureq::Error| PublishError::Server {
            server: server.shown(),
            file: c.file_name.clone(),
            reason: format!("cannot be reached ({e}); nothing was published, a retry is safe"),
        };
        if !listings.contains_key(&c.subdir) {
            let url = format!(
                "{}/get/{}/{}/repodata.json",
                server.base, server.channel, c.subdir
            );
            let resp = agent.get(&url).call().map_err(unreachable)?;
            let listing = match resp.status().as_u16() {
                200 => {
                    // Large channels' repodata runs to hundreds of MB.
                    let text = resp
                        .into_body()
                        .with_config()
                        .limit(1 << 30)
                        .read_to_string()
                        .map_err(|e| PublishError::Server {
                            server: server.shown(),
                            file: c.file_name.clone(),
                            reason: format!("its repodata cannot be read ({e})"),
                        })?;
                    serde_json::from_str::<Value>(&text).unwrap_or(Value::Null)
                }
                // A subdir nothing was uploaded to yet.
                404 => Value::Null,
                s => {
                    return Err(status_error(
                        server,
                        &c.file_name,
                        s,
                        "reading the channel's repodata",
                    ));
                }
            };
            listings.insert(c.subdir.clone(), listing);
        }
        let listed = listings[&c.subdir][c.key][&c.file_name]["sha256"]
            .as_str()
            .map(str::to_string);
        let done = match listed {
            Some(sha) if sha == c.sha256 => {
                out.push(published(&c, server, Done::AlreadyThere));
                continue;
            }
            Some(sha) if !force => {
                let theirs = download_export_drv(&agent, server, &c);
                return Err(PublishError::Conflict {
                    file_name: c.file_name.clone(),
                    channel: server.shown(),
                    published: sha,
                    new: c.sha256.clone(),
                    why: conflict_reason(c.export_drv.as_deref(), theirs.as_deref()),
                });
            }
            Some(_) => Done::Replaced,
            None => Done::Added,
        };
        upload(&agent, server, &key, &c, force)?;
        out.push(published(&c, server, done));
    }
    Ok(out)
}

fn published(c: &Checked, server: &Server, done: Done) -> Published {
    Published {
        file: c.file.clone(),
        path: PathBuf::from(format!(
            "{}/get/{}/{}/{}",
            server.base, server.channel, c.subdir, c.file_name
        )),
        subdir: c.subdir.clone(),
        sha256: c.sha256.clone(),
        done,
    }
}

/// Streams the package to the upload endpoint.
fn upload(
    agent: &ureq::Agent,
    server: &Server,
    key: &str,
    c: &Checked,
    force: bool,
) -> Result<(), PublishError> {
    let url = format!(
        "{}/api/channels/{}/upload/{}?sha256={}&force={}",
        server.base, server.channel, c.file_name, c.sha256, force
    );
    let mut file = std::fs::File::open(&c.file).map_err(|source| {
        PublishError::Package(crate::audit::package::PackageError::Read {
            path: c.file.display().to_string(),
            source,
        })
    })?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let resp = agent
        .post(&url)
        .header("X-API-Key", key)
        .header("Content-Length", size.to_string())
        .send(ureq::SendBody::from_reader(&mut file))
        .map_err(|e| PublishError::Server {
            server: server.shown(),
            file: c.file_name.clone(),
            reason: format!(
                "the upload failed ({e}); a retry is safe (the same file again is accepted or \
                 recognised)"
            ),
        })?;
    match resp.status().as_u16() {
        200 | 201 => Ok(()),
        s => Err(status_error(server, &c.file_name, s, "uploading")),
    }
}

fn status_error(server: &Server, file: &str, status: u16, doing: &str) -> PublishError {
    let reason = match status {
        401 => "the API key was refused (401): check CBUILD_QUETZ_API_KEY".to_string(),
        403 => "the API key may not upload to this channel (403)".to_string(),
        404 => "no such channel (404)".to_string(),
        409 => "the server already has a package of this name (409)".to_string(),
        s if s >= 500 => format!("the server failed ({s}); a retry is safe"),
        s => format!("unexpected status {s}"),
    };
    let auth = matches!(status, 401 | 403);
    if auth {
        PublishError::Auth {
            server: server.shown(),
            reason: format!("{reason} while {doing} {file}"),
        }
    } else {
        PublishError::Server {
            server: server.shown(),
            file: file.to_string(),
            reason: format!("{reason} while {doing}"),
        }
    }
}

/// The export derivation the published package records, if it can be
/// downloaded and read.
fn download_export_drv(agent: &ureq::Agent, server: &Server, c: &Checked) -> Option<String> {
    let url = format!(
        "{}/get/{}/{}/{}",
        server.base, server.channel, c.subdir, c.file_name
    );
    let resp = agent.get(&url).call().ok()?;
    if resp.status().as_u16() != 200 {
        return None;
    }
    let dir = tempfile::tempdir().ok()?;
    let path: &Path = &dir.path().join(&c.file_name);
    let mut f = std::fs::File::create(path).ok()?;
    std::io::copy(&mut resp.into_body().into_reader(), &mut f).ok()?;
    super::check(path).ok()?.export_drv
}
