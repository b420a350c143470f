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
    let key = find_api_key(server)?;
    // A key pasted with the lines around it cannot go into a header; say
    // so rather than let the HTTP layer fail (and never show the key).
    if key.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(key)
    } else {
        Err(PublishError::Auth {
            server: server.shown(),
            reason: "the API key holds spaces, line breaks or other characters a key does not \
                     have: check what CBUILD_QUETZ_API_KEY or the keys file was given"
                .into(),
        })
    }
}

fn find_api_key(server: &Server) -> Result<String, PublishError> {
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
        // A whole request, not each read: a server that sends a byte now
        // and then holds nobody forever.
        .timeout_global(Some(network_deadline(0)))
        // Reads carry no credentials and may follow a package store's
        // redirect; an upload never does (see `upload`).
        .max_redirects(5)
        .build()
        .into();
    let mut out = Vec::new();
    let mut listings: std::collections::HashMap<String, Listing> = Default::default();
    let wanted: std::collections::HashSet<String> =
        checked.iter().map(|c| c.file_name.clone()).collect();
    for c in checked {
        if !listings.contains_key(&c.subdir) {
            let listing = repodata(&agent, server, &c.subdir, &c.file_name, &wanted)?;
            listings.insert(c.subdir.clone(), listing);
        }
        let listed = listings[&c.subdir].sha256(c.key, &c.file_name);
        let done = match listed {
            Some(sha) if sha == c.sha256 => {
                out.push(published(&c, server, Done::AlreadyThere));
                continue;
            }
            Some(sha) if !force => return Err(conflict(&agent, server, &c, sha)),
            Some(_) => Done::Replaced,
            None => Done::Added,
        };
        match upload(&agent, server, &key, &c, force)? {
            Uploaded::Stored => out.push(published(&c, server, done)),
            Uploaded::Duplicate => {
                // Another publisher got there between our read of the index
                // and the upload, or the server has not indexed an earlier
                // upload yet (Quetz indexes in the background): the bytes
                // the server holds under the name decide.
                let theirs = download(&agent, server, &c).and_then(|t| {
                    if t.sha256 == c.sha256 {
                        return Some(t);
                    }
                    // Quetz writes a package in place: a download while the
                    // winner's upload is still being written reads part of
                    // it. Its bytes are complete a moment later.
                    std::thread::sleep(std::time::Duration::from_millis(500));
                    download(&agent, server, &c)
                });
                match theirs {
                    Some(theirs) if theirs.sha256 == c.sha256 => {
                        out.push(published(&c, server, Done::AlreadyThere))
                    }
                    Some(theirs) => return Err(conflict_with(server, &c, theirs)),
                    None => {
                        return Err(PublishError::Server {
                            server: server.shown(),
                            file: c.file_name.clone(),
                            reason: "the server has a record of this name (409) but does not \
                                     serve its file (an earlier upload failed on the server); \
                                     nothing was published: --force uploads it again"
                                .into(),
                        });
                    }
                }
            }
        }
    }
    await_index(&agent, server, &mut out);
    Ok(out)
}

