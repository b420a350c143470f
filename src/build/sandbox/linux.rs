//! Entering the sandbox on Linux.
//!
//! Namespaces are entered by a small single-threaded server process, `cbuild
//! __sandbox` ([`server_main`]), started once per realise ([`Sandboxes`]):
//! forking it costs a fraction of executing a fresh helper per build, and a
//! user namespace can only be created by a single-threaded process, which
//! the caller (a thread pool) is not.
//!
//! The caller sends each build's spec over a Unix socket, with the write end
//! of its log attached (`SCM_RIGHTS`). For each, the server forks a monitor,
//! which unshares the namespaces, maps the caller's uid and gid to the build
//! user and forks the build's pid 1; pid 1 assembles the root (tmpfs, binds,
//! `/proc`, `/dev`, `/tmp`, `/etc`), brings up loopback, `pivot_root`s into
//! it and executes the builder. The monitor waits and writes the builder's
//! status (128 + signal when it was killed) back on the server's stdout.
//! Everything dies with the caller: each process asks for `SIGKILL` when its
//! parent goes.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigHandler, Signal, signal};
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{
    ForkResult, chdir, dup2_stderr, dup2_stdout, execve, fork, pivot_root, sethostname,
};

use super::spec::{self, SandboxSpec};

/// Why a sandbox could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The server process could not be started.
    #[error("cannot start the sandbox server {exe}")]
    Spawn {
        /// The cbuild binary.
        exe: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A build could not be handed to the server.
    #[error("cannot pass the build description to the sandbox server")]
    Pipe(#[source] std::io::Error),
    /// The server went away.
    #[error("the sandbox server exited unexpectedly")]
    Lost,
    /// This machine cannot create the namespaces.
    #[error(
        "cannot create the build namespaces: {reason}\n\
         builds run in user, mount, pid, network, ipc and uts namespaces; enable unprivileged \
         user namespaces (sysctl kernel.unprivileged_userns_clone=1, or \
         user.max_user_namespaces > 0), or build without isolation with `--sandbox=off` \
         (outputs are then marked as unsandboxed in the store)"
    )]
    Unavailable {
        /// What the kernel said.
        reason: String,
    },
}

/// Id of the record the server sends first: whether namespaces work.
const PROBE: u64 = 0;
/// Longest message in a result record (a record must fit one atomic pipe write).
const MAX_MESSAGE: usize = 3000;

/// A running sandbox server, shared by the threads that build.
pub struct Sandboxes {
    socket: Mutex<UnixStream>,
    waiting: Arc<Mutex<HashMap<u64, mpsc::Sender<i32>>>>,
    next: AtomicU64,
    child: Option<Child>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Sandboxes {
    /// Starts the server (`exe __sandbox`). With `namespaces`, checks that
    /// this machine can create them, and fails with a clear message if not.
    /// The server is killed if the thread calling this exits: start it from
    /// a thread that outlives the builds.
    pub fn start(exe: &Path, namespaces: bool) -> Result<Sandboxes, SandboxError> {
        let (ours, theirs) = UnixStream::pair().map_err(SandboxError::Pipe)?;
        let mut child = Command::new(exe)
            .arg("__sandbox")
            .arg(if namespaces { "probe" } else { "no-probe" })
            .env_clear()
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| SandboxError::Spawn {
                exe: exe.to_path_buf(),
                source,
            })?;
        let Some(mut results) = child.stdout.take() else {
            return Err(SandboxError::Lost);
        };
        let (code, message) = read_record(&mut results)
            .map(|(_, code, message)| (code, message))
            .ok_or(SandboxError::Lost)?;
        if code != 0 {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SandboxError::Unavailable { reason: message });
        }
        let waiting: Arc<Mutex<HashMap<u64, mpsc::Sender<i32>>>> = Arc::default();
        let w = waiting.clone();
        let reader = std::thread::Builder::new()
            .name("sandbox-results".into())
            .spawn(move || {
                while let Some((id, code, _)) = read_record(&mut results) {
                    if let Some(tx) = w.lock().ok().and_then(|mut m| m.remove(&id)) {
                        let _ = tx.send(code);
                    }
                }
                // The server is gone: whoever still waits gets an error.
                if let Ok(mut m) = w.lock() {
                    m.clear();
                }
            })
            .map_err(SandboxError::Pipe)?;
        Ok(Sandboxes {
            socket: Mutex::new(ours),
            waiting,
            next: AtomicU64::new(PROBE + 1),
            child: Some(child),
            reader: Some(reader),
        })
    }

    /// Runs the spec's program; its stdout and stderr go to `log`. Blocks
    /// until it exits; safe to call from several threads at once.
    pub fn run(&self, spec: &SandboxSpec, log: OwnedFd) -> Result<ExitStatus, SandboxError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        self.waiting
            .lock()
            .map_err(|_| SandboxError::Lost)?
            .insert(id, tx);
        let body = serde_json::to_vec(spec).map_err(|e| SandboxError::Pipe(e.into()))?;
        let mut header = [0u8; 12];
        header[..8].copy_from_slice(&id.to_le_bytes());
        header[8..].copy_from_slice(&(body.len() as u32).to_le_bytes());
        {
            let mut sock = self.socket.lock().map_err(|_| SandboxError::Lost)?;
            let fds = [log.as_raw_fd()];
            sendmsg::<()>(
                sock.as_raw_fd(),
                &[IoSlice::new(&header)],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::empty(),
                None,
            )
            .map_err(|e| SandboxError::Pipe(e.into()))?;
            sock.write_all(&body).map_err(SandboxError::Pipe)?;
        }
        // The server holds its own copy now: ours must go, or the reader of
        // the log would never see it end.
        drop(log);
        let code = rx.recv().map_err(|_| SandboxError::Lost)?;
        Ok(ExitStatus::from_raw((code & 0xff) << 8))
    }
}

