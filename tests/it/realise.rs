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

#[test]
fn keep_going_builds_what_does_not_depend_on_a_failure_and_keep_failed_keeps_it() {
    let p = Project::new().file(
        "recipe.cb",
        r#"let
             bad = derivation { name = "bad", script = "echo half-done > half; echo oops >&2; exit 3" },
             after_bad = derivation { name = "after-bad", script = "echo ${bad} > $out" },
             good = derivation { name = "good", script = "echo fine > $out" },
             after_good = derivation { name = "after-good", script = "echo ${good} > $out" },
           in { bad = bad, after_bad = after_bad, good = good, after_good = after_good }"#,
    );
    let all = ["-A", "after_bad", "-A", "after_good", "--json", "-j", "1"];
    // Without --keep-going the first failure stops new builds.
    let mut args = vec!["realise", "recipe.cb"];
    args.extend(all);
    let r = p.run(&args).fails_with(1);
    let v: serde_json::Value = serde_json::from_str(&r.stdout()).unwrap();
    assert_eq!(v["failed"].as_array().unwrap().len(), 1, "{v}");
    assert!(r.stderr().contains("oops"), "the log tail: {}", r.stderr());
    assert!(r.stderr().contains("cbuild log "), "{}", r.stderr());
    // With it, everything that does not depend on the failure is built.
    let mut args = vec!["realise", "recipe.cb", "--keep-going", "--keep-failed"];
    args.extend(all);
    let r = p.run(&args).fails_with(1);
    let v: serde_json::Value = serde_json::from_str(&r.stdout()).unwrap();
    let names = |k: &str| -> Vec<String> {
        let mut n: Vec<String> = v[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                let s = x.as_str().unwrap();
                s[s.find('-').unwrap() + 1..]
                    .trim_end_matches(".drv")
                    .to_string()
            })
            .collect();
        n.sort();
        n
    };
    assert_eq!(names("failed"), ["bad"], "{v}");
    assert_eq!(names("skipped"), ["after-bad"], "{v}");
    assert!(names("built").contains(&"after-good".to_string()), "{v}");
    assert_eq!(
        v["outputs"].as_object().unwrap().len(),
        1,
        "only the good target has outputs: {v}"
    );
    // --keep-failed says where the build directory is, and keeps it.
    let err = r.stderr();
    let kept = err
        .lines()
        .find_map(|l| l.strip_prefix("the build directory is kept at "))
        .unwrap_or_else(|| panic!("{err}"));
    assert_eq!(
        std::fs::read_to_string(Path::new(kept).join("build/half")).unwrap(),
        "half-done\n"
    );
    // As store-format.md says: `build/`, `store/` (the scratch outputs,
    // none here) and `tmp/` (its /tmp), nothing else.
    let mut parts: Vec<String> = std::fs::read_dir(kept)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    parts.sort();
    assert_eq!(parts, ["build", "store", "tmp"], "{kept}");
    // The store holds nothing of the failure.
    let listed = std::fs::read_dir(p.store().join("store"))
        .unwrap()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.ends_with("-bad") || n.contains("-bad-")
        })
        .count();
    assert_eq!(listed, 0);
}

