//! Fixed-output derivations for real: `fetch` from a server on loopback that
//! the test runs, archives unpacked, hashes checked, and builds with a
//! `fixed_hash` that reach the network.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use sha2::Digest;

use crate::support::Project;

/// A tiny HTTP server on 127.0.0.1: serves `files`, counts requests per
/// path. `GET /raw` (no HTTP version) gets the bytes of `raw` and nothing
/// else, for builders that speak TCP through bash.
struct Server {
    port: u16,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl Server {
    fn start(files: HashMap<String, Vec<u8>>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let h = hits.clone();
        let served = Arc::new(AtomicUsize::new(0));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                served.fetch_add(1, Ordering::Relaxed);
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let (_, path) = (parts.next(), parts.next().unwrap_or("/").to_string());
                let http = parts.next().is_some();
                // The rest of the request.
                if http {
                    loop {
                        let mut l = String::new();
                        if reader.read_line(&mut l).unwrap_or(0) == 0 || l == "\r\n" {
                            break;
                        }
                    }
                }
                *h.lock().unwrap().entry(path.clone()).or_default() += 1;
                let body = files.get(path.trim_start_matches('/')).cloned();
                let _ = match (http, body) {
                    (false, Some(b)) => conn.write_all(&b),
                    (true, Some(b)) => conn
                        .write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                b.len()
                            )
                            .as_bytes(),
                        )
                        .and_then(|()| conn.write_all(&b)),
                    _ => conn.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    ),
                };
            }
        });
        Server { port, hits }
    }

    fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    fn hits(&self, name: &str) -> usize {
        self.hits
            .lock()
            .unwrap()
            .get(&format!("/{name}"))
            .copied()
            .unwrap_or(0)
    }
}

