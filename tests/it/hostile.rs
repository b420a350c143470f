//! `publish` against hostile servers on loopback (issue 19): a server that
//! redirects the upload elsewhere, one that drips its answer a byte at a
//! time, one that answers with a body that never ends. Each is a real TCP
//! server in the test; cbuild is the real binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::Project;

/// What a server was asked: each request's head (request line and headers).
type Heads = Arc<Mutex<Vec<String>>>;

/// Serves every connection on a thread of its own with `answer(head,
/// stream)`; returns the port and the heads it read.
fn serve(answer: impl Fn(&str, &mut TcpStream) + Send + Sync + 'static) -> (u16, Heads) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let heads: Heads = Default::default();
    let seen = heads.clone();
    let answer = Arc::new(answer);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (seen, answer) = (seen.clone(), answer.clone());
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                // A body, if one was announced, is read and dropped.
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<u64>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                let _ = std::io::copy(&mut reader.by_ref().take(len), &mut std::io::sink());
                seen.lock().unwrap().push(head.clone());
                answer(&head, &mut stream);
            });
        }
    });
    (port, heads)
}

fn reply(stream: &mut TcpStream, status: &str, headers: &str, body: &str) {
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n{body}",
        body.len()
    );
}

/// A small package exported from a recipe, to publish.
fn package(p: &Project) -> String {
    crate::support::tiny_package(p)
        .to_string_lossy()
        .into_owned()
}

fn project() -> Project {
    crate::support::tiny_project()
}

const KEY: &str = "k3y-that-must-stay-home-5f0c";

#[test]
fn a_redirected_upload_sends_the_key_nowhere_and_is_never_a_success() {
    let p = project();
    let pkg = package(&p);
    // Where the redirect points: it must never hear from cbuild.
    let (elsewhere, stolen) = serve(|_, s| reply(s, "200 OK", "", "{}"));
    for status in [
        "301 Moved Permanently",
        "302 Found",
        "303 See Other",
        "307 Temporary Redirect",
    ] {
        let target = format!("http://u:pw@127.0.0.1:{elsewhere}/steal?sig=s3cr3t");
        let (port, _) = serve(move |head, s| {
            if head.starts_with("POST ") {
                reply(s, status, &format!("Location: {target}\r\n"), "");
            } else {
                reply(s, "404 Not Found", "", "");
            }
        });
        let r = p.run_env(
            &[
                "publish",
                &pkg,
                "--to",
                &format!("quetz+http://127.0.0.1:{port}/channel0"),
            ],
            &[("CBUILD_QUETZ_API_KEY", KEY)],
        );
        let (out, err) = (r.stdout(), r.stderr());
        assert_ne!(r.code(), 0, "{status}: {out}{err}");
        assert!(err.contains("redirect"), "{status}: {err}");
        assert!(!out.contains("added"), "{status}: {out}");
        // Shown without its credentials.
        assert!(
            err.contains(&format!("127.0.0.1:{elsewhere}/steal")),
            "{err}"
        );
        for secret in [KEY, "pw@", "s3cr3t"] {
            assert!(
                !err.contains(secret) && !out.contains(secret),
                "{secret}: {err}"
            );
        }
    }
    assert!(
        stolen.lock().unwrap().is_empty(),
        "{:?}",
        stolen.lock().unwrap()
    );
}

#[test]
fn a_server_that_drips_its_answer_is_given_up_on_at_the_deadline() {
    let p = project();
    let pkg = package(&p);
    let (port, _) = serve(|_, s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n{");
        // One byte a second: every read succeeds, the answer never ends.
        for _ in 0..120 {
            std::thread::sleep(Duration::from_secs(1));
            if s.write_all(b" ").is_err() {
                return;
            }
        }
    });
    let start = Instant::now();
    let r = p.run_env(
        &[
            "publish",
            &pkg,
            "--to",
            &format!("quetz+http://127.0.0.1:{port}/channel0"),
        ],
        &[
            ("CBUILD_QUETZ_API_KEY", KEY),
            ("CBUILD_NETWORK_TIMEOUT", "3"),
        ],
    );
    let took = start.elapsed();
    assert_eq!(r.code(), 2, "{}", r.stderr());
    assert!(took < Duration::from_secs(60), "publish took {took:?}");
    assert!(
        r.stderr().contains("timeout") || r.stderr().contains("timed out"),
        "{}",
        r.stderr()
    );
}