#[test]
fn multiple_outputs_are_separate_objects_that_may_refer_to_each_other() {
    let p = Project::new().file(
        "recipe.cb",
        r#"let
             mkdir = host_tool("mkdir"),
             multi = derivation {
               name = "multi", outputs = ["out", "lib", "dev"], build_inputs = [mkdir],
               script = ''
                 mkdir -p $lib/lib $dev/include $out/bin
                 echo "the library" > $lib/lib/libm.txt
                 echo "lib=$lib" > $dev/include/where.h
                 echo "lib=$lib dev=$dev" > $out/bin/info
               '',
             },
             cyclic = derivation {
               name = "cyclic", outputs = ["out", "lib"],
               script = ''
                 echo $lib > $out
                 echo $out > $lib
               '',
             },
             user = derivation { name = "user", script = "echo ${multi.outputs.dev} > $out" },
           in { multi = multi, cyclic = cyclic, user = user }"#,
    );
    let v = json(&p, &["realise", "recipe.cb", "-A", "multi"]);
    let outs = v["outputs"].as_object().unwrap().values().next().unwrap();
    let path = |o: &str| outs[o].as_str().unwrap().to_string();
    let (out, lib, dev) = (path("out"), path("lib"), path("dev"));
    assert!(out.ends_with("-multi") && lib.ends_with("-multi-lib") && dev.ends_with("-multi-dev"));
    assert_eq!(
        std::fs::read_to_string(format!("{dev}/include/where.h")).unwrap(),
        format!("lib={lib}\n"),
        "a sibling's scratch path is rewritten to its final path"
    );
    assert_eq!(
        std::fs::read_to_string(format!("{out}/bin/info")).unwrap(),
        format!("lib={lib} dev={dev}\n")
    );
    // References: out -> lib, dev; dev -> lib; lib -> nothing.
    let refs = |o: &str| -> Vec<String> {
        let j: serde_json::Value =
            serde_json::from_str(&p.run(&["store", "path-info", "--json", o]).ok().stdout())
                .unwrap();
        let mut r: Vec<String> = j["references"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect();
        r.sort();
        r
    };
    let mut expect = vec![lib.clone(), dev.clone()];
    expect.sort();
    assert_eq!(refs(&out), expect);
    assert_eq!(refs(&dev), std::slice::from_ref(&lib));
    assert!(refs(&lib).is_empty());
    // A dependent sees the output it asked for.
    let v = json(&p, &["realise", "recipe.cb", "-A", "user"]);
    let user = v["outputs"].as_object().unwrap().values().next().unwrap()["out"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(std::fs::read_to_string(user).unwrap(), format!("{dev}\n"));
    // Outputs that refer to each other both ways cannot be named by content.
    let r = p
        .run(&["realise", "recipe.cb", "-A", "cyclic"])
        .fails_with(1);
    assert!(r.stderr().contains("cycle"), "{}", r.stderr());
}

#[test]
fn a_binary_with_an_rpath_into_its_own_output_runs_from_the_final_path() {
    let p = Project::new().file(
        "recipe.cb",
        r#"let cc = host_tool("cc"), mkdir = host_tool("mkdir") in
           derivation {
             name = "rpath", build_inputs = [cc, mkdir],
             script = ''
               mkdir -p $out/lib $out/bin
               echo 'int answer(void) { return 42; }' > lib.c
               printf '#include <stdio.h>\nint answer(void);\nint main(void) { printf("%%d\\n", answer()); return 0; }\n' > main.c
               cc -shared -fPIC -o $out/lib/libanswer.so lib.c
               cc -o $out/bin/answer main.c -L$out/lib -lanswer -Wl,-rpath,$out/lib
             '',
           }"#,
    );
    let out = p.run(&["realise", "recipe.cb"]).ok().stdout();
    let out = out.trim();
    let run = std::process::Command::new(format!("{out}/bin/answer"))
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "42\n",
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let binary = std::fs::read(format!("{out}/bin/answer")).unwrap();
    let needle = format!("{out}/lib");
    assert!(
        binary.windows(needle.len()).any(|w| w == needle.as_bytes()),
        "the RPATH names the final path"
    );
}

#[test]
fn verbose_realise_says_why_each_derivation_is_built() {
    let recipe = |salt: &str| {
        format!(
            r#"let
                 a = derivation {{ name = "a", script = "echo $SALT > $out", env = {{ SALT = "{salt}" }} }},
                 b = derivation {{ name = "b", script = "cat ${{a}} > $out", build_inputs = [host_tool("cat")] }},
               in b"#
        )
    };
    let p = Project::new().file("recipe.cb", recipe("one"));
    let r = p.run(&["-v", "realise", "recipe.cb"]).ok();
    assert!(
        r.stderr()
            .contains("-a.drv: not in the store (no derivation of this name was built before)"),
        "{}",
        r.stderr()
    );
    std::fs::write(p.path().join("recipe.cb"), recipe("two")).unwrap();
    let r = p.run(&["-v", "realise", "recipe.cb"]).ok();
    let err = r.stderr();
    let line = |name: &str| {
        err.lines()
            .find(|l| l.starts_with("building ") && l.contains(&format!("-{name}.drv:")))
            .unwrap_or_else(|| panic!("no line for {name}: {err}"))
            .to_string()
    };
    assert!(line("a").ends_with("env SALT"), "{err}");
    assert!(line("a").contains("changed since "), "{err}");
    assert!(line("b").ends_with("input a"), "{err}");
}

#[test]
fn sandbox_off_builds_without_namespaces_and_marks_the_outputs() {
    let p = Project::new().file(
        "recipe.cb",
        r#"derivation { name = "plain", script = "echo $TMPDIR > $out" }"#,
    );
    let run = p.run(&["realise", "recipe.cb", "--sandbox=off"]);
    if refused_as_root(&run) {
        return;
    }
    let out = run.ok().stdout();
    let out = out.trim().to_string();
    let j: serde_json::Value =
        serde_json::from_str(&p.run(&["store", "path-info", "--json", &out]).ok().stdout())
            .unwrap();
    assert_eq!(j["sandboxed"], false, "{j}");
    // Its TMPDIR was a host path (no /build inside a sandbox).
    let tmp = std::fs::read_to_string(&out).unwrap();
    assert!(tmp.starts_with(&*p.store().to_string_lossy()), "{tmp}");
}

#[test]
fn without_user_namespaces_realise_refuses_unless_sandbox_off() {
    let p = Project::new().file(
        "recipe.cb",
        r#"derivation { name = "x", script = "echo hi > $out" }"#,
    );
    // A user namespace of the test's own where no further ones may be made.
    let script = format!(
        "echo 0 > /proc/sys/user/max_user_namespaces && exec {} realise recipe.cb \"$@\"",
        crate::support::cbuild_bin().display()
    );
    let run = |extra: &[&str]| {
        let mut cmd = std::process::Command::new("unshare");
        cmd.args(["-Urm", "sh", "-c", &script, "sh"])
            .args(extra)
            .current_dir(p.path())
            .env("CBUILD_STORE", p.store());
        cmd.output().unwrap()
    };
    let refused = run(&[]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{err}");
    assert!(err.contains("cannot create the build namespaces"), "{err}");
    assert!(err.contains("--sandbox=off"), "{err}");
    let off = run(&["--sandbox=off"]);
    if cbuild::build::sandbox::user::is_host_root() {
        // Root in a user namespace of its own that maps it to root is
        // still the host's root: no build runs as it.
        let err = String::from_utf8_lossy(&off.stderr);
        assert_eq!(off.status.code(), Some(2), "{err}");
        assert!(
            err.contains("refusing to build without a sandbox as root"),
            "{err}"
        );
        return;
    }
    assert!(
        off.status.success(),
        "{}",
        String::from_utf8_lossy(&off.stderr)
    );
}

#[test]
fn killing_realise_kills_its_builds_and_the_next_realise_recovers() {
    let p = Project::new().file(
        "recipe.cb",
        r#"let sleep = host_tool("sleep") in {
             slow = derivation { name = "slow", build_inputs = [sleep], script = "sleep 37.25; echo late > $out" },
             quick = derivation { name = "quick", build_inputs = [sleep], script = "sleep 0.3; echo done > $out" },
           }"#,
    );
    let mut child = std::process::Command::new(crate::support::cbuild_bin())
        .args(["realise", "recipe.cb", "-A", "slow", "-q"])
        .current_dir(p.path())
        .env("CBUILD_STORE", p.store())
        .spawn()
        .unwrap();
    let running = || {
        std::process::Command::new("pgrep")
            .args(["-f", "sleep 37.25"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    let start = std::time::Instant::now();
    while !running() && start.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(running(), "the build never started");
    child.kill().unwrap();
    child.wait().unwrap();
    let start = std::time::Instant::now();
    while running() && start.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!running(), "the build outlived the cbuild that started it");
    // The store is usable, nothing of the killed build is registered, and
    // the lock it held is free.
    let r = p
        .run(&["realise", "recipe.cb", "-A", "quick", "--json"])
        .ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout()).unwrap();
    assert_eq!(v["built"].as_array().unwrap().len(), 1, "{v}");
    let listed: Vec<String> = std::fs::read_dir(p.store().join("store"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with("-slow"))
        .collect();
    assert!(listed.is_empty(), "{listed:?}");
}

#[test]
fn the_root_builds_share_is_read_only() {
    let p = Project::new().file(
        "recipe.cb",
        r#"let touch = host_tool("touch"), mkdir = host_tool("mkdir"), cat = host_tool("cat") in {
             etc = derivation { name = "etc", build_inputs = [touch], script = "touch /etc/planted" },
             root = derivation { name = "root", build_inputs = [touch], script = "touch /planted" },
             home = derivation { name = "home", build_inputs = [mkdir], script = "mkdir -p $HOME/.cache" },
             tmp = derivation { name = "tmp", build_inputs = [touch], script = "touch /tmp/mine; touch /build/mine; echo ok > $out" },
             look = derivation {
               name = "look", build_inputs = [cat],
               script = "cat /etc/passwd > $out; if [ -e /planted ] || [ -e /etc/planted ] || [ -e /tmp/mine ]; then exit 9; fi",
             },
           }"#,
    );
    for attr in ["etc", "root", "home"] {
        let r = p.run(&["realise", "recipe.cb", "-A", attr]).fails_with(1);
        assert!(
            r.stderr().contains("Read-only file system"),
            "{attr}: {}",
            r.stderr()
        );
    }
    // Its own /tmp and /build are writable, and nothing of one build is
    // seen by the next.
    p.run(&["realise", "recipe.cb", "-A", "tmp", "-A", "look", "-j", "1"])
        .ok();
}

#[test]
fn dependents_see_the_closure_of_inputs_built_moments_before() {
    // c uses b, whose output refers to a: when c starts, b may be in place
    // but not registered yet; a must still be in c's sandbox.
    let p = Project::new().file(
        "recipe.cb",
        r#"let mkdir = host_tool("mkdir"), cat = host_tool("cat") in {
             c = let
               a = derivation { name = "a", script = "echo data-of-a > $out" },
               b = derivation {
                 name = "b", build_inputs = [mkdir],
                 script = ''
                   mkdir -p $out
                   echo 'cat ${a}' > $out/run
                 '',
               },
             in derivation { name = "c", build_inputs = [cat], script = "sh ${b}/run > $out" },
           }"#,
    );
    let out = p
        .run(&["realise", "recipe.cb", "-A", "c", "-j", "1"])
        .ok()
        .stdout();
    assert_eq!(std::fs::read_to_string(out.trim()).unwrap(), "data-of-a\n");
}

#[test]
fn two_builds_with_the_same_output_in_one_run_share_it() {
    let p = Project::new().file(
        "recipe.cb",
        r#"{
             one = derivation { name = "same", env = { WHY = "1" }, script = "echo same > $out" },
             two = derivation { name = "same", env = { WHY = "2" }, script = "echo same > $out" },
           }"#,
    );
    for jobs in ["1", "2"] {
        let q = Project::new().file("recipe.cb", p.read("recipe.cb"));
        let out = q
            .run(&["realise", "recipe.cb", "-A", "one", "-A", "two", "-j", jobs])
            .ok()
            .stdout();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], lines[1], "identical bytes share one object");
    }
}

