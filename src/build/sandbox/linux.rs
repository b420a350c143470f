//! Entering the sandbox on Linux.
//!
//! [`run`] starts `cbuild __sandbox` with the spec on stdin. That helper
//! ([`helper_main`]) is single-threaded: it unshares the namespaces, maps the
//! caller's uid and gid to the build user, and forks the build's pid 1, which
//! assembles the root (tmpfs, binds, `/proc`, `/dev`, `/tmp`, `/etc`),
//! brings up loopback, `pivot_root`s into it and executes the builder. The
//! helper waits and exits with the builder's status (128 + signal when it was
//! killed).

use std::ffi::CString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, chdir, execve, fork, pivot_root, sethostname};

use super::spec::{self, SandboxSpec};

/// Why a sandbox could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The helper process could not be started.
    #[error("cannot start the sandbox helper {exe}")]
    Spawn {
        /// The cbuild binary.
        exe: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The spec could not be handed to the helper.
    #[error("cannot pass the build description to the sandbox helper")]
    Pipe(#[source] std::io::Error),
}

/// Runs the spec's program in a sandbox through the helper `exe` (the cbuild
/// binary). Its stdout and stderr go to `log`.
pub fn run(exe: &Path, spec: &SandboxSpec, log: std::fs::File) -> Result<ExitStatus, SandboxError> {
    let err_log = log.try_clone().map_err(SandboxError::Pipe)?;
    let mut child = Command::new(exe)
        .arg("__sandbox")
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err_log))
        .spawn()
        .map_err(|source| SandboxError::Spawn {
            exe: exe.to_path_buf(),
            source,
        })?;
    let json = serde_json::to_vec(spec).map_err(|e| SandboxError::Pipe(e.into()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&json).map_err(SandboxError::Pipe)?;
    }
    child.wait().map_err(SandboxError::Pipe)
}

/// The helper: reads the spec on stdin, never returns. Must run before any
/// thread is started.
pub fn helper_main() -> ! {
    let mut input = Vec::new();
    let spec: SandboxSpec = match std::io::stdin()
        .read_to_end(&mut input)
        .map_err(|e| e.to_string())
        .and_then(|_| serde_json::from_slice(&input).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => die("cannot read the build description", &e),
    };
    let uid = nix::unistd::getuid();
    let gid = nix::unistd::getgid();
    let mut flags = CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    if !spec.network {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if let Err(e) = unshare(flags) {
        die(
            "cannot create the build namespaces (are unprivileged user namespaces enabled? \
             `--sandbox=off` builds without them)",
            &e.to_string(),
        );
    }
    write_or_die("/proc/self/setgroups", "deny");
    write_or_die(
        "/proc/self/uid_map",
        &format!("{} {} 1", spec::BUILD_UID, uid),
    );
    write_or_die(
        "/proc/self/gid_map",
        &format!("{} {} 1", spec::BUILD_GID, gid),
    );
    // The first child is pid 1 of the new pid namespace.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => build_pid1(&spec),
        Ok(ForkResult::Parent { child }) => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => std::process::exit(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => std::process::exit(128 + sig as i32),
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => die("lost the build process", &e.to_string()),
            }
        },
        Err(e) => die("cannot fork the build process", &e.to_string()),
    }
}

fn build_pid1(spec: &SandboxSpec) -> ! {
    if let Err(e) = assemble(spec) {
        die("cannot set up the sandbox", &e);
    }
    let program = cstr(&spec.program);
    let mut argv = vec![program.clone()];
    argv.extend(spec.args.iter().map(|a| cstr(a)));
    let envp: Vec<CString> = spec
        .env
        .iter()
        .map(|(k, v)| cstr(&format!("{k}={v}")))
        .collect();
    let e = execve(&program, &argv, &envp).unwrap_err();
    die(
        &format!("cannot run the builder {}", spec.program),
        &e.to_string(),
    )
}

