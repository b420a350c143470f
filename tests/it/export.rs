//! `cbuild export --conda`: real recipes built in the sandbox, packages
//! checked and installed by a real conda client (py-rattler, through
//! `../shared/tools/conda-check` and from a channel served over HTTP).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::Project;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `conda-check` from `$CONDA_CHECK` or `../shared/tools`; `None` (said on
/// stderr) where neither exists, e.g. in a clone without `../shared`.
fn conda_check() -> Option<PathBuf> {
    let p = std::env::var_os("CONDA_CHECK")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/tools/conda-check"));
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "conda-check not found at {}: its checks are left out",
            p.display()
        );
        None
    }
}

#[track_caller]
fn run_conda_check(pkg: &Path, args: &[&str]) {
    let Some(cc) = conda_check() else { return };
    let out = Command::new(cc)
        .arg(pkg)
        .args(args)
        .arg("--quiet")
        .output()
        .expect("run conda-check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("RESULT: PASS"),
        "conda-check {} {args:?}:\n{text}\n{}",
        pkg.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A copy of an example in a fresh project with its own store; the example
/// is in `src/`, beside the store rather than around it.
struct Example {
    project: Project,
    src: PathBuf,
}

impl Example {
    fn path(&self) -> &Path {
        &self.src
    }
    fn run(&self, args: &[&str]) -> crate::support::Run {
        self.project.run_in(&self.src, args, &[])
    }
    fn run_in(&self, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> crate::support::Run {
        self.project.run_in(dir, args, env)
    }
    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.src.join(name)).unwrap()
    }
    fn store(&self) -> PathBuf {
        self.project.store()
    }
    /// A directory outside the example.
    fn outside(&self, name: &str) -> PathBuf {
        self.project.path().join(name)
    }
}

fn example(name: &str) -> Example {
    let project = Project::new();
    let src = project.path().join("src");
    crate::support::copy_dir(&repo().join("examples").join(name), &src);
    Example { project, src }
}

fn json(r: &crate::support::Run) -> Vec<Value> {
    serde_json::from_str::<Value>(&r.stdout())
        .unwrap_or_else(|e| panic!("{e}: {}", r.stdout()))
        .as_array()
        .unwrap()
        .clone()
}

fn find<'a>(pkgs: &'a [Value], name: &str) -> &'a Value {
    pkgs.iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no package {name} in {pkgs:?}"))
}

/// Reads `info/<file>` of a `.conda` package.
fn info_file(pkg: &Path, file: &str) -> Vec<u8> {
    member(pkg, "info-", &format!("info/{file}"))
}

/// Reads a payload file of a `.conda` package.
fn payload_file(pkg: &Path, file: &str) -> Vec<u8> {
    member(pkg, "pkg-", file)
}

/// Reads `path` from the inner tar whose name starts with `tar`.
fn member(pkg: &Path, tar: &str, path: &str) -> Vec<u8> {
    let f = std::fs::File::open(pkg).unwrap();
    let mut zip = zip::ZipArchive::new(f).unwrap();
    let name = zip
        .file_names()
        .find(|n| n.starts_with(tar))
        .unwrap()
        .to_string();
    let dec = zstd::stream::Decoder::new(zip.by_name(&name).unwrap()).unwrap();
    let mut archive = tar::Archive::new(dec);
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some(path) {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut v).unwrap();
            return v;
        }
    }
    panic!("no {path} in {}", pkg.display());
}

fn index(pkg: &Path) -> Value {
    serde_json::from_slice(&info_file(pkg, "index.json")).unwrap()
}

#[test]
fn greet_exports_to_a_channel_that_a_conda_client_installs_from() {
    let p = example("greet");
    let ch = p.path().join("channel");
    let r = p
        .run(&[
            "export",
            "--conda",
            "-A",
            "hello",
            "--channel",
            ch.to_str().unwrap(),
            "--json",
        ])
        .ok();
    let pkgs = json(&r);
    let hello = find(&pkgs, "hello");
    let libgreet = find(&pkgs, "libgreet");
    assert_eq!(hello["target"], true);
    assert_eq!(libgreet["host_input"], true, "{libgreet}");
    let hello_path = PathBuf::from(hello["path"].as_str().unwrap());
    assert!(
        hello_path.starts_with(ch.join("linux-64")),
        "{hello_path:?}"
    );
    assert!(ch.join("noarch/repodata.json").is_file());
    let idx = index(&hello_path);
    let depends: Vec<&str> = idx["depends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // Pinned to the exact build it was built against, and the glibc it needs.
    let pin = format!("libgreet ==1.2.0 {}", libgreet["build"].as_str().unwrap());
    assert!(depends.contains(&pin.as_str()), "{depends:?}");
    // The highest GLIBC_ version the program's version needs, as readelf
    // reads them.
    let bin = p.path().join("hello.bin");
    std::fs::write(&bin, payload_file(&hello_path, "bin/hello")).unwrap();
    let readelf = Command::new("readelf")
        .arg("-V")
        .arg(&bin)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&readelf.stdout);
    let need = text
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            v.split('.')
                .map(|n| n.parse::<u32>().ok())
                .collect::<Option<Vec<u32>>>()
        })
        .max()
        .unwrap();
    let need: Vec<String> = need.iter().map(u32::to_string).collect();
    let glibc = format!("__glibc >={}", need.join("."));
    assert!(
        depends.contains(&glibc.as_str()),
        "{depends:?} lacks {glibc}"
    );
    let repodata: Value =
        serde_json::from_slice(&std::fs::read(ch.join("linux-64/repodata.json")).unwrap()).unwrap();
    let fname = hello_path.file_name().unwrap().to_str().unwrap();
    assert_eq!(
        repodata["packages.conda"][fname]["sha256"], hello["sha256"],
        "{repodata}"
    );
    run_conda_check(
        &hello_path,
        &[
            "--channel",
            ch.to_str().unwrap(),
            "--run",
            "hello conda",
            "--expect-stdout",
            "hello, conda",
        ],
    );

    // The same channel over HTTP, installed by py-rattler from the URL.
    let port = free_port();
    let mut server = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(&ch)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port);
    let prefix = p
        .path()
        .join("env/a-long-prefix-to-install-into-for-the-test");
    let said = std::panic::catch_unwind(|| {
        crate::support::install_and_run(
            &format!("http://127.0.0.1:{port}/"),
            "hello",
            &prefix,
            "hello",
            "http",
        )
    });
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(said.expect("install from the HTTP channel"), "hello, http");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16) {
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("nothing listens on {port}");
}

