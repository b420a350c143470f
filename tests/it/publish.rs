//! `cbuild publish` to a local channel directory: real exports, real
//! packages, the channel's repodata read back, a conflicting package under a
//! published name, a broken package, two publishers at once.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::{Project, cbuild_bin};

fn greet() -> Project {
    let greet = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/greet");
    let mut p = Project::new();
    for f in ["greet.c", "greet.h", "hello.c", "recipe.cb"] {
        p = p.file(&format!("src/{f}"), std::fs::read(greet.join(f)).unwrap());
    }
    p
}

/// The `result` of each package a `publish --json` run reports.
fn results(r: &crate::support::Run) -> Vec<String> {
    json(r)
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["result"].as_str().unwrap().to_string())
        .collect()
}

fn json(r: &crate::support::Run) -> serde_json::Value {
    serde_json::from_str(&r.stdout()).unwrap_or_else(|e| panic!("{e}: {}", r.stdout()))
}

fn repodata(channel: &Path, subdir: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(channel.join(subdir).join("repodata.json")).unwrap())
        .unwrap()
}

fn listed(channel: &Path, subdir: &str) -> Vec<String> {
    let v = repodata(channel, subdir);
    let mut names: Vec<String> = v["packages.conda"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    names.sort();
    names
}

#[test]
fn a_recipe_is_exported_and_published_and_again_publishes_nothing() {
    let p = greet();
    let src = p.path().join("src");
    let ch = p.path().join("channel");
    let r = p
        .run_in(
            &src,
            &[
                "publish",
                "-A",
                "hello",
                "--to",
                ch.to_str().unwrap(),
                "--json",
            ],
            &[],
        )
        .ok();
    assert_eq!(results(&r), ["added", "added"], "{}", r.stdout());
    let names = listed(&ch, "linux-64");
    assert!(
        names.iter().any(|n| n.starts_with("hello-1.0.0-"))
            && names.iter().any(|n| n.starts_with("libgreet-1.2.0-")),
        "{names:?}"
    );
    // Each listed record's sha256 is the file's.
    let listing = repodata(&ch, "linux-64");
    for (name, rec) in listing["packages.conda"].as_object().unwrap() {
        let bytes = std::fs::read(ch.join("linux-64").join(name)).unwrap();
        let sha: String =
            sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&bytes))
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
        assert_eq!(rec["sha256"], sha.as_str(), "{name}");
    }
    assert!(ch.join("noarch/repodata.json").is_file());
    // Again (file:// this time): nothing copied, nothing rebuilt.
    let before = std::fs::metadata(ch.join("linux-64/repodata.json"))
        .unwrap()
        .modified()
        .unwrap();
    let url = format!("file://{}", ch.display());
    let r = p
        .run_in(
            &src,
            &["publish", "-A", "hello", "--to", &url, "--json"],
            &[],
        )
        .ok();
    assert!(
        results(&r).iter().all(|x| x == "already there"),
        "{}",
        r.stdout()
    );
    assert!(!r.stderr().contains("building"), "{}", r.stderr());
    let after = std::fs::metadata(ch.join("linux-64/repodata.json"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after, "the repodata is not rewritten");
    // No staged leftovers.
    let stray: Vec<_> = std::fs::read_dir(&ch)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            n.starts_with(".cbuild-staged").then_some(n)
        })
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

