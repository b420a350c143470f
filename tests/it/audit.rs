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
  lookalikes = package {
    name = "lookalikes", version = "1",
    script = ''
      mkdir -p $out/share
      echo "see Doc/build/html, https://example.org/project/build/, ./root/is/nested, /var/tmp/x" > $out/share/links
      echo "cflags: -ffile-prefix-map=/build/=." > $out/share/flags
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

/// Realises `attr` of `recipe` (in `dir`), audits it (exit 1 expected)
/// and returns its errors as (file, what).
fn audit_errors(
    p: &Project,
    dir: &std::path::Path,
    recipe: &str,
    attr: &str,
) -> Vec<(String, String)> {
    p.run_in(dir, &["realise", recipe, "-A", attr], &[]).ok();
    let r = p
        .run_in(dir, &["audit", recipe, "-A", attr, "--json"], &[])
        .fails_with(1);
    let v: serde_json::Value = serde_json::from_str(&r.stdout()).unwrap();
    v[0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "error")
        .map(|f| {
            (
                f["file"].as_str().unwrap().to_string(),
                f["what"].as_str().unwrap().to_string(),
            )
        })
        .collect()
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
        let errors = audit_errors(&p, &src, "bad.cb", attr);
        assert_eq!(errors.len(), 1, "{attr}: {errors:?}");
        assert_eq!(errors[0].0, file, "{attr}");
        assert!(errors[0].1.contains(what), "{attr}: {errors:?}");
    }
}

#[test]
fn paths_inside_longer_paths_and_urls_are_not_findings_and_the_build_directory_warns() {
    let p = project();
    let src = p.path().join("src");
    p.run_in(&src, &["realise", "bad.cb", "-A", "lookalikes"], &[])
        .ok();
    let r = p
        .run_in(
            &src,
            &["audit", "bad.cb", "-A", "lookalikes", "--json"],
            &[],
        )
        .ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout()).unwrap();
    let findings: Vec<(String, String, String)> = v[0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap_or_default().to_string();
            (s("severity"), s("file"), s("what"))
        })
        .filter(|(_, _, what)| what.starts_with("mentions"))
        .collect();
    assert_eq!(
        findings,
        [(
            "warning".to_string(),
            "share/flags".to_string(),
            "mentions the build directory /build".to_string()
        )],
    );
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

/// A tar member written as given: name, type, link target, size of zeros.
type RawMember = (&'static str, tar::EntryType, &'static str, u64);

