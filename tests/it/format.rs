//! `store-format.md` is normative: its SQL block is the schema the binary
//! uses, its worked example's digests and paths are recomputed here, and the
//! golden `.drv` files re-serialise byte for byte under the hash their names
//! state.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use cbuild::derivation::{
    Derivation, FileDigest, HostTool, ObjectKind, StoreDir, StorePath, canonical, placeholder,
};
use cbuild::store::tree_hash;

fn doc() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("store-format.md"))
        .expect("store-format.md")
}

/// The value after `key:` on a line of the worked example.
fn value(doc: &str, key: &str) -> String {
    doc.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("store-format.md has no `{key}:` line"))
        .trim()
        .to_string()
}

/// The first fenced block after the heading line `heading`.
fn block_after(doc: &str, heading: &str) -> String {
    let start = doc
        .find(heading)
        .unwrap_or_else(|| panic!("no heading {heading}"));
    let rest = &doc[start..];
    let open = rest.find("```").expect("a fenced block");
    let body = &rest[open..];
    let body = &body[body.find('\n').unwrap() + 1..];
    body[..body.find("```").unwrap()].to_string()
}

#[test]
fn schema_block_is_the_schema_the_binary_uses() {
    let block = block_after(&doc(), "## Database");
    assert_eq!(
        block,
        include_str!("../../src/store/schema.sql"),
        "the sql block of store-format.md must equal src/store/schema.sql"
    );
    assert_eq!(
        block_after(&doc(), "Migration 2 (`src/store/migration2.sql`)"),
        include_str!("../../src/store/migration2.sql"),
        "the second sql block of store-format.md must equal src/store/migration2.sql"
    );
    assert_eq!(
        block_after(&doc(), "Migration 3 (`src/store/migration3.sql`)"),
        include_str!("../../src/store/migration3.sql"),
        "the third sql block of store-format.md must equal src/store/migration3.sql"
    );
    assert_eq!(cbuild::store::db::MIGRATIONS.len(), 3);
}

/// The worked example's tree, built in a temporary directory.
fn example_tree(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(dir.join("hello.txt"), "hello\n").unwrap();
    std::fs::write(dir.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(dir.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("hello.txt", dir.join("link")).unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/a"), "a").unwrap();
}

#[test]
fn worked_example_tree_digest_and_source_path() {
    let doc = doc();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("t");
    std::fs::create_dir(&root).unwrap();
    example_tree(&root);
    let node = tree_hash::hash_tree(&root).unwrap();
    let tree_hash::Node::Dir(entries) = &node else {
        panic!("a directory")
    };
    let hex = |d: [u8; 32]| cbuild::derivation::hash::hex(&d);
    assert_eq!(
        hex(entries[&b"hello.txt".to_vec()].encode().1),
        value(&doc, "digest of hello.txt")
    );
    assert_eq!(
        hex(entries[&b"run.sh".to_vec()].encode().1),
        value(&doc, "digest of run.sh")
    );
    assert_eq!(
        hex(entries[&b"link".to_vec()].encode().1),
        value(&doc, "digest of link")
    );
    assert_eq!(
        hex(entries[&b"sub".to_vec()].encode().1),
        value(&doc, "digest of sub")
    );
    assert_eq!(
        hex(node.encode().1),
        value(&doc, "digest of the root directory")
    );
    assert_eq!(node.tree_digest().to_hex(), value(&doc, "tree digest"));
    let store = StoreDir::new("/s/store");
    let p =
        StorePath::compute(&store, ObjectKind::Source, &node.tree_digest().0, "source").unwrap();
    assert_eq!(store.path_of(&p), value(&doc, "store path"));
}

/// The worked example's derivation, around the imported source `src`.
fn example_derivation_with(store: &StoreDir, src: &StorePath) -> Derivation {
    Derivation {
        name: "hello".into(),
        version: Some("1.0".into()),
        system: "x86_64-linux".into(),
        builder: "/bin/sh".into(),
        args: vec![
            "-eu".into(),
            "-c".into(),
            format!("cp {}/hello.txt $out\n", store.path_of(src)),
        ],
        env: BTreeMap::from([("out".to_string(), placeholder::own_output("out"))]),
        outputs: vec!["out".into()],
        input_drvs: BTreeMap::new(),
        input_sources: BTreeSet::from([src.clone()]),
        host_tools: BTreeMap::from([(
            "sh".to_string(),
            HostTool {
                path: "/bin/sh".into(),
                resolved: "/usr/bin/dash".into(),
                digest: FileDigest([0x11; 32]),
            },
        )]),
        path_inputs: vec!["/bin/sh".into()],
        host_inputs: Vec::new(),
        fixed: None,
    }
}

fn example_derivation(store: &StoreDir) -> Derivation {
    let src = store.parse(&value(&doc(), "store path")).unwrap();
    example_derivation_with(store, &src)
}

#[test]
fn worked_example_derivation() {
    let doc = doc();
    let store = StoreDir::new("/s/store");
    let d = example_derivation(&store);
    let bytes = d.to_canonical_bytes();
    assert_eq!(
        String::from_utf8(bytes.clone()).unwrap(),
        block_after(&doc, "### The example derivation"),
        "the canonical form in store-format.md"
    );
    assert_eq!(d.drv_hash().to_hex(), value(&doc, "derivation hash"));
    let p = d.drv_path(&store, &d.drv_hash()).unwrap();
    assert_eq!(store.path_of(&p), value(&doc, "derivation path"));
    assert_eq!(
        placeholder::own_output("out"),
        value(&doc, "placeholder of its own out")
    );
    assert_eq!(
        placeholder::input_output(&d.drv_hash(), "out"),
        value(&doc, "placeholder of its out for dependents")
    );
    assert_eq!(canonical::parse(&bytes).unwrap(), d);
}

#[test]
fn golden_drv_files_reserialise_byte_for_byte() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/drv");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        let d = canonical::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            canonical::write(&d),
            bytes,
            "{name} does not re-serialise byte for byte"
        );
        let (hash, rest) = name.split_once('-').unwrap();
        assert_eq!(d.drv_hash().to_hex(), hash, "{name}: the hash in its name");
        assert_eq!(
            format!("{}.drv", d.name),
            rest,
            "{name}: the name in its name"
        );
        n += 1;
    }
    assert!(n >= 3, "only {n} golden derivations");
}

