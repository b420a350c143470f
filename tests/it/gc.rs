//! `cbuild store verify`, `cbuild gc` and the store's roots, for real:
//! stores tampered with by hand, processes killed with SIGKILL, a collector
//! running in a loop beside concurrent realises.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::{Project, cbuild_bin};

const RECIPE: &str = r#"
let
  base = package {
    name = "base", version = "1",
    script = ''
      mkdir -p $out/share $out/bin
      echo base > $out/share/base.txt
      printf '#!/bin/sh\necho hi\n' > $out/bin/hi
      chmod +x $out/bin/hi
    '',
  },
in {
  base = base,
  # Mentions base: base is in its closure.
  user = package {
    name = "user", version = "1",
    script = ''
      mkdir -p $out/share
      echo "uses ${base}/share/base.txt" > $out/share/user.txt
    '',
  },
  other = package {
    name = "other", version = "1",
    script = "mkdir -p $out; echo other > $out/other.txt",
  },
}
"#;

fn project() -> Project {
    Project::new().file("recipe.cb", RECIPE)
}

fn realise(p: &Project, attr: &str, extra: &[&str]) -> PathBuf {
    let mut args = vec!["realise", "-A", attr];
    args.extend_from_slice(extra);
    let out = p.run(&args).ok().stdout();
    PathBuf::from(out.lines().next().unwrap())
}

fn json(r: &crate::support::Run) -> serde_json::Value {
    serde_json::from_str(&r.stdout()).unwrap_or_else(|e| panic!("{e}: {}", r.stdout()))
}

/// Makes `path` (inside a read-only store object) writable and runs `f`.
fn tamper(object: &Path, f: impl FnOnce()) {
    Command::new("chmod")
        .args(["-R", "u+w"])
        .arg(object)
        .status()
        .unwrap();
    f();
    Command::new("chmod")
        .args(["-R", "a-w"])
        .arg(object)
        .status()
        .unwrap();
}

#[test]
fn verify_names_each_tampered_object_and_repair_restores_it() {
    let p = project();
    let base = realise(&p, "base", &[]);
    let user = realise(&p, "user", &[]);
    let r = p.run(&["store", "verify"]).ok();
    assert!(r.stdout().contains("all match"), "{}", r.stdout());
    let file = base.join("share/base.txt");
    type Tamper<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, Tamper)> = vec![
        (
            "one byte changed",
            Box::new(|| {
                let mut b = std::fs::read(&file).unwrap();
                b[0] ^= 1;
                std::fs::write(&file, b).unwrap();
            }),
        ),
        (
            "a file deleted",
            Box::new(|| std::fs::remove_file(&file).unwrap()),
        ),
        (
            "a file added",
            Box::new(|| std::fs::write(base.join("share/extra"), "x").unwrap()),
        ),
        (
            "a mode changed",
            Box::new(|| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(
                    base.join("bin/hi"),
                    std::fs::Permissions::from_mode(0o644),
                )
                .unwrap();
            }),
        ),
    ];
    for (what, f) in cases {
        tamper(&base, f);
        let r = p.run(&["store", "verify", "--json"]).fails_with(1);
        let v = json(&r);
        let failures = v["failures"].as_array().unwrap();
        assert_eq!(failures.len(), 1, "{what}: {v}");
        assert_eq!(failures[0]["path"], base.to_str().unwrap(), "{what}: {v}");
        assert_eq!(failures[0]["problem"], "content differs", "{what}: {v}");
        assert_ne!(failures[0]["expected"], failures[0]["actual"], "{what}");
        // The other object is fine.
        assert!(!v.to_string().contains(user.to_str().unwrap()), "{what}");
        let r = p.run(&["store", "verify", "--repair"]).ok();
        assert!(r.stdout().contains("(repaired)"), "{what}: {}", r.stdout());
        p.run(&["store", "verify"]).ok();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "base\n", "{what}");
    }
    // Only the mtime: the metadata is reset.
    tamper(&base, || {
        Command::new("touch").arg(&file).status().unwrap();
    });
    let r = p.run(&["store", "verify"]).fails_with(1);
    assert!(r.stdout().contains("modes or mtimes"), "{}", r.stdout());
    p.run(&["store", "verify", "--repair"]).ok();
    p.run(&["store", "verify"]).ok();
    // A whole object deleted: missing, rebuilt.
    tamper(&user, || {});
    Command::new("chmod")
        .args(["-R", "u+w"])
        .arg(user.parent().unwrap())
        .status()
        .unwrap();
    std::fs::remove_dir_all(&user).unwrap();
    let r = p.run(&["store", "verify"]).fails_with(1);
    assert!(r.stdout().contains(": missing (output)"), "{}", r.stdout());
    p.run(&["store", "verify", "--repair"]).ok();
    assert!(user.join("share/user.txt").is_file());
}