impl Drop for Sandboxes {
    fn drop(&mut self) {
        // Closing the socket ends the server; its stdout closing ends the reader.
        if let Ok(sock) = self.socket.lock() {
            let _ = sock.shutdown(std::net::Shutdown::Both);
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// Runs one spec in a server of its own (tests and one-off builds).
pub fn run(exe: &Path, spec: &SandboxSpec, log: std::fs::File) -> Result<ExitStatus, SandboxError> {
    Sandboxes::start(exe, spec.namespaces)?.run(spec, OwnedFd::from(log))
}

/// One result: (id, status, message).
fn read_record(r: &mut impl Read) -> Option<(u64, i32, String)> {
    let mut h = [0u8; 16];
    r.read_exact(&mut h).ok()?;
    let id = u64::from_le_bytes(h[..8].try_into().ok()?);
    let code = i32::from_le_bytes(h[8..12].try_into().ok()?);
    let len = u32::from_le_bytes(h[12..].try_into().ok()?) as usize;
    let mut msg = vec![0u8; len.min(MAX_MESSAGE)];
    r.read_exact(&mut msg).ok()?;
    Some((id, code, String::from_utf8_lossy(&msg).into_owned()))
}

/// Writes one result in a single `write` (atomic: under `PIPE_BUF`).
fn write_record(id: u64, code: i32, message: &str) {
    let msg = &message.as_bytes()[..message.len().min(MAX_MESSAGE)];
    let mut rec = Vec::with_capacity(16 + msg.len());
    rec.extend_from_slice(&id.to_le_bytes());
    rec.extend_from_slice(&code.to_le_bytes());
    rec.extend_from_slice(&(msg.len() as u32).to_le_bytes());
    rec.extend_from_slice(msg);
    let _ = nix::unistd::write(std::io::stdout(), &rec);
}

/// The server: never returns. Must run before any thread is started.
pub fn server_main() -> ! {
    die_with_parent();
    let probe = std::env::args_os().nth(2).is_none_or(|a| a != "no-probe");
    let verdict = if probe { probe_namespaces() } else { Ok(()) };
    match verdict {
        Ok(()) => write_record(PROBE, 0, ""),
        Err(reason) => {
            write_record(PROBE, 1, &reason);
            std::process::exit(1)
        }
    }
    // Monitors are reaped by the kernel.
    unsafe {
        let _ = signal(Signal::SIGCHLD, SigHandler::SigIgn);
    }
    loop {
        let (id, spec, log) = match next_request() {
            Ok(Some(r)) => r,
            Ok(None) => std::process::exit(0),
            Err((id, why)) => {
                write_record(id, 128, &why);
                continue;
            }
        };
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                unsafe {
                    let _ = signal(Signal::SIGCHLD, SigHandler::SigDfl);
                }
                monitor(id, &spec, log)
            }
            Ok(ForkResult::Parent { .. }) => drop(log),
            Err(e) => write_record(id, 128, &format!("cannot fork: {e}")),
        }
    }
}

/// Reads the next spec and its log from the socket on fd 0.
#[allow(clippy::type_complexity)]
fn next_request() -> Result<Option<(u64, SandboxSpec, OwnedFd)>, (u64, String)> {
    let mut header = [0u8; 12];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let (n, fd) = {
        let mut iov = [IoSliceMut::new(&mut header)];
        let msg = recvmsg::<()>(0, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
            .map_err(|e| (0, format!("cannot read a request: {e}")))?;
        let mut fd = None;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(fds) = c {
                    for f in fds {
                        // SAFETY: the kernel just gave us this descriptor.
                        let owned = unsafe { OwnedFd::from_raw_fd(f) };
                        if fd.is_none() {
                            fd = Some(owned);
                        }
                    }
                }
            }
        }
        (msg.bytes, fd)
    };
    if n == 0 {
        return Ok(None);
    }
    // SAFETY: fd 0 is the socket, owned by this process for its lifetime.
    let mut stdin = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(0) });
    if n < header.len() {
        stdin
            .read_exact(&mut header[n..])
            .map_err(|e| (0, format!("short request: {e}")))?;
    }
    let id = u64::from_le_bytes(header[..8].try_into().unwrap_or_default());
    let len = u32::from_le_bytes(header[8..].try_into().unwrap_or_default()) as usize;
    let mut body = vec![0u8; len];
    stdin
        .read_exact(&mut body)
        .map_err(|e| (id, format!("short request: {e}")))?;
    let log = fd.ok_or((id, "a request came without its log".to_string()))?;
    let spec = serde_json::from_slice(&body).map_err(|e| (id, format!("bad request: {e}")))?;
    Ok(Some((id, spec, log)))
}