/// Waits until the server's index lists what was uploaded, so that a
/// client solving right after `publish` returns finds it: Quetz indexes in
/// the background after it answers an upload. Bounded by
/// `CBUILD_QUETZ_INDEX_WAIT` seconds (30 by default); what is still not
/// listed then is marked so.
fn await_index(agent: &ureq::Agent, server: &Server, out: &mut [Published]) {
    let wait = std::env::var("CBUILD_QUETZ_INDEX_WAIT")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(30);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(wait);
    let uploaded = |p: &Published| matches!(p.done, Done::Added | Done::Replaced);
    for p in out.iter_mut().filter(|p| uploaded(p)) {
        p.listed = false;
    }
    loop {
        let mut subdirs: Vec<String> = out
            .iter()
            .filter(|p| !p.listed)
            .map(|p| p.subdir.clone())
            .collect();
        subdirs.sort();
        subdirs.dedup();
        if subdirs.is_empty() {
            return;
        }
        for subdir in subdirs {
            // Not readable yet: asked again until the wait runs out.
            let wanted = out
                .iter()
                .filter(|p| p.subdir == subdir)
                .filter_map(|p| p.path.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .collect();
            let Ok(listing) = repodata(agent, server, &subdir, "", &wanted) else {
                continue;
            };
            for p in out.iter_mut().filter(|p| !p.listed && p.subdir == subdir) {
                let name = p.path.file_name().unwrap_or_default().to_string_lossy();
                p.listed =
                    listing.sha256(super::repodata_key(&name), &name) == Some(p.sha256.clone());
            }
        }
        if std::time::Instant::now() >= until {
            return;
        }
        if out.iter().any(|p| !p.listed) {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// What a subdir's repodata lists for the files this publish is about:
/// file name to sha256, nothing else. A large channel's repodata runs to
/// hundreds of MB (as a JSON tree it took forty times that; as every name
/// and digest, 60 MB for 60,000 records, and more again when read a few
/// times in a row while waiting for the index), so records of other files
/// are skipped as they are read.
#[derive(Default)]
struct Listing {
    packages: std::collections::HashMap<String, Option<String>>,
    conda: std::collections::HashMap<String, Option<String>>,
}

#[derive(serde::Deserialize)]
struct Listed {
    #[serde(default)]
    sha256: Option<String>,
}

impl Listing {
    /// The sha256 listed for `file` under the repodata key `key`.
    fn sha256(&self, key: &str, file: &str) -> Option<String> {
        let table = if key == "packages" {
            &self.packages
        } else {
            &self.conda
        };
        table.get(file).cloned().flatten()
    }

    /// Reads the repodata in `reader`, keeping the records of `wanted`.
    fn read(
        reader: impl std::io::Read,
        wanted: &std::collections::HashSet<String>,
    ) -> serde_json::Result<Listing> {
        use serde::de::DeserializeSeed;
        let mut de = serde_json::Deserializer::from_reader(reader);
        let listing = Wanted(wanted).deserialize(&mut de)?;
        de.end()?;
        Ok(listing)
    }
}

/// Deserializes a [`Listing`] (the whole repodata, or one of its tables
/// when `table` is used) keeping only the records of the names it holds.
struct Wanted<'a>(&'a std::collections::HashSet<String>);

/// One table of a repodata (`packages` or `packages.conda`).
struct Table<'a>(&'a std::collections::HashSet<String>);

impl<'de> serde::de::DeserializeSeed<'de> for Wanted<'_> {
    type Value = Listing;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Listing, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Wanted<'_> {
    type Value = Listing;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a repodata object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Listing, A::Error> {
        let mut listing = Listing::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "packages" => listing.packages = map.next_value_seed(Table(self.0))?,
                "packages.conda" => listing.conda = map.next_value_seed(Table(self.0))?,
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(listing)
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Table<'_> {
    type Value = std::collections::HashMap<String, Option<String>>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Table<'_> {
    type Value = std::collections::HashMap<String, Option<String>>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object of package records")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut table = std::collections::HashMap::new();
        while let Some(name) = map.next_key::<String>()? {
            if self.0.contains(&name) {
                let listed: Listed = map.next_value()?;
                table.insert(name, listed.sha256);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(table)
    }
}

/// The longest one network operation may take: `CBUILD_NETWORK_TIMEOUT`
/// seconds (300 by default), plus a second per MiB sent (`bytes`).
fn network_deadline(bytes: u64) -> std::time::Duration {
    let base = std::env::var("CBUILD_NETWORK_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&s| s > 0)
        .unwrap_or(300);
    std::time::Duration::from_secs(base.saturating_add(bytes >> 20))
}

/// Other bytes listed under the name (`published`): what the server's copy
/// records says why, when it can be downloaded.
fn conflict(agent: &ureq::Agent, server: &Server, c: &Checked, published: String) -> PublishError {
    let export_drv = download(agent, server, c).and_then(|t| t.export_drv);
    conflict_with(
        server,
        c,
        Theirs {
            sha256: published,
            export_drv,
        },
    )
}

fn conflict_with(server: &Server, c: &Checked, theirs: Theirs) -> PublishError {
    PublishError::Conflict {
        file_name: c.file_name.clone(),
        channel: server.shown(),
        published: theirs.sha256,
        new: c.sha256.clone(),
        why: conflict_reason(c.export_drv.as_deref(), theirs.export_drv.as_deref()),
    }
}

/// The channel's repodata for `subdir` (`null` for a subdir nothing was
/// uploaded to yet); errors name `file`, the package it was read for.
fn repodata(
    agent: &ureq::Agent,
    server: &Server,
    subdir: &str,
    file: &str,
    wanted: &std::collections::HashSet<String>,
) -> Result<Listing, PublishError> {
    let url = format!(
        "{}/get/{}/{}/repodata.json",
        server.base, server.channel, subdir
    );
    let resp = agent.get(&url).call().map_err(|e| PublishError::Server {
        server: server.shown(),
        file: file.to_string(),
        reason: format!("cannot be reached ({e}); nothing was published, a retry is safe"),
    })?;
    match resp.status().as_u16() {
        200 => {
            // Large channels' repodata runs to hundreds of MB: read as it
            // comes, keeping only the names and digests.
            let body = resp.into_body();
            let reader = std::io::BufReader::new(body.into_with_config().limit(1 << 30).reader());
            match Listing::read(reader, wanted) {
                Ok(listing) => Ok(listing),
                Err(e) if e.is_io() => Err(PublishError::Server {
                    server: server.shown(),
                    file: file.to_string(),
                    reason: format!("its repodata cannot be read ({e})"),
                }),
                // Not repodata: as if nothing were listed.
                Err(_) => Ok(Listing::default()),
            }
        }
        404 => Ok(Listing::default()),
        s => Err(status_error(
            server,
            file,
            s,
            "reading the channel's repodata",
        )),
    }
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
        listed: true,
    }
}

/// What the upload endpoint made of a package.
enum Uploaded {
    Stored,
    /// 409: the server has a package of this name already.
    Duplicate,
}

/// Streams the package to the upload endpoint.
fn upload(
    agent: &ureq::Agent,
    server: &Server,
    key: &str,
    c: &Checked,
    force: bool,
) -> Result<Uploaded, PublishError> {
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
        .config()
        // The key goes to this address only: a redirect is answered, not
        // followed (followed, it became a GET carrying the key to wherever
        // it pointed, and a 200 there passed for an upload).
        .max_redirects(0)
        .max_redirects_will_error(false)
        .timeout_global(Some(network_deadline(size)))
        .build()
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
        200 | 201 => Ok(Uploaded::Stored),
        409 => Ok(Uploaded::Duplicate),
        s @ 300..=399 => Err(PublishError::Server {
            server: server.shown(),
            file: c.file_name.clone(),
            reason: format!(
                "the server answered the upload with a redirect ({s}{}); nothing was uploaded: \
                 cbuild never sends the API key on to another address, publish to the address \
                 the server means instead",
                resp.headers()
                    .get("location")
                    .and_then(|l| l.to_str().ok())
                    .map(|l| format!(" to {}", crate::publish::shown_url(l)))
                    .unwrap_or_default()
            ),
        }),
        s => Err(status_error(server, &c.file_name, s, "uploading")),
    }
}

fn status_error(server: &Server, file: &str, status: u16, doing: &str) -> PublishError {
    let reason = match status {
        401 => "the API key was refused (401): check CBUILD_QUETZ_API_KEY".to_string(),
        403 => "the API key may not upload to this channel (403)".to_string(),
        404 => "no such channel (404)".to_string(),
        406 => "the server received other bytes than were sent (406); a retry is safe".to_string(),
        409 => "the server already has a package of this name (409)".to_string(),
        s if s >= 500 => format!("the server failed ({s}); a retry is safe"),
        s => format!("unexpected status {s}"),
    };
    let auth = matches!(status, 401 | 403);
    if auth {
        PublishError::Auth {
            server: server.shown(),
            reason: format!("{doing} {file}: {reason}"),
        }
    } else {
        PublishError::Server {
            server: server.shown(),
            file: file.to_string(),
            reason: format!("{doing}: {reason}"),
        }
    }
}

/// The package the server holds under the name, if it can be downloaded
/// and read: its digest, and the export derivation it records.
fn download(agent: &ureq::Agent, server: &Server, c: &Checked) -> Option<Theirs> {
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
    // The server's copy is compared with ours: one much larger than ours is
    // not worth reading (nor is a body that never ends).
    let ours = std::fs::metadata(&c.file).map_or(0, |m| m.len());
    let limit = ours.saturating_mul(2).max(16 << 20);
    let body = resp.into_body().into_with_config().limit(limit).reader();
    std::io::copy(&mut { body }, &mut f).ok()?;
    let (sha256, _, _) = crate::export::run::digests_of(path).ok()?;
    // A package too broken to read still has a digest to name.
    let export_drv = super::check(path).ok().and_then(|c| c.export_drv);
    Some(Theirs { sha256, export_drv })
}

struct Theirs {
    sha256: String,
    export_drv: Option<String>,
}
