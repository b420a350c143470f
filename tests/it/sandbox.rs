//! The build sandbox, run for real: what a build can and cannot reach.

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;

use cbuild::build::sandbox::linux::run;
use cbuild::build::sandbox::{Bind, SandboxSpec};

use crate::support::cbuild_bin;

/// Runs `script` with the host's `/usr`, `/bin`, `/lib*` read-only, plus
/// `binds`; returns (exit code, log, build dir).
fn sandboxed(script: &str, binds: Vec<Bind>) -> (i32, String, tempfile::TempDir) {
    sandboxed_with(script, binds, Default::default())
}

/// [`sandboxed`] under a variation (`cbuild check --vary`).
fn sandboxed_with(
    script: &str,
    binds: Vec<Bind>,
    vary: cbuild::build::sandbox::spec::Variation,
) -> (i32, String, tempfile::TempDir) {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let build = tempfile::tempdir().unwrap();
    std::fs::create_dir(&root).unwrap();
    // The sandbox's root is read-only: per-build binds go into the store
    // directory (a writable directory of the build's own, here `/store`).
    let store = work.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let mut all = vec![Bind {
        source: store.to_string_lossy().into(),
        target: "/store".into(),
        writable: true,
    }];
    all.extend(binds);
    // As root, builds run as a build user of their own: what they write
    // must be theirs (what `realise` does for a build's directories).
    if let Some(user) = cbuild::build::sandbox::user::build_user() {
        for dir in [&store, build.path()] {
            cbuild::build::sandbox::user::hand_over(dir, user, true).unwrap();
        }
    }
    let spec = SandboxSpec {
        root: root.to_string_lossy().into(),
        binds: all,
        build_dir: build.path().to_string_lossy().into(),
        tmp_dir: None,
        cgroup_procs: Vec::new(),
        program: "/bin/sh".into(),
        args: vec!["-eu".into(), "-c".into(), script.into()],
        env: vec![
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("HOME".into(), "/homeless-shelter".into()),
        ],
        symlinks: Vec::new(),
        network: false,
        namespaces: true,
        toolchain: cbuild::build::sandbox::spec::host_toolchain_binds(),
        store_dir: "/store".into(),
        vary,
    };
    let log_path = work.path().join("log");
    let log = std::fs::File::create(&log_path).unwrap();
    let status = run(&cbuild_bin(), &spec, log).unwrap();
    let text = std::fs::read_to_string(&log_path).unwrap();
    (status.code().unwrap_or(-1), text, build)
}

#[test]
fn a_build_runs_as_the_build_user_in_its_own_world() {
    let (code, log, build) = sandboxed(
        "id -u; id -g; hostname; pwd; echo made > /build/out; ls /; cat /etc/passwd | head -2; echo $$",
        Vec::new(),
    );
    assert_eq!(code, 0, "{log}");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(&lines[..4], ["1000", "100", "localhost", "/build"], "{log}");
    assert_eq!(
        std::fs::read_to_string(build.path().join("out")).unwrap(),
        "made\n"
    );
    assert!(
        !log.contains("root\n") || log.contains("root:x:0:0"),
        "{log}"
    );
    assert!(
        !log.lines().any(|l| l == "home"),
        "the host's /home is visible: {log}"
    );
    assert_eq!(
        lines.last().unwrap().trim(),
        "1",
        "the builder is not pid 1: {log}"
    );
}

