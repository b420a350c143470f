//! A small harness: run the real `cbuild` binary in a temporary project.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test.
pub fn cbuild_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cbuild"))
}

/// `unshare` options for a private mount namespace: as root, just that
/// (cbuild then still sees itself as the host's root and runs builds as its
/// build user); as an ordinary user, in a user namespace of its own where
/// it is root (mounting needs it).
pub fn mount_namespace() -> &'static [&'static str] {
    if cbuild::build::sandbox::user::is_host_root() {
        &["-m"]
    } else {
        &["-rm"]
    }
}

/// A temporary directory with recipe files, where `cbuild` runs.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new() -> Project {
        Project {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn file(self, name: &str, text: impl AsRef<[u8]>) -> Project {
        let p = self.dir.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(p, text).expect("write");
        self
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `cbuild ARGS` in the project directory with a private store.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    /// Runs `cbuild ARGS` with extra environment variables.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        self.run_in(self.path(), args, env)
    }

    /// Runs `cbuild ARGS` in `dir` with this project's store.
    pub fn run_in(&self, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(cbuild_bin());
        cmd.args(args)
            .current_dir(dir)
            .env("CBUILD_STORE", self.store())
            .env("NO_COLOR", "1")
            .env("COLUMNS", "80");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Run(cmd.output().expect("run cbuild"))
    }

    /// The project's private store root.
    pub fn store(&self) -> std::path::PathBuf {
        self.path().join(".store")
    }

    /// Reads a file of the project.
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path().join(name)).expect("read")
    }
}

/// The result of one run.
pub struct Run(pub Output);

impl Run {
    pub fn code(&self) -> i32 {
        self.0.status.code().unwrap_or(-1)
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(self.code(), 0, "stderr:\n{}", self.stderr());
        self
    }
    #[track_caller]
    pub fn fails_with(self, code: i32) -> Run {
        assert_eq!(
            self.code(),
            code,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
        self
    }
}

/// A copy of the `.conda` at `pkg`, under its own name in `dir`, with
/// `edit(path, bytes)` applied to every member of both inner tars.
pub fn rewritten(pkg: &Path, dir: &Path, mut edit: impl FnMut(&str, &mut Vec<u8>)) -> PathBuf {
    let mut z = zip::ZipArchive::new(std::fs::File::open(pkg).unwrap()).unwrap();
    let names: Vec<String> = z.file_names().map(String::from).collect();
    std::fs::create_dir_all(dir).unwrap();
    let dest = dir.join(pkg.file_name().unwrap());
    let mut w = zip::ZipWriter::new(std::fs::File::create(&dest).unwrap());
    let o =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for n in &names {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut z.by_name(n).unwrap(), &mut bytes).unwrap();
        if n.ends_with(".tar.zst") {
            let tar = zstd::decode_all(&bytes[..]).unwrap();
            let mut a = tar::Archive::new(&tar[..]);
            let mut b = tar::Builder::new(Vec::new());
            for e in a.entries().unwrap() {
                let mut e = e.unwrap();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut data).unwrap();
                edit(&path, &mut data);
                let mut h = e.header().clone();
                h.set_size(data.len() as u64);
                h.set_cksum();
                b.append(&h, &data[..]).unwrap();
            }
            bytes = zstd::encode_all(&b.into_inner().unwrap()[..], 3).unwrap();
        }
        w.start_file(n.as_str(), o).unwrap();
        std::io::Write::write_all(&mut w, &bytes).unwrap();
    }
    w.finish().unwrap();
    dest
}

/// A copy of the `.conda` at `pkg`, under its own name in `dir`, with one
/// byte of its first ELF file flipped: `paths.json` no longer matches it.
pub fn with_payload_byte_flipped(pkg: &Path, dir: &Path) -> PathBuf {
    let mut done = false;
    rewritten(pkg, dir, |path, data| {
        if !done && !path.starts_with("info/") && data.starts_with(b"\x7fELF") {
            data[100] ^= 1;
            done = true;
        }
    })
}

/// Installs `package` from the channel at `url` into `prefix` with a real
/// conda client (py-rattler, from `.venv`), then runs `bin/<program> ARG`
/// there and returns what it printed.
pub fn install_and_run(
    url: &str,
    package: &str,
    prefix: &Path,
    program: &str,
    arg: &str,
) -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = repo.join(".venv/bin/python");
    assert!(
        python.exists(),
        "run .ci/setup: it makes .venv with py-rattler"
    );
    let out = Command::new(&python)
        .arg(repo.join("tests/it/helpers/rattler_install.py"))
        .arg(url)
        .arg(package)
        .arg(prefix)
        .output()
        .expect("run py-rattler");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ran = Command::new(prefix.join("bin").join(program))
        .arg(arg)
        .output()
        .expect("run the installed program");
    String::from_utf8_lossy(&ran.stdout).trim().to_string()
}

/// Copies a directory tree (an example into a test's project).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), &t).unwrap();
        }
    }
}

/// A finished command and the most memory it held.
pub struct Measured {
    pub status: std::process::ExitStatus,
    pub stderr: Vec<u8>,
    /// Peak resident set size, in kB (the process's `VmHWM`).
    pub peak_kb: i64,
}

/// Runs `cmd` (stdout dropped) and measures its peak RSS, its own alone.
pub fn peak_rss(mut cmd: Command) -> Measured {
    use std::io::Read;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    // The process's own high-water mark (`VmHWM`), read while it runs. Not
    // wait4's `ru_maxrss`: a child spawned with vfork takes, at exec, the
    // high-water mark of the memory it shared with this test binary, which
    // in a full run is every test's (114 MB reported for a 33 MB process).
    let pid = child.id();
    let peak = std::sync::Arc::new(AtomicU64::new(0));
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let watcher = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    && let Some(kb) = status
                        .lines()
                        .find_map(|l| l.strip_prefix("VmHWM:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                {
                    peak.fetch_max(kb, Ordering::Relaxed);
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        })
    };
    let mut stderr = Vec::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_end(&mut stderr)
        .expect("read stderr");
    let status = child.wait().expect("wait");
    done.store(true, Ordering::Relaxed);
    watcher.join().expect("watcher");
    // A process too short to be seen would pass any bound.
    assert!(
        peak.load(Ordering::Relaxed) > 0,
        "the process ended before its memory could be read"
    );
    Measured {
        status,
        stderr,
        peak_kb: peak.load(Ordering::Relaxed) as i64,
    }
}

/// A project whose `recipe.cb` has one small package, `tiny`.
pub fn tiny_project() -> Project {
    Project::new().file(
        "recipe.cb",
        r#"{ tiny = package { name = "tiny", version = "1", script = "mkdir -p $out/share; echo x > $out/share/tiny" } }"#,
    )
}

/// Exports `tiny` of `p` into `pkgs/` and returns the package's path.
pub fn tiny_package(p: &Project) -> std::path::PathBuf {
    let out = p
        .run(&["export", "--conda", "-A", "tiny", "-o", "pkgs", "--json"])
        .ok()
        .stdout();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    std::path::PathBuf::from(v[0]["path"].as_str().unwrap())
}