#[test]
fn other_bytes_under_a_published_name_are_refused_naming_both_digests() {
    let p = Project::new().file(
        "recipe.cb",
        r#"{ clock = package { name = "clock", version = "1", script = "mkdir -p $out/share; date +%s%N > $out/share/when" } }"#,
    );
    let ch = p.path().join("channel");
    let first = p
        .run(&[
            "publish",
            "-A",
            "clock",
            "--to",
            ch.to_str().unwrap(),
            "--json",
        ])
        .ok();
    let first_sha = json(&first)[0]["sha256"].as_str().unwrap().to_string();
    // The same inputs built again give other bytes (the build is not
    // reproducible): export into a fresh store, under the same name.
    let (pkg, second_sha) = export_clock(&p, "store2", "again");
    let pkg = PathBuf::from(pkg);
    assert_ne!(first_sha, second_sha);
    let r = p
        .run(&[
            "publish",
            pkg.to_str().unwrap(),
            "--to",
            ch.to_str().unwrap(),
        ])
        .fails_with(1);
    let err = r.stderr();
    assert!(
        err.contains(&first_sha) && err.contains(&second_sha),
        "{err}"
    );
    assert!(
        err.contains("both record the same inputs") && err.contains("cbuild check --conda"),
        "{err}"
    );
    // The channel still lists the first.
    let listing = repodata(&ch, "linux-64");
    let name = pkg.file_name().unwrap().to_str().unwrap();
    assert_eq!(
        listing["packages.conda"][name]["sha256"],
        first_sha.as_str()
    );
    // --force replaces it.
    let r = p
        .run(&[
            "publish",
            pkg.to_str().unwrap(),
            "--to",
            ch.to_str().unwrap(),
            "--force",
            "--json",
        ])
        .ok();
    assert_eq!(json(&r)[0]["result"], "replaced");
    let listing = repodata(&ch, "linux-64");
    assert_eq!(
        listing["packages.conda"][name]["sha256"],
        second_sha.as_str()
    );
}

#[test]
fn a_broken_package_never_reaches_the_channel() {
    let p = greet();
    let src = p.path().join("src");
    let out = p
        .run_in(
            &src,
            &[
                "export", "--conda", "-A", "libgreet", "-o", "../out", "--json",
            ],
            &[],
        )
        .ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout()).unwrap();
    let pkg = PathBuf::from(v[0]["path"].as_str().unwrap());
    // One byte of the payload flipped, under the same name.
    let broken = crate::support::with_payload_byte_flipped(&pkg, &p.path().join("broken"));
    let ch = p.path().join("channel");
    let r = p
        .run(&[
            "publish",
            broken.to_str().unwrap(),
            "--to",
            ch.to_str().unwrap(),
        ])
        .fails_with(1);
    assert!(
        r.stderr()
            .contains("is not published: it fails the package checks"),
        "{}",
        r.stderr()
    );
    assert!(!ch.join("linux-64").exists() || listed(&ch, "linux-64").is_empty());
}