#[test]
fn the_same_inputs_give_the_same_bytes_anywhere() {
    let a = example("greet");
    let b = example("greet");
    let ra = a
        .run(&["export", "--conda", "-A", "hello", "-o", "../out", "--json"])
        .ok();
    // Another store, working directory, clock, time zone, locale and -j.
    let sub = b.outside("cwd/deeper");
    std::fs::create_dir_all(&sub).unwrap();
    let mut cmd = Command::new("faketime");
    let faketime = cmd.arg("--version").output().is_ok();
    let args = [
        "-j",
        "1",
        "export",
        "--conda",
        "../../src/recipe.cb",
        "-A",
        "hello",
        "-o",
        "out",
        "--json",
    ];
    let out = if faketime {
        let mut c = Command::new("faketime");
        c.arg("2031-05-05 10:00:00")
            .arg(crate::support::cbuild_bin());
        c.args(args)
            .current_dir(&sub)
            .env("CBUILD_STORE", b.outside("elsewhere/store"))
            .env("TZ", "Asia/Tokyo")
            .env("LC_ALL", "C.UTF-8");
        crate::support::Run(c.output().unwrap())
    } else {
        b.run_in(
            &sub,
            &args,
            &[
                (
                    "CBUILD_STORE",
                    b.path().join("elsewhere/store").to_str().unwrap(),
                ),
                ("TZ", "Asia/Tokyo"),
                ("LC_ALL", "C.UTF-8"),
            ],
        )
    }
    .ok();
    let (pa, pb) = (json(&ra), json(&out));
    for name in ["hello", "libgreet"] {
        assert_eq!(
            find(&pa, name)["sha256"],
            find(&pb, name)["sha256"],
            "{name}"
        );
        assert_eq!(find(&pa, name)["build"], find(&pb, name)["build"], "{name}");
    }

    // A second export of an unchanged target builds nothing.
    let again = json(
        &a.run(&["export", "--conda", "-A", "hello", "-o", "../out", "--json"])
            .ok(),
    );
    assert!(again.iter().all(|p| p["built"] == false), "{again:?}");
    assert_eq!(
        find(&again, "hello")["sha256"],
        find(&pa, "hello")["sha256"]
    );

    // Only the summary changes: a new package, no build.
    let recipe = a
        .read("recipe.cb")
        .replace("Says hello", "Says hello, politely");
    std::fs::write(a.path().join("recipe.cb"), recipe).unwrap();
    let edited = json(
        &a.run(&["export", "--conda", "-A", "hello", "-o", "../out", "--json"])
            .ok(),
    );
    assert!(edited.iter().all(|p| p["built"] == false), "{edited:?}");
    assert_ne!(find(&edited, "hello")["build"], find(&pa, "hello")["build"]);
    assert_ne!(
        find(&edited, "hello")["sha256"],
        find(&pa, "hello")["sha256"]
    );

    // A source byte changes: a new build string, and a build.
    let src = a.read("hello.c").replace("world", "World");
    std::fs::write(a.path().join("hello.c"), src).unwrap();
    let changed = json(
        &a.run(&["export", "--conda", "-A", "hello", "-o", "../out", "--json"])
            .ok(),
    );
    assert_ne!(
        find(&changed, "hello")["build"],
        find(&edited, "hello")["build"]
    );
    assert_eq!(find(&changed, "hello")["built"], true);
}

#[test]
fn split_outputs_compile_once_and_pin_each_other() {
    let p = example("greet");
    let ch = p.path().join("ch");
    let r = p
        .run(&[
            "export",
            "--conda",
            "split.cb",
            "-A",
            "howdy",
            "--channel",
            ch.to_str().unwrap(),
            "--json",
        ])
        .ok();
    let pkgs = json(&r);
    let (greet, dev) = (find(&pkgs, "greet"), find(&pkgs, "greet-dev"));
    // One export derivation, built once, for both packages.
    assert_eq!(greet["export_drv"], dev["export_drv"]);
    let builds = r.stderr().matches("built ").count();
    assert_eq!(builds, 2, "greet once and howdy once:\n{}", r.stderr());
    let dev_idx = index(Path::new(dev["path"].as_str().unwrap()));
    let pin = format!("greet ==1.2.0 {}", greet["build"].as_str().unwrap());
    assert!(
        dev_idx["depends"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == &pin),
        "{dev_idx}"
    );
    let files =
        String::from_utf8(info_file(Path::new(dev["path"].as_str().unwrap()), "files")).unwrap();
    assert_eq!(files, "include/greet.h\n");
    let howdy = find(&pkgs, "howdy");
    run_conda_check(
        Path::new(howdy["path"].as_str().unwrap()),
        &[
            "--channel",
            ch.to_str().unwrap(),
            "--run",
            "howdy split",
            "--expect-stdout",
            "hello, split",
        ],
    );
}