fn sha256(b: &[u8]) -> String {
    hex(&sha2::Sha256::digest(b))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A tar with one top folder `pkg-1.0/` holding `hello.txt` and an
/// executable `bin/run`.
fn tarball() -> Vec<u8> {
    let mut t = tar::Builder::new(Vec::new());
    // A read-only top folder, as tarballs made from store paths have.
    let mut top = tar::Header::new_gnu();
    top.set_entry_type(tar::EntryType::Directory);
    top.set_size(0);
    top.set_mode(0o555);
    top.set_mtime(1_700_000_000);
    t.append_data(&mut top, "pkg-1.0/", &b""[..]).unwrap();
    for (path, body, mode) in [
        ("pkg-1.0/hello.txt", &b"hi from the archive\n"[..], 0o644),
        ("pkg-1.0/bin/run", &b"#!/bin/sh\necho run\n"[..], 0o755),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(mode);
        h.set_mtime(1_700_000_000);
        t.append_data(&mut h, path, body).unwrap();
    }
    t.into_inner().unwrap()
}

fn zipfile() -> Vec<u8> {
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().unix_permissions(0o644);
    z.start_file("pkg-1.0/hello.txt", opts).unwrap();
    z.write_all(b"hi from the archive\n").unwrap();
    z.finish().unwrap().into_inner()
}

#[test]
fn fetch_downloads_once_checks_the_hash_and_unpacks_every_archive_kind() {
    let tar = tarball();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    // Most upstream tarballs are .tar.xz or .tar.bz2 (issue 20).
    let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
    xz.write_all(&tar).unwrap();
    let xz = xz.finish().unwrap();
    let mut bz2 = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
    bz2.write_all(&tar).unwrap();
    let bz2 = bz2.finish().unwrap();
    let zip = zipfile();
    let files: HashMap<String, Vec<u8>> = [
        ("pkg.tar".to_string(), tar.clone()),
        ("pkg.tar.gz".to_string(), gz.clone()),
        ("mirror/pkg.tar.gz".to_string(), gz.clone()),
        ("pkg.tar.zst".to_string(), zst.clone()),
        ("pkg.tar.xz".to_string(), xz.clone()),
        ("pkg.tar.bz2".to_string(), bz2.clone()),
        ("pkg.zip".to_string(), zip.clone()),
    ]
    .into_iter()
    .collect();
    let server = Server::start(files);
    let local = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(local.path(), b"local bytes\n").unwrap();
    let recipe = format!(
        r#"let
             cat = host_tool("cat"),
             plain = fetch("{tar_url}", "sha256:{tar_sha}", unpack = true),
             gz = fetch("{gz_url}", "sha256:{gz_sha}", unpack = true),
             zst = fetch("{zst_url}", "blake3:{zst_b3}", unpack = true),
             zip = fetch("{zip_url}", "sha256:{zip_sha}", unpack = true),
             xz = fetch("{xz_url}", "sha256:{xz_sha}", unpack = true),
             bz2 = fetch("{bz2_url}", "sha256:{bz2_sha}", unpack = true),
             raw = fetch("file://{local}", "sha256:{local_sha}"),
             one = derivation {{
               name = "one", build_inputs = [cat],
               script = "cat ${{plain}}/hello.txt ${{gz}}/hello.txt ${{zst}}/hello.txt ${{zip}}/hello.txt ${{xz}}/hello.txt ${{bz2}}/hello.txt ${{raw}} > $out",
             }},
             two = derivation {{ name = "two", build_inputs = [cat], script = "cat ${{gz}}/hello.txt > $out" }},
           in {{
             one = one, two = two, gz = gz,
             wrong = fetch("{gz_url}", "sha256:{zeros}", unpack = true),
             mirrored = fetch("{mirror_url}", "sha256:{gz_sha}", unpack = true),
             missing = fetch("{missing}", "sha256:{zeros}"),
           }}"#,
        tar_url = server.url("pkg.tar"),
        tar_sha = sha256(&tar),
        gz_url = server.url("pkg.tar.gz"),
        gz_sha = sha256(&gz),
        mirror_url = server.url("mirror/pkg.tar.gz"),
        zst_url = server.url("pkg.tar.zst"),
        zst_b3 = blake3::hash(&zst).to_hex(),
        zip_url = server.url("pkg.zip"),
        zip_sha = sha256(&zip),
        xz_url = server.url("pkg.tar.xz"),
        xz_sha = sha256(&xz),
        bz2_url = server.url("pkg.tar.bz2"),
        bz2_sha = sha256(&bz2),
        local = local.path().display(),
        local_sha = sha256(b"local bytes\n"),
        zeros = "0".repeat(64),
        missing = server.url("nothing-here.tar.gz"),
    );
    let p = Project::new().file("recipe.cb", recipe);
    let out = p
        .run(&["realise", "recipe.cb", "-A", "one", "-A", "two", "-A", "gz"])
        .ok()
        .stdout();
    let outs: Vec<&str> = out.lines().collect();
    assert_eq!(
        std::fs::read_to_string(outs[0]).unwrap(),
        "hi from the archive\n".repeat(6) + "local bytes\n"
    );
    assert_eq!(
        std::fs::read_to_string(outs[1]).unwrap(),
        "hi from the archive\n"
    );
    // Two users, one download; the single top folder is stripped and modes
    // are the store's.
    assert_eq!(server.hits("pkg.tar.gz"), 1);
    use std::os::unix::fs::MetadataExt;
    let gz_out = outs[2];
    assert_eq!(
        std::fs::metadata(format!("{gz_out}/bin/run"))
            .unwrap()
            .mode()
            & 0o777,
        0o555
    );
    assert!(!std::path::Path::new(&format!("{gz_out}/pkg-1.0")).exists());
    // A second realise downloads nothing.
    p.run(&["realise", "recipe.cb", "-A", "one"]).ok();
    assert_eq!(server.hits("pkg.tar.gz"), 1);
    // The same bytes from another URL are not downloaded again.
    let mirrored = p
        .run(&["realise", "recipe.cb", "-A", "mirrored"])
        .ok()
        .stdout();
    assert_eq!(mirrored.trim(), gz_out);
    assert_eq!(server.hits("mirror/pkg.tar.gz"), 0);
    // A wrong hash names both, and no output is stored.
    let outputs = || {
        std::fs::read_dir(p.store().join("store"))
            .unwrap()
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().ends_with(".drv"))
            .count()
    };
    let before = outputs();
    let r = p
        .run(&["realise", "recipe.cb", "-A", "wrong"])
        .fails_with(1);
    let err = r.stderr();
    assert!(err.contains("hash mismatch"), "{err}");
    assert!(
        err.contains(&format!("declared: sha256:{}", "0".repeat(64))),
        "{err}"
    );
    assert!(
        err.contains(&format!("actual:   sha256:{}", sha256(&gz))),
        "{err}"
    );
    assert_eq!(outputs(), before);
    // A missing file says what the server said.
    let r = p
        .run(&["realise", "recipe.cb", "-A", "missing"])
        .fails_with(1);
    assert!(r.stderr().contains("404"), "{}", r.stderr());
}

