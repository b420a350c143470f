//! The store on disk: its layout, its database, atomic imports, and every
//! kind of bad input ending with exit 2, a message naming the path, and a
//! store left valid.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::support::{Project, cbuild_bin};

const RECIPE: &str = r#"let src = source(./src) in
{ hello = derivation { name = "hello", script = "cp ${src}/a $out" } }"#;

fn project() -> Project {
    Project::new()
        .file("recipe.cb", RECIPE)
        .file("src/a", "a\n")
}

/// Queries the database independently of cbuild, with Python's sqlite3.
fn sqlite(db: &std::path::Path, sql: &str) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print('\\n'.join('|'.join(map(str,r)) for r in c.execute(sys.argv[2])))",
        ])
        .arg(db)
        .arg(sql)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_new_store_has_its_layout_schema_and_read_only_objects() {
    let p = project();
    let drv = p.run(&["eval", "-A", "hello"]).ok().stdout();
    let root = p.store();
    for d in ["store", "logs", "roots", "tmp", "locks"] {
        assert!(root.join(d).is_dir(), "{d}/ missing");
    }
    let db = root.join("db.sqlite");
    assert_eq!(sqlite(&db, "PRAGMA user_version"), "3");
    assert_eq!(sqlite(&db, "PRAGMA journal_mode"), "wal");
    assert_eq!(
        sqlite(
            &db,
            "SELECT kind, count(*) FROM objects GROUP BY kind ORDER BY kind"
        ),
        "drv|1\nsource|1"
    );
    // The .drv refers to the imported source, and the source is read-only
    // with the store mtime.
    let info = p
        .run(&["store", "path-info", drv.trim(), "--json"])
        .ok()
        .stdout();
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    let src = v["references"][0].as_str().unwrap().to_string();
    assert!(src.ends_with("-source"), "{v}");
    let m = std::fs::metadata(format!("{src}/a")).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o444);
    assert_eq!(
        std::fs::metadata(&src).unwrap().permissions().mode() & 0o777,
        0o555
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(m.mtime(), 1);
    // Nothing is left in tmp/ after the process ends.
    assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);
    // path-info of the closure lists both objects.
    let closure = p
        .run(&["store", "path-info", drv.trim(), "--closure", "--json"])
        .ok()
        .stdout();
    let v: serde_json::Value = serde_json::from_str(&closure).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
}

#[test]
fn a_second_eval_writes_nothing_new_and_the_same_source_is_shared() {
    let p = project();
    p.run(&["eval"]).ok();
    let db = p.store().join("db.sqlite");
    let count = sqlite(&db, "SELECT count(*) FROM objects");
    p.run(&["eval"]).ok();
    assert_eq!(sqlite(&db, "SELECT count(*) FROM objects"), count);
}

#[test]
fn stale_scratch_directories_are_removed_by_the_next_process() {
    let p = project();
    p.run(&["eval"]).ok();
    let stale = p.store().join("tmp/999999-0");
    std::fs::create_dir_all(stale.join("half-written")).unwrap();
    std::fs::write(stale.join("half-written/f"), "x").unwrap();
    std::fs::set_permissions(
        stale.join("half-written"),
        std::fs::Permissions::from_mode(0o555),
    )
    .unwrap();
    // And one whose lock file is left behind but free.
    let stale2 = p.store().join("tmp/999998-0");
    std::fs::create_dir_all(&stale2).unwrap();
    std::fs::write(p.store().join("tmp/999998-0.lock"), "").unwrap();
    p.run(&["eval"]).ok();
    assert!(
        !stale2.exists(),
        "the stale locked scratch directory is still there"
    );
    assert!(!p.store().join("tmp/999998-0.lock").exists());
    assert!(
        !stale.exists(),
        "the stale scratch directory is still there"
    );
}