#[test]
fn non_canonical_bytes_are_rejected() {
    let store = StoreDir::new("/s/store");
    let good = String::from_utf8(example_derivation(&store).to_canonical_bytes()).unwrap();
    for (what, bad) in [
        ("trailing newline", format!("{good}\n")),
        (
            "leading zero in a length",
            good.replacen("name 5:", "name 05:", 1),
        ),
        (
            "wrong header",
            good.replacen("cbuild-derivation 1", "cbuild-derivation 2", 1),
        ),
        (
            "short string",
            good.replacen("name 5:hello", "name 6:hello", 1),
        ),
        (
            "uppercase hex",
            good.replacen(&"11".repeat(32), &"1A".repeat(32), 1),
        ),
    ] {
        assert!(
            canonical::parse(bad.as_bytes()).is_err(),
            "{what} was accepted"
        );
    }
}

/// Prints the figures of the worked example, to update store-format.md
/// after a deliberate format change:
/// `cargo test --test it print_worked_example -- --ignored --nocapture`.
#[test]
#[ignore = "prints the figures for store-format.md; asserts nothing"]
fn print_worked_example_values() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("t");
    std::fs::create_dir(&root).unwrap();
    example_tree(&root);
    let node = tree_hash::hash_tree(&root).unwrap();
    let store = StoreDir::new("/s/store");
    let p =
        StorePath::compute(&store, ObjectKind::Source, &node.tree_digest().0, "source").unwrap();
    if let tree_hash::Node::Dir(entries) = &node {
        for (k, v) in entries {
            println!(
                "digest of {}: {}",
                String::from_utf8_lossy(k),
                cbuild::derivation::hash::hex(&v.encode().1)
            );
        }
    }
    println!(
        "digest of the root directory: {}",
        cbuild::derivation::hash::hex(&node.encode().1)
    );
    println!(
        "tree digest: {}\nstore path: {}",
        node.tree_digest(),
        store.path_of(&p)
    );
    let d = example_derivation_with(&store, &p);
    print!("{}", String::from_utf8(d.to_canonical_bytes()).unwrap());
    println!("derivation hash: {}", d.drv_hash());
    println!(
        "derivation path: {}",
        store.path_of(&d.drv_path(&store, &d.drv_hash()).unwrap())
    );
    println!(
        "placeholder of its own out: {}",
        placeholder::own_output("out")
    );
    println!(
        "placeholder of its out for dependents: {}",
        placeholder::input_output(&d.drv_hash(), "out")
    );
}