#[test]
fn a_prefix_inside_a_longer_c_string_and_a_text_file_are_relocated() {
    let p = Project::new()
        .file(
            "recipe.cb",
            r#"
let src = source(./.) in {
  where = package {
    name = "where", version = "1.0", src = src,
    build_inputs = [host_tool("cc")],
    script = ''
      mkdir -p $out/bin $out/share
      printf 'data lives in %s/share\n' "$out" > $out/share/where.txt
      cc -o $out/bin/where ${src}/where.c -DDATA="\"data=$out/share/where.txt;end\""
    '',
    about = { license = "MIT", summary = "Prints where its data is" },
  },
}
"#,
        )
        .file(
            "where.c",
            "#include <stdio.h>\nint main(void) { puts(DATA); return 0; }\n",
        );
    let r = p
        .run(&["export", "--conda", "-A", "where", "-o", "out", "--json"])
        .ok();
    let pkg = PathBuf::from(json(&r)[0]["path"].as_str().unwrap().to_string());
    let paths: Value = serde_json::from_slice(&info_file(&pkg, "paths.json")).unwrap();
    let modes: Vec<(String, String)> = paths["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["_path"].as_str().unwrap().to_string(),
                e["file_mode"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    assert_eq!(
        modes,
        [
            ("bin/where".to_string(), "binary".to_string()),
            ("share/where.txt".to_string(), "text".to_string())
        ]
    );
    run_conda_check(
        &pkg,
        &[
            "--run",
            "where",
            "--expect-stdout",
            "data={prefix}/share/where.txt;end",
        ],
    );
}

/// The payload's members and their tar modes.
fn payload_modes(pkg: &Path) -> Vec<(String, u32)> {
    let f = std::fs::File::open(pkg).unwrap();
    let mut zip = zip::ZipArchive::new(f).unwrap();
    let name = zip
        .file_names()
        .find(|n| n.starts_with("pkg-"))
        .unwrap()
        .to_string();
    let dec = zstd::stream::Decoder::new(zip.by_name(&name).unwrap()).unwrap();
    let mut archive = tar::Archive::new(dec);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            (path, e.header().mode().unwrap())
        })
        .collect()
}

/// Issue 20: headers were 0755, an empty directory made py-rattler refuse
/// the package, and bytecode was marked for binary prefix replacement,
/// which corrupts it (`bad marshal data`) in a prefix of another length.
#[test]
fn modes_empty_directories_and_bytecode_come_out_as_a_conda_client_installs_them() {
    let p = Project::new().file(
        "recipe.cb",
        r#"
let python = host_tool("python3.11"), chmod = host_tool("chmod") in
package {
  name = "pymodes", version = "1.0", build_inputs = [python, chmod],
  about = { license = "MIT" },
  script = ''
    site=$out/lib/python3.11/site-packages
    mkdir -p $out/bin $out/include $out/ssl/certs $site/m
    echo '#define M 1' > $out/include/m.h
    printf '#!/bin/sh\necho hi\n' > $out/bin/m
    chmod 755 $out/bin/m
    echo 'def where(): return 1' > $site/m/__init__.py
    # Hash-checked bytecode, as SOURCE_DATE_EPOCH makes it: the installed
    # source is unchanged, so Python loads this file as it is.
    python3.11 -c "import py_compile as c; c.compile('$site/m/__init__.py', doraise=True, invalidation_mode=c.PycInvalidationMode.CHECKED_HASH)"
  '',
}
"#,
    );
    // The machine's python (not a version manager's shim, which needs the
    // user's home).
    let path = format!(
        "/usr/bin:/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    let r = p
        .run_in(
            p.path(),
            &["export", "--conda", "recipe.cb", "-o", "out", "--json"],
            &[("PATH", path.as_str())],
        )
        .ok();
    assert!(
        r.stderr()
            .contains("`ssl/certs` is an empty directory: left out"),
        "{}",
        r.stderr()
    );
    let pkg = PathBuf::from(json(&r)[0]["path"].as_str().unwrap().to_string());
    let pyc = "lib/python3.11/site-packages/m/__pycache__/__init__.cpython-311.pyc";
    assert_eq!(
        payload_modes(&pkg),
        [
            ("bin/m".to_string(), 0o755),
            ("include/m.h".to_string(), 0o644),
            (
                "lib/python3.11/site-packages/m/__init__.py".to_string(),
                0o644
            ),
            (pyc.to_string(), 0o644),
        ]
    );
    let paths: Value = serde_json::from_slice(&info_file(&pkg, "paths.json")).unwrap();
    for e in paths["paths"].as_array().unwrap() {
        assert_ne!(e["path_type"], "directory", "{e}");
        if e["_path"] == pyc {
            // It holds the placeholder (in co_filename) but is not rewritten.
            assert!(e.get("prefix_placeholder").is_none(), "{e}");
            assert!(e.get("file_mode").is_none(), "{e}");
        }
    }
    assert!(
        String::from_utf8_lossy(&payload_file(&pkg, pyc)).contains("/.cbuild/_h_env_placehold")
    );
    // Installed into a prefix of another length, the bytecode loads (the
    // source beside it is unchanged, so Python takes the .pyc) and Python
    // puts the real path into co_filename.
    run_conda_check(
        &pkg,
        &[
            "--run",
            "/usr/bin/python3.11 -B -c 'import sys; sys.path.insert(0, \"{prefix}/lib/python3.11/site-packages\"); import m; print(m.where.__code__.co_filename)'",
            "--expect-stdout",
            "{prefix}/lib/python3.11/site-packages/m/__init__.py",
        ],
    );
}

#[test]
fn the_store_fails_an_export_and_the_build_directory_warns_every_mention_at_once() {
    let p = Project::new().file(
        "recipe.cb",
        r#"
let src = source(./.) in {
  builddir = package {
    name = "builddir", version = "1.0",
    script = ''
      mkdir -p $out/etc $out/share/doc
      printf 'built in %s\n' "$PWD" > $out/etc/where
      printf 'cflags: -ffile-prefix-map=/build=.\n' > $out/etc/flags
      # Not the build directory: part of longer paths and of a URL.
      printf 'Doc/build/html https://example.org/project/build/ ./root/x\n' > $out/share/doc/links
    '',
  },
  storepath = package {
    name = "storepath", version = "1.0", src = src,
    script = ''
      mkdir -p $out/share
      printf 'abc %s\n' "${src}" > $out/share/src
      printf '%s %s %s %s %s\n' "${src}" "${src}" "${src}" "${src}" "${src}" > $out/share/again
    '',
  },
}
"#,
    );
    // The build directory is a warning, each mention named, and the
    // package is written.
    let r = p
        .run(&["export", "--conda", "-A", "builddir", "-o", "out"])
        .ok();
    let err = r.stderr();
    for expected in [
        "`etc/where` names the build directory /build at byte offset 9",
        "`etc/flags` names the build directory /build at byte offset 26",
    ] {
        assert!(err.contains(expected), "{expected}: {err}");
    }
    assert!(!err.contains("share/doc/links"), "{err}");
    assert_eq!(p.path().join("out").read_dir().unwrap().count(), 1);
    let json = p
        .run(&["export", "--conda", "-A", "builddir", "-o", "out", "--json"])
        .ok()
        .stdout();
    assert!(json.contains("etc/flags"), "{json}");
    // With --strict it is an error naming both files at once.
    let r = p
        .run(&[
            "export", "--conda", "-A", "builddir", "-o", "strict", "--strict",
        ])
        .fails_with(1);
    let err = r.stderr();
    assert!(
        err.contains("2 mention(s)") && err.contains("`etc/where`") && err.contains("`etc/flags`"),
        "{err}"
    );
    // A store path is always an error: every file named in one run, and
    // a file's further mentions counted rather than listed.
    let r = p
        .run(&["export", "--conda", "-A", "storepath", "-o", "store-out"])
        .fails_with(1);
    let err = r.stderr();
    assert!(
        err.contains("`share/src` names a store path at byte offset 4")
            && err.contains("`share/again` names a store path at byte offset 0")
            && err.contains("and 2 more times further on"),
        "{err}"
    );
    assert!(std::fs::read_dir(p.path().join("store-out")).map_or(true, |mut d| d.next().is_none()));
    // Into a channel: nothing of it reaches the channel, nothing is left over.
    p.run(&["export", "--conda", "-A", "storepath", "--channel", "ch"])
        .fails_with(1);
    let left: Vec<String> = std::fs::read_dir(p.path().join("ch"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, [".cbuild-channel.lock"]);
}

/// Issue 20: every file an evaluation read went into `info/recipe/` and the
/// build string, so one package exported from two entry points got two
/// build strings (a channel ended with 4-6 builds of one package).
#[test]
fn a_package_s_recipe_record_and_build_string_do_not_depend_on_the_entry_point() {
    let p = Project::new()
        .file(
            "lib/lib.cb",
            r#"let data = read_file(./data.txt) in {
  libfoo = package {
    name = "libfoo", version = "1.0", about = { license = "MIT" },
    script = "mkdir -p $out/share; echo '${data}' > $out/share/foo",
  },
  unused = package { name = "unused", version = "1.0", script = "mkdir $out" },
}"#,
        )
        .file("lib/data.txt", "foo data")
        .file(
            "a/recipe.cb",
            r#"let lib = import(../lib/lib.cb) in {
  foo = lib.libfoo,
  other = package { name = "other", version = "1.0", script = "mkdir $out" },
}"#,
        )
        .file(
            "b/recipe.cb",
            r#"let lib = import(../lib/lib.cb), helper = import(./helper.cb) in {
  libfoo = lib.libfoo, h = helper,
}"#,
        )
        .file(
            "b/helper.cb",
            r#"package { name = "helper", version = "1.0", script = "mkdir $out" }"#,
        );
    let export = |recipe: &str, attr: &str, out: &str| {
        let r = p
            .run(&["export", "--conda", recipe, "-A", attr, "-o", out, "--json"])
            .ok();
        let pkgs = json(&r);
        let foo = find(&pkgs, "libfoo");
        (
            foo["build"].as_str().unwrap().to_string(),
            PathBuf::from(foo["path"].as_str().unwrap()),
        )
    };
    let (build_a, pkg_a) = export("a/recipe.cb", "foo", "out-a");
    let (build_b, pkg_b) = export("b/recipe.cb", "libfoo", "out-b");
    assert_eq!(build_a, build_b);
    assert_eq!(
        std::fs::read(&pkg_a).unwrap(),
        std::fs::read(&pkg_b).unwrap()
    );
    // What it records: the file it is written in and what that reads.
    let hash_input: Value = serde_json::from_slice(&info_file(&pkg_a, "hash_input.json")).unwrap();
    let names: Vec<&String> = hash_input["recipe"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["data.txt", "lib.cb"]);
    assert_eq!(info_file(&pkg_a, "recipe/data.txt"), b"foo data");
}

