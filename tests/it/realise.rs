//! `cbuild realise`, for real: sandboxed builds into the store, reuse, and
//! early cutoff.

use std::path::Path;

use crate::support::Project;

fn greet() -> Project {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/greet");
    let mut p = Project::new();
    for f in ["recipe.cb", "greet.c", "greet.h", "hello.c"] {
        p = p.file(f, std::fs::read(dir.join(f)).unwrap());
    }
    // The test's store lives in the project: keep it out of the source.
    p.file(".gitignore", ".store/\n")
}

fn json(p: &Project, args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    serde_json::from_str(&p.run(&a).ok().stdout()).unwrap()
}

#[test]
fn a_library_and_a_program_linking_it_build_run_and_are_reused() {
    let p = greet();
    let first = json(&p, &["realise", "recipe.cb", "-A", "hello"]);
    assert_eq!(first["built"].as_array().unwrap().len(), 2, "{first}");
    let out = first["outputs"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()["out"]
        .as_str()
        .unwrap()
        .to_string();
    let run = std::process::Command::new(format!("{out}/bin/hello"))
        .arg("you")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&run.stdout), "hello, you\n");
    // The output is read-only, with the store mtime.
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(format!("{out}/bin/hello")).unwrap();
    assert_eq!((m.mode() & 0o777, m.mtime()), (0o555, 1));
    let again = json(&p, &["realise", "recipe.cb", "-A", "hello"]);
    assert_eq!(again["built"].as_array().unwrap().len(), 0, "{again}");
    // A realised target is a look-up: its inputs are not even visited.
    assert_eq!(again["cached"].as_array().unwrap().len(), 1, "{again}");
    assert_eq!(again["outputs"], first["outputs"], "{again}");
}

#[test]
fn a_comment_upstream_rebuilds_it_and_cuts_off_its_dependents() {
    let p = Project::new().file(
        "recipe.cb",
        r#"let
             cat = host_tool("cat"),
             a = derivation { name = "a", script = "echo data > $out # v1" },
             b = derivation { name = "b", build_inputs = [cat], script = "cat ${a} > $out; echo b >> $out" },
             c = derivation { name = "c", build_inputs = [cat], script = "cat ${b} > $out" },
           in c"#,
    );
    let first = json(&p, &["realise"]);
    assert_eq!(first["built"].as_array().unwrap().len(), 3, "{first}");
    let text = std::fs::read_to_string(p.path().join("recipe.cb")).unwrap();
    std::fs::write(p.path().join("recipe.cb"), text.replace("# v1", "# v2")).unwrap();
    let second = json(&p, &["realise"]);
    let built: Vec<&str> = second["built"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(built.len(), 1, "only `a` runs again: {second}");
    assert!(built[0].ends_with("-a.drv"), "{second}");
    assert_eq!(second["cached"].as_array().unwrap().len(), 2, "{second}");
    // The same bytes came out, so the outputs are the same objects.
    let out = |v: &serde_json::Value| {
        v["outputs"].as_object().unwrap().values().next().unwrap()["out"].clone()
    };
    assert_eq!(out(&first), out(&second));
}

#[test]
fn a_failing_build_exits_1_with_its_log_tail_and_leaves_nothing() {
    let p = Project::new().file(
        "recipe.cb",
        r#"derivation { name = "bad", script = "echo compiling; echo 'error: it broke' >&2; exit 3" }"#,
    );
    let r = p.run(&["realise"]).fails_with(1);
    assert!(r.stderr().contains("error: it broke"), "{}", r.stderr());
    assert!(r.stderr().contains("exit code 3"), "{}", r.stderr());
    let outputs = std::fs::read_dir(p.store().join("store"))
        .unwrap()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".drv"))
        .count();
    assert_eq!(outputs, 0, "a failed build left something in the store");
    // The whole log is kept, compressed, and `cbuild log` prints it.
    let log = p.run(&["log"]).ok().stdout();
    assert_eq!(log, "compiling\nerror: it broke\n");
    let logs: Vec<String> = std::fs::read_dir(p.store().join("logs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        logs.len() == 1 && logs[0].ends_with(".drv.log.zst"),
        "{logs:?}"
    );
    let r = Project::new()
        .file(
            "recipe.cb",
            r#"derivation { name = "never", builder = "/bin/true" }"#,
        )
        .run(&["log"])
        .fails_with(2);
    assert!(r.stderr().contains("no build log"), "{}", r.stderr());
}