/// Hashing modulo self-references, byte for byte: a tree that mentions its
/// own scratch path (in a file, twice, and in a symlink) hashes to the
/// digest below whatever the scratch hash part is, and a realised output's
/// path is computed from that digest as the format says.
#[test]
fn output_paths_are_pinned() {
    let d = tempfile::tempdir().unwrap();
    let make = |part: &str| {
        let out = d.path().join(format!("{part}-pinned"));
        std::fs::create_dir_all(out.join("bin")).unwrap();
        std::fs::write(
            out.join("bin/run"),
            format!("#!/bin/sh\nexec /s/store/{part}-pinned/bin/real /s/store/{part}-pinned\n"),
        )
        .unwrap();
        std::os::unix::fs::symlink(format!("/s/store/{part}-pinned/bin/run"), out.join("self"))
            .unwrap();
        out
    };
    for part in ["0".repeat(32), "z".repeat(32)] {
        let hashed = cbuild::build::ca::hash_modulo(&make(&part), &part).unwrap();
        assert_eq!(
            hashed.digest.to_hex(),
            value(&doc(), "output-modulo-digest"),
            "hashing modulo self-references changed: store-format.md and every output path with it"
        );
    }
    // Through the binary: `echo x > $out` named `d` is a file "x\n", whose
    // path follows from its tree digest.
    let p = crate::support::Project::new().file(
        "recipe.cb",
        r#"derivation { name = "d", script = "echo x > $out" }"#,
    );
    let out = p.run(&["realise", "recipe.cb"]).ok().stdout();
    let dir = StoreDir::new(p.store().join("store").to_string_lossy().into_owned());
    let digest = tree_hash::Node::File {
        executable: false,
        digest: FileDigest(*blake3::hash(b"x\n").as_bytes()),
        size: 2,
    }
    .tree_digest();
    let expect = StorePath::compute(&dir, ObjectKind::Output, &digest.0, "d").unwrap();
    assert_eq!(out.trim(), dir.path_of(&expect));
}

/// A build holds the lock the format describes: a one-byte OFD lock in
/// `locks/paths.lock` at `u64_le(BLAKE3(hash part)[0..8]) >> 2`.
#[test]
fn path_locks_are_where_the_format_says() {
    let p = crate::support::Project::new().file(
        "recipe.cb",
        r#"derivation { name = "slow", build_inputs = [host_tool("sleep")], script = "sleep 2; echo > $out" }"#,
    );
    let drv = p.run(&["eval", "recipe.cb"]).ok().stdout();
    let drv = drv.trim().to_string();
    let mut child = std::process::Command::new(crate::support::cbuild_bin())
        .args(["realise", "recipe.cb", "-q"])
        .current_dir(p.path())
        .env("CBUILD_STORE", p.store())
        .spawn()
        .unwrap();
    let base = Path::new(&drv)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let part = &base[..32];
    let h = blake3::hash(part.as_bytes());
    let offset = (u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap()) >> 2) as i64;
    let held = |offset: i64| {
        let f = std::fs::File::options()
            .read(true)
            .write(true)
            .open(p.store().join("locks/paths.lock"))
            .ok()?;
        let mut fl: nix::libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = nix::libc::F_WRLCK as i16;
        fl.l_whence = nix::libc::SEEK_SET as i16;
        fl.l_start = offset;
        fl.l_len = 1;
        nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_OFD_GETLK(&mut fl)).ok()?;
        Some(fl.l_type != nix::libc::F_UNLCK as i16)
    };
    let start = std::time::Instant::now();
    let mut seen = false;
    while start.elapsed() < std::time::Duration::from_secs(10) && !seen {
        seen = held(offset) == Some(true);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(seen, "no lock at offset {offset} while {drv} was building");
    assert_eq!(held(offset + 1), Some(false), "only one byte is locked");
    assert!(child.wait().unwrap().success());
    assert_eq!(held(offset), Some(false), "released after the build");
}