#[test]
fn only_fixed_output_derivations_reach_the_network() {
    let body = b"fetched by the builder\n".to_vec();
    let server = Server::start([("raw".to_string(), body.clone())].into_iter().collect());
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{}; printf 'GET /raw\\n' >&3; cat <&3 > $out",
        server.port
    );
    let recipe = format!(
        r#"let bash = host_tool("bash"), cat = host_tool("cat") in {{
             fixed = derivation {{
               name = "fixed", builder = bash, args = ["-c", "{script}"], build_inputs = [cat],
               fixed_hash = "sha256:{good}",
             }},
             liar = derivation {{
               name = "liar", builder = bash, args = ["-c", "{script}"], build_inputs = [cat],
               fixed_hash = "sha256:{bad}",
             }},
             plain = derivation {{
               name = "plain", builder = bash, args = ["-c", "{script}"], build_inputs = [cat],
             }},
           }}"#,
        good = sha256(&body),
        bad = "1".repeat(64),
    );
    let p = Project::new().file("recipe.cb", recipe);
    let out = p
        .run(&["realise", "recipe.cb", "-A", "fixed"])
        .ok()
        .stdout();
    assert_eq!(std::fs::read(out.trim()).unwrap(), body);
    assert_eq!(server.hits("raw"), 1);
    let r = p.run(&["realise", "recipe.cb", "-A", "liar"]).fails_with(1);
    assert!(r.stderr().contains("hash mismatch"), "{}", r.stderr());
    let r = p
        .run(&["realise", "recipe.cb", "-A", "plain"])
        .fails_with(1);
    assert!(r.stderr().contains("Connection refused"), "{}", r.stderr());
    assert_eq!(
        server.hits("raw"),
        2,
        "the plain build must not get through"
    );
}

/// https with the machine's certificate authorities, from crates.io (which
/// every machine that builds cbuild reaches): a crate is a tar.gz with one
/// top folder.
#[test]
fn https_downloads_use_the_machine_s_certificate_authorities() {
    let p = Project::new().file(
        "recipe.cb",
        r#"fetch(
             "https://static.crates.io/crates/itoa/itoa-1.0.11.crate",
             "sha256:49f1f14873335454500d59611f1cf4a4b0f786f9ac11f4312a78e4cf2566695b",
             unpack = true,
           )"#,
    );
    let out = p.run(&["realise", "recipe.cb"]).ok().stdout();
    let toml = std::fs::read_to_string(format!("{}/Cargo.toml", out.trim())).unwrap();
    assert!(toml.contains("name = \"itoa\""), "{toml}");
}

/// An archive whose symlink points outside and whose next entry goes
/// through it is refused, and nothing is written outside.
#[test]
fn archives_cannot_write_outside_their_output() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().to_string_lossy().into_owned();
    let mut t = tar::Builder::new(Vec::new());
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    link.set_mode(0o777);
    t.append_link(&mut link, "top/evil", &target).unwrap();
    let mut file = tar::Header::new_gnu();
    file.set_size(6);
    file.set_mode(0o644);
    t.append_data(&mut file, "top/evil/pwned", &b"gotcha"[..])
        .unwrap();
    let tar = t.into_inner().unwrap();
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default();
    z.add_symlink("top/evil", &target, opts).unwrap();
    z.start_file("top/evil/pwned", opts).unwrap();
    z.write_all(b"gotcha").unwrap();
    let zip = z.finish().unwrap().into_inner();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("evil.tar"), &tar).unwrap();
    std::fs::write(dir.path().join("evil.zip"), &zip).unwrap();
    let recipe = format!(
        r#"{{
             t = fetch("file://{d}/evil.tar", "sha256:{ts}", unpack = true),
             z = fetch("file://{d}/evil.zip", "sha256:{zs}", unpack = true),
           }}"#,
        d = dir.path().display(),
        ts = sha256(&tar),
        zs = sha256(&zip),
    );
    let p = Project::new().file("recipe.cb", recipe);
    for attr in ["t", "z"] {
        let r = p.run(&["realise", "recipe.cb", "-A", attr]).fails_with(1);
        assert!(
            r.stderr().contains("cannot unpack"),
            "{attr}: {}",
            r.stderr()
        );
    }
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
}