#[test]
fn concurrent_evaluations_share_the_store_without_failing() {
    let p = project();
    let children: Vec<_> = (0..6)
        .map(|_| {
            Command::new(cbuild_bin())
                .args(["eval"])
                .current_dir(p.path())
                .env("CBUILD_STORE", p.store())
                .output()
        })
        .collect();
    let mut outs = Vec::new();
    for c in children {
        let out = c.expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        outs.push(out.stdout);
    }
    assert!(outs.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn bad_recipes_name_the_path_and_leave_the_store_valid() {
    let p = project();
    p.run(&["eval"]).ok();
    let db = p.store().join("db.sqlite");
    let before = sqlite(&db, "SELECT path FROM objects ORDER BY path");
    for (recipe, expect) in [
        ("source(./nope)", "nope does not exist"),
        (
            "host_tool(\"no-such-tool-xyz\")",
            "host tool `no-such-tool-xyz` is not on PATH",
        ),
        ("host_tool(\"/bin/sh\")", "`/bin/sh` is not a program name"),
        (
            r#"derivation { name = "a/b", builder = "/bin/true" }"#,
            "invalid name `a/b`",
        ),
        (
            r#"derivation { name = "x", builder = "/bin/true", scirpt = "" }"#,
            "did you mean `script`?",
        ),
        (
            r#"derivation { name = "x" }"#,
            "needs a `script` or a `builder`",
        ),
        (
            r#"derivation { name = "x", builder = "/bin/true", env = { A = [1] } }"#,
            "`env.A` must be a string",
        ),
        (
            r#"derivation { name = "x", builder = "/bin/true", fixed_hash = "md5:00" }"#,
            "invalid hash `md5:00`",
        ),
        (
            r#"fetch("ftp://x/y.tar", "sha256:00")"#,
            "unsupported URL `ftp://x/y.tar`",
        ),
    ] {
        let p2 = Project::new().file("bad.cb", recipe);
        let r = p2.run_in(
            p2.path(),
            &["eval", "bad.cb"],
            &[("CBUILD_STORE", p.store().to_str().unwrap())],
        );
        let r = r.fails_with(2);
        assert!(r.stderr().contains(expect), "{recipe}: {}", r.stderr());
        assert!(
            r.stderr().contains("bad.cb:1:"),
            "{recipe}: no location in {}",
            r.stderr()
        );
    }
    assert_eq!(
        sqlite(&db, "SELECT path FROM objects ORDER BY path"),
        before
    );
}

#[test]
fn unusable_stores_exit_2_naming_the_path() {
    let p = project();
    // A file where the store should be.
    std::fs::write(p.path().join("a-file"), "x").unwrap();
    let r = p.run(&["--store", "a-file", "eval"]).fails_with(2);
    assert!(
        r.stderr().contains("a-file is not a directory"),
        "{}",
        r.stderr()
    );
    // A place that cannot be created.
    let r = p
        .run(&["--store", "/proc/1/cbuild-store", "eval"])
        .fails_with(2);
    assert!(
        r.stderr().contains("/proc/1/cbuild-store"),
        "{}",
        r.stderr()
    );
    // A corrupt database is reported, and not touched.
    p.run(&["eval"]).ok();
    let db = p.store().join("db.sqlite");
    let _ = std::fs::remove_file(p.store().join("db.sqlite-wal"));
    let _ = std::fs::remove_file(p.store().join("db.sqlite-shm"));
    std::fs::write(&db, vec![0x42u8; 8192]).unwrap();
    let r = p.run(&["eval"]).fails_with(2);
    assert!(
        r.stderr()
            .contains("db.sqlite is corrupt or not a cbuild database"),
        "{}",
        r.stderr()
    );
    assert_eq!(std::fs::read(&db).unwrap(), vec![0x42u8; 8192]);
}

#[test]
fn path_info_of_a_path_not_in_the_store_names_it() {
    let p = project();
    p.run(&["eval"]).ok();
    let fake = format!(
        "{}/store/00000000000000000000000000000000-x",
        p.store().display()
    );
    let r = p.run(&["store", "path-info", &fake]).fails_with(2);
    assert!(
        r.stderr().contains("is not a valid object"),
        "{}",
        r.stderr()
    );
    let r = p.run(&["store", "path-info", "/etc/passwd"]).fails_with(2);
    assert!(r.stderr().contains("/etc/passwd"), "{}", r.stderr());
    let r = p.run(&["show-derivation", "/nowhere/x.drv"]).fails_with(2);
    assert!(r.stderr().contains("/nowhere/x.drv"), "{}", r.stderr());
}

#[test]
fn show_derivation_prints_the_stored_derivation() {
    let p = project();
    let drv = p.run(&["eval", "-A", "hello"]).ok().stdout();
    let by_path = p.run(&["show-derivation", drv.trim()]).ok().stdout();
    let by_attr = p.run(&["show-derivation", "-A", "hello"]).ok().stdout();
    assert_eq!(by_path, by_attr);
    let v: serde_json::Value = serde_json::from_str(&by_path).unwrap();
    let d = &v[drv.trim()];
    assert_eq!(d["name"], "hello");
    assert_eq!(d["outputs"], serde_json::json!(["out"]));
    assert!(d["host_tools"]["sh"]["blake3"].as_str().unwrap().len() == 64);
    assert!(d["args"][2].as_str().unwrap().contains("-source/a $out"));
}

#[test]
fn concurrent_imports_of_one_source_register_one_complete_object() {
    // Several processes importing the same new tree at once: each must
    // succeed, and the registered object must be complete.
    let p = Project::new().file(
        "recipe.cb",
        "derivation { name = \"x\", script = \"cat ${source(./big)}/f0\" }",
    );
    for k in 0..1500 {
        std::fs::create_dir_all(p.path().join(format!("big/d{}", k % 30))).unwrap();
        std::fs::write(
            p.path().join(format!("big/d{}/f{k}", k % 30)),
            format!("{k}"),
        )
        .unwrap();
    }
    std::fs::write(p.path().join("big/f0"), "0").unwrap();
    for round in 0..4 {
        let store = p.path().join(format!("store-{round}"));
        let children: Vec<_> = (0..4)
            .map(|_| {
                Command::new(cbuild_bin())
                    .args(["eval"])
                    .current_dir(p.path())
                    .env("CBUILD_STORE", &store)
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut c in children {
            assert!(
                c.wait().unwrap().success(),
                "round {round}: an import failed"
            );
        }
        let src = std::fs::read_dir(store.join("store"))
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().ends_with("-source"))
            .unwrap()
            .path();
        let n = walkdir_count(&src);
        assert_eq!(n, 1501, "round {round}: the object has {n} files");
    }
}

fn walkdir_count(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            n += walkdir_count(&e.path());
        } else {
            n += 1;
        }
    }
    n
}

#[test]
fn concurrent_processes_keep_their_scratch_directories() {
    let p = project();
    p.run(&["eval"]).ok();
    for f in 0..8 {
        std::fs::write(p.path().join(format!("file{f}")), format!("{f}")).unwrap();
    }
    for round in 0..5 {
        let children: Vec<_> = (0..8)
            .map(|f| {
                Command::new(cbuild_bin())
                    .args(["store", "add", &format!("file{f}")])
                    .current_dir(p.path())
                    .env("CBUILD_STORE", p.store())
                    .output()
            })
            .collect();
        for c in children {
            let out = c.unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn non_target_derivations_are_shown_from_the_database() {
    let p = Project::new().file(
        "recipe.cb",
        r#"let a = derivation { name = "a", builder = "/bin/true" } in
           derivation { name = "b", builder = "/bin/true", args = ["${a}"] }"#,
    );
    let b = p.run(&["eval"]).ok().stdout();
    let v: serde_json::Value =
        serde_json::from_str(&p.run(&["show-derivation", b.trim()]).ok().stdout()).unwrap();
    let a = v[b.trim()]["input_drvs"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    assert!(
        !std::path::Path::new(&a).exists(),
        "only printed targets get a file"
    );
    let shown = p.run(&["show-derivation", &a]).ok().stdout();
    assert!(shown.contains("\"name\": \"a\""), "{shown}");
}

#[test]
fn symlinks_import_as_symlinks_and_files_get_store_modes_whatever_the_umask() {
    use std::os::unix::fs::MetadataExt;
    let p = Project::new().file("real", "r").file("dir/x", "x");
    std::os::unix::fs::symlink("real", p.path().join("lnk")).unwrap();
    std::os::unix::fs::symlink("dir", p.path().join("dirlink")).unwrap();
    for (what, name) in [("lnk", "-lnk"), ("dirlink", "-dirlink")] {
        let out = p.run(&["store", "add", what]).ok().stdout();
        assert!(out.trim().ends_with(name), "{what}: {out}");
        assert!(
            std::fs::symlink_metadata(out.trim())
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 077 && {} store add dir",
            cbuild_bin().display()
        ))
        .current_dir(p.path())
        .env("CBUILD_STORE", p.store())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let obj = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        std::fs::metadata(format!("{obj}/x")).unwrap().mode() & 0o777,
        0o444
    );
}

#[test]
fn exclude_patterns_follow_gitignore_syntax() {
    let p = Project::new()
        .file("s/a.o", "a")
        .file("s/sub/b.o", "b")
        .file("s/keep.c", "c")
        .file(
            "recipe.cb",
            r#"derivation { name = "x", script = "cat ${source(./s, exclude = ["*.o", "!sub/b.o"])}/keep.c" }"#,
        );
    let drv = p.run(&["eval"]).ok().stdout();
    let v: serde_json::Value =
        serde_json::from_str(&p.run(&["show-derivation", drv.trim()]).ok().stdout()).unwrap();
    let src = v[drv.trim()]["input_sources"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!std::path::Path::new(&format!("{src}/a.o")).exists());
    assert!(
        std::path::Path::new(&format!("{src}/sub/b.o")).exists(),
        "the negation was ignored"
    );
    assert!(std::path::Path::new(&format!("{src}/keep.c")).exists());
}

#[test]
fn a_store_of_schema_1_is_migrated_when_opened() {
    let p = project();
    p.run(&["eval", "-A", "hello"]).ok();
    let db = p.store().join("db.sqlite");
    // As the cbuild before migration 2 left it.
    sqlite(&db, "DROP TABLE checks");
    sqlite(&db, "DROP INDEX realisations_by_object");
    sqlite(&db, "PRAGMA user_version = 1");
    p.run(&["eval", "-A", "hello"]).ok();
    assert_eq!(sqlite(&db, "PRAGMA user_version"), "3");
    assert_eq!(sqlite(&db, "SELECT count(*) FROM checks"), "0");
    assert_eq!(
        sqlite(
            &db,
            "SELECT count(*) FROM sqlite_master WHERE name = 'realisations_by_object'"
        ),
        "1"
    );
}

#[test]
fn a_package_set_is_registered_and_its_drv_files_appear_when_needed() {
    let fields: String = (0..150)
        .map(|i| {
            format!(
                "  p{i} = package {{ name = \"p{i}\", version = \"1\", script = \"echo {i} > $out\" }},\n"
            )
        })
        .collect();
    let p = Project::new().file("set.cb", format!("{{\n{fields}}}\n"));
    let out = p.run(&["eval", "set.cb"]).ok().stdout();
    let paths: Vec<&str> = out.lines().collect();
    assert_eq!(paths.len(), 150);
    // More than 100 targets: rows only, no files yet.
    for d in &paths {
        assert!(!std::path::Path::new(d).exists(), "{d}");
    }
    p.run(&["store", "verify"]).ok();
    // A command that names one writes it, byte for byte the database's.
    let shown = p.run(&["show-derivation", paths[7]]).ok().stdout();
    assert!(shown.contains(paths[7]), "{shown}");
    assert!(std::path::Path::new(paths[7]).is_file());
    p.run(&["realise", paths[9]]).ok();
    assert!(std::path::Path::new(paths[9]).is_file());
    p.run(&["store", "verify"]).ok();
    // One target: its file is there when eval returns.
    let one = p.run(&["eval", "set.cb", "-A", "p3"]).ok().stdout();
    assert!(std::path::Path::new(one.trim()).is_file());
}
