//! `cbuild audit PKG.conda`, the origin half: real exports rebuilt in other,
//! empty stores from the provenance the package carries, and packages
//! altered after the export (payload and paths.json together, metadata)
//! that the structure checks alone let through.

use std::path::{Path, PathBuf};

use sha2::Digest;

use crate::support::Project;

/// The greet example in `src/` of a fresh project (as a fresh clone has it).
fn greet() -> Project {
    let greet = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/greet");
    let mut p = Project::new();
    for f in ["greet.c", "greet.h", "hello.c", "recipe.cb"] {
        p = p.file(&format!("src/{f}"), std::fs::read(greet.join(f)).unwrap());
    }
    p
}

/// Exports `attr` of `dir`'s recipe with `p`'s store; the target's package.
fn export(p: &Project, dir: &Path, attr: &str, env: &[(&str, &str)]) -> PathBuf {
    let out = p.path().join("out");
    let r = p
        .run_in(
            dir,
            &[
                "export",
                "--conda",
                "-A",
                attr,
                "-o",
                out.to_str().unwrap(),
                "--json",
            ],
            env,
        )
        .ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout()).unwrap();
    let target = v
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["target"] == true)
        .unwrap();
    PathBuf::from(target["path"].as_str().unwrap())
}

/// Runs cbuild with another, empty store.
fn run_with_store(store: &Path, dir: &Path, args: &[&str]) -> crate::support::Run {
    let out = std::process::Command::new(crate::support::cbuild_bin())
        .args(args)
        .current_dir(dir)
        .env("CBUILD_STORE", store)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    crate::support::Run(out)
}

fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads a member of an inner tar of a `.conda`.
fn member(pkg: &Path, path: &str) -> Vec<u8> {
    let mut out = None;
    crate::support::rewritten(pkg, &pkg.parent().unwrap().join(".read"), |p, d| {
        if p == path {
            out.get_or_insert_with(|| d.clone());
        }
    });
    out.unwrap_or_else(|| panic!("no {path} in {}", pkg.display()))
}