#[test]
fn a_source_cannot_be_rebuilt_and_verify_says_so() {
    let p = project().file("data/a.txt", "a\n");
    let src = p.run(&["store", "add", "data"]).ok().stdout();
    let src = PathBuf::from(src.trim());
    tamper(&src, || std::fs::write(src.join("a.txt"), "b\n").unwrap());
    let r = p.run(&["store", "verify", "--repair"]).fails_with(1);
    assert!(
        r.stdout()
            .contains("content differs (source) (NOT repaired)"),
        "{}",
        r.stdout()
    );
}

#[test]
fn gc_keeps_what_roots_reach_and_deletes_the_rest() {
    let p = project();
    let link = p.path().join("result");
    let user = realise(&p, "user", &["-o", link.to_str().unwrap()]);
    let other = realise(&p, "other", &[]);
    let base = realise(&p, "base", &[]);
    // The dry run lists the root, what it keeps, and what would go.
    let r = p.run(&["gc", "--dry-run", "--json"]).ok();
    let v = json(&r);
    let roots = v["roots"].as_array().unwrap();
    assert_eq!(roots.len(), 1, "{v}");
    assert_eq!(roots[0]["kind"], "link");
    assert_eq!(roots[0]["name"], link.to_str().unwrap());
    assert_eq!(roots[0]["closure_objects"], 2, "user and base: {v}");
    assert!(roots[0]["closure_bytes"].as_u64().unwrap() > 0);
    let would: Vec<&str> = v["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(would.contains(&other.to_str().unwrap()), "{would:?}");
    assert!(!would.contains(&user.to_str().unwrap()), "{would:?}");
    assert!(!would.contains(&base.to_str().unwrap()), "{would:?}");
    assert!(other.exists(), "a dry run deletes nothing");
    // `store roots` and `path-info` agree.
    let r = p.run(&["store", "roots"]).ok();
    assert!(r.stdout().starts_with("link "), "{}", r.stdout());
    let info = json(
        &p.run(&["store", "path-info", user.to_str().unwrap(), "--json"])
            .ok(),
    );
    assert_eq!(info["root"], true, "{info}");
    assert_eq!(info["closure_objects"], 2, "{info}");

    let r = p.run(&["gc", "--json"]).ok();
    let v = json(&r);
    assert!(v["freed"].as_u64().unwrap() > 0, "{v}");
    assert!(!other.exists());
    assert!(user.exists() && base.exists());
    p.run(&["store", "verify"]).ok();
    // A realise after it builds what went and reuses what stayed.
    let again = json(&p.run(&["realise", "-A", "user", "--json"]).ok());
    assert_eq!(again["built"], serde_json::json!([]), "{again}");
    // The link removed: the root is stale, and everything goes.
    std::fs::remove_file(&link).unwrap();
    let v = json(&p.run(&["gc", "--json"]).ok());
    assert_eq!(v["stale_roots"].as_array().unwrap().len(), 1, "{v}");
    assert!(!user.exists() && !base.exists());
    p.run(&["store", "verify"]).ok();
    // An explicit root, and `--max-freed`.
    let base = realise(&p, "base", &[]);
    realise(&p, "other", &[]);
    p.run(&["store", "add-root", base.to_str().unwrap()]).ok();
    let v = json(&p.run(&["gc", "--max-freed", "1", "--json"]).ok());
    assert!(!v["deleted"].as_array().unwrap().is_empty(), "{v}");
    assert!(base.exists());
    p.run(&["store", "remove-root", base.to_str().unwrap()])
        .ok();
    p.run(&["gc"]).ok();
    assert!(!base.exists());
}

#[test]
fn an_export_keeps_its_output_for_keep_days() {
    let p = project();
    let out = p.path().join("pkgs");
    p.run(&[
        "export",
        "--conda",
        "-A",
        "other",
        "-o",
        out.to_str().unwrap(),
    ])
    .ok();
    let roots = json(&p.run(&["store", "roots", "--json"]).ok());
    let export = roots["roots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "export")
        .unwrap_or_else(|| panic!("{roots}"))
        .clone();
    let kept = PathBuf::from(export["target"].as_str().unwrap());
    p.run(&["gc"]).ok();
    assert!(kept.exists(), "kept for 30 days by default");
    p.run(&["gc", "--keep-days", "0"]).ok();
    assert!(!kept.exists());
    p.run(&["store", "verify"]).ok();
}

/// Starts `cbuild ARGS` in `p` with its store, in the background.
fn spawn(p: &Project, args: &[&str]) -> std::process::Child {
    Command::new(cbuild_bin())
        .args(args)
        .current_dir(p.path())
        .env("CBUILD_STORE", p.store())
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A DAG whose builds sleep a little: three targets sharing a chain.
const SLOW: &str = r#"
let
  step = fn(name, input) => package {
    name = name, version = "1",
    build_inputs = [host_tool("sleep")],
    script = ''
      sleep 0.2
      mkdir -p $out
      echo "${name} after ${input}" > $out/${name}.txt
    '',
  },
  a = step("a", "nothing"),
  b = step("b", a),
  c = step("c", b),
in {
  x = step("x", c),
  y = step("y", c),
  z = step("z", b),
}
"#;

#[test]
fn concurrent_realises_lose_nothing_to_a_gc_running_in_a_loop() {
    let p = Project::new().file("recipe.cb", SLOW);
    p.run(&["eval"]).ok();
    let stop = p.path().join("stop");
    let gc_loop = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "n=0; while [ ! -e {} ]; do \"$0\" gc -q >/dev/null || exit 1; n=$((n+1)); done; echo $n",
            stop.display()
        ))
        .arg(cbuild_bin())
        .current_dir(p.path())
        .env("CBUILD_STORE", p.store())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let workers: Vec<_> = ["x", "y", "z"]
        .iter()
        .map(|t| spawn(&p, &["realise", "-A", t, "--json"]))
        .collect();
    let mut built: Vec<String> = Vec::new();
    for w in workers {
        let out = w.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for b in v["built"].as_array().unwrap() {
            built.push(b.as_str().unwrap().to_string());
        }
        // What it printed exists when it ends (its outputs are its own
        // temporary roots until then; checked right away).
    }
    std::fs::write(&stop, "").unwrap();
    let g = gc_loop.wait_with_output().unwrap();
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    let loops: u32 = String::from_utf8_lossy(&g.stdout).trim().parse().unwrap();
    assert!(loops >= 2, "the collector ran {loops} time(s)");
    let mut unique = built.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), built.len(), "built twice: {built:?}");
    assert_eq!(unique.len(), 6, "a b c x y z: {built:?}");
    p.run(&["store", "verify"]).ok();
}