/// A `.conda` file whose payload tar holds `members` (raw names, so that
/// malicious ones can be written), and an honest info tar.
fn conda_with(
    dir: &std::path::Path,
    members: &[(&str, tar::EntryType, &str, u64)],
) -> std::path::PathBuf {
    use std::io::Write;
    let stem = "evil-1.0-h0_0";
    // The tar is written with its zeros as holes, then compressed by hand:
    // zstd's RLE blocks hold 128 KiB of one byte in four.
    let mut tarfile = tempfile::tempfile().unwrap();
    {
        use std::io::{Seek, SeekFrom};
        for (name, kind, link, size) in members {
            let mut h = tar::Header::new_gnu();
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_size(*size);
            if !link.is_empty() {
                h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            h.set_cksum();
            tarfile.write_all(h.as_bytes()).unwrap();
            // The member's zeros are a hole: 10 GiB cost no disk.
            let padded = size.div_ceil(512) * 512;
            tarfile.seek(SeekFrom::Current(padded as i64)).unwrap();
        }
        // Two zero blocks end a tar.
        let end = tarfile.seek(SeekFrom::Current(1024)).unwrap();
        tarfile.set_len(end).unwrap();
    }
    let info = {
        let mut b = tar::Builder::new(Vec::new());
        let index = br#"{"name": "evil", "version": "1.0", "build": "h0_0", "build_number": 0, "depends": [], "subdir": "noarch"}"#;
        let paths = br#"{"paths": [], "paths_version": 1}"#;
        for (n, d) in [
            ("info/index.json", &index[..]),
            ("info/paths.json", &paths[..]),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(d.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, n, d).unwrap();
        }
        zstd::encode_all(&b.into_inner().unwrap()[..], 1).unwrap()
    };
    std::io::Seek::rewind(&mut tarfile).unwrap();
    let pkg = zstd_of_mostly_zeros(&mut tarfile);
    let path = dir.join(format!("{stem}.conda"));
    let mut z = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let o =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file("metadata.json", o).unwrap();
    z.write_all(br#"{"conda_pkg_format_version": 2}"#).unwrap();
    z.start_file(format!("pkg-{stem}.tar.zst"), o).unwrap();
    z.write_all(&pkg).unwrap();
    z.start_file(format!("info-{stem}.tar.zst"), o).unwrap();
    z.write_all(&info).unwrap();
    z.finish().unwrap();
    path
}

#[test]
fn malicious_packages_are_refused_quickly_without_unpacking() {
    let p = Project::new();
    let cases: Vec<(Vec<RawMember>, &str)> = vec![
        (
            vec![("../../etc/evil", tar::EntryType::Regular, "", 4)],
            "would unpack outside the prefix",
        ),
        (
            vec![("bin/x", tar::EntryType::Symlink, "../../../etc/passwd", 0)],
            "outside the prefix",
        ),
        (
            vec![("share/zeros", tar::EntryType::Regular, "", 10 << 30)],
            "refused as a bomb",
        ),
        // Each link looks harmless; followed, `sub/esc` is the prefix's
        // parent, and an extractor writes `sub/esc/x` there.
        (
            vec![
                ("sub/up", tar::EntryType::Symlink, "..", 0),
                ("sub/esc", tar::EntryType::Symlink, "up/..", 0),
                ("sub/esc/x", tar::EntryType::Regular, "", 4),
            ],
            "lies in a folder reached through a symlink that leads outside the prefix",
        ),
        // A hard link's target is relative to the archive's root, not to
        // the member's folder: one level up is outside.
        (
            vec![("share/deep/h", tar::EntryType::Link, "../etc/shadow", 0)],
            "is a hard link to ../etc/shadow: outside the prefix",
        ),
    ];
    for (members, says) in cases {
        let dir = tempfile::tempdir().unwrap();
        let pkg = conda_with(dir.path(), &members);
        let started = std::time::Instant::now();
        let r = p.run(&["audit", pkg.to_str().unwrap()]).fails_with(1);
        assert!(r.stdout().contains(says), "{says}: {}", r.stdout());
        assert!(
            started.elapsed().as_secs() < 20,
            "{says}: took {:?}",
            started.elapsed()
        );
        // Nothing was unpacked beside the package.
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1);
    }
}

#[test]
fn an_exported_package_passes_and_one_flipped_byte_fails_naming_the_file() {
    let p = project();
    let src = p.path().join("src");
    let r = p
        .run_in(
            &src,
            &[
                "export", "--conda", "-A", "libgreet", "-o", "../out", "--json",
            ],
            &[],
        )
        .ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout()).unwrap();
    let pkg = std::path::PathBuf::from(v[0]["path"].as_str().unwrap());
    p.run(&["audit", pkg.to_str().unwrap()]).ok();
    // The same package with one payload byte flipped, under its own name.
    let tampered = crate::support::with_payload_byte_flipped(&pkg, &p.path().join("t"));
    let r = p.run(&["audit", tampered.to_str().unwrap()]).fails_with(1);
    assert!(
        r.stdout().contains("error lib/libgreet.so: has sha256"),
        "{}",
        r.stdout()
    );
}

/// A zstd frame of `f`'s bytes: raw blocks for data, RLE blocks for runs
/// of zeros (a 10 GiB run is 320 KiB), reading with seeks over holes.
fn zstd_of_mostly_zeros(f: &mut std::fs::File) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    const BLOCK: u64 = 128 << 10;
    let len = f.metadata().unwrap().len();
    // Magic, no content size, 128 KiB window.
    let mut out = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38];
    let mut pos = 0u64;
    let mut buf = vec![0u8; BLOCK as usize];
    while pos < len {
        let n = BLOCK.min(len - pos) as usize;
        // Holes: where the next data starts (SEEK_DATA), else all zeros.
        let data_at = nix::unistd::lseek(&*f, pos as i64, nix::unistd::Whence::SeekData)
            .map_or(len, |o| o as u64);
        let last = |m: u64| u32::from(pos + m >= len);
        if data_at >= pos + n as u64 {
            let hdr = last(n as u64) | (1 << 1) | ((n as u32) << 3);
            out.extend_from_slice(&hdr.to_le_bytes()[..3]);
            out.push(0);
        } else {
            f.seek(SeekFrom::Start(pos)).unwrap();
            f.read_exact(&mut buf[..n]).unwrap();
            let hdr = last(n as u64) | ((n as u32) << 3);
            out.extend_from_slice(&hdr.to_le_bytes()[..3]);
            out.extend_from_slice(&buf[..n]);
        }
        pos += n as u64;
    }
    out
}

