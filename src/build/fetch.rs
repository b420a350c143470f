//! Fixed-output derivations: `fetch` downloads (`file://`, `http://`,
//! `https://`), checks the declared hash of the downloaded bytes and, with
//! `unpack`, unpacks a tar, tar.gz, tar.zst or zip archive, stripping a
//! single top folder. Derivations with `fixed_hash` and a builder of their
//! own run in the sandbox with the network; their output must match.
//!
//! Downloads run in cbuild itself, on a worker thread: no builder code runs,
//! and what arrives is checked against the hash before anything uses it.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::Digest;

use crate::build::job::{self, Context, Job, ReadyOutput};
use crate::build::realise::BuildError;
use crate::derivation::{FixedOutput, HashAlgo};
use crate::store::StoreError;

/// The builder of derivations made by `fetch`.
pub const BUILDER: &str = "builtin:fetch";

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The download itself failed.
    #[error("cannot download {url}: {reason}")]
    Download {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The bytes do not have the declared hash.
    #[error(
        "hash mismatch for {url}\n  declared: {algo}:{expected}\n  actual:   {algo}:{actual}\n\
         if the new content is right, put the actual hash in the recipe"
    )]
    Mismatch {
        /// The URL (or the `.drv` for a `fixed_hash` derivation).
        url: String,
        /// The algorithm.
        algo: &'static str,
        /// The declared digest, hex.
        expected: String,
        /// The digest of what arrived, hex.
        actual: String,
    },
    /// A `sha256:` fixed hash for an output that is a directory.
    #[error(
        "{drv}: a `sha256:` fixed_hash needs a single-file output; use `blake3:` (the tree \
         digest) for a directory"
    )]
    TreeWithSha256 {
        /// The `.drv` path.
        drv: String,
    },
    /// The archive could not be unpacked.
    #[error("cannot unpack {url}: {reason}")]
    Unpack {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
}

/// Downloads, checks and (with `unpack`) unpacks a `fetch` derivation's
/// source into a ready output.
pub fn fetch(cx: &Context<'_>, job: &Job) -> Result<Vec<ReadyOutput>, BuildError> {
    let Some(fixed) = job.drv.fixed.as_ref() else {
        return Err(FetchError::Download {
            url: String::new(),
            reason: "not a fixed-output derivation".into(),
        }
        .into());
    };
    let url = fixed.url.clone();
    let download = job.work.join("download");
    let actual = download_to(&url, &download, fixed.algo)?;
    check(fixed, &actual, &url)?;
    let scratch = job::scratch_outputs(&job.drv_path, &job.drv)
        .into_iter()
        .next()
        .ok_or_else(|| FetchError::Download {
            url: url.clone(),
            reason: "the derivation has no output".into(),
        })?;
    let out = job.work.join(format!("{}-{}", scratch.part, scratch.name));
    if fixed.unpack {
        unpack(&download, &out, &url)?;
    } else {
        std::fs::rename(&download, &out).map_err(|source| StoreError::Write {
            path: out.clone(),
            source,
        })?;
    }
    job::finish_outputs(cx, job, &[(scratch, out)])
}

/// The HTTP client of every download and upload: the machine's certificate
/// authorities, as curl and pip use them (a TLS-inspecting proxy's CA is
/// installed there); a stalled transfer fails, a long one does not.
pub fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::PlatformVerifier)
                .build(),
        )
        .timeout_connect(Some(std::time::Duration::from_secs(30)))
        .timeout_recv_response(Some(std::time::Duration::from_secs(120)))
        .timeout_per_read(Some(std::time::Duration::from_secs(120)))
        .build()
        .into()
}

/// Streams `url` into `dest`, hashing as it goes; returns the digest.
fn download_to(url: &str, dest: &Path, algo: HashAlgo) -> Result<Vec<u8>, BuildError> {
    let fail = |reason: String| FetchError::Download {
        url: url.to_string(),
        reason,
    };
    let mut reader: Box<dyn Read> = if let Some(path) = url.strip_prefix("file://") {
        let path = percent_decode(path);
        Box::new(File::open(&path).map_err(|e| fail(format!("{path}: {e}")))?)
    } else {
        let agent = http_agent();
        let resp = agent.get(url).call().map_err(|e| fail(e.to_string()))?;
        Box::new(resp.into_body().into_reader())
    };
    let mut file = File::create(dest).map_err(|source| StoreError::Write {
        path: dest.to_path_buf(),
        source,
    })?;
    let mut sha = sha2::Sha256::new();
    let mut b3 = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(fail(e.to_string()).into()),
        };
        match algo {
            HashAlgo::Sha256 => sha.update(&buf[..n]),
            HashAlgo::Blake3 => {
                b3.update(&buf[..n]);
            }
        }
        file.write_all(&buf[..n])
            .map_err(|source| StoreError::Write {
                path: dest.to_path_buf(),
                source,
            })?;
    }
    Ok(match algo {
        HashAlgo::Sha256 => sha.finalize().to_vec(),
        HashAlgo::Blake3 => b3.finalize().as_bytes().to_vec(),
    })
}