/// Kills `cbuild ARGS` with SIGKILL after `ms` milliseconds.
fn kill_after(p: &Project, args: &[&str], ms: u64) {
    let mut c = spawn(p, args);
    std::thread::sleep(std::time::Duration::from_millis(ms));
    let _ = c.kill();
    let _ = c.wait();
}

fn kills() -> u64 {
    std::env::var("CBUILD_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

/// A deterministic sequence of instants (ms) in `0..max`.
fn instants(n: u64, max: u64) -> Vec<u64> {
    let mut x: u64 = 0x9e3779b97f4a7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % max
        })
        .collect()
}

#[test]
fn sigkill_at_random_instants_leaves_a_store_that_verifies() {
    // CBUILD_CRASH_KILLS=100 for the long run.
    let p = Project::new().file("recipe.cb", SLOW);
    for (k, ms) in instants(kills(), 900).into_iter().enumerate() {
        match k % 3 {
            // A realise, a collection, an export, each killed mid-way.
            0 => kill_after(&p, &["realise", "-A", "x", "-A", "y", "-A", "z"], ms),
            1 => kill_after(
                &p,
                &["export", "--conda", "-A", "x", "-A", "z", "-o", "pkgs"],
                ms,
            ),
            _ => kill_after(&p, &["gc"], ms / 10),
        }
        let r = p.run(&["store", "verify", "--json"]);
        assert_eq!(r.code(), 0, "after kill {k} at {ms} ms: {}", r.stdout());
        if k % 5 == 4 {
            // Now and then everything is collected: the next realise
            // starts from nothing again.
            p.run(&["gc", "-q"]).ok();
        }
    }
    let v = json(
        &p.run(&["realise", "-A", "x", "-A", "y", "-A", "z", "--json"])
            .ok(),
    );
    assert_eq!(v["failed"], serde_json::json!([]), "{v}");
    p.run(&["store", "verify"]).ok();
    p.run(&["gc"]).ok();
    p.run(&["store", "verify"]).ok();
}