/// The realisation key of a download, as the format gives it.
#[test]
fn fixed_output_keys_are_pinned() {
    let d = Derivation {
        name: "pkg.tar.gz".into(),
        version: None,
        system: "x86_64-linux".into(),
        builder: "builtin:fetch".into(),
        args: Vec::new(),
        env: BTreeMap::new(),
        outputs: vec!["out".into()],
        input_drvs: BTreeMap::new(),
        input_sources: BTreeSet::new(),
        host_tools: BTreeMap::new(),
        path_inputs: Vec::new(),
        host_inputs: Vec::new(),
        fixed: Some(cbuild::derivation::FixedOutput {
            algo: cbuild::derivation::HashAlgo::Sha256,
            digest: vec![0x11; 32],
            unpack: true,
            url: "https://example.org/any/pkg.tar.gz".into(),
        }),
    };
    let key = d.fixed_output_key().unwrap();
    assert_eq!(key.to_hex(), value(&doc(), "fixed-output-key"));
    // The URL is not in it.
    let mut mirror = d.clone();
    if let Some(f) = &mut mirror.fixed {
        f.url = "https://mirror.example.net/pkg.tar.gz".into();
    }
    assert_eq!(mirror.fixed_output_key(), Some(key));
}

/// The package writer's bytes for a fixed set of members: what
/// store-format.md's "Conda packages" section pins.
fn golden_members() -> (
    Vec<cbuild::export::archive::Member>,
    Vec<cbuild::export::archive::Member>,
) {
    use cbuild::export::archive::{Kind, Member};
    let file = |path: &str, data: &[u8], executable: bool| Member {
        path: path.into(),
        kind: Kind::File {
            data: data.to_vec().into(),
            executable,
        },
    };
    let info = vec![file("info/index.json", b"{}\n", false)];
    let payload = vec![
        file("bin/run", b"#!/bin/sh\necho hi\n", true),
        Member {
            path: "bin/link".into(),
            kind: Kind::Symlink("run".into()),
        },
        file("share/a.txt", b"a\n", false),
    ];
    (info, payload)
}

#[test]
fn package_bytes_are_pinned() {
    use cbuild::export::archive::{Format, write};
    use sha2::Digest;
    let doc = doc();
    let dir = tempfile::tempdir().unwrap();
    let (info, payload) = golden_members();
    for (format, key) in [
        (Format::Conda, "golden-conda-sha256"),
        (Format::TarBz2, "golden-tar-bz2-sha256"),
    ] {
        let dest = dir
            .path()
            .join(format!("golden-1.0-h0_0{}", format.extension()));
        write(
            &dest,
            "golden-1.0-h0_0",
            &info,
            &payload,
            1_672_531_200,
            format,
            15,
        )
        .unwrap();
        let sha: String = sha2::Sha256::digest(std::fs::read(&dest).unwrap())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(sha, value(&doc, key), "{key}");
    }
    // Conda's JSON: sorted keys, two spaces, a final newline.
    let v = serde_json::json!({"b": 1, "a": {"d": [1, 2], "c": null}});
    assert_eq!(
        String::from_utf8(cbuild::export::package::json_bytes(&v)).unwrap(),
        "{\n  \"a\": {\n    \"c\": null,\n    \"d\": [\n      1,\n      2\n    ]\n  },\n  \"b\": 1\n}\n"
    );
    assert_eq!(
        cbuild::derivation::prefix::PREFIX,
        value(&doc, "prefix-placeholder")
    );
}

#[test]
fn attestation_is_pinned() {
    use cbuild::audit::origin::{Report, ToolCheck, Verdict};
    let report = Report {
        verdict: Verdict::Reproduced,
        findings: Vec::new(),
        diffs: Vec::new(),
        compared: 3,
        export_drv: Some("/s/store/0000000000000000000000000000000b-hello-conda.drv".into()),
        closure: [(
            "0000000000000000000000000000000a-hello-conda.drv".to_string(),
            "11".to_string(),
        )]
        .into(),
        sources: [(
            "0000000000000000000000000000000c-source".to_string(),
            "33".to_string(),
        )]
        .into(),
        tools: vec![ToolCheck {
            name: "cc".into(),
            path: "/usr/bin/cc".into(),
            recorded: "22".into(),
            here: Some("22".into()),
        }],
        built: true,
        kept: None,
    };
    let st = cbuild::audit::attest::statement(
        "hello-1.0.0-h0_0.conda",
        "44",
        report.verdict.as_str(),
        Some(&report),
        &[],
        "2026-11-27T12:00:00Z",
    );
    let bytes = cbuild::export::package::json_bytes(&st);
    assert_eq!(
        String::from_utf8(bytes).unwrap(),
        block_after(&doc(), "## Rebuild attestations")
    );
}