/// Issue 20: a package linked a library of the build machine (Debian's
/// `libbz2`, `libreadline`) and `depends` named only `__glibc`. The C++
/// runtime is on every machine with a C++ compiler, and no input declares it.
#[test]
fn a_library_of_the_build_machine_fails_the_export_and_an_unused_host_input_is_reported() {
    let p = Project::new()
        .file(
            "hello.cc",
            "#include <iostream>\nint main() { std::cout << \"hi\" << std::endl; }\n",
        )
        .file("demo.c", "int demo(void) { return 42; }\n")
        .file(
            "plain.c",
            "#include <stdio.h>\nint main(void) { puts(\"plain\"); return 0; }\n",
        )
        .file(
            "recipe.cb",
            r#"
let src = source(./., exclude = ["out*"]), cxx = host_tool("c++"), cc = host_tool("cc") in
let
  # Two derivations: `meta` (where the allowlist goes) is not hashed.
  cpp = fn(name, allow) => package {
    name = name, version = "1.0", src = src, build_inputs = [cxx],
    about = { license = "MIT" },
    script = "mkdir -p $out/bin; c++ -o $out/bin/${name} ${src}/hello.cc",
    missing_dso_allowlist = allow,
  },
  demo = package {
    name = "libdemo", version = "1.0", src = src, build_inputs = [cc],
    about = { license = "MIT" },
    script = "mkdir -p $out/lib; cc -shared -fPIC -o $out/lib/libdemo.so ${src}/demo.c",
  },
in {
  strict = cpp("cpphello", null),
  allowed = cpp("cppallowed", ["libstdc++.so*", "libgcc_s.so*"]),
  plain = package {
    name = "plain", version = "1.0", src = src, build_inputs = [cc], host_inputs = [demo],
    about = { license = "MIT" },
    script = "mkdir -p $out/bin; cc -o $out/bin/plain ${src}/plain.c",
  },
}
"#,
        );
    let r = p
        .run(&["export", "--conda", "-A", "strict", "-o", "out1"])
        .fails_with(1);
    let err = r.stderr();
    assert!(
        err.contains("`bin/cpphello` needs `libstdc++.so.6`")
            && err.contains("would come from the build machine")
            && !err.contains("libc.so.6"),
        "{err}"
    );
    assert!(std::fs::read_dir(p.path().join("out1")).map_or(true, |mut d| d.next().is_none()));
    p.run(&["export", "--conda", "-A", "allowed", "-o", "out2"])
        .ok();
    let r = p
        .run(&["export", "--conda", "-A", "plain", "-o", "out3"])
        .ok();
    assert!(
        r.stderr().contains(
            "host input `libdemo` ships shared libraries that no file of the package loads"
        ),
        "{}",
        r.stderr()
    );
}