#[test]
fn a_duplicate_answered_with_an_endless_package_is_read_only_so_far() {
    let p = project();
    let pkg = package(&p);
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = sent.clone();
    let (port, _) = serve(move |head, s| {
        if head.starts_with("POST ") {
            reply(s, "409 Conflict", "", "");
        } else if head.contains("repodata.json") {
            reply(s, "404 Not Found", "", "");
        } else {
            // "The server's copy": far larger than ours, as fast as cbuild
            // takes it (up to 2 GiB, to end the test either way).
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000000\r\n\r\n");
            let chunk = vec![0u8; 1 << 20];
            for _ in 0..2048 {
                if s.write_all(&chunk).is_err() {
                    break;
                }
                counted.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    let mut cmd = std::process::Command::new(crate::support::cbuild_bin());
    cmd.args([
        "publish",
        &pkg,
        "--to",
        &format!("quetz+http://127.0.0.1:{port}/channel0"),
    ])
    .current_dir(p.path())
    .env("CBUILD_STORE", p.store())
    .env("CBUILD_QUETZ_API_KEY", KEY);
    let out = crate::support::peak_rss(cmd);
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("409"), "{err}");
    assert!(out.peak_kb < 400_000, "peak RSS {} kB", out.peak_kb);
    // Read (to a temporary file) only as far as a copy worth comparing
    // goes: twice ours or 16 MiB, plus what the sockets buffer.
    let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        sent < 128 << 20,
        "cbuild took {} MiB of the server's copy",
        sent >> 20
    );
}

#[test]
fn a_large_channel_s_repodata_is_read_in_little_memory() {
    let p = project();
    let pkg = package(&p);
    // About 30 MB of repodata: 60,000 records of a real channel's shape.
    let mut body =
        String::from(r#"{"info": {"subdir": "linux-64"}, "packages": {}, "packages.conda": {"#);
    for k in 0..60_000 {
        if k > 0 {
            body.push(',');
        }
        body.push_str(&format!(
            r#""pkg{k}-1.0-h{k:08}_0.conda": {{"name": "pkg{k}", "version": "1.0", "build": "h{k:08}_0", "build_number": 0, "depends": ["libgcc-ng >=12", "libzlib >=1.2.13,<2.0a0", "python >=3.11,<3.12.0a0", "python_abi 3.11.* *_cp311"], "license": "BSD-3-Clause", "md5": "{k:032x}", "sha256": "{k:064x}", "size": {k}, "subdir": "linux-64", "timestamp": 1700000000000}}"#
        ));
    }
    body.push_str("}}");
    assert!(body.len() > 25 << 20, "{}", body.len());
    let body = Arc::new(body);
    let (port, _) = serve(move |head, s| {
        if head.contains("repodata.json") {
            reply(s, "200 OK", "Content-Type: application/json\r\n", &body);
        } else {
            reply(s, "200 OK", "", "{}");
        }
    });
    let mut cmd = std::process::Command::new(crate::support::cbuild_bin());
    cmd.args([
        "publish",
        &pkg,
        "--to",
        &format!("quetz+http://127.0.0.1:{port}/channel0"),
    ])
    .current_dir(p.path())
    .env("CBUILD_STORE", p.store())
    .env("CBUILD_QUETZ_API_KEY", KEY)
    .env("CBUILD_QUETZ_INDEX_WAIT", "1");
    let out = crate::support::peak_rss(cmd);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Read as a JSON tree (and a string of it first), it took 203 MB here;
    // as every name and digest, 60 MB (239 MB once, polled while waiting
    // for the index on a busy machine); keeping only the records of the
    // files published, 33 MB, what cbuild takes anyway.
    assert!(out.peak_kb < 60_000, "peak RSS {} kB", out.peak_kb);
}
