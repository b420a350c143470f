//! Resource faults, for real: a store on a small tmpfs that fills up, and a
//! store on a file system mounted read-only, each in a private mount
//! namespace (`unshare -m`) so that nothing outside the test sees them.

use std::path::Path;
use std::process::Command;

use crate::support::{Project, cbuild_bin};

const RECIPE: &str = r#"
{
  small = package { name = "small", version = "1", script = "mkdir -p $out; echo ok > $out/ok" },
  big = package {
    name = "big", version = "1",
    script = "mkdir -p $out; head -c 8000000 /dev/zero | tr '\\0' x > $out/big",
  },
}
"#;

/// Runs `script` (sh) in a private mount namespace with `$CB` the binary;
/// each `run NAME ARGS...` in it leaves `NAME.code`, `NAME.out` and
/// `NAME.err` in `results`.
fn in_namespace(p: &Project, script: &str) -> std::path::PathBuf {
    let results = p.path().join("results");
    std::fs::create_dir_all(&results).unwrap();
    let prelude = format!(
        r#"set -e
CB="{cb}"; R="{r}"
run() {{ n=$1; shift; set +e; "$CB" "$@" >"$R/$n.out" 2>"$R/$n.err"; echo $? >"$R/$n.code"; set -e; }}
"#,
        cb = cbuild_bin().display(),
        r = results.display()
    );
    let out = Command::new("unshare")
        .args(crate::support::mount_namespace())
        .args(["sh", "-c"])
        .arg(format!("{prelude}{script}"))
        .current_dir(p.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    results
}

fn result(results: &Path, name: &str) -> (i32, String, String) {
    let read = |ext: &str| std::fs::read_to_string(results.join(format!("{name}.{ext}"))).unwrap();
    (
        read("code").trim().parse().unwrap(),
        read("out"),
        read("err"),
    )
}

#[test]
fn a_full_disk_fails_the_command_clearly_and_leaves_the_store_valid() {
    let p = Project::new()
        .file("recipe.cb", RECIPE)
        .file("data/big.bin", vec![7u8; 6_000_000]);
    let store = p.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let r = in_namespace(
        &p,
        &format!(
            r#"mount -t tmpfs -o size=4m tmpfs {s}
run small --store {s} realise -A small
run big --store {s} realise -A big
run import --store {s} store add data/big.bin
run export --store {s} export --conda -A big -o {s}/pkgs
run verify --store {s} store verify --json
run again --store {s} realise -A small --json
run gc --store {s} gc
run verify2 --store {s} store verify
"#,
            s = store.display()
        ),
    );
    assert_eq!(result(&r, "small").0, 0);
    for step in ["big", "import", "export"] {
        let (code, _, err) = result(&r, step);
        assert_ne!(code, 0, "{step}: {err}");
        assert!(err.contains("No space left on device"), "{step}: {err}");
        assert!(!err.contains("panicked"), "{step}: {err}");
    }
    let (code, out, err) = result(&r, "verify");
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = result(&r, "again");
    assert_eq!(code, 0);
    assert!(out.contains("\"built\": []"), "{out}");
    assert_eq!(result(&r, "gc").0, 0);
    assert_eq!(result(&r, "verify2").0, 0);
}

#[test]
fn a_read_only_store_answers_queries_and_refuses_writes_clearly() {
    let p = Project::new().file("recipe.cb", RECIPE);
    let store = p.path().join("store");
    let out = p
        .run(&["--store", store.to_str().unwrap(), "realise", "-A", "small"])
        .ok()
        .stdout();
    let out = out.trim();
    let r = in_namespace(
        &p,
        &format!(
            r#"mount --bind {s} {s}
mount -o remount,ro,bind {s} {s}
run info --store {s} store path-info {out}
run verify --store {s} store verify
run roots --store {s} store roots
run realise --store {s} realise -A small
run gc --store {s} gc
run add --store {s} store add recipe.cb
"#,
            s = store.display()
        ),
    );
    for q in ["info", "verify", "roots"] {
        let (code, _, err) = result(&r, q);
        assert_eq!(code, 0, "{q}: {err}");
    }
    assert!(result(&r, "info").1.contains("kind:       output"));
    assert!(result(&r, "verify").1.contains("all match"));
    for (w, cmd) in [
        ("realise", "`cbuild realise`"),
        ("gc", "`cbuild gc`"),
        ("add", "`cbuild store add`"),
    ] {
        let (code, _, err) = result(&r, w);
        assert_eq!(code, 2, "{w}: {err}");
        assert!(
            err.contains("cannot be written (a read-only file system, or not yours)")
                && err.contains(cmd),
            "{w}: {err}"
        );
    }
}
