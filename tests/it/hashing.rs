//! What moves a derivation hash and what must not: hashes are functions of
//! what a build can see, and of nothing else.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use crate::support::Project;

const RECIPE: &str = r#"# a small DAG: d needs b and c, b needs a
let
  src = source(./src, gitignore = true),
  tool = host_tool("mytool"),
  a = derivation {
    name = "a",
    script = "cp ${src}/a.txt $out",
    env = { LEVEL = "1", MODE = "fast" },
    meta = { summary = "the first" },
  },
  b = derivation { name = "b", script = "cat ${a} > $out" },
  c = derivation { name = "c", builder = tool, args = ["x"] },
  d = derivation { name = "d", script = "cat ${b} ${c} > $out" },
in { a = a, b = b, c = c, d = d }
"#;

fn project() -> Project {
    let p = Project::new()
        .file("recipe.cb", RECIPE)
        .file("src/a.txt", "alpha\n")
        .file("src/.gitignore", "*.log\n")
        .file("tools/mytool", "#!/bin/sh\necho one\n");
    std::fs::set_permissions(
        p.path().join("tools/mytool"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    p
}

/// attr -> drv path, evaluating in `dir` with the project's `tools/` first
/// on PATH (a host tool is pinned by its path too, so it stays put).
fn hashes_in(p: &Project, dir: &std::path::Path) -> BTreeMap<String, String> {
    let path = format!(
        "{}:{}",
        p.path().join("tools").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let r = p.run_in(dir, &["eval", "--json"], &[("PATH", &path)]).ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout()).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["attr"].as_str().unwrap().to_string(),
                t["drv_path"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn hashes(p: &Project) -> BTreeMap<String, String> {
    hashes_in(p, p.path())
}

fn moved(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect()
}

fn edit(p: &Project, name: &str, from: &str, to: &str) {
    let text = p.read(name);
    assert!(text.contains(from), "{name} has no {from:?}");
    std::fs::write(p.path().join(name), text.replacen(from, to, 1)).unwrap();
}

#[test]
fn hashes_are_stable_across_runs_and_processes() {
    let p = project();
    let first = hashes(&p);
    assert_eq!(first.len(), 4);
    for _ in 0..3 {
        assert_eq!(hashes(&p), first);
    }
}

#[test]
fn hashes_do_not_depend_on_the_checkout_location() {
    let p = project();
    let here = hashes(&p);
    let elsewhere = tempfile::tempdir().unwrap();
    let copy = elsewhere.path().join("deeper/checkout-two");
    std::fs::create_dir_all(&copy).unwrap();
    for f in ["recipe.cb", "src/a.txt", "src/.gitignore"] {
        let to = copy.join(f);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(p.path().join(f), &to).unwrap();
    }
    assert_eq!(hashes_in(&p, &copy), here);
}

#[test]
fn what_must_not_move_a_hash() {
    let p = project();
    let base = hashes(&p);
    // Comments and whitespace.
    edit(
        &p,
        "recipe.cb",
        "  b = derivation",
        "  # b comes next\n\n  b  =  derivation",
    );
    assert_eq!(
        moved(&base, &hashes(&p)),
        Vec::<String>::new(),
        "comments and whitespace"
    );
    // Record key order, in env and in the result.
    edit(
        &p,
        "recipe.cb",
        "env = { LEVEL = \"1\", MODE = \"fast\" }",
        "env = { MODE = \"fast\", LEVEL = \"1\" }",
    );
    edit(
        &p,
        "recipe.cb",
        "in { a = a, b = b, c = c, d = d }",
        "in { d = d, c = c, b = b, a = a }",
    );
    assert_eq!(moved(&base, &hashes(&p)), Vec::<String>::new(), "key order");
    // meta.
    edit(
        &p,
        "recipe.cb",
        "summary = \"the first\"",
        "summary = \"the very first\", license = \"MIT\"",
    );
    assert_eq!(moved(&base, &hashes(&p)), Vec::<String>::new(), "meta");
    // File mtimes.
    let f = std::fs::File::options()
        .write(true)
        .open(p.path().join("src/a.txt"))
        .unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
        .unwrap();
    drop(f);
    assert_eq!(moved(&base, &hashes(&p)), Vec::<String>::new(), "mtimes");
    // Gitignored files, and .git.
    std::fs::write(p.path().join("src/build.log"), "noise").unwrap();
    std::fs::create_dir_all(p.path().join("src/.git")).unwrap();
    std::fs::write(p.path().join("src/.git/HEAD"), "ref: refs/heads/main").unwrap();
    assert_eq!(
        moved(&base, &hashes(&p)),
        Vec::<String>::new(),
        "ignored files"
    );
}

#[test]
fn what_moves_a_hash_moves_it_only_for_the_derivation_and_its_dependents() {
    let p = project();
    let mut before = hashes(&p);
    let mut check = |what: &str, expect: &[&str]| {
        let after = hashes(&p);
        assert_eq!(moved(&before, &after), expect, "{what}");
        before = after;
    };
    edit(&p, "recipe.cb", "cat ${a} > $out", "cat ${a} >> $out");
    check("b's script", &["b", "d"]);
    edit(&p, "recipe.cb", "LEVEL = \"1\"", "LEVEL = \"2\"");
    check("an env value of a", &["a", "b", "d"]);
    std::fs::write(p.path().join("src/a.txt"), "alphA\n").unwrap();
    check("a source byte", &["a", "b", "d"]);
    std::fs::write(p.path().join("tools/mytool"), "#!/bin/sh\necho two\n").unwrap();
    check("the host tool's bytes", &["c", "d"]);
    edit(&p, "recipe.cb", "args = [\"x\"]", "args = [\"y\"]");
    check("an input of d", &["c", "d"]);
}

#[test]
fn evaluation_never_runs_a_builder() {
    let marker = tempfile::tempdir().unwrap();
    let m = marker.path().join("ran");
    let p = Project::new().file(
        "recipe.cb",
        format!(
            "derivation {{ name = \"x\", script = \"touch {}\" }}",
            m.display()
        ),
    );
    p.run(&["eval"]).ok();
    assert!(!m.exists(), "evaluation ran the builder");
}

#[test]
fn evaluation_reads_only_what_it_records() {
    // Every file of the project that evaluation opens is a recipe, a
    // read_file target or part of an imported source: nothing else can
    // influence a hash without being recorded.
    let Ok(strace) = which("strace") else {
        panic!("strace is needed for this test (.ci/setup installs it)");
    };
    let p = Project::new()
        .file(
            "recipe.cb",
            r#"let
                 lib = import(./lib.cb),
                 src = source(./src),
                 note = read_file(./note.txt),
               in derivation { name = "x", script = "cat ${src}/a ${lib.file}; echo ${note}" }"#,
        )
        .file("lib.cb", "{ file = \"${./data.txt}\" }")
        .file("data.txt", "d")
        .file("note.txt", "n")
        .file("src/a", "a")
        .file("unrelated.txt", "never read")
        .file("other.cb", "{ never = 1 }");
    let log = p.path().join("strace.log");
    let out = std::process::Command::new(strace)
        .args(["-f", "-qq", "-e", "trace=open,openat,openat2", "-o"])
        .arg(&log)
        .arg(crate::support::cbuild_bin())
        .args(["eval", "recipe.cb"])
        .current_dir(p.path())
        .env("CBUILD_STORE", p.store())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let root = p.path().canonicalize().unwrap();
    let store = p.store();
    let mut opened: Vec<String> = text
        .lines()
        .filter(|l| !l.contains("ENOENT"))
        .filter_map(|l| l.split('"').nth(1))
        .map(|f| {
            let abs = if f.starts_with('/') {
                std::path::PathBuf::from(f)
            } else {
                root.join(f)
            };
            abs.to_string_lossy().into_owned()
        })
        .filter(|f| {
            f.starts_with(&*root.to_string_lossy()) && !f.starts_with(&*store.to_string_lossy())
        })
        .map(|f| {
            f[root.to_string_lossy().len()..]
                .trim_start_matches('/')
                .to_string()
        })
        .collect();
    opened.sort();
    opened.dedup();
    let allowed = [
        "",
        "recipe.cb",
        "lib.cb",
        "data.txt",
        "note.txt",
        "src",
        "src/a",
    ];
    for f in &opened {
        assert!(
            allowed.contains(&f.as_str()),
            "evaluation opened {f:?}; all: {opened:?}"
        );
    }
    assert!(opened.contains(&"recipe.cb".to_string()), "{opened:?}");
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .ok_or(())
}

#[test]
fn a_store_inside_the_imported_folder_is_left_out() {
    // The project's store is `.store` inside it, and the recipe imports the
    // whole project.
    let p = crate::support::Project::new()
        .file("recipe.cb", "{ src = source(./.) }")
        .file("data.txt", "data\n");
    let eval = || {
        p.run(&["eval", "--expr", "import(./recipe.cb)"])
            .ok()
            .stdout()
    };
    let first = eval();
    // The store changes (a new database page, a new object) ...
    p.run(&["store", "add", "data.txt"]).ok();
    // ... and the source does not.
    assert_eq!(eval(), first);
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    let names: Vec<String> = std::fs::read_dir(v["src"].as_str().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    // The recipe file is left out too (source() does that unless asked).
    assert_eq!(names, ["data.txt"]);
}
