//! `cbuild audit` on built outputs: real builds, findings named by file.

use crate::support::Project;

fn project() -> Project {
    let greet = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/greet");
    let mut p = Project::new();
    for f in ["greet.c", "greet.h", "hello.c"] {
        p = p.file(&format!("src/{f}"), std::fs::read(greet.join(f)).unwrap());
    }
    p.file(
        "src/recipe.cb",
        std::fs::read_to_string(greet.join("recipe.cb")).unwrap(),
    )
    .file(
        "src/bad.cb",
        r#"
let src = source(./.), cc = host_tool("cc") in {
  rpath = package {
    name = "rpath", version = "1", src = src, build_inputs = [cc],
    script = ''
      mkdir -p $out/bin
      cc -o $out/bin/x ${src}/hello.c ${src}/greet.c -Wl,-rpath,/opt/vendor/lib
    '',
  },
  home = package {
    name = "home", version = "1",
    script = ''
      mkdir -p $out/etc
      echo "config in /home/someone/.x" > $out/etc/conf
    '',
  },
  undeclared = package {
    name = "undeclared", version = "1", src = src,
    script = ''
      mkdir -p $out
      echo ${src} | sed 's|/[0-9a-z]\{32\}-|/00000000000000000000000000000000-|' > $out/ref
    '',
  },
}
"#,
    )
}

#[test]
fn a_clean_program_passes_and_lists_what_comes_from_the_host() {
    let p = project();
    let src = p.path().join("src");
    p.run_in(&src, &["realise", "-A", "hello"], &[]).ok();
    let r = p
        .run_in(&src, &["audit", "-A", "hello", "--closure", "--json"], &[])
        .ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout()).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2, "hello and libgreet: {v}");
    let all: Vec<(String, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|o| o["findings"].as_array().unwrap().clone())
        .map(|f| {
            (
                f["severity"].as_str().unwrap().to_string(),
                f["what"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(all.iter().all(|(s, _)| s == "info"), "{all:?}");
    assert!(
        all.iter()
            .any(|(_, w)| w == "needs libc.so.6 from the host's C library"),
        "{all:?}"
    );
}

#[test]
fn findings_name_the_file_and_what() {
    let p = project();
    let src = p.path().join("src");
    for (attr, file, what) in [
        (
            "rpath",
            "bin/x",
            "its RUNPATH/RPATH entry /opt/vendor/lib is outside its closure",
        ),
        ("home", "etc/conf", "mentions a home directory (/home)"),
        ("undeclared", "ref", "which is not in its closure"),
    ] {
        p.run_in(&src, &["realise", "bad.cb", "-A", attr], &[]).ok();
        let r = p
            .run_in(&src, &["audit", "bad.cb", "-A", attr, "--json"], &[])
            .fails_with(1);
        let v: serde_json::Value = serde_json::from_str(&r.stdout()).unwrap();
        let errors: Vec<(&str, &str)> = v[0]["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["severity"] == "error")
            .map(|f| (f["file"].as_str().unwrap(), f["what"].as_str().unwrap()))
            .collect();
        assert_eq!(errors.len(), 1, "{attr}: {errors:?}");
        assert_eq!(errors[0].0, file, "{attr}");
        assert!(errors[0].1.contains(what), "{attr}: {errors:?}");
    }
}

#[test]
fn a_tampered_mode_and_an_unbuilt_target_are_reported() {
    use std::os::unix::fs::PermissionsExt;
    let p = project();
    let src = p.path().join("src");
    let r = p
        .run_in(&src, &["audit", "bad.cb", "-A", "home"], &[])
        .fails_with(2);
    assert!(
        r.stderr().contains("not built: run cbuild realise first"),
        "{}",
        r.stderr()
    );
    let out = p
        .run_in(&src, &["realise", "-A", "libgreet"], &[])
        .ok()
        .stdout();
    let lib = std::path::Path::new(out.trim()).join("include/greet.h");
    let dir = lib.parent().unwrap().to_path_buf();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o666)).unwrap();
    let r = p
        .run_in(&src, &["audit", "-A", "libgreet"], &[])
        .fails_with(1);
    assert!(
        r.stdout()
            .contains("error include/greet.h: is world-writable"),
        "{}",
        r.stdout()
    );
}