/// Fails unless `actual` is the declared digest.
fn check(fixed: &FixedOutput, actual: &[u8], what: &str) -> Result<(), FetchError> {
    if actual == fixed.digest.as_slice() {
        return Ok(());
    }
    Err(FetchError::Mismatch {
        url: what.to_string(),
        algo: fixed.algo.as_str(),
        expected: hex(&fixed.digest),
        actual: hex(actual),
    })
}

/// Checks the output of a `fixed_hash` derivation built by its own builder:
/// a single file is hashed as bytes; a tree only with `blake3:`, as its
/// tree digest (`store-format.md`).
pub fn check_output(
    fixed: &FixedOutput,
    out: &Path,
    node: &crate::store::tree_hash::Node,
    drv: &str,
) -> Result<(), BuildError> {
    let actual = match node {
        // BLAKE3 of the bytes is what the tree already holds.
        crate::store::tree_hash::Node::File { digest, .. } if fixed.algo == HashAlgo::Blake3 => {
            digest.0.to_vec()
        }
        crate::store::tree_hash::Node::File { .. } => {
            let read_err = |source| StoreError::Read {
                path: out.to_path_buf(),
                source,
            };
            let mut f = File::open(out).map_err(read_err)?;
            let mut sha = sha2::Sha256::new();
            std::io::copy(&mut f, &mut sha).map_err(read_err)?;
            sha.finalize().to_vec()
        }
        _ if fixed.algo == HashAlgo::Blake3 => node.tree_digest().0.to_vec(),
        _ => {
            return Err(FetchError::TreeWithSha256 {
                drv: drv.to_string(),
            }
            .into());
        }
    };
    check(fixed, &actual, drv).map_err(Into::into)
}

/// Unpacks the archive at `archive` into `out` (created), recognised by its
/// first bytes; a single top folder is stripped.
fn unpack(archive: &Path, out: &Path, url: &str) -> Result<(), BuildError> {
    let fail = |reason: String| FetchError::Unpack {
        url: url.to_string(),
        reason,
    };
    let mut magic = [0u8; 512];
    let n = File::open(archive)
        .and_then(|mut f| read_up_to(&mut f, &mut magic))
        .map_err(|e| fail(e.to_string()))?;
    let magic = &magic[..n];
    let staging = out.with_extension("unpack");
    std::fs::create_dir_all(&staging).map_err(|e| fail(e.to_string()))?;
    let open = || File::open(archive).map_err(|e| fail(e.to_string()));
    if magic.starts_with(b"PK\x03\x04") || magic.starts_with(b"PK\x05\x06") {
        let mut z = zip::ZipArchive::new(open()?).map_err(|e| fail(e.to_string()))?;
        z.extract(&staging).map_err(|e| fail(e.to_string()))?;
    } else {
        let reader: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::read::MultiGzDecoder::new(open()?))
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Box::new(zstd::stream::read::Decoder::new(open()?).map_err(|e| fail(e.to_string()))?)
        } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            // Most upstream tarballs (CPython, xz-compressed GNU releases).
            Box::new(liblzma::read::XzDecoder::new_multi_decoder(open()?))
        } else if magic.starts_with(b"BZh") {
            Box::new(bzip2::read::MultiBzDecoder::new(open()?))
        } else if magic.len() > 262 && &magic[257..262] == b"ustar" {
            Box::new(open()?)
        } else {
            return Err(fail(
                "not a tar (plain, .gz, .xz, .bz2 or .zst) or zip archive (judged by its first \
                 bytes)"
                    .into(),
            )
            .into());
        };
        let mut t = tar::Archive::new(reader);
        t.set_preserve_permissions(true);
        t.set_preserve_mtime(false);
        t.set_unpack_xattrs(false);
        t.unpack(&staging).map_err(|e| fail(e.to_string()))?;
    }
    // Archives may hold read-only folders: moving the top one, and later
    // normalising, needs them writable.
    crate::store::make_writable_recursive(&staging);
    // A single top folder is stripped.
    let entries: Vec<PathBuf> = std::fs::read_dir(&staging)
        .map_err(|e| fail(e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    let top = match entries.as_slice() {
        [one] if std::fs::symlink_metadata(one).is_ok_and(|m| m.is_dir()) => one.clone(),
        _ => staging.clone(),
    };
    std::fs::rename(&top, out).map_err(|e| fail(e.to_string()))?;
    let _ = std::fs::remove_dir(&staging);
    let _ = std::fs::remove_file(archive);
    Ok(())
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `%XX` escapes in a `file://` URL's path.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut k = 0;
    while k < b.len() {
        if b[k] == b'%'
            && k + 2 < b.len()
            && let (Some(hi), Some(lo)) = (digit(b[k + 1]), digit(b[k + 2]))
        {
            out.push(hi * 16 + lo);
            k += 3;
        } else {
            out.push(b[k]);
            k += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