/// Whether this process may create the namespaces a build needs: a child
/// tries, and exits with the errno when it cannot.
fn probe_namespaces() -> Result<(), String> {
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let code = match unshare(namespace_flags(false)) {
                Ok(()) => 0,
                Err(e) => e as i32,
            };
            unsafe { nix::libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, 0)) => Ok(()),
            Ok(WaitStatus::Exited(_, e)) => Err(format!(
                "unshare: {}",
                nix::errno::Errno::from_raw(e).desc()
            )),
            other => Err(format!("the probe ended with {other:?}")),
        },
        Err(e) => Err(format!("cannot fork: {e}")),
    }
}

fn namespace_flags(network: bool) -> CloneFlags {
    let mut flags = CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    if !network {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    flags
}

/// Asks for `SIGKILL` when the parent exits, so that nothing outlives the
/// cbuild that started it.
fn die_with_parent() {
    unsafe {
        nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL, 0, 0, 0);
    }
}

/// One build: enters the namespaces, forks pid 1, reports its status.
fn monitor(id: u64, spec: &SandboxSpec, log: OwnedFd) -> ! {
    die_with_parent();
    // The build reads nothing: fd 0 becomes /dev/null instead of the socket.
    unsafe {
        nix::libc::close(0);
        nix::libc::open(c"/dev/null".as_ptr(), nix::libc::O_RDONLY);
    }
    let fail = |what: &str, why: String| -> ! {
        let msg = format!("cbuild sandbox: {what}: {why}\n");
        let _ = nix::unistd::write(&log, msg.as_bytes());
        write_record(id, 128, &msg);
        std::process::exit(0)
    };
    if spec.namespaces {
        let uid = nix::unistd::getuid();
        let gid = nix::unistd::getgid();
        if let Err(e) = unshare(namespace_flags(spec.network)) {
            fail("cannot create the build namespaces", e.to_string());
        }
        for (path, text) in [
            ("/proc/self/setgroups", "deny".to_string()),
            (
                "/proc/self/uid_map",
                format!("{} {} 1", spec::BUILD_UID, uid),
            ),
            (
                "/proc/self/gid_map",
                format!("{} {} 1", spec::BUILD_GID, gid),
            ),
        ] {
            if let Err(e) = std::fs::write(path, text) {
                fail(&format!("cannot write {path}"), e.to_string());
            }
        }
    }
    // The first child is pid 1 of the new pid namespace.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => build_pid1(spec, log),
        Ok(ForkResult::Parent { child }) => {
            drop(log);
            loop {
                let code = match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, code)) => code,
                    Ok(WaitStatus::Signaled(_, sig, _)) => 128 + sig as i32,
                    Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        write_record(id, 128, &format!("lost the build process: {e}"));
                        std::process::exit(0)
                    }
                };
                write_record(id, code, "");
                std::process::exit(0)
            }
        }
        Err(e) => fail("cannot fork the build process", e.to_string()),
    }
}

fn build_pid1(spec: &SandboxSpec, log: OwnedFd) -> ! {
    die_with_parent();
    if dup2_stdout(&log).and_then(|_| dup2_stderr(&log)).is_err() {
        std::process::exit(128);
    }
    drop(log);
    let setup = if spec.namespaces {
        assemble(spec)
    } else {
        chdir(spec.build_dir.as_str()).map_err(|e| format!("enter {}: {e}", spec.build_dir))
    };
    if let Err(e) = setup {
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
    for (link, target) in &spec.symlinks {
        let at = inside(link);
        if let Some(parent) = at.parent() {
            mkdir(parent)?;
        }
        std::os::unix::fs::symlink(target, &at).map_err(|e| format!("symlink {link}: {e}"))?;
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

fn cstr(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

/// Reports a setup failure on stderr (the build log) and exits with 127
/// + 1, a code no builder uses for its own failures.
fn die(what: &str, why: &str) -> ! {
    let _ = writeln!(std::io::stderr(), "cbuild sandbox: {what}: {why}");
    std::process::exit(128)
}