#[test]
fn links_out_of_an_output_are_errors_however_they_are_made() {
    let p = Project::new().file(
        "links.cb",
        r#"let ln = host_tool("ln"), mkdir = host_tool("mkdir") in {
             root = derivation { name = "root", build_inputs = [ln], script = "ln -s /etc $out" },
             passwd = derivation {
               name = "passwd", build_inputs = [ln, mkdir],
               script = "mkdir -p $out; ln -s /etc/passwd $out/passwd",
             },
             climb = derivation {
               name = "climb", build_inputs = [ln, mkdir],
               script = "mkdir -p $out/a; ln -s ../../../../etc/shadow $out/a/shadow",
             },
             chain = derivation {
               name = "chain", build_inputs = [ln, mkdir],
               script = "mkdir -p $out/sub; ln -s .. $out/sub/up; ln -s up/../../.. $out/sub/esc",
             },
             fine = derivation {
               name = "fine", build_inputs = [ln, mkdir],
               script = "mkdir -p $out/lib; echo x > $out/lib/a.so.1; ln -s a.so.1 $out/lib/a.so",
             },
           }"#,
    );
    for (attr, file, what) in [
        ("root", "", "links to /etc, outside the store"),
        (
            "passwd",
            "passwd",
            "links to /etc/passwd, outside the store",
        ),
        ("climb", "a/shadow", "outside the store"),
        ("chain", "sub/esc", "outside the store"),
    ] {
        let errors = audit_errors(&p, p.path(), "links.cb", attr);
        assert!(
            errors.iter().any(|(f, w)| *f == file && w.contains(what)),
            "{attr}: {errors:?}"
        );
    }
    p.run(&["realise", "links.cb", "-A", "fine"]).ok();
    p.run(&["audit", "links.cb", "-A", "fine"]).ok();
}

/// Sets the sizes the zip at `path` declares for `member` (local header
/// and central directory) to `size`, leaving the data as it is.
fn declare_size(path: &std::path::Path, member: &str, size: u32) {
    let mut bytes = std::fs::read(path).unwrap();
    let name = member.as_bytes();
    let mut patched = 0;
    for i in 0..bytes.len().saturating_sub(46 + name.len()) {
        let at = |o: usize| &bytes[i + o..i + o + name.len()];
        if bytes[i..i + 4] == [0x50, 0x4b, 0x03, 0x04] && at(30) == name {
            bytes[i + 18..i + 22].copy_from_slice(&size.to_le_bytes());
            bytes[i + 22..i + 26].copy_from_slice(&size.to_le_bytes());
            patched += 1;
        } else if bytes[i..i + 4] == [0x50, 0x4b, 0x01, 0x02] && at(46) == name {
            bytes[i + 20..i + 24].copy_from_slice(&size.to_le_bytes());
            bytes[i + 24..i + 28].copy_from_slice(&size.to_le_bytes());
            patched += 1;
        }
    }
    assert_eq!(patched, 2, "the member's two headers");
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_stored_member_that_claims_gigabytes_does_not_switch_off_the_bomb_check() {
    let p = Project::new();
    let dir = tempfile::tempdir().unwrap();
    // 2 GiB of zeros in a few kilobytes of zstd, in a STORED zip member
    // that claims to be 4 GiB: the ratio is judged against the file's own
    // size, not the claim.
    let pkg = conda_with(
        dir.path(),
        &[("share/zeros", tar::EntryType::Regular, "", 2 << 30)],
    );
    declare_size(&pkg, "pkg-evil-1.0-h0_0.tar.zst", 0xF000_0000);
    let mut cmd = std::process::Command::new(crate::support::cbuild_bin());
    cmd.args(["audit", pkg.to_str().unwrap()])
        .current_dir(p.path())
        .env("CBUILD_STORE", p.store());
    let started = std::time::Instant::now();
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("refused as a bomb"), "{stdout}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}
