//! What a build, a package or a store directory must never do to the host,
//! tried for real (issue 19). Every test holds whoever runs it: as root, a
//! build runs as a subordinate build user; as an ordinary user, as that user.

use std::os::unix::fs::MetadataExt;

use crate::support::Project;

/// A host file's mode and modification time.
fn stamp(path: &str) -> (u32, i64, i64) {
    let m = std::fs::metadata(path).unwrap();
    (m.mode(), m.mtime(), m.mtime_nsec())
}

#[test]
fn a_build_cannot_change_kernel_settings_or_dev_null_whoever_runs_it() {
    let core = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    let swappiness = std::fs::read_to_string("/proc/sys/vm/swappiness").unwrap();
    let null = stamp("/dev/null");
    // Each attempt writes back the value that is there (so that a sandbox
    // that lets it through changes nothing): whether the write was allowed
    // is what counts. `core_pattern` starting with `|` is a program the
    // kernel runs as the host's root when any process dumps core.
    let p = Project::new().file(
        "recipe.cb",
        r#"let cat = host_tool("cat"), chmod = host_tool("chmod"), touch = host_tool("touch"),
               id = host_tool("id") in
           derivation {
             name = "escape", build_inputs = [cat, chmod, touch, id],
             script = ''
               try() { if (eval "$2") 2>/dev/null; then echo "$1 allowed"; else echo "$1 denied"; fi; }
               {
                 id -u
                 try core_pattern 'v=$(cat /proc/sys/kernel/core_pattern); printf "%s\n" "$v" > /proc/sys/kernel/core_pattern'
                 try swappiness 'v=$(cat /proc/sys/vm/swappiness); echo "$v" > /proc/sys/vm/swappiness'
                 try sysrq 'echo h > /proc/sysrq-trigger'
                 try chmod_null 'chmod 666 /dev/null'
                 try utime_null 'touch -r /dev/null /dev/null'
               } > $out
             '',
           }"#,
    );
    let out = p.run(&["realise", "-q", "recipe.cb"]).ok().stdout();
    let report = std::fs::read_to_string(out.trim()).unwrap();
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(
        lines,
        [
            "1000",
            "core_pattern denied",
            "swappiness denied",
            "sysrq denied",
            "chmod_null denied",
            "utime_null denied"
        ],
        "{report}"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap(),
        core
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/vm/swappiness").unwrap(),
        swappiness
    );
    assert_eq!(stamp("/dev/null"), null);
    // What the build made belongs to whoever runs cbuild, not to the build
    // user.
    let m = std::fs::symlink_metadata(out.trim()).unwrap();
    assert_eq!(m.uid(), nix::unistd::geteuid().as_raw());
}