#[test]
fn a_package_is_reproduced_in_an_empty_store_from_its_recipe_and_attested() {
    let p = greet();
    let src = p.path().join("src");
    let pkg = export(&p, &src, "hello", &[]);
    // Where it was made: its export derivation is rebuilt beside the
    // stored output.
    let r = p.run(&["audit", pkg.to_str().unwrap()]).ok();
    assert!(
        r.stdout().contains("reproduced: all 1 payload entry")
            && r.stdout().contains("(rebuilt beside the stored output)"),
        "{}",
        r.stdout()
    );
    // A second, empty store: the sources are not there, so no verdict
    // (exit 2), naming the source and how to give it.
    let other = p.path().join("other-store");
    let r = run_with_store(&other, &src, &["audit", pkg.to_str().unwrap()]);
    let r = r.fails_with(2);
    assert!(
        r.stdout().contains("source `source` (tree digest ")
            && r.stdout().contains("--recipe FILE")
            && r.stdout().contains("unverifiable"),
        "{}",
        r.stdout()
    );
    // With the recipe's checkout: imported, built from nothing, reproduced.
    let attest = p.path().join("hello.intoto.json");
    let r = run_with_store(
        &other,
        &src,
        &[
            "audit",
            pkg.to_str().unwrap(),
            "--recipe",
            "recipe.cb",
            "-A",
            "hello",
            "--attest",
            attest.to_str().unwrap(),
            "--json",
        ],
    )
    .ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout()).unwrap();
    assert_eq!(v["verdict"], "reproduced", "{v}");
    assert_eq!(v["built"], true, "{v}");
    let st: serde_json::Value = serde_json::from_slice(&std::fs::read(&attest).unwrap()).unwrap();
    assert_eq!(st["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(
        st["subject"][0]["digest"]["sha256"],
        sha256_hex(&std::fs::read(&pkg).unwrap())
    );
    assert_eq!(
        st["subject"][0]["name"],
        pkg.file_name().unwrap().to_str().unwrap()
    );
    assert_eq!(st["predicate"]["verdict"], "reproduced");
    let drvs = st["predicate"]["derivations"].as_object().unwrap();
    assert!(
        drvs.keys().any(|k| k.ends_with("-hello-conda.drv"))
            && drvs.keys().any(|k| k.ends_with("-libgreet-conda.drv")),
        "{drvs:?}"
    );
    assert!(
        st["predicate"]["host_tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "cc" && t["same_here"] == true),
        "{st}"
    );
}

#[test]
fn a_payload_changed_together_with_paths_json_fails_the_rebuild_naming_the_file() {
    let p = greet();
    let src = p.path().join("src");
    let pkg = export(&p, &src, "libgreet", &[]);
    let lib = member(&pkg, "lib/libgreet.so");
    let mut flipped = lib.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x20;
    let (old, new) = (sha256_hex(&lib), sha256_hex(&flipped));
    // Consistent with itself: the structure checks cannot tell.
    let tampered = crate::support::rewritten(&pkg, &p.path().join("t"), |path, data| {
        if path == "lib/libgreet.so" {
            *data = flipped.clone();
        } else if path == "info/paths.json" {
            *data = String::from_utf8(data.clone())
                .unwrap()
                .replace(&old, &new)
                .into_bytes();
        }
    });
    let r = p
        .run(&["audit", tampered.to_str().unwrap(), "--keep-failed"])
        .fails_with(1);
    let out = r.stdout();
    assert!(out.contains("structure passes"), "{out}");
    assert!(
        out.contains("NOT reproduced: 1 of ") && out.contains("content: lib/libgreet.so"),
        "{out}"
    );
    // The first difference is shown, at the flipped offset.
    assert!(
        out.contains(&format!("first difference at byte {at} ")),
        "{out}"
    );
    let kept = out
        .lines()
        .find_map(|l| l.split("are kept in ").nth(1))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(Path::new(kept).join("package/lib/libgreet.so").is_file());
    assert!(Path::new(kept).join("rebuild/lib/libgreet.so").is_file());
    // The untouched package still passes.
    p.run(&["audit", pkg.to_str().unwrap()]).ok();
}

#[test]
fn metadata_changed_after_the_export_contradicts_the_build_string() {
    let p = greet();
    let src = p.path().join("src");
    let pkg = export(&p, &src, "libgreet", &[]);
    let add_dep = |data: &mut Vec<u8>| {
        *data = String::from_utf8(data.clone())
            .unwrap()
            .replace("\"depends\": [", "\"depends\": [\n    \"evil >=1\",")
            .into_bytes();
    };
    // index.json alone: it no longer says what hash_input.json does.
    let tampered = crate::support::rewritten(&pkg, &p.path().join("t1"), |path, data| {
        if path == "info/index.json" {
            add_dep(data);
        }
    });
    let r = p.run(&["audit", tampered.to_str().unwrap()]).fails_with(1);
    assert!(
        r.stdout().contains(
            "info/index.json: differs from what info/hash_input.json records under `index`"
        ),
        "{}",
        r.stdout()
    );
    // Both: the build string is no longer the hash of hash_input.json.
    let tampered = crate::support::rewritten(&pkg, &p.path().join("t2"), |path, data| {
        if path == "info/index.json" || path == "info/hash_input.json" {
            add_dep(data);
        }
    });
    let r = p.run(&["audit", tampered.to_str().unwrap()]).fails_with(1);
    assert!(
        r.stdout().contains("info/index.json: has the build string")
            && r.stdout().contains("changed after the export"),
        "{}",
        r.stdout()
    );
}

#[test]
fn a_package_whose_sources_are_all_fetched_is_audited_from_the_package_alone() {
    let p = Project::new().file("data/greeting.txt", "hello from upstream\n");
    let data = p.path().join("data/greeting.txt");
    let hash = sha256_hex(&std::fs::read(&data).unwrap());
    let p = p.file(
        "recipe.cb",
        format!(
            r#"
let upstream = fetch("file://{}", "sha256:{hash}") in {{
  fetched = package {{
    name = "fetched", version = "1",
    script = ''
      mkdir -p $out/share
      tr a-z A-Z < ${{upstream}} > $out/share/greeting.txt
    '',
  }},
}}
"#,
            data.display()
        ),
    );
    let pkg = export(&p, p.path(), "fetched", &[]);
    // Another store, no recipe: the download and the build run again.
    let other = p.path().join("other-store");
    let r = run_with_store(&other, p.path(), &["audit", pkg.to_str().unwrap()]).ok();
    assert!(
        r.stdout().contains("reproduced: all ") && r.stdout().contains("(built)"),
        "{}",
        r.stdout()
    );
}

#[test]
fn a_host_tool_that_differs_here_is_reported_as_that_not_as_a_difference() {
    let p = Project::new().file(
        "recipe.cb",
        r#"
{
  tooled = package {
    name = "tooled", version = "1",
    build_inputs = [host_tool("say-hi")],
    script = ''
      mkdir -p $out/share
      say-hi > $out/share/said
    '',
  },
}
"#,
    );
    let bin = p.path().join("tools");
    std::fs::create_dir_all(&bin).unwrap();
    let tool = bin.join("say-hi");
    std::fs::write(&tool, "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let pkg = export(&p, p.path(), "tooled", &[("PATH", &path)]);
    p.run(&["audit", pkg.to_str().unwrap()]).ok();
    // The tool changes on this machine.
    std::fs::write(&tool, "#!/bin/sh\necho bye\n").unwrap();
    let r = p
        .run_env(&["audit", pkg.to_str().unwrap()], &[("PATH", &path)])
        .fails_with(2);
    assert!(
        r.stdout().contains("host tool `say-hi` at ")
            && r.stdout()
                .contains("differs: the package was built with BLAKE3")
            && r.stdout().contains("unverifiable")
            && !r.stdout().contains("NOT reproduced"),
        "{}",
        r.stdout()
    );
}

#[test]
fn a_package_is_audited_from_an_http_url() {
    let p = greet();
    let src = p.path().join("src");
    let pkg = export(&p, &src, "libgreet", &[]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = std::process::Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(pkg.parent().unwrap())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let name = pkg.file_name().unwrap().to_str().unwrap();
    let url = format!("http://127.0.0.1:{port}/{name}");
    let good = p.run(&["audit", &url, "--json"]);
    let missing = p.run(&["audit", &format!("http://127.0.0.1:{port}/no-1-h0_0.conda")]);
    let _ = server.kill();
    let _ = server.wait();
    let v: serde_json::Value = serde_json::from_str(&good.ok().stdout()).unwrap();
    assert_eq!(v["verdict"], "reproduced", "{v}");
    assert_eq!(v["sha256"], sha256_hex(&std::fs::read(&pkg).unwrap()));
    let missing = missing.fails_with(2);
    assert!(
        missing
            .stderr()
            .contains("cannot download http://127.0.0.1:")
            && missing.stderr().contains("404"),
        "{}",
        missing.stderr()
    );
}