/// The datalib example (issue 20): a C library whose data files are found
/// through a prefix compiled into it, and an empty directory, installed by
/// a conda client into a prefix of another length, and run.
#[test]
fn datalib_finds_its_data_where_a_conda_client_installs_it() {
    let e = example("datalib");
    let out = e.outside("out");
    let r = e
        .run(&[
            "export",
            "--conda",
            "-A",
            "firstword",
            "-o",
            out.to_str().unwrap(),
            "--json",
        ])
        .ok();
    assert!(
        r.stderr()
            .contains("warning: datalib: `var/cache/datalib` is an empty directory: left out"),
        "{}",
        r.stderr()
    );
    let pkgs = json(&r);
    let lib = PathBuf::from(find(&pkgs, "datalib")["path"].as_str().unwrap());
    let tool = PathBuf::from(find(&pkgs, "firstword")["path"].as_str().unwrap());
    assert_eq!(
        payload_file(&lib, "share/datalib/words.txt"),
        b"alpha\nbeta\ngamma\n"
    );
    let modes: std::collections::BTreeMap<String, u32> = payload_modes(&lib).into_iter().collect();
    assert_eq!(modes["include/datalib.h"], 0o644);
    assert_eq!(modes["share/datalib/words.txt"], 0o644);
    assert_eq!(modes["lib/libdatalib.so"], 0o755);
    // The library's run_exports instead of a pin, and the C library's
    // floor read from the binary (the build machine's glibc decides it).
    let depends = index(&tool)["depends"].clone();
    let depends: Vec<&str> = depends
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(depends.len(), 2, "{depends:?}");
    assert!(depends[0].starts_with("__glibc >=2."), "{depends:?}");
    assert_eq!(depends[1], "datalib >=0.3,<0.4");
    run_conda_check(
        &tool,
        &[
            "--channel",
            out.to_str().unwrap(),
            "--run",
            "firstword",
            "--expect-stdout",
            "first word: alpha",
        ],
    );
}