#[test]
fn as_root_builds_run_as_a_build_user_that_owns_nothing_of_the_host() {
    let Some((uid, _)) = cbuild::build::sandbox::user::build_user() else {
        // As an ordinary user the build is that user: nothing more to show
        // than the test above does.
        assert!(!nix::unistd::geteuid().is_root());
        return;
    };
    assert_ne!(uid, 0);
    // The build writes a file into its build directory and stops there:
    // `--keep-failed` keeps the directory, so its owner on the host shows.
    let p = Project::new().file(
        "recipe.cb",
        r#"derivation { name = "who", script = "echo x > mine; exit 3" }"#,
    );
    let err = p
        .run(&["realise", "recipe.cb", "--keep-failed"])
        .fails_with(1)
        .stderr();
    let kept = std::fs::read_dir(p.store().join("kept"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mine = kept.join("build/mine");
    assert_eq!(std::fs::metadata(&mine).unwrap().uid(), uid, "{err}");
    // And `--sandbox=off` would run the builder as root: refused.
    let err = p
        .run(&["realise", "recipe.cb", "--sandbox=off"])
        .fails_with(2)
        .stderr();
    assert!(err.contains("as root"), "{err}");
}

/// Every entry under `dir`, as relative paths, sorted.
fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut all: Vec<String> = walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .flatten()
        .map(|e| {
            e.path()
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    all.sort();
    all
}

#[test]
fn a_directory_that_is_not_a_store_is_refused_and_loses_nothing() {
    let p = Project::new().file(
        "recipe.cb",
        r#"derivation { name = "x", script = "echo hi > $out" }"#,
    );
    // A home directory: a `tmp/` of the user's own, with no `.lock` beside
    // its entries.
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("tmp/project")).unwrap();
    std::fs::write(home.path().join("tmp/notes.txt"), "mine").unwrap();
    std::fs::write(home.path().join("tmp/project/main.c"), "int main;").unwrap();
    std::fs::write(home.path().join(".profile"), "PATH=...").unwrap();
    let before = listing(home.path());
    let store = home.path().to_string_lossy().into_owned();
    for args in [
        &["realise", "recipe.cb"][..],
        &["log", "recipe.cb"],
        &["store", "verify"],
        &["gc"],
    ] {
        let err = p
            .run_env(args, &[("CBUILD_STORE", &store)])
            .fails_with(2)
            .stderr();
        assert!(err.contains("is not a cbuild store"), "{args:?}: {err}");
        assert_eq!(listing(home.path()), before, "{args:?}");
    }
    // `--store /` the same.
    let err = p
        .run(&["--store", "/", "store", "verify"])
        .fails_with(2)
        .stderr();
    assert!(err.contains("/ is not a cbuild store"), "{err}");
}

#[test]
fn read_only_commands_create_no_store_and_a_store_keeps_what_is_not_cbuild_s() {
    let p = Project::new().file(
        "recipe.cb",
        r#"derivation { name = "x", script = "echo hi > $out" }"#,
    );
    let fresh = p.path().join("fresh");
    let fresh_s = fresh.to_string_lossy().into_owned();
    let env = [("CBUILD_STORE", fresh_s.as_str())];
    let err = p
        .run_env(&["log", "recipe.cb"], &env)
        .fails_with(2)
        .stderr();
    assert!(err.contains("no build log"), "{err}");
    p.run_env(&["store", "verify"], &env).ok();
    assert!(
        !fresh.exists(),
        "a read-only command made {}",
        fresh.display()
    );
    // An empty directory becomes a store, marked as one.
    std::fs::create_dir(&fresh).unwrap();
    p.run_env(&["realise", "recipe.cb"], &env).ok();
    assert!(fresh.join("cbuild-store").is_file());
    // What someone else put in its tmp/ is not cbuild's to remove; a
    // crashed process's scratch directory (no lock held) is.
    std::fs::write(fresh.join("tmp/notes.txt"), "mine").unwrap();
    std::fs::create_dir_all(fresh.join("tmp/backup/1")).unwrap();
    std::fs::create_dir_all(fresh.join("tmp/999999-0/half-made")).unwrap();
    p.run_env(&["realise", "recipe.cb"], &env).ok();
    assert!(fresh.join("tmp/notes.txt").is_file());
    assert!(fresh.join("tmp/backup/1").is_dir());
    assert!(!fresh.join("tmp/999999-0").exists());
}

#[test]
fn directory_sources_and_outputs_build_verify_and_collect_for_whoever_runs_cbuild() {
    // As an ordinary user (CI's second pass, `.ci/unprivileged`), moving a
    // read-only (0555) directory into `store/` or out of it was refused:
    // every directory source and output failed.
    let p = Project::new()
        .file("src/a.txt", "a\n")
        .file("src/sub/b.txt", "b\n")
        .file(
            "recipe.cb",
            r#"let cp = host_tool("cp"), mkdir = host_tool("mkdir"), chmod = host_tool("chmod"),
                   src = source(./src) in
               derivation {
                 name = "tree", build_inputs = [cp, mkdir, chmod],
                 script = "mkdir -p $out/share; cp -r ${src}/. $out/share/; chmod 555 $out/share $out",
               }"#,
        );
    let out = p.run(&["realise", "-q", "recipe.cb"]).ok().stdout();
    let out = std::path::PathBuf::from(out.trim());
    assert_eq!(
        std::fs::read_to_string(out.join("share/sub/b.txt")).unwrap(),
        "b\n"
    );
    assert_eq!(
        std::fs::metadata(&out).unwrap().mode() & 0o7777,
        0o555,
        "{}",
        out.display()
    );
    p.run(&["store", "verify"]).ok();
    // Collected once nothing roots it: the directories go too.
    p.run(&["gc"]).ok();
    assert!(!out.exists(), "{} survived gc", out.display());
    let left: Vec<_> = std::fs::read_dir(p.store().join("store"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_subdir_that_climbs_out_of_the_channel_is_refused_everywhere() {
    let p = crate::support::tiny_project();
    let pkg = crate::support::tiny_package(&p);
    let channel = p.path().join("deep/er/channel");
    std::fs::create_dir_all(&channel).unwrap();
    // What a `../../x` subdir would have written into, and deleted.
    let victim = p.path().join("deep/x");
    std::fs::create_dir_all(victim.join("shards")).unwrap();
    std::fs::write(victim.join("shards/keep"), "mine").unwrap();
    for subdir in ["../../x", "/tmp/abs", "linux-64/../../x", "not-a-platform"] {
        let evil = crate::support::rewritten(&pkg, &p.path().join("evil"), |name, bytes| {
            if name == "info/index.json" {
                let mut j: serde_json::Value = serde_json::from_slice(bytes).unwrap();
                j["subdir"] = subdir.into();
                *bytes = serde_json::to_vec(&j).unwrap();
            }
        });
        let audit = p
            .run(&["audit", evil.to_str().unwrap()])
            .fails_with(1)
            .stdout();
        assert!(
            audit.contains("not a platform conda knows"),
            "{subdir}: {audit}"
        );
        let err = p
            .run(&[
                "publish",
                evil.to_str().unwrap(),
                "--to",
                channel.to_str().unwrap(),
            ])
            .fails_with(1)
            .stderr();
        assert!(
            err.contains("not a platform conda knows"),
            "{subdir}: {err}"
        );
        assert!(victim.join("shards/keep").is_file(), "{subdir}");
        assert_eq!(
            std::fs::read_dir(&victim).unwrap().count(),
            1,
            "{subdir}: something was written beside the channel"
        );
        assert!(!std::path::Path::new("/tmp/abs").exists());
    }
}

#[test]
fn export_refuses_links_that_lead_out_of_the_prefix() {
    let p = Project::new().file(
        "recipe.cb",
        r#"let ln = host_tool("ln"), mkdir = host_tool("mkdir") in {
             passwd = package {
               name = "passwd", version = "1", build_inputs = [ln, mkdir],
               script = "mkdir -p $out/etc; ln -s /etc/passwd $out/etc/passwd",
             },
             chain = package {
               name = "chain", version = "1", build_inputs = [ln, mkdir],
               script = "mkdir -p $out/sub; ln -s .. $out/sub/up; ln -s up/.. $out/sub/esc",
             },
           }"#,
    );
    for (attr, file) in [("passwd", "etc/passwd"), ("chain", "sub/esc")] {
        let err = p
            .run(&["export", "--conda", "-A", attr, "--channel", "ch"])
            .fails_with(1)
            .stderr();
        assert!(
            err.contains(&format!("`{file}`")) && err.contains("outside the prefix"),
            "{attr}: {err}"
        );
        assert!(
            !p.path().join("ch/linux-64").exists()
                || std::fs::read_dir(p.path().join("ch/linux-64"))
                    .unwrap()
                    .all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".conda")),
            "{attr}"
        );
    }
}