#[test]
fn sandbox_off_does_not_wait_for_what_a_builder_leaves_running() {
    let p = Project::new().file(
        "recipe.cb",
        r#"let setsid = host_tool("setsid"), sleep = host_tool("sleep") in
           derivation {
             name = "daemon", build_inputs = [setsid, sleep],
             script = "setsid -f sleep 31.5; sleep 29.5 & echo done > $out",
           }"#,
    );
    let start = std::time::Instant::now();
    let run = p.run(&["realise", "recipe.cb", "--sandbox=off"]);
    if refused_as_root(&run) {
        return;
    }
    run.ok();
    assert!(
        start.elapsed() < std::time::Duration::from_secs(20),
        "realise waited for the builder's leftovers"
    );
    // What stayed in the build's process group is gone.
    let left = std::process::Command::new("pgrep")
        .args(["-f", "sleep 29.5"])
        .output()
        .unwrap();
    assert!(!left.status.success(), "a leftover of the build still runs");
    let _ = std::process::Command::new("pkill")
        .args(["-f", "sleep 31.5"])
        .status();
}

#[test]
fn logs_are_kept_for_failures_even_silent_ones_and_not_for_silent_successes() {
    let p = Project::new().file(
        "recipe.cb",
        r#"{
             quiet_fail = derivation { name = "qf", script = "exit 4" },
             no_output = derivation { name = "no-out", script = "true" },
             quiet_ok = derivation { name = "qo", script = "echo > $out" },
             loud = derivation { name = "loud", script = "echo to-stdout; echo to-stderr >&2; echo > $out" },
           }"#,
    );
    p.run(&["realise", "recipe.cb", "-A", "quiet_fail"])
        .fails_with(1);
    // The builder succeeded, the build did not (no output): a log too.
    let r = p
        .run(&["realise", "recipe.cb", "-A", "no_output"])
        .fails_with(1);
    assert!(
        r.stderr().contains("did not produce its output"),
        "{}",
        r.stderr()
    );
    assert_eq!(
        p.run(&["log", "recipe.cb", "-A", "no_output"])
            .ok()
            .stdout(),
        ""
    );
    p.run(&["realise", "recipe.cb", "-A", "quiet_ok", "-A", "loud"])
        .ok();
    let log = |attr: &str| p.run(&["log", "recipe.cb", "-A", attr]);
    assert_eq!(log("quiet_fail").ok().stdout(), "");
    assert_eq!(log("quiet_ok").ok().stdout(), "");
    assert_eq!(log("loud").ok().stdout(), "to-stdout\nto-stderr\n");
    let files: Vec<String> = std::fs::read_dir(p.store().join("logs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 3, "{files:?}");
}

#[test]
fn a_builder_cannot_reach_the_host_through_symlinks_signals_or_descriptors() {
    let victim = tempfile::tempdir().unwrap();
    std::fs::write(victim.path().join("precious"), "keep me").unwrap();
    let v = victim.path().display();
    let recipe = format!(
        r#"let
             ln = host_tool("ln"), rm = host_tool("rm"), cat = host_tool("cat"), kill = host_tool("kill"),
             link = derivation {{ name = "link", build_inputs = [ln], script = "ln -s {v} $out" }},
           in {{
             # Leaves /build/tmp as a symlink to a host directory, which
             # cbuild empties for reuse after the build.
             tmp_link = derivation {{
               name = "tmp-link", build_inputs = [ln, rm],
               script = "rm -r /build/tmp; ln -s {v} /build/tmp; echo > $out",
             }},
             # An output that is a symlink to a host directory, then a
             # build that reads through it.
             link = link,
             reader = derivation {{
               name = "reader", build_inputs = [cat],
               script = "cat ${{link}}/precious > $out",
             }},
             # Signals every process of its process group.
             killer = derivation {{ name = "killer", build_inputs = [kill], script = "kill -9 0; echo > $out" }},
             # Lists its open descriptors.
             fds = derivation {{ name = "fds", script = "for f in /proc/self/fd/*; do echo $f; done > $out" }},
           }}"#
    );
    let p = Project::new().file("recipe.cb", recipe);
    p.run(&["realise", "recipe.cb", "-A", "tmp_link"]).ok();
    // The registrar empties work directories after builds: give it time.
    p.run(&["realise", "recipe.cb", "-A", "link"]).ok();
    assert_eq!(
        std::fs::read_to_string(victim.path().join("precious")).unwrap(),
        "keep me"
    );
    let r = p
        .run(&["realise", "recipe.cb", "-A", "reader"])
        .fails_with(1);
    assert!(r.stderr().contains("No such file"), "{}", r.stderr());
    // kill -9 0 reaches only the build's own session (where the builder is
    // pid 1, which ignores it): cbuild finishes and reports.
    p.run(&["realise", "recipe.cb", "-A", "killer"]).ok();
    // A descriptor cbuild inherits without close-on-exec stays out.
    let script = format!(
        "exec 7</dev/null; exec {} realise recipe.cb -A fds",
        crate::support::cbuild_bin().display()
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .current_dir(p.path())
        .env("CBUILD_STORE", p.store())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let fds = std::fs::read_to_string(path).unwrap();
    assert!(!fds.contains("/proc/self/fd/7"), "{fds}");
}

/// Whether `run` is `--sandbox=off` refused because cbuild runs as root
/// (checked to be so when it runs as root): a builder without namespaces
/// would be the host's root. The tests that use `--sandbox=off` run in full
/// in the unprivileged pass of CI.
fn refused_as_root(run: &crate::support::Run) -> bool {
    if !cbuild::build::sandbox::user::is_host_root() {
        return false;
    }
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(
        run.stderr()
            .contains("refusing to build without a sandbox as root"),
        "{}",
        run.stderr()
    );
    true
}

/// Issue 20: autoconf's configure looped forever without `expr`, and conda
/// build scripts expect `PREFIX`, `SRC_DIR`, `CPU_COUNT` and `PKG_*`.
#[test]
fn package_builds_see_what_conda_scripts_and_configure_expect() {
    let p = Project::new()
        .file(
            "recipe.cb",
            r#"
let src = source(./data) in
package {
  name = "envs", version = "2.1", build_number = 3, src = src,
  script = ''
    mkdir -p $PREFIX
    echo "$PKG_NAME $PKG_VERSION $PKG_BUILDNUM" > $PREFIX/pkg
    test "$PREFIX" = "$out" && test "$SRC_DIR" = "$src" && cat $SRC_DIR/x >> $PREFIX/pkg
    test "$CPU_COUNT" -ge 1 && expr 6 \* 7 >> $PREFIX/pkg
    echo a b | awk '{print $2}' >> $PREFIX/pkg
    uname -s >> $PREFIX/pkg
    od -An -c $SRC_DIR/x | tr -d ' \n' >> $PREFIX/pkg
  '',
}
"#,
        )
        .file("data/x", "src\n");
    let out = p.run(&["realise", "-q", "recipe.cb"]).ok().stdout();
    let got = std::fs::read_to_string(std::path::Path::new(out.trim()).join("pkg")).unwrap();
    assert_eq!(got, "envs 2.1 3\nsrc\n42\nb\nLinux\nsrc\\n");
}

/// Issue 20: conda recipes patch their sources (`patches` applied with
/// `patch -p1`, in order, to a copy of `src`).
#[test]
fn patches_apply_in_order_to_a_copy_of_the_source_and_a_bad_one_names_its_hunk() {
    let hunk = |from: &str, to: &str, context: (&str, &str)| {
        format!(
            "--- a/hello.txt\n+++ b/hello.txt\n@@ -1,3 +1,3 @@\n {}\n-{from}\n+{to}\n {}\n",
            context.0, context.1
        )
    };
    let p = Project::new()
        .file("src/hello.txt", "one\ntwo\nthree\n")
        .file("fix1.patch", hunk("two", "TWO", ("one", "three")))
        .file(
            "fix2.patch",
            "--- a/hello.txt\n+++ b/hello.txt\n@@ -1,3 +1,3 @@\n one\n TWO\n-three\n+THREE\n",
        )
        .file("bad.patch", hunk("zwei", "ZWEI", ("one", "three")))
        .file(
            "recipe.cb",
            r#"
let src = source(./src) in {
  good = package {
    name = "good", version = "1", src = src, patches = [./fix1.patch, ./fix2.patch],
    script = ''
      mkdir -p $out
      cp $SRC_DIR/hello.txt $out/
      test "$src" = "$SRC_DIR"
    '',
  },
  bad = package {
    name = "bad", version = "1", src = src, patches = [./fix1.patch, ./bad.patch],
    script = "mkdir -p $out",
  },
  nosrc = package { name = "nosrc", version = "1", patches = [./fix1.patch], script = "" },
}
"#,
        );
    let out = p
        .run(&["realise", "-q", "recipe.cb", "-A", "good"])
        .ok()
        .stdout();
    assert_eq!(
        std::fs::read_to_string(Path::new(out.trim()).join("hello.txt")).unwrap(),
        "one\nTWO\nTHREE\n"
    );
    // The source in the store is untouched.
    assert_eq!(
        std::fs::read_to_string(p.path().join("src/hello.txt")).unwrap(),
        "one\ntwo\nthree\n"
    );
    let r = p.run(&["realise", "recipe.cb", "-A", "bad"]).fails_with(1);
    let err = r.stderr();
    assert!(
        err.contains("Hunk #1 FAILED") && err.contains("bad.patch does not apply"),
        "{err}"
    );
    let r = p
        .run(&["realise", "recipe.cb", "-A", "nosrc"])
        .fails_with(2);
    assert!(r.stderr().contains("there is no `src`"), "{}", r.stderr());
}

/// Issue 20: a configure script looping without output looked like a hung
/// cbuild. A build that runs long shows its last log line, also when stderr
/// is not a terminal (every `CBUILD_LIVE_LOG_SECS`, 30 s by default).
#[test]
fn a_long_build_shows_its_last_log_line_as_it_runs() {
    let p = Project::new().file(
        "recipe.cb",
        r#"let sleep = host_tool("sleep") in derivation {
             name = "slow", build_inputs = [sleep],
             script = "echo 'checking for expr... yes'; sleep 3; echo done > $out",
           }"#,
    );
    let r = p
        .run_in(
            p.path(),
            &["realise", "recipe.cb"],
            &[("CBUILD_LIVE_LOG_SECS", "1")],
        )
        .ok();
    let err = r.stderr();
    assert!(
        err.contains("-slow.drv (1 s); last line: checking for expr... yes")
            || err.contains("-slow.drv (2 s); last line: checking for expr... yes"),
        "{err}"
    );
    // Quiet stays quiet.
    let q = Project::new().file("recipe.cb", p.read("recipe.cb"));
    let r = q
        .run_in(
            q.path(),
            &["realise", "-q", "recipe.cb"],
            &[("CBUILD_LIVE_LOG_SECS", "1")],
        )
        .ok();
    assert!(!r.stderr().contains("still building"), "{}", r.stderr());
}