#[test]
fn the_host_network_is_out_of_reach_but_loopback_works() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    // Abstract Unix sockets belong to the network namespace: the host's
    // (X11's, D-Bus's, systemd's) are out of reach as well.
    use std::os::linux::net::SocketAddrExt;
    let name = format!("cbuild-test-{}", std::process::id());
    let abstract_listener = std::os::unix::net::UnixListener::bind_addr(
        &std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap(),
    )
    .unwrap();
    abstract_listener.set_nonblocking(true).unwrap();
    let script = format!(
        "python3 -c '
import socket
try:
    socket.create_connection((\"127.0.0.1\", {port}), timeout=2)
    print(\"CONNECTED\")
except OSError as e:
    print(\"refused\", e)
u = socket.socket(socket.AF_UNIX)
try:
    u.connect(\"\\0{name}\")
    print(\"ABSTRACT CONNECTED\")
except OSError as e:
    print(\"abstract refused\", e)
s = socket.socket(); s.bind((\"127.0.0.1\", 0)); s.listen(1)
c = socket.create_connection(s.getsockname(), timeout=2)
print(\"loopback ok\")
'"
    );
    let (code, log, _b) = sandboxed(&script, Vec::new());
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("refused") && !log.contains("CONNECTED"),
        "{log}"
    );
    assert!(log.contains("loopback ok"), "{log}");
    assert!(
        log.contains("abstract refused") && !log.contains("ABSTRACT CONNECTED"),
        "{log}"
    );
    assert!(abstract_listener.accept().is_err());
    let mut buf = [0u8; 1];
    match listener.accept() {
        Ok((mut s, _)) => panic!("the listener heard something: {:?}", s.read(&mut buf)),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
    }
}

#[test]
fn host_tmp_home_and_undeclared_paths_are_invisible_and_inputs_read_only() {
    let secret = tempfile::NamedTempFile::new_in("/tmp").unwrap();
    std::fs::write(secret.path(), "secret").unwrap();
    let input = tempfile::tempdir().unwrap();
    std::fs::write(input.path().join("data"), "input").unwrap();
    let script = format!(
        "cat {} && echo LEAK-TMP || true; ls /root && echo LEAK-HOME || true; \
         cat /store/input/data; echo x > /store/input/data && echo WROTE-INPUT || true; \
         touch /tmp/private && echo tmp-writable",
        secret.path().display()
    );
    let (code, log, _b) = sandboxed(
        &script,
        vec![Bind {
            source: input.path().to_string_lossy().into(),
            target: "/store/input".into(),
            writable: false,
        }],
    );
    assert_eq!(code, 0, "{log}");
    for leak in ["LEAK-TMP", "LEAK-HOME", "WROTE-INPUT"] {
        assert!(!log.contains(leak), "{leak}: {log}");
    }
    assert!(
        log.contains("input") && log.contains("tmp-writable"),
        "{log}"
    );
    assert_eq!(
        std::fs::read_to_string(input.path().join("data")).unwrap(),
        "input"
    );
}

#[test]
fn a_failing_builder_s_status_comes_back() {
    let (code, log, _b) = sandboxed("echo about to fail; exit 7", Vec::new());
    assert_eq!(code, 7, "{log}");
    // The builder is pid 1 of its namespace, which ignores signals it does
    // not handle; a child killed by a signal shows as 128 + its number.
    let (code, log, _b) = sandboxed("sh -c 'kill -KILL $$'", Vec::new());
    assert_eq!(code, 128 + 9, "{log}");
}

#[test]
fn a_variation_changes_the_build_directory_host_name_umask_cpus_and_ids() {
    let script = "pwd; hostname; umask; nproc; touch f; stat -c %a f; id -u; id -g; stat -c %u f";
    let (code, plain, _) = sandboxed(script, Vec::new());
    assert_eq!(code, 0, "{plain}");
    let lines: Vec<&str> = plain.lines().collect();
    assert_eq!(lines[0], "/build");
    assert_eq!(lines[1], "localhost");
    let vary = cbuild::build::sandbox::spec::Variation {
        build_path: Some("/.cbuild/elsewhere/build-dir".into()),
        hostname: Some("varied-host".into()),
        umask: Some(0o077),
        one_cpu: true,
        faketime: None,
        ids: Some((2001, 2002)),
    };
    let (code, varied, _) = sandboxed_with(script, Vec::new(), vary);
    assert_eq!(code, 0, "{varied}");
    assert_eq!(
        varied.lines().collect::<Vec<_>>(),
        [
            "/.cbuild/elsewhere/build-dir",
            "varied-host",
            "0077",
            "1",
            "600",
            "2001",
            "2002",
            "2001"
        ]
    );
}

/// A build with many inputs sees in its store directory exactly its
/// closure and its outputs, the inputs read-only whatever their kind, and
/// outputs of every kind land in the store.
#[test]
fn a_build_with_many_inputs_sees_exactly_its_closure_read_only() {
    let mut inputs = String::new();
    let mut names = Vec::new();
    for i in 0..12 {
        // Files, directories and symlinks among the inputs.
        let script = match i % 3 {
            0 => format!("echo {i} > $out"),
            1 => format!("mkdir $out; echo {i} > $out/v"),
            _ => format!("ln -s /nowhere/{i} $out"),
        };
        inputs.push_str(&format!(
            "  in{i} = derivation {{ name = \"in{i}\", build_inputs = t, script = \"{script}\" }},\n"
        ));
        names.push(format!("in{i}"));
    }
    let recipe = format!(
        r#"let t = [host_tool("ls"), host_tool("sort"), host_tool("touch"), host_tool("cat"),
           host_tool("readlink"), host_tool("mkdir"), host_tool("ln"), host_tool("dirname")],
{inputs}in {{
  unrelated = derivation {{ name = "unrelated", build_inputs = t, script = "echo u > $out" }},
  many = derivation {{
    name = "many", build_inputs = t, outputs = ["out", "file", "link"],
    env = {{ deps = join(" ", [{list}]) }},
    script = ''
      mkdir $out
      ls "$(dirname $out)" | sort > $out/listing
      for d in $deps; do
        if [ -d "$d" ] && [ ! -L "$d" ]; then
          cat $d/v >> $out/read
          if touch $d/w 2>/dev/null; then echo "wrote into $d" >&2; exit 7; fi
        elif [ -f "$d" ] && [ ! -L "$d" ]; then
          cat $d >> $out/read
          if echo x >> $d 2>/dev/null; then echo "wrote $d" >&2; exit 7; fi
        else
          readlink $d >> $out/read
        fi
      done
      echo f > $file
      ln -s $out/listing $link
    '',
  }},
}}"#,
        list = names.join(", ")
    );
    let p = crate::support::Project::new().file("recipe.cb", recipe);
    p.run(&["realise", "recipe.cb", "-A", "unrelated"]).ok();
    let out = realised_out(&p, &["-A", "many"]);
    let listing = std::fs::read_to_string(Path::new(&out).join("listing")).unwrap();
    let seen: Vec<&str> = listing.lines().collect();
    // The twelve inputs and `out` (the other outputs are made after the
    // listing), nothing else: not the unrelated path built before.
    assert_eq!(seen.len(), 13, "{listing}");
    assert!(!listing.contains("-unrelated"), "{listing}");
    for i in 0..12 {
        assert!(listing.contains(&format!("-in{i}\n")), "in{i}: {listing}");
    }
    let read = std::fs::read_to_string(Path::new(&out).join("read")).unwrap();
    for i in 0..12 {
        let want = if i % 3 == 2 {
            format!("/nowhere/{i}")
        } else {
            i.to_string()
        };
        assert!(read.lines().any(|l| l == want), "{i}: {read}");
    }
    // The other outputs, a file and a symlink, are in the store too, and
    // no input was touched.
    let store = Path::new(&out).parent().unwrap();
    let file = std::fs::read_dir(store)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with("-many-file"))
        .expect("the file output");
    assert_eq!(std::fs::read_to_string(file.path()).unwrap(), "f\n");
    let link = std::fs::read_dir(store)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with("-many-link"))
        .expect("the link output");
    assert!(link.file_type().unwrap().is_symlink());
    p.run(&["store", "verify"]).ok();
}

/// Builds one after another reuse one view of the store: what the first
/// build's closure and its builder left there is gone when the next one
/// runs, and an input the builder replaced is there again as it is.
#[test]
fn the_next_build_in_a_reused_store_view_sees_only_its_own_closure() {
    let p = crate::support::Project::new().file(
        "recipe.cb",
        r#"let t = [host_tool("ls"), host_tool("sort"), host_tool("cat"), host_tool("rm"),
           host_tool("mkdir"), host_tool("ln"), host_tool("dirname"), host_tool("chmod"),
           host_tool("readlink")],
    sym = derivation { name = "sym", build_inputs = t, script = "ln -s /nowhere/s $out" },
    dir = derivation { name = "dir", build_inputs = t, script = "mkdir $out; echo d > $out/v" },
    file = derivation { name = "file", build_inputs = t, script = "echo f > $out" },
    first = derivation {
      name = "first", build_inputs = t, env = { s = sym, d = dir, f = file },
      script = ''
        store=$(dirname $out)
        # Without hash parts: the output must not refer to its inputs.
        for l in $(ls $store); do echo "''${l#*-}"; done > /build/listing
        rm $s; mkdir $s; echo evil > $s/x
        echo junk > $store/junk
        mkdir -p $store/junkdir/sub; echo x > $store/junkdir/sub/y; chmod 0 $store/junkdir/sub
        mkdir $out; cp() { cat $1 > $2; }; cp /build/listing $out/listing
      '',
    },
  in {
    first = first,
    second = derivation {
      name = "second", build_inputs = t, env = { s = sym, f = first },
      script = ''
        mkdir $out
        ls "$(dirname $out)" | sort > $out/listing
        readlink $s > $out/sym
        cat $f/listing > $out/first
      '',
    },
  }"#,
    );
    let out = realised_out(&p, &["-A", "second", "-j", "1"]);
    let read = |f: &str| std::fs::read_to_string(Path::new(&out).join(f)).unwrap();
    let names = |listing: String| -> Vec<String> {
        let mut n: Vec<String> = listing
            .lines()
            .map(|l| l.split_once('-').map_or(l, |(_, n)| n).to_string())
            .collect();
        n.sort();
        n
    };
    // The first build saw its three inputs (before it made its output).
    assert_eq!(names(read("first")), ["dir", "file", "sym"]);
    // The second sees its closure and its output: not the first's other
    // inputs, not what the first builder left, and the symlink as built.
    assert_eq!(names(read("listing")), ["first", "second", "sym"]);
    assert_eq!(read("sym"), "/nowhere/s\n");
    p.run(&["store", "verify"]).ok();
}

/// Realises `recipe.cb` with `args` and returns the `out` path of the
/// (one) target.
fn realised_out(p: &crate::support::Project, args: &[&str]) -> String {
    let mut all = vec!["realise", "recipe.cb", "--json"];
    all.extend(args);
    let r = p.run(&all).ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout()).unwrap();
    v["outputs"].as_object().unwrap().values().next().unwrap()["out"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string()
}