/// Builds the root and moves into it.
fn assemble(spec: &SandboxSpec) -> Result<(), String> {
    let root = Path::new(&spec.root);
    let m = |what: &str, e: nix::errno::Errno| format!("{what}: {e}");
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| m("make / private", e))?;
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0755"),
    )
    .map_err(|e| m(&format!("mount a tmpfs on {}", root.display()), e))?;
    let inside = |p: &str| root.join(p.trim_start_matches('/'));
    let proc_dir = inside("/proc");
    mkdir(&proc_dir)?;
    mount(
        Some("proc"),
        &proc_dir,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| m("mount /proc", e))?;
    let tmp = inside("/tmp");
    mkdir(&tmp)?;
    mount(
        Some("tmpfs"),
        &tmp,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )
    .map_err(|e| m("mount /tmp", e))?;
    let dev = inside("/dev");
    mkdir(&dev)?;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755"),
    )
    .map_err(|e| m("mount /dev", e))?;
    for d in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(d);
        std::fs::write(&target, "").map_err(|e| format!("create {}: {e}", target.display()))?;
        mount(
            Some(format!("/dev/{d}").as_str()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| m(&format!("bind /dev/{d}"), e))?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(link))
            .map_err(|e| format!("/dev/{link}: {e}"))?;
    }
    let etc = inside("/etc");
    mkdir(&etc)?;
    for (name, text) in [
        ("passwd", spec::passwd()),
        ("group", spec::group()),
        ("hosts", spec::hosts()),
    ] {
        std::fs::write(etc.join(name), text).map_err(|e| format!("write /etc/{name}: {e}"))?;
    }
    // Binds last: a store under /tmp (or anywhere) must land on top of the
    // sandbox's own /tmp, /dev and /etc, not under them.
    for b in &spec.binds {
        bind(&b.source, &inside(&b.target), b.writable)?;
    }
    bind(&spec.build_dir, &inside("/build"), true)?;
    sethostname("localhost").map_err(|e| m("set the hostname", e))?;
    if !spec.network {
        loopback_up().map_err(|e| format!("bring up loopback: {e}"))?;
    }
    chdir(root).map_err(|e| m("enter the root", e))?;
    pivot_root(".", ".").map_err(|e| m("pivot_root", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| m("detach the old root", e))?;
    chdir("/build").map_err(|e| m("enter /build", e))?;
    Ok(())
}

/// Binds `source` at `target` (created as a directory or an empty file like
/// the source), read-only unless `writable`.
fn bind(source: &str, target: &Path, writable: bool) -> Result<(), String> {
    let is_dir = std::fs::metadata(source)
        .map(|m| m.is_dir())
        .unwrap_or(true);
    if is_dir {
        mkdir(target)?;
    } else {
        if let Some(parent) = target.parent() {
            mkdir(parent)?;
        }
        std::fs::write(target, "").map_err(|e| format!("create {}: {e}", target.display()))?;
    }
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("bind {source} at {}: {e}", target.display()))?;
    if !writable {
        // A read-only remount must keep the flags the mount already has
        // (nosuid, nodev, ... are locked in a user namespace).
        let st = nix::sys::statvfs::statvfs(target)
            .map_err(|e| format!("statvfs {}: {e}", target.display()))?;
        let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        let f = st.flags();
        use nix::sys::statvfs::FsFlags;
        for (has, ms) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if f.contains(has) {
                flags |= ms;
            }
        }
        mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
            .map_err(|e| format!("make {} read-only: {e}", target.display()))?;
    }
    Ok(())
}

fn mkdir(p: &Path) -> Result<(), String> {
    std::fs::create_dir_all(p).map_err(|e| format!("create {}: {e}", p.display()))
}

/// Sets IFF_UP on `lo` in the new network namespace.
fn loopback_up() -> Result<(), String> {
    use nix::libc;
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (k, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[k] = *b as libc::c_char;
        }
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) < 0 {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            return Err(e.to_string());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        let r = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
        let e = std::io::Error::last_os_error();
        libc::close(fd);
        if r < 0 {
            return Err(e.to_string());
        }
    }
    Ok(())
}

fn write_or_die(path: &str, text: &str) {
    if let Err(e) = std::fs::write(path, text) {
        die(&format!("cannot write {path}"), &e.to_string());
    }
}

fn cstr(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

/// Reports a setup failure on stderr (the build log) and exits with 127
/// + 1, a code no builder uses for its own failures.
fn die(what: &str, why: &str) -> ! {
    let _ = writeln!(std::io::stderr(), "cbuild sandbox: {what}: {why}");
    std::process::exit(128)
}