#[test]
fn roots_are_where_the_format_says() {
    let p = crate::support::Project::new().file(
        "recipe.cb",
        r#"{ a = package { name = "a", version = "1", script = "mkdir -p $out; echo a > $out/a" } }"#,
    );
    let link = p.path().join("result");
    let out = p
        .run(&["realise", "-A", "a", "-o", link.to_str().unwrap()])
        .ok()
        .stdout();
    let out = out.trim();
    let roots = p.store().join("roots");
    // A link root: roots/<BLAKE3 hex of the link's path> -> the link -> the object.
    let by_link = roots.join(
        blake3::hash(link.as_os_str().as_encoded_bytes())
            .to_hex()
            .as_str(),
    );
    assert_eq!(std::fs::read_link(&by_link).unwrap(), link);
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new(out));
    // An explicit root: roots/<base name> -> the object.
    let base = Path::new(out).file_name().unwrap().to_str().unwrap();
    p.run(&["store", "add-root", out]).ok();
    assert_eq!(
        std::fs::read_link(roots.join(base)).unwrap(),
        Path::new(out)
    );
    // An export root: roots/exports/<base name of the export output>.
    p.run(&["export", "--conda", "-A", "a", "-o", "pkgs"]).ok();
    let exports: Vec<String> = std::fs::read_dir(roots.join("exports"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(exports.len(), 1, "{exports:?}");
    assert!(exports[0].ends_with("-a-conda"), "{exports:?}");
    // A running process's temporary roots: tmp/<pid>-<n>.roots beside its
    // held lock, one base name per line, naming what it relies on.
    let p = p.file(
        "slow.cb",
        r#"{ s = package { name = "s", version = "1", build_inputs = [host_tool("sleep")], script = "sleep 3; mkdir -p $out" } }"#,
    );
    let drv = p.run(&["eval", "slow.cb", "-A", "s"]).ok().stdout();
    let drv_base = Path::new(drv.trim())
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let mut child = std::process::Command::new(crate::support::cbuild_bin())
        .args(["realise", "slow.cb", "-A", "s"])
        .current_dir(p.path())
        .env("CBUILD_STORE", p.store())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut found = None;
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(20));
        for e in std::fs::read_dir(p.store().join("tmp")).unwrap() {
            let path = e.unwrap().path();
            if path.extension().is_some_and(|x| x == "roots")
                && std::fs::read_to_string(&path)
                    .unwrap_or_default()
                    .lines()
                    .any(|l| l == drv_base)
            {
                found = Some(path);
            }
        }
        if found.is_some() {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let found = found.expect("a .roots file naming the derivation");
    let stem = found.file_stem().unwrap().to_str().unwrap();
    let (pid, n) = stem.split_once('-').unwrap();
    assert_eq!(pid.parse::<u32>().unwrap(), child.id());
    assert!(n.parse::<u32>().is_ok(), "{stem}");
    assert!(found.with_extension("lock").exists());
}

#[test]
fn the_store_marker_and_the_build_user_are_what_the_format_says() {
    let doc = doc();
    let p = crate::support::Project::new().file(
        "recipe.cb",
        r#"derivation { name = "x", script = "echo hi > $out" }"#,
    );
    p.run(&["realise", "recipe.cb"]).ok();
    let marker = std::fs::read_to_string(p.store().join("cbuild-store")).unwrap();
    let row = doc
        .lines()
        .find(|l| l.starts_with("| `cbuild-store` |"))
        .expect("a row for the marker");
    let lines: Vec<&str> = marker.lines().collect();
    assert_eq!(lines.len(), 2, "{marker}");
    for l in lines {
        assert!(row.contains(&format!("`{l}`")), "{l} not in {row}");
    }
    let id = cbuild::build::sandbox::user::DEFAULT_BUILD_ID;
    assert!(doc.contains(&format!("else {id}, `{id:#x}`")), "{id}");
}