#[test]
fn a_truncated_database_is_reported_and_nothing_is_deleted() {
    let p = project();
    let out = realise(&p, "other", &[]);
    let db = p.store().join("db.sqlite");
    // Everything into the main file first, then cut it short.
    let ck = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('PRAGMA wal_checkpoint(TRUNCATE)'); c.close()",
        ])
        .arg(&db)
        .status()
        .unwrap();
    assert!(ck.success());
    let len = std::fs::metadata(&db).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    for args in [&["store", "verify"][..], &["gc"][..]] {
        let r = p.run(args).fails_with(2);
        assert!(r.stderr().contains("db.sqlite"), "{args:?}: {}", r.stderr());
        assert!(!r.stderr().contains("panicked"), "{}", r.stderr());
    }
    assert!(out.exists());
}

#[test]
fn a_store_of_a_newer_cbuild_is_refused_and_left_as_it_is() {
    let p = project();
    realise(&p, "other", &[]);
    let db = p.store().join("db.sqlite");
    let set = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('PRAGMA user_version = 99'); c.execute('PRAGMA wal_checkpoint(TRUNCATE)'); c.commit(); c.close()",
        ])
        .arg(&db)
        .status()
        .unwrap();
    assert!(set.success());
    let before = std::fs::read(&db).unwrap();
    for args in [
        &["store", "verify"][..],
        &["gc"][..],
        &["realise", "-A", "base"][..],
    ] {
        let r = p.run(args).fails_with(2);
        assert!(
            r.stderr()
                .contains("has schema version 99; this cbuild knows versions up to"),
            "{args:?}: {}",
            r.stderr()
        );
    }
    assert_eq!(std::fs::read(&db).unwrap(), before);
}

#[test]
fn a_database_that_lost_its_rows_does_not_make_gc_delete_the_store() {
    let fields: String = (1..=40).map(|i| format!("  n{i} = mk({i}),\n")).collect();
    let p = Project::new().file(
        "recipe.cb",
        format!(
            r#"
let mk = fn(i) => package {{
  name = "n${{i}}", version = "1",
  script = "mkdir -p $out; echo ${{i}} > $out/i",
}} in {{
{fields}}}
"#
        ),
    );
    p.run(&["realise"]).ok();
    let entries = std::fs::read_dir(p.store().join("store")).unwrap().count();
    assert!(entries > 64, "{entries}");
    // The database is lost: a new, empty one is made.
    for f in ["db.sqlite", "db.sqlite-wal", "db.sqlite-shm"] {
        let _ = std::fs::remove_file(p.store().join(f));
    }
    let r = p.run(&["gc"]).ok();
    assert!(
        r.stderr().contains("the database may have lost rows"),
        "{}",
        r.stderr()
    );
    assert_eq!(
        std::fs::read_dir(p.store().join("store")).unwrap().count(),
        entries
    );
}