#[test]
fn two_publishers_at_once_lose_nothing() {
    // Twelve small packages, published half by one process and half by
    // another, at the same time, into one channel.
    let fields: String = (0..12)
        .map(|i| format!("  p{i} = package {{ name = \"p{i}\", version = \"1\", script = \"mkdir -p $out; echo {i} > $out/f\" }},\n"))
        .collect();
    let p = Project::new().file("recipe.cb", format!("{{\n{fields}}}\n"));
    let out = p.run(&["export", "--conda", "-o", "pkgs", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout()).unwrap();
    let files: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(files.len(), 12);
    let ch = p.path().join("channel");
    let spawn = |part: &[String]| {
        Command::new(cbuild_bin())
            .arg("publish")
            .args(part)
            .args(["--to", ch.to_str().unwrap()])
            .current_dir(p.path())
            .env("CBUILD_STORE", p.store())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = spawn(&files[..6]);
    let b = spawn(&files[6..]);
    for c in [a, b] {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert_eq!(listed(&ch, "linux-64").len(), 12);
}

/// A Quetz server of the test's own on a loopback port (killed when
/// dropped), with the API key its dev deployment prints.
struct Quetz {
    child: std::process::Child,
    port: u16,
    key: String,
    deployment: PathBuf,
}

impl Drop for Quetz {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Kills a Quetz server with its worker processes (its process group: the
/// workers outlive a killed parent).
fn stop(child: &mut std::process::Child) {
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = child.wait();
}

fn quetz(dir: &Path) -> Quetz {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-quetz/bin/quetz");
    assert!(
        bin.exists(),
        "run .ci/setup: it installs Quetz into .venv-quetz"
    );
    let deployment = dir.join("quetz");
    let out = Command::new(&bin)
        .args([
            "create",
            deployment.to_str().unwrap(),
            "--dev",
            "--create-conf",
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let key = text
        .lines()
        .find_map(|l| l.split("Test API key created for user").nth(1))
        .and_then(|rest| rest.rsplit(':').next())
        .map(|k| k.trim().to_string())
        .unwrap_or_else(|| panic!("no API key in:\n{text}"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = start_quetz(&deployment, port);
    Quetz {
        child,
        port,
        key,
        deployment,
    }
}

#[test]
fn publish_to_a_real_quetz_and_install_from_it_with_a_conda_client() {
    let p = greet();
    let src = p.path().join("src");
    let q = quetz(p.path());
    let dest = format!("quetz+http://127.0.0.1:{}/channel0", q.port);
    // A wrong key: a clear error naming the server, the key never shown,
    // nothing published.
    let r = p
        .run_in(
            &src,
            &["publish", "-A", "hello", "--to", &dest],
            &[("CBUILD_QUETZ_API_KEY", "not-the-key-123")],
        )
        .fails_with(2);
    assert!(
        r.stderr()
            .contains(&format!("http://127.0.0.1:{}/channel0", q.port))
            && r.stderr().contains("the API key was refused (401)")
            && !r.stderr().contains("not-the-key-123"),
        "{}",
        r.stderr()
    );
    // A key pasted with the line around it: a clear error, not the HTTP
    // layer's.
    let pasted = format!("Test API key created for user \"x\": {}\nINFO", q.key);
    let r = p
        .run_in(
            &src,
            &["publish", "-A", "hello", "--to", &dest],
            &[("CBUILD_QUETZ_API_KEY", &pasted)],
        )
        .fails_with(2);
    assert!(
        r.stderr().contains("holds spaces, line breaks") && !r.stderr().contains(&q.key),
        "{}",
        r.stderr()
    );
    let r = p
        .run_in(
            &src,
            &["publish", "-A", "hello", "--to", &dest, "--json"],
            &[("CBUILD_QUETZ_API_KEY", &q.key)],
        )
        .ok();
    let v = json(&r);
    assert!(
        v.as_array().unwrap().iter().all(|x| x["result"] == "added"),
        "{v}"
    );
    assert!(!r.stdout().contains(&q.key) && !r.stderr().contains(&q.key));
    // Again: nothing uploaded.
    let r = p
        .run_in(
            &src,
            &["publish", "-A", "hello", "--to", &dest, "--json"],
            &[("CBUILD_QUETZ_API_KEY", &q.key)],
        )
        .ok();
    assert!(
        results(&r).iter().all(|x| x == "already there"),
        "{}",
        r.stdout()
    );
    // A real client installs the program from the server's channel URL and
    // it runs.
    let prefix = p
        .path()
        .join("env/a-long-prefix-to-install-into-from-the-quetz-channel");
    let said = crate::support::install_and_run(
        &format!("http://127.0.0.1:{}/get/channel0", q.port),
        "hello",
        &prefix,
        "hello",
        "quetz",
    );
    assert_eq!(said, "hello, quetz");
    // The seed's own case: the Go CLI, exported and published from its
    // recipe, installed from the channel URL and run.
    let go = p.path().join("go");
    crate::support::copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/go-cli"),
        &go,
    );
    let r = p
        .run_in(
            &go,
            &["publish", "-A", "devssh", "--to", &dest, "--json"],
            &[("CBUILD_QUETZ_API_KEY", &q.key)],
        )
        .ok();
    assert_eq!(results(&r), ["added"], "{}", r.stdout());
    let said = crate::support::install_and_run(
        &format!("http://127.0.0.1:{}/get/channel0", q.port),
        "devssh",
        &p.path()
            .join("env-go/another-long-prefix-for-the-go-program-from-quetz"),
        "devssh",
        "-version",
    );
    assert_eq!(said, "devssh 0.3.0");
    // The server stopped: a clear error naming it, exit 2.
    drop(q);
    let r = p
        .run_in(
            &src,
            &["publish", "-A", "hello", "--to", &dest],
            &[("CBUILD_QUETZ_API_KEY", "k")],
        )
        .fails_with(2);
    assert!(r.stderr().contains("cannot be reached"), "{}", r.stderr());
}

fn start_quetz(deployment: &Path, port: u16) -> std::process::Child {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-quetz/bin/quetz");
    let child = Command::new(&bin)
        .args([
            "start",
            deployment.to_str().unwrap(),
            "--host",
            "127.0.0.1",
            "--port",
        ])
        .arg(port.to_string())
        .current_dir(deployment.parent().unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    for _ in 0..300 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child
}

#[test]
fn a_server_killed_mid_upload_fails_the_publish_and_a_retry_completes_it() {
    let p = Project::new().file(
        "recipe.cb",
        r#"{ bulk = package { name = "bulk", version = "1", script = "mkdir -p $out/share; head -c 80000000 /dev/urandom > $out/share/bulk" } }"#,
    );
    let out = p
        .run(&[
            "export",
            "--conda",
            "-A",
            "bulk",
            "-o",
            "pkgs",
            "--zstd-level",
            "1",
            "--json",
        ])
        .ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout()).unwrap();
    let pkg = v[0]["path"].as_str().unwrap().to_string();
    let sha = v[0]["sha256"].as_str().unwrap().to_string();
    let mut q = quetz(p.path());
    let dest = format!("quetz+http://127.0.0.1:{}/channel0", q.port);
    let publish = Command::new(cbuild_bin())
        .args(["publish", &pkg, "--to", &dest])
        .current_dir(p.path())
        .env("CBUILD_STORE", p.store())
        .env("CBUILD_QUETZ_API_KEY", &q.key)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The server goes away while the 80 MB body is on its way.
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop(&mut q.child);
    let o = publish.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    if o.status.success() {
        eprintln!("the upload finished before the server was killed; the retry is checked alone");
    } else {
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains(&format!("127.0.0.1:{}/channel0", q.port))
                && err.contains("bulk-1-")
                && err.contains("a retry is safe"),
            "{err}"
        );
    }
    // Back up: the retry completes it (or finds it complete), and the
    // channel lists the package with its digest.
    q.child = start_quetz(&q.deployment, q.port);
    let r = p
        .run_env(
            &["publish", &pkg, "--to", &dest, "--json"],
            &[("CBUILD_QUETZ_API_KEY", &q.key)],
        )
        .ok();
    let result = json(&r)[0]["result"].as_str().unwrap().to_string();
    assert!(result == "added" || result == "already there", "{result}");
    let url = format!(
        "http://127.0.0.1:{}/get/channel0/linux-64/repodata.json",
        q.port
    );
    let listing = Command::new("python3")
        .args([
            "-c",
            "import json,sys,urllib.request; print(json.load(urllib.request.urlopen(sys.argv[1]))['packages.conda'][sys.argv[2]]['sha256'])",
        ])
        .arg(&url)
        .arg(Path::new(&pkg).file_name().unwrap())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&listing.stdout).trim(), sha);
}

/// Exports `clock` of `p` into a store of its own (`store`, under the
/// project) and returns the package's path and sha256: the same inputs in
/// another store give other bytes under the same name.
fn export_clock(p: &Project, store: &str, out: &str) -> (String, String) {
    let o = Command::new(cbuild_bin())
        .args(["export", "--conda", "-A", "clock", "-o", out, "--json"])
        .current_dir(p.path())
        .env("CBUILD_STORE", p.path().join(store))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    (
        v[0]["path"].as_str().unwrap().to_string(),
        v[0]["sha256"].as_str().unwrap().to_string(),
    )
}

#[test]
fn racing_publishers_and_a_lagging_index_keep_one_content_per_name_on_quetz() {
    let p = Project::new().file(
        "recipe.cb",
        r#"{ clock = package { name = "clock", version = "1", script = "mkdir -p $out/share; date +%s%N > $out/share/when" } }"#,
    );
    // Two builds of the same inputs with other bytes: one per store.
    let (a, a_sha) = export_clock(&p, "store-a", "a");
    let (b, b_sha) = export_clock(&p, "store-b", "b");
    assert_ne!(a_sha, b_sha);
    let q = quetz(p.path());
    let dest = format!("quetz+http://127.0.0.1:{}/channel0", q.port);
    let spawn = |pkg: &str| {
        Command::new(cbuild_bin())
            .args(["publish", pkg, "--to", &dest, "--json"])
            .current_dir(p.path())
            .env("CBUILD_STORE", p.store())
            .env("CBUILD_QUETZ_API_KEY", &q.key)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // The same bytes from two processes at once: both succeed, whichever
    // of the server's index and its 409 tells the second.
    let (x, y) = (spawn(&a), spawn(&a));
    for o in [x.wait_with_output().unwrap(), y.wait_with_output().unwrap()] {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    // Other bytes under that name, again from two processes at once, each
    // racing a same-bytes publisher: the other bytes are refused, exit 1,
    // naming both digests, and the channel keeps the first.
    let (x, y) = (spawn(&b), spawn(&a));
    let (ob, oa) = (x.wait_with_output().unwrap(), y.wait_with_output().unwrap());
    assert!(
        oa.status.success(),
        "{}",
        String::from_utf8_lossy(&oa.stderr)
    );
    let err = String::from_utf8_lossy(&ob.stderr);
    assert_eq!(ob.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&a_sha) && err.contains(&b_sha) && err.contains("both record the same inputs"),
        "{err}"
    );
    // An index that lags behind the server's files (Quetz indexes in the
    // background): the upload is answered 409, and the bytes the server
    // holds decide: the same bytes are a success, other bytes refused.
    let index = q
        .deployment
        .join("channels/channel0/linux-64/repodata.json");
    let stale = Command::new("python3")
        .args([
            "-c",
            "import json,gzip,bz2,sys; p=sys.argv[1]; d=json.load(open(p)); d['packages.conda']={}; b=json.dumps(d).encode(); open(p,'wb').write(b); open(p+'.gz','wb').write(gzip.compress(b)); open(p+'.bz2','wb').write(bz2.compress(b))",
        ])
        .arg(&index)
        .status()
        .unwrap();
    assert!(stale.success());
    let r = p
        .run_env(
            &["publish", &a, "--to", &dest, "--json"],
            &[("CBUILD_QUETZ_API_KEY", &q.key)],
        )
        .ok();
    assert_eq!(results(&r), ["already there"]);
    let r = p
        .run_env(
            &["publish", &b, "--to", &dest],
            &[("CBUILD_QUETZ_API_KEY", &q.key)],
        )
        .fails_with(1);
    assert!(
        r.stderr().contains(&a_sha) && r.stderr().contains(&b_sha),
        "{}",
        r.stderr()
    );
    // Two new names at once, with other bytes racing each: whichever is
    // first wins and the other is refused with both digests.
    let p2 = Project::new().file(
        "recipe.cb",
        r#"{ clock = package { name = "clock", version = "2", script = "mkdir -p $out/share; date +%s%N > $out/share/when" } }"#,
    );
    let (c, c_sha) = export_clock(&p2, "store-c", "c");
    let (d, d_sha) = export_clock(&p2, "store-d", "d");
    let (x, y) = (spawn(&c), spawn(&d));
    let outs = [x.wait_with_output().unwrap(), y.wait_with_output().unwrap()];
    let won: Vec<usize> = (0..2).filter(|&i| outs[i].status.success()).collect();
    assert_eq!(won.len(), 1, "exactly one publisher wins");
    let lost = &outs[1 - won[0]];
    let err = String::from_utf8_lossy(&lost.stderr);
    assert_eq!(lost.status.code(), Some(1), "{err}");
    assert!(err.contains(&c_sha) && err.contains(&d_sha), "{err}");
    let winner_sha = [&c_sha, &d_sha][won[0]];
    let url = format!(
        "http://127.0.0.1:{}/get/channel0/linux-64/repodata.json",
        q.port
    );
    let name = Path::new(&c)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let listed = Command::new("python3")
        .args([
            "-c",
            "import json,sys,urllib.request; print(json.load(urllib.request.urlopen(sys.argv[1]))['packages.conda'][sys.argv[2]]['sha256'])",
        ])
        .arg(&url)
        .arg(&name)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout).trim(),
        winner_sha.as_str()
    );
}

#[test]
fn a_server_error_and_a_forbidden_channel_are_named_and_force_recovers_a_half_stored_upload() {
    let p = Project::new().file(
        "recipe.cb",
        r#"{ tool = package { name = "tool", version = "1", script = "mkdir -p $out/share; echo tool > $out/share/tool" } }"#,
    );
    let r = p
        .run(&["export", "--conda", "-A", "tool", "-o", "pkgs", "--json"])
        .ok();
    let v = json(&r);
    let pkg = v[0]["path"].as_str().unwrap().to_string();
    let name = Path::new(&pkg).file_name().unwrap().to_owned();
    let q = quetz(p.path());
    let dest = format!("quetz+http://127.0.0.1:{}/channel0", q.port);
    let key = [("CBUILD_QUETZ_API_KEY", q.key.as_str())];
    // The server cannot store the file (a directory is in its way): it
    // answers 500, after it has recorded the name in its database.
    let subdir = q.deployment.join("channels/channel0/linux-64");
    let blocker = subdir.join(&name);
    std::fs::create_dir_all(&blocker).unwrap();
    let r = p
        .run_env(&["publish", &pkg, "--to", &dest], &key)
        .fails_with(2);
    assert!(
        r.stderr().contains(&dest["quetz+".len()..])
            && r.stderr().contains(name.to_str().unwrap())
            && r.stderr()
                .contains("the server failed (500); a retry is safe"),
        "{}",
        r.stderr()
    );
    std::fs::remove_dir(&blocker).unwrap();
    // A retry finds the name recorded but no file behind it, and says how
    // to recover; --force uploads it again; then it is simply there.
    let r = p
        .run_env(&["publish", &pkg, "--to", &dest], &key)
        .fails_with(2);
    assert!(
        r.stderr().contains("--force uploads it again"),
        "{}",
        r.stderr()
    );
    p.run_env(&["publish", &pkg, "--to", &dest, "--force"], &key)
        .ok();
    let r = p
        .run_env(&["publish", &pkg, "--to", &dest, "--json"], &key)
        .ok();
    assert_eq!(results(&r), ["already there"]);
    assert!(subdir.join(&name).is_file());
    // The key from the credentials file: refused while others can read the
    // file, used once only its owner can.
    use std::os::unix::fs::PermissionsExt;
    let config = p.path().join("config");
    let keys = config.join("cbuild/quetz-keys.json");
    std::fs::create_dir_all(keys.parent().unwrap()).unwrap();
    std::fs::write(
        &keys,
        serde_json::json!({ format!("http://127.0.0.1:{}", q.port): q.key }).to_string(),
    )
    .unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).unwrap();
    let from_file = [("XDG_CONFIG_HOME", config.to_str().unwrap())];
    let r = p
        .run_env(&["publish", &pkg, "--to", &dest], &from_file)
        .fails_with(2);
    assert!(
        r.stderr().contains("can be read by others") && !r.stderr().contains(&q.key),
        "{}",
        r.stderr()
    );
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = p
        .run_env(&["publish", &pkg, "--to", &dest, "--json"], &from_file)
        .ok();
    assert_eq!(results(&r), ["already there"]);
    // A channel the key's user does not own (its membership revoked in the
    // server's database): 403, naming the server, nothing published.
    let revoke = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; db=sqlite3.connect(sys.argv[1]); db.execute(\"delete from channel_members where channel_name='channel1' and user_id=(select user_id from api_keys where key=?)\", (sys.argv[2],)); db.commit()",
        ])
        .arg(q.deployment.join("quetz.sqlite"))
        .arg(&q.key)
        .status()
        .unwrap();
    assert!(revoke.success());
    let other = format!("quetz+http://127.0.0.1:{}/channel1", q.port);
    let r = p
        .run_env(&["publish", &pkg, "--to", &other], &key)
        .fails_with(2);
    assert!(
        r.stderr().contains(&other["quetz+".len()..])
            && r.stderr().contains("may not upload to this channel (403)")
            && !r.stderr().contains(&q.key),
        "{}",
        r.stderr()
    );
    assert!(
        !q.deployment
            .join("channels/channel1/linux-64")
            .join(&name)
            .exists()
    );
}