#[test]
fn two_processes_on_overlapping_dags_build_each_derivation_once() {
    let p = Project::new().file(
        "recipe.cb",
        r#"let
             mk = fn(n, deps) => derivation {
               name = n,
               script = "sleep 0.2; echo ${n} ${join(" ", deps)} > $out",
               build_inputs = [host_tool("sleep")],
             },
             a = mk("a", []),
             b = mk("b", [a]),
             c = mk("c", [a]),
             d = mk("d", [b, c]),
           in { left = b, right = d }"#,
    );
    let spawn = |attr: &str| {
        std::process::Command::new(crate::support::cbuild_bin())
            .args(["realise", "-A", attr, "--json"])
            .current_dir(p.path())
            .env("CBUILD_STORE", p.store())
            .output()
            .unwrap()
    };
    let (one, two) = std::thread::scope(|s| {
        let x = s.spawn(|| spawn("left"));
        let y = s.spawn(|| spawn("right"));
        (x.join().unwrap(), y.join().unwrap())
    });
    let mut built = Vec::new();
    for out in [one, two] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        built.extend(
            v["built"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string()),
        );
    }
    built.sort();
    let n = built.len();
    built.dedup();
    assert_eq!(n, built.len(), "a derivation was built twice: {built:?}");
    assert_eq!(n, 4, "{built:?}");
}

#[test]
fn builds_are_hermetic_and_outputs_normalised() {
    let secret = tempfile::NamedTempFile::new_in("/tmp").unwrap();
    std::fs::write(secret.path(), "host secret").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let recipe = format!(
        r##"let
             cat = host_tool("cat"), chmod = host_tool("chmod"), mkdir = host_tool("mkdir"),
             bash = host_tool("bash"),
           in {{
             undeclared = derivation {{ name = "u", script = "ls / > $out" }},
             host_tmp = derivation {{ name = "t", build_inputs = [cat], script = "cat {secret} > $out" }},
             network = derivation {{
               name = "n", build_inputs = [bash],
               script = "bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}' > $out",
             }},
             control = derivation {{
               name = "ok", build_inputs = [mkdir, chmod],
               script = ''
                 mkdir -p $out/bin
                 echo "#!/bin/sh" > $out/bin/me
                 echo "echo $out" >> $out/bin/me
                 chmod 4755 $out/bin/me
               '',
             }},
           }}"##,
        secret = secret.path().display()
    );
    let p = Project::new().file("recipe.cb", recipe);
    for (attr, expect) in [
        ("undeclared", "ls: not found"),
        ("host_tmp", "No such file or directory"),
        ("network", "Connection refused"),
    ] {
        let r = p.run(&["realise", "-A", attr]).fails_with(1);
        assert!(r.stderr().contains(expect), "{attr}: {}", r.stderr());
    }
    assert!(
        listener.accept().is_err(),
        "the host listener heard a connection"
    );
    let out = p.run(&["realise", "-A", "control"]).ok().stdout();
    let out = out.trim();
    use std::os::unix::fs::MetadataExt;
    let me = format!("{out}/bin/me");
    assert_eq!(
        std::fs::metadata(&me).unwrap().mode() & 0o7777,
        0o555,
        "setuid must be stripped"
    );
    // The script wrote its scratch $out; the output names its final path.
    let text = std::fs::read_to_string(&me).unwrap();
    assert!(text.contains(&format!("echo {out}\n")), "{text}");
}