#[test]
fn bad_input_is_refused_before_the_channel_changes() {
    let p = example("greet");
    let r = p
        .run(&["export", "--conda", "-A", "hello", "--subdir", "linux-65"])
        .fails_with(2);
    assert!(
        r.stderr().contains("unknown subdir `linux-65`"),
        "{}",
        r.stderr()
    );

    std::fs::write(p.path().join("afile"), "x").unwrap();
    let r = p
        .run(&["export", "--conda", "-A", "hello", "--channel", "afile"])
        .fails_with(2);
    assert!(
        r.stderr().contains("afile: is not a directory"),
        "{}",
        r.stderr()
    );

    let ch = p.path().join("ch");
    std::fs::create_dir_all(ch.join("linux-64")).unwrap();
    std::fs::write(ch.join("linux-64/repodata.json"), "{ not json").unwrap();
    std::fs::write(ch.join("linux-64/other-1-0.conda"), "keep me").unwrap();
    let r = p
        .run(&["export", "--conda", "-A", "hello", "--channel", "ch"])
        .fails_with(2);
    assert!(
        r.stderr().contains("repodata.json: is not valid JSON"),
        "{}",
        r.stderr()
    );
    assert_eq!(
        std::fs::read_to_string(ch.join("linux-64/repodata.json")).unwrap(),
        "{ not json"
    );
    let left: Vec<_> = std::fs::read_dir(ch.join("linux-64"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");

    let p = Project::new().file(
        "recipe.cb",
        r#"package { name = "Hello_World", version = "1.0", script = "mkdir $out" }"#,
    );
    let r = p.run(&["export", "--conda", "-o", "out"]).fails_with(2);
    assert!(
        r.stderr()
            .contains("`Hello_World` is not a conda package name"),
        "{}",
        r.stderr()
    );
}

#[test]
fn two_exports_into_one_channel_at_once_lose_nothing() {
    let p = example("greet");
    // Outside the recipe folder: greet imports `source(./.)`, so a channel
    // inside it would be part of the other export's source, half-written
    // (two builds of libgreet, as seen in CI).
    let ch = p.outside("ch");
    let spawn = |attr: &str| {
        Command::new(crate::support::cbuild_bin())
            .args(["export", "--conda", "-A", attr, "--channel"])
            .arg(&ch)
            .arg("-q")
            .current_dir(p.path())
            .env("CBUILD_STORE", p.store())
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (spawn("hello"), spawn("libgreet"));
    assert!(a.wait().unwrap().success());
    assert!(b.wait().unwrap().success());
    let repodata: Value =
        serde_json::from_slice(&std::fs::read(ch.join("linux-64/repodata.json")).unwrap()).unwrap();
    let names: Vec<&String> = repodata["packages.conda"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    for n in names {
        assert!(ch.join("linux-64").join(n).is_file(), "{n}");
    }
}

#[test]
fn go_cli_exports_for_linux_64_and_cross_compiles_for_aarch64() {
    if Command::new("go").arg("version").output().is_err() {
        panic!("Go is missing: .ci/setup installs golang-go");
    }
    let p = example("go-cli");
    let r = p
        .run(&["export", "--conda", "-A", "devssh", "-o", "x86", "--json"])
        .ok();
    let pkg = PathBuf::from(json(&r)[0]["path"].as_str().unwrap().to_string());
    let files = String::from_utf8(info_file(&pkg, "files")).unwrap();
    assert_eq!(files, "bin/devssh\n");
    assert!(!info_file(&pkg, "licenses/LICENSE").is_empty());
    // A static binary needs no glibc.
    assert_eq!(index(&pkg)["depends"], serde_json::json!([]));
    run_conda_check(
        &pkg,
        &[
            "--run",
            "devssh -user me box",
            "--expect-stdout",
            "ssh -p 22 me@box",
        ],
    );

    let r = p
        .run(&[
            "export",
            "--conda",
            "-A",
            "devssh",
            "-o",
            "arm",
            "--subdir",
            "linux-aarch64",
            "--json",
        ])
        .ok();
    let arm = json(&r);
    let pkg = PathBuf::from(arm[0]["path"].as_str().unwrap().to_string());
    assert_eq!(index(&pkg)["subdir"], "linux-aarch64");
    assert_eq!(index(&pkg)["arch"], "aarch64");
    run_conda_check(&pkg, &["--no-install"]);
    let payload = payload_file(&pkg, "bin/devssh");
    // e_machine 183: AArch64.
    assert_eq!(u16::from_le_bytes([payload[18], payload[19]]), 183);
    // And it runs there (under qemu-user, which .ci/setup installs).
    let bin = p.outside("devssh-aarch64");
    std::fs::write(&bin, &payload).unwrap();
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    match Command::new("qemu-aarch64-static")
        .arg(&bin)
        .arg("-version")
        .output()
    {
        Ok(out) => assert_eq!(String::from_utf8_lossy(&out.stdout), "devssh 0.3.0\n"),
        Err(e) => eprintln!("qemu-aarch64-static: {e}: the aarch64 binary was not run"),
    }
}

#[test]
fn run_exports_depends_constrains_and_noarch_reach_the_metadata() {
    let p = Project::new().file(
        "recipe.cb",
        r#"
let
  lib = package {
    name = "libdemo", version = "2.1.0",
    script = ''
      mkdir -p $out/share/libdemo
      echo data > $out/share/libdemo/data
    '',
    run_exports = ["libdemo >=2.1,<3"],
    about = { license = "MIT", summary = "A library with run_exports" },
  },
  tool = package {
    name = "demo-tool", version = "1.0", noarch = "generic",
    host_inputs = [lib],
    depends = ["python >=3.8"], constrains = ["demo-legacy <0a0"],
    script = ''
      mkdir -p $out/bin
      printf '#!/bin/sh\necho "tool at %s"\n' "$out" > $out/bin/demo-tool
      chmod +x $out/bin/demo-tool
    '',
    about = { license = "MIT", summary = "A noarch script" },
  },
in { tool = tool }
"#,
    );
    let r = p
        .run(&[
            "export",
            "--conda",
            "-A",
            "tool",
            "--channel",
            "ch",
            "--json",
        ])
        .ok();
    let pkgs = json(&r);
    let tool = find(&pkgs, "demo-tool");
    assert_eq!(tool["subdir"], "noarch");
    let path = PathBuf::from(tool["path"].as_str().unwrap());
    assert!(path.starts_with(p.path().join("ch/noarch")), "{path:?}");
    let idx = index(&path);
    assert_eq!(idx["noarch"], "generic");
    assert_eq!(idx["arch"], Value::Null);
    assert_eq!(
        idx["depends"],
        serde_json::json!(["libdemo >=2.1,<3", "python >=3.8"]),
        "run_exports instead of a pin, and the recipe's own"
    );
    assert_eq!(idx["constrains"], serde_json::json!(["demo-legacy <0a0"]));
    let lib = PathBuf::from(find(&pkgs, "libdemo")["path"].as_str().unwrap());
    let re: Value = serde_json::from_slice(&info_file(&lib, "run_exports.json")).unwrap();
    assert_eq!(re, serde_json::json!({"weak": ["libdemo >=2.1,<3"]}));
    // Both subdirs have a repodata.json that lists what is there.
    let noarch: Value =
        serde_json::from_slice(&std::fs::read(p.path().join("ch/noarch/repodata.json")).unwrap())
            .unwrap();
    assert!(
        noarch["packages.conda"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.starts_with("demo-tool-1.0-"))
    );
    assert!(p.path().join("ch/linux-64/repodata.json").is_file());

    // The older format.
    let r = p
        .run(&[
            "export", "--conda", "-A", "tool", "-o", "bz2", "--format", "tar.bz2", "--json",
        ])
        .ok();
    let bz = json(&r);
    // Another file (another format, in hash_input.json), another build string.
    assert_ne!(find(&bz, "demo-tool")["build"], tool["build"]);
    let bz_path = PathBuf::from(find(&bz, "demo-tool")["path"].as_str().unwrap());
    assert!(bz_path.to_str().unwrap().ends_with(".tar.bz2"));
    run_conda_check(&bz_path, &["--no-install"]);
}

/// Issue 20: every host input became a run dependency (python depended on
/// `libopenssl-dev ==3.0.22 h…`); `ignore_run_exports` drops them.
#[test]
fn ignore_run_exports_drops_host_inputs_by_package_and_by_name() {
    let p = Project::new().file(
        "recipe.cb",
        r#"
let
  dev = package {
    name = "libdemo-dev", version = "1.0",
    script = "mkdir -p $out/include; echo '#define D 1' > $out/include/d.h",
  },
  rt = package {
    name = "librt-demo", version = "2.0",
    script = "mkdir -p $out/share; echo rt > $out/share/rt",
    run_exports = { weak = ["librt-demo >=2", "libextra >=1"] },
  },
  # Three derivations: `meta` (where ignore_run_exports goes) is not hashed.
  app = fn(tag, ignore) => package {
    name = "app", version = "1.0", host_inputs = [dev, rt],
    script = "mkdir -p $out/share; echo ${tag} > $out/share/app",
    ignore_run_exports = ignore,
  },
in {
  all = app("all", null),
  ignored = app("ignored", { from_package = ["libdemo-dev"], by_name = ["libextra"] }),
  typo = app("typo", { by_package = ["libdemo-dev"] }),
}
"#,
    );
    let depends = |attr: &str| {
        let r = p
            .run(&["export", "--conda", "-A", attr, "-o", attr, "--json"])
            .ok();
        let pkgs = json(&r);
        let app = PathBuf::from(find(&pkgs, "app")["path"].as_str().unwrap());
        let deps: Vec<String> = index(&app)["depends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap().to_string())
            .collect();
        deps
    };
    let all = depends("all");
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(all[0].starts_with("libdemo-dev ==1.0 h"), "{all:?}");
    assert_eq!(all[1..], ["libextra >=1", "librt-demo >=2"]);
    assert_eq!(depends("ignored"), ["librt-demo >=2"]);
    let r = p
        .run(&["export", "--conda", "-A", "typo", "-o", "typo"])
        .fails_with(2);
    assert!(
        r.stderr()
            .contains("package.ignore_run_exports: unknown field `by_package`"),
        "{}",
        r.stderr()
    );
}

#[test]
fn rpaths_outside_the_prefix_and_foreign_machines_fail_naming_the_file() {
    let p = Project::new()
        .file(
            "recipe.cb",
            r#"
let src = source(./.) in {
  outside = package {
    name = "outside", version = "1.0", src = src,
    build_inputs = [host_tool("cc")],
    script = ''
      mkdir -p $out/bin
      cc -o $out/bin/outside ${src}/main.c -Wl,-rpath,/opt/vendor/lib
    '',
  },
  nopie = package {
    name = "nopie", version = "1.0", src = src,
    build_inputs = [host_tool("cc")],
    script = ''
      mkdir -p $out/bin $out/lib
      cc -no-pie -o $out/bin/nopie ${src}/main.c -Wl,-rpath,$out/lib
    '',
  },
  plain = package {
    name = "plain", version = "1.0", src = src,
    build_inputs = [host_tool("cc")],
    script = ''
      mkdir -p $out/bin
      cc -o $out/bin/plain ${src}/main.c
    '',
  },
}
"#,
        )
        .file("main.c", "int main(void) { return 0; }\n");
    let r = p
        .run(&["export", "--conda", "-A", "outside", "-o", "out"])
        .fails_with(1);
    assert!(
        r.stderr()
            .contains("`bin/outside` has the RPATH/RUNPATH entry `/opt/vendor/lib`"),
        "{}",
        r.stderr()
    );
    // A non-PIE executable (its segments not at address 0) is relocated too.
    let r = p
        .run(&["export", "--conda", "-A", "nopie", "-o", "out", "--json"])
        .ok();
    let pkg = PathBuf::from(json(&r)[0]["path"].as_str().unwrap().to_string());
    let bin = payload_file(&pkg, "bin/nopie");
    let has = |needle: &[u8]| bin.windows(needle.len()).any(|w| w == needle);
    assert!(has(b"$ORIGIN/../lib\0"));
    assert!(!has(b"_placehold"));
    let r = p
        .run(&[
            "export",
            "--conda",
            "-A",
            "plain",
            "-o",
            "out",
            "--subdir",
            "linux-aarch64",
        ])
        .fails_with(1);
    assert!(
        r.stderr().contains("`bin/plain` is an ELF file for")
            && r.stderr().contains("does not run in subdir linux-aarch64"),
        "{}",
        r.stderr()
    );
}

#[test]
fn stale_compressed_and_sharded_repodata_is_updated_or_removed() {
    let p = example("greet");
    let ch = p.outside("ch");
    let sub = ch.join("linux-64");
    std::fs::create_dir_all(sub.join("shards")).unwrap();
    std::fs::write(sub.join("repodata.json.zst"), b"old").unwrap();
    std::fs::write(sub.join("repodata_shards.msgpack.zst"), b"old").unwrap();
    std::fs::write(sub.join("shards/abc.msgpack.zst"), b"old").unwrap();
    p.run(&[
        "export",
        "--conda",
        "-A",
        "libgreet",
        "--channel",
        ch.to_str().unwrap(),
    ])
    .ok();
    let plain = std::fs::read(sub.join("repodata.json")).unwrap();
    let zst = zstd::decode_all(&std::fs::read(sub.join("repodata.json.zst")).unwrap()[..]).unwrap();
    assert_eq!(plain, zst);
    assert!(!sub.join("repodata_shards.msgpack.zst").exists());
    assert!(!sub.join("shards").exists());
}

#[test]
fn a_read_only_channel_is_a_clear_error_and_stays_as_it_was() {
    let p = example("greet");
    let ch = p.outside("ch");
    std::fs::create_dir_all(ch.join("linux-64")).unwrap();
    std::fs::write(ch.join("linux-64/repodata.json"), "{}").unwrap();
    // Root ignores permission bits: a read-only bind mount in a private
    // mount namespace is what a read-only channel is.
    let script = format!(
        "mount --bind {ch} {ch} && mount -o remount,bind,ro {ch} && exec \"$0\" export --conda -A libgreet --channel {ch}",
        ch = ch.display()
    );
    let out = Command::new("unshare")
        .args(crate::support::mount_namespace())
        .args(["--propagation", "private", "sh", "-c", &script])
        .arg(crate::support::cbuild_bin())
        .current_dir(p.path())
        .env("CBUILD_STORE", p.store())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("mount:") {
        eprintln!("cannot make a read-only bind mount here: {stderr}");
        return;
    }
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot be written"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(ch.join("linux-64/repodata.json")).unwrap(),
        "{}"
    );
}

#[test]
fn a_licence_inside_a_fetched_source_is_packaged() {
    use sha2::Digest;
    let p = Project::new();
    let up = p.path().join("upstream/tool-1.0");
    std::fs::create_dir_all(&up).unwrap();
    std::fs::write(up.join("COPYING"), "the licence text\n").unwrap();
    std::fs::write(up.join("tool.sh"), "#!/bin/sh\necho tool\n").unwrap();
    let tarball = p.path().join("tool-1.0.tar.gz");
    let ok = Command::new("tar")
        .args(["-czf", tarball.to_str().unwrap(), "-C"])
        .arg(p.path().join("upstream"))
        .arg("tool-1.0")
        .status()
        .unwrap();
    assert!(ok.success());
    let sha: String = sha2::Sha256::digest(std::fs::read(&tarball).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let recipe = format!(
        r#"
package {{
  name = "tool", version = "1.0",
  src = fetch("file://{}", "sha256:{sha}", unpack = true),
  script = ''
    mkdir -p $out/bin
    cp $src/tool.sh $out/bin/tool
  '',
  about = {{ license = "GPL-3.0-only", license_file = "COPYING" }},
}}
"#,
        tarball.display()
    );
    let p = p.file("pkg/recipe.cb", recipe);
    let r = p
        .run_in(
            &p.path().join("pkg"),
            &["export", "--conda", "-o", "../out", "--json"],
            &[],
        )
        .ok();
    let pkg = PathBuf::from(json(&r)[0]["path"].as_str().unwrap().to_string());
    assert_eq!(info_file(&pkg, "licenses/COPYING"), b"the licence text\n");
    assert_eq!(
        info_file(&pkg, "recipe/recipe.cb"),
        p.read("pkg/recipe.cb").as_bytes()
    );
}

#[test]
fn recipe_files_enter_a_source_only_when_asked() {
    let p = Project::new()
        .file(
            "pkg/recipe.cb",
            r#"{ without = source(./.), with = source(./., recipes = true) }"#,
        )
        .file("pkg/data.txt", "data\n")
        .file("pkg/other.cb", "1\n");
    let dir = p.path().join("pkg");
    let eval = || -> Value {
        let r = p
            .run_in(&dir, &["eval", "--expr", "import(./recipe.cb)"], &[])
            .ok();
        serde_json::from_str(&r.stdout()).unwrap()
    };
    let before = eval();
    std::fs::write(dir.join("other.cb"), "2\n").unwrap();
    let after = eval();
    assert_eq!(
        before["without"], after["without"],
        "a .cb edit changed source(./.)"
    );
    assert_ne!(
        before["with"], after["with"],
        "recipes = true must include .cb files"
    );
    let listing = std::fs::read_dir(before["without"].as_str().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect::<Vec<_>>();
    assert_eq!(listing, ["data.txt"]);
}

#[test]
fn exporting_into_the_recipe_folder_reaches_a_fixpoint_or_says_why_not() {
    // The example ignores its packages: the default `-o .` is harmless.
    let p = example("greet");
    let first = json(&p.run(&["export", "--conda", "-A", "hello", "--json"]).ok());
    let again = p.run(&["export", "--conda", "-A", "hello", "--json"]).ok();
    assert!(
        json(&again).iter().all(|x| x["built"] == false),
        "{}",
        again.stdout()
    );
    assert_eq!(
        find(&json(&again), "hello")["sha256"],
        find(&first, "hello")["sha256"]
    );
    assert!(!again.stderr().contains("warning"), "{}", again.stderr());
    // Without the .gitignore, the packages would feed the next import:
    // the export says so.
    std::fs::remove_file(p.path().join(".gitignore")).unwrap();
    let r = p.run(&["export", "--conda", "-A", "hello"]).ok();
    assert!(
        r.stderr()
            .contains("which the recipe imports with source()"),
        "{}",
        r.stderr()
    );
}

#[test]
fn bad_metadata_is_refused_before_anything_builds() {
    for (field, value, says) in [
        (
            "depends",
            r#"["foo >=>=1 !!"]"#,
            "is not a conda match spec",
        ),
        ("constrains", r#"[""]"#, "an empty match spec"),
        (
            "run_exports",
            r#"{ weak = ["x"], typo = ["y"] }"#,
            "unknown key `typo`",
        ),
        ("run_exports", "3", "must be a list of match specs"),
        ("noarch", r#""python""#, "is not supported"),
    ] {
        let p = Project::new().file(
            "recipe.cb",
            format!(
                r#"package {{ name = "bad", version = "1.0", {field} = {value}, script = "echo built; mkdir $out" }}"#
            ),
        );
        let r = p.run(&["export", "--conda", "-o", "out"]).fails_with(2);
        assert!(r.stderr().contains(says), "{field}: {}", r.stderr());
        assert!(r.stderr().contains(&format!("({field})")), "{}", r.stderr());
        assert!(!r.stderr().contains("building"), "{}", r.stderr());
    }
    let p = Project::new().file(
        "recipe.cb",
        r#"package { name = "bad", version = "v1!2", script = "mkdir $out" }"#,
    );
    let r = p.run(&["export", "--conda", "-o", "out"]).fails_with(2);
    assert!(
        r.stderr().contains("is not a conda version"),
        "{}",
        r.stderr()
    );

    let p = example("greet");
    let ch = p.outside("ch");
    std::fs::create_dir_all(ch.join("linux-64")).unwrap();
    let bad = r#"{"packages": {"x-1-0.tar.bz2": 1}, "packages.conda": {}}"#;
    std::fs::write(ch.join("linux-64/repodata.json"), bad).unwrap();
    let r = p
        .run(&[
            "export",
            "--conda",
            "-A",
            "libgreet",
            "--channel",
            ch.to_str().unwrap(),
        ])
        .fails_with(2);
    assert!(
        r.stderr().contains("the record of `x-1-0.tar.bz2`"),
        "{}",
        r.stderr()
    );
    assert_eq!(
        std::fs::read_to_string(ch.join("linux-64/repodata.json")).unwrap(),
        bad
    );
}
