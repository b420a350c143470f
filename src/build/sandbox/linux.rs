//! Entering the sandbox on Linux.
//!
//! Namespaces are entered by a small single-threaded server process, `cbuild
//! __sandbox` ([`server_main`]), started once per realise ([`Sandboxes`]):
//! forking it costs a fraction of executing a fresh helper per build, and a
//! user namespace can only be created by a single-threaded process, which
//! the caller (a thread pool) is not.
//!
//! The caller sends each build's spec over a Unix socket, with the write
//! ends of two pipes attached (`SCM_RIGHTS`): the build's log and its status.
//! The build runs under a monitor process in its own namespaces (see
//! [`server_main`]); pid 1 finishes the root (binds, `/proc`, `/tmp`),
//! `pivot_root`s into it and executes the builder. The monitor waits and
//! writes the builder's status (128 + signal when it was killed, 128 when
//! the sandbox could not be set up, said in the log) on the status pipe.
//! Everything dies with the caller: each process asks for `SIGKILL` when its
//! parent goes.

use std::ffi::CString;
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// `--sandbox=off` as root: the build would run as the host's root.
    #[error(
        "refusing to build without a sandbox as root: the builder would run as the host's root \
         with the store writable; drop `--sandbox=off`, or run cbuild as an ordinary user"
    )]
    RootWithoutSandbox,
}

/// Longest message in a result record (a record must fit one atomic pipe write).
const MAX_MESSAGE: usize = 3000;

/// A running sandbox server, shared by the threads that build.
pub struct Sandboxes {
    socket: Mutex<UnixStream>,
    next: AtomicU64,
    child: Option<Child>,
    pid: i32,
}

impl Sandboxes {
    /// Starts the server (`exe __sandbox`). With `namespaces`, checks that
    /// this machine can create them, and fails with a clear message if not.
    /// The server is killed if the thread calling this exits: start it from
    /// a thread that outlives the builds.
    pub fn start(exe: &Path, namespaces: bool) -> Result<Sandboxes, SandboxError> {
        let (ours, theirs) = UnixStream::pair().map_err(SandboxError::Pipe)?;
        let build_user = super::user::build_user();
        if build_user.is_some() && !namespaces {
            return Err(SandboxError::RootWithoutSandbox);
        }
        let mut child = Command::new(exe)
            .arg("__sandbox")
            .arg(if namespaces { "probe" } else { "no-probe" })
            .arg(std::process::id().to_string())
            .arg(build_user.map_or("-".into(), |(u, g)| format!("{u}:{g}")))
            .env_clear()
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| SandboxError::Spawn {
                exe: exe.to_path_buf(),
                source,
            })?;
        let Some(mut verdict) = child.stdout.take() else {
            return Err(SandboxError::Lost);
        };
        let (code, message) = read_record(&mut verdict).ok_or(SandboxError::Lost)?;
        if code != 0 {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SandboxError::Unavailable { reason: message });
        }
        let pid = child.id() as i32;
        Ok(Sandboxes {
            socket: Mutex::new(ours),
            next: AtomicU64::new(1),
            child: Some(child),
            pid,
        })
    }

    /// Runs the spec's program; its stdout and stderr go to `log`. Blocks
    /// until it exits; safe to call from several threads at once.
    pub fn run(&self, spec: &SandboxSpec, log: OwnedFd) -> Result<ExitStatus, SandboxError> {
        self.submit(spec, log)?.wait()
    }

    /// Starts the spec's program and returns at once; [`Running::wait`]
    /// gives its status. `log` is closed here, so that whoever reads the
    /// other end of a pipe sees it end when the build does. The status comes
    /// back on a pipe of the build's own, written by its monitor: no thread
    /// of this process stands between a build and whoever waits for it.
    pub fn submit(&self, spec: &SandboxSpec, log: OwnedFd) -> Result<Running, SandboxError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (status_read, status_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| SandboxError::Pipe(e.into()))?;
        let body = serde_json::to_vec(spec).map_err(|e| SandboxError::Pipe(e.into()))?;
        {
            let sock = self.socket.lock().map_err(|_| SandboxError::Lost)?;
            send_request(sock.as_raw_fd(), id, &body, &[&log, &status_write])
                .map_err(SandboxError::Pipe)?;
        }
        drop(log);
        drop(status_write);
        Ok(Running {
            status: std::fs::File::from(status_read),
            first: None,
            exited: None,
        })
    }
}

/// A build started by [`Sandboxes::submit`].
pub struct Running {
    status: std::fs::File,
    /// A pidfd of the build's first process, once it has started: killing
    /// it ends the build (pid 1 of its pid namespace takes every process
    /// of the build with it).
    first: Option<OwnedFd>,
    exited: Option<ExitStatus>,
}

/// What the status pipe said.
pub enum Event {
    /// The builder started (it can be stopped from now on).
    Started,
    /// The builder exited.
    Exited(ExitStatus),
}

impl Running {
    /// The status pipe: readable when the builder has started or exited.
    pub fn status_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.status.as_fd()
    }

    /// Reads the next record of the status pipe (blocks until one comes).
    pub fn next_event(&mut self) -> Result<Event, SandboxError> {
        if let Some(s) = self.exited {
            return Ok(Event::Exited(s));
        }
        let mut rec = [0u8; 5];
        loop {
            match self.status.read_exact(&mut rec) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // Every holder of the pipe went without a word: the server
                // or the monitor died.
                Err(_) => return Err(SandboxError::Lost),
            }
        }
        let value = i32::from_le_bytes([rec[1], rec[2], rec[3], rec[4]]);
        match rec[0] {
            STARTED => {
                // SAFETY: pidfd_open takes a pid and flags and returns a new
                // descriptor or -1; nothing is borrowed.
                let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, value, 0) };
                if fd >= 0 {
                    // SAFETY: the kernel just returned this descriptor.
                    self.first = Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
                }
                Ok(Event::Started)
            }
            _ => {
                let s = ExitStatus::from_raw((value & 0xff) << 8);
                self.exited = Some(s);
                Ok(Event::Exited(s))
            }
        }
    }

    /// Stops the build with SIGKILL, if it has started and not exited; its
    /// status follows on the pipe (killed: 128 + 9).
    pub fn kill(&self) {
        if let Some(fd) = &self.first {
            // SAFETY: pidfd_send_signal with a descriptor we own, a signal
            // number and no siginfo.
            unsafe {
                nix::libc::syscall(
                    nix::libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    nix::libc::SIGKILL,
                    std::ptr::null::<nix::libc::siginfo_t>(),
                    0,
                );
            }
        }
    }

    /// Waits for the builder to exit.
    pub fn wait(mut self) -> Result<ExitStatus, SandboxError> {
        loop {
            if let Event::Exited(s) = self.next_event()? {
                return Ok(s);
            }
        }
    }
}

impl Sandboxes {
    /// Kills the server, and with it every build it runs (each process dies
    /// with its parent): those waiting for them get [`SandboxError::Lost`].
    pub fn abort(&self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), Signal::SIGKILL);
    }
}

impl Drop for Sandboxes {
    fn drop(&mut self) {
        // Closing the socket ends the server.
        if let Ok(sock) = self.socket.lock() {
            let _ = sock.shutdown(std::net::Shutdown::Both);
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }
}

/// Runs one spec in a server of its own (tests and one-off builds).
pub fn run(exe: &Path, spec: &SandboxSpec, log: std::fs::File) -> Result<ExitStatus, SandboxError> {
    Sandboxes::start(exe, spec.namespaces)?.run(spec, OwnedFd::from(log))
}

/// The server's first word: (status, message): 0 when it can build.
fn read_record(r: &mut impl Read) -> Option<(i32, String)> {
    let mut h = [0u8; 8];
    r.read_exact(&mut h).ok()?;
    let code = i32::from_le_bytes(h[..4].try_into().ok()?);
    let len = u32::from_le_bytes(h[4..].try_into().ok()?) as usize;
    let mut msg = vec![0u8; len.min(MAX_MESSAGE)];
    r.read_exact(&mut msg).ok()?;
    Some((code, String::from_utf8_lossy(&msg).into_owned()))
}

/// Writes the server's first word on its stdout.
fn write_verdict(code: i32, message: &str) {
    let msg = &message.as_bytes()[..message.len().min(MAX_MESSAGE)];
    let mut rec = Vec::with_capacity(8 + msg.len());
    rec.extend_from_slice(&code.to_le_bytes());
    rec.extend_from_slice(&(msg.len() as u32).to_le_bytes());
    rec.extend_from_slice(msg);
    let _ = nix::unistd::write(std::io::stdout(), &rec);
}

/// Reports a build's status on its status pipe; a failure before the
/// builder ran is also told in its log.
fn report(status: &OwnedFd, log: Option<&OwnedFd>, code: i32, message: &str) {
    if let Some(log) = log
        && !message.is_empty()
    {
        let _ = nix::unistd::write(log, message.as_bytes());
    }
    let _ = nix::unistd::write(status, &record(EXITED, code));
}

/// A status-pipe record: the builder started as host pid N.
const STARTED: u8 = b'p';
/// A status-pipe record: the builder exited with code N.
const EXITED: u8 = b's';

/// One record of the status pipe: a tag and a little-endian i32, written
/// in one `write` (atomic: under `PIPE_BUF`).
fn record(tag: u8, value: i32) -> [u8; 5] {
    let v = value.to_le_bytes();
    [tag, v[0], v[1], v[2], v[3]]
}

/// Tells whoever waits for the build the host pid of its first process,
/// so that it can stop the build (a timeout) without stopping others.
fn report_started(status: &OwnedFd, pid: nix::unistd::Pid) {
    let _ = nix::unistd::write(status, &record(STARTED, pid.as_raw()));
}

/// The server: never returns. Must run before any thread is started.
///
/// With namespaces, the server first enters a user namespace of its own (the
/// caller's uid and gid mapped to the build user's) and a private mount
/// namespace, where it prepares, once, a *skeleton* root per toolchain
/// layer: a tmpfs holding `/dev`, `/etc`, mount points and the read-only
/// toolchain. Each build's monitor then only unshares the mount, pid, ipc,
/// uts and network namespaces (a copy of the skeleton comes with the mount
/// namespace) and mounts what is its own: `/proc`, `/tmp`, `/.cbuild`, its
/// inputs, outputs and `/build`. Network namespaces are made ahead of time
/// by a helper process on the side, with loopback up, because creating one
/// is the most expensive step of entering a sandbox.
pub fn server_main() -> ! {
    let caller = std::env::args_os()
        .nth(3)
        .and_then(|a| a.to_str().and_then(|a| a.parse::<i32>().ok()))
        .map(nix::unistd::Pid::from_raw);
    die_with_parent(caller);
    // Every monitor is a fork of this process: with transparent huge pages,
    // its first write to the heap copies (or zeroes) 2 MiB instead of 4 KiB.
    unsafe {
        nix::libc::prctl(nix::libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    let namespaces = std::env::args_os().nth(2).is_none_or(|a| a != "no-probe");
    // The build user's host ids when cbuild runs as root.
    let build_user = std::env::args_os().nth(4).and_then(|a| {
        let (u, g) = a.to_str()?.split_once(':')?;
        Some((u.parse::<u32>().ok()?, g.parse::<u32>().ok()?))
    });
    if !namespaces && super::user::is_host_root() {
        write_verdict(1, "refusing to run builds as root without namespaces");
        std::process::exit(1)
    }
    ROOT_INSIDE.store(namespaces && build_user.is_some(), Ordering::Relaxed);
    if namespaces && let Err(reason) = enter_user_namespace(build_user) {
        write_verdict(1, &reason);
        std::process::exit(1)
    }
    write_verdict(0, "");
    let mut nets = if namespaces { NetPool::start() } else { None };
    // Monitors are reaped by the kernel.
    unsafe {
        let _ = signal(Signal::SIGCHLD, SigHandler::SigIgn);
    }
    let mut skeletons: Vec<(Vec<super::Bind>, PathBuf)> = Vec::new();
    // Monitors forked ahead, already in their namespaces, waiting for a
    // build: forking and unsharing happen while the previous build runs.
    let mut ready: std::collections::VecDeque<UnixStream> = Default::default();
    loop {
        if namespaces {
            while ready.len() < PREPARED {
                let roots: Vec<PathBuf> = skeletons.iter().map(|(_, r)| r.clone()).collect();
                if roots.is_empty() {
                    break;
                }
                match prepare_monitor(&mut nets, &roots) {
                    Some(m) => ready.push_back(m),
                    None => break,
                }
            }
        }
        let (id, body, log, status) = match read_request(0) {
            Ok(Some(r)) => r,
            Ok(None) => std::process::exit(0),
            // A request that cannot be read has no status pipe to answer on;
            // its sender sees the pipe close.
            Err(_) => continue,
        };
        let spec: Head = match serde_json::from_slice(&body) {
            Ok(s) => s,
            Err(e) => {
                let msg = format!("cbuild sandbox: bad request: {e}\n");
                report(&status, Some(&log), 128, &msg);
                continue;
            }
        };
        let known = skeletons.len();
        let root = if spec.namespaces {
            match skeleton(&mut skeletons, &spec) {
                Ok(r) => Some(r),
                Err(why) => {
                    let msg = format!("cbuild sandbox: cannot prepare the root: {why}\n");
                    report(&status, Some(&log), 128, &msg);
                    continue;
                }
            }
        } else {
            None
        };
        if skeletons.len() != known {
            // Prepared monitors copied the mount table before this root
            // existed: they are of no use now.
            ready.clear();
        }
        if let (Some(root), true) = (&root, spec.namespaces && !spec.network) {
            let mut msg = root.as_os_str().as_encoded_bytes().to_vec();
            msg.push(0);
            msg.extend_from_slice(&body);
            let mut handed = false;
            while let Some(m) = ready.pop_front() {
                if send_request(m.as_raw_fd(), id, &msg, &[&log, &status]).is_ok() {
                    handed = true;
                    break;
                }
            }
            if handed {
                continue;
            }
        }
        let net = match (&mut nets, spec.namespaces && !spec.network) {
            (Some(pool), true) => pool.take(),
            _ => None,
        };
        let server = nix::unistd::getpid();
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                unsafe {
                    let _ = signal(Signal::SIGCHLD, SigHandler::SigDfl);
                }
                let spec: SandboxSpec = match serde_json::from_slice(&body) {
                    Ok(s) => s,
                    Err(e) => {
                        let msg = format!("cbuild sandbox: bad request: {e}\n");
                        report(&status, Some(&log), 128, &msg);
                        leave(0)
                    }
                };
                monitor(&spec, log, status, root.as_deref(), net, server)
            }
            Ok(ForkResult::Parent { .. }) => {
                drop(log);
                drop(status);
                drop(net);
            }
            Err(e) => report(
                &status,
                Some(&log),
                128,
                &format!("cbuild sandbox: cannot fork: {e}\n"),
            ),
        }
    }
}

/// What the server reads of a request: enough to choose (or make) the
/// root and a monitor. The rest (the binds above all: one per closure path)
/// is parsed by the process that runs the build.
#[derive(serde::Deserialize)]
struct Head {
    root: String,
    #[serde(default)]
    toolchain: Vec<super::Bind>,
    #[serde(default)]
    store_dir: String,
    network: bool,
    #[serde(default = "spec::yes")]
    namespaces: bool,
}

/// Monitors kept ready.
const PREPARED: usize = 2;

/// Forks a monitor that enters a build's namespaces (network from the pool)
/// and forks the build's pid 1, which mounts `/proc`, `/tmp` and `/.cbuild`
/// on every skeleton in `roots` and then waits on a socket for the build:
/// all of that happens while the previous build runs.
fn prepare_monitor(nets: &mut Option<NetPool>, roots: &[PathBuf]) -> Option<UnixStream> {
    let (ours, theirs) = UnixStream::pair().ok()?;
    let net = nets.as_mut().and_then(NetPool::take);
    let server = nix::unistd::getpid();
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(ours);
            unsafe {
                let _ = signal(Signal::SIGCHLD, SigHandler::SigDfl);
            }
            die_with_parent(Some(server));
            let own_net = match enter(&net, false) {
                Ok(own) => own,
                Err(_) => leave(0),
            };
            let ns = net.or_else(own_network);
            prepared_monitor(theirs, roots, own_net, ns)
        }
        Ok(ForkResult::Parent { .. }) => {
            drop(theirs);
            Some(ours)
        }
        Err(_) => None,
    }
}

/// The prepared monitor, in the build's namespaces: forks pid 1, learns
/// the build's id from it once it has its request, and reports its status.
fn prepared_monitor(
    socket: UnixStream,
    roots: &[PathBuf],
    own_net: bool,
    ns: Option<OwnedFd>,
) -> ! {
    // Pid 1 hands over the build's status pipe once it has its request.
    let Ok((to_monitor, from_pid1)) = UnixStream::pair() else {
        leave(0)
    };
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(from_pid1);
            prepared_pid1(socket, roots, own_net, to_monitor)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(socket);
            drop(to_monitor);
            let status = recv_fd(&from_pid1, true);
            if let Some(status) = &status {
                report_started(status, child);
            }
            let code = loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, code)) => break code,
                    Ok(WaitStatus::Signaled(_, sig, _)) => break 128 + sig as i32,
                    Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => break 128,
                }
            };
            if let Some(status) = &status {
                report(status, None, code, "");
            }
            if let Some(ns) = &ns {
                give_back_network(ns);
            }
            leave(0)
        }
        Err(_) => leave(0),
    }
}

/// Pid 1 of a prepared sandbox: premounts, waits for its build, tells the
/// monitor which one it is, finishes the root and runs the builder.
fn prepared_pid1(
    socket: UnixStream,
    roots: &[PathBuf],
    own_net: bool,
    to_monitor: UnixStream,
) -> ! {
    die_with_parent(None);
    // Until a request comes, a failure can only be reported by exiting.
    if premount(roots, own_net).is_err() {
        leave(128)
    }
    let Ok(Some((_, body, log, status))) = read_request(socket.as_raw_fd()) else {
        leave(0)
    };
    drop(socket);
    let fds = [status.as_raw_fd()];
    if sendmsg::<()>(
        to_monitor.as_raw_fd(),
        &[IoSlice::new(&[0])],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .is_err()
    {
        leave(128)
    }
    drop(status);
    drop(to_monitor);
    if dup2_stdout(&log).and_then(|_| dup2_stderr(&log)).is_err() {
        leave(128);
    }
    drop(log);
    // The build reads nothing: fd 0 becomes /dev/null.
    unsafe {
        nix::libc::close(0);
        nix::libc::open(c"/dev/null".as_ptr(), nix::libc::O_RDONLY);
    }
    let Some(split) = body.iter().position(|&b| b == 0) else {
        die("cannot set up the sandbox", "bad request")
    };
    let root = PathBuf::from(String::from_utf8_lossy(&body[..split]).into_owned());
    let spec: SandboxSpec = match serde_json::from_slice(&body[split + 1..]) {
        Ok(s) => s,
        Err(e) => die("cannot set up the sandbox", &format!("bad request: {e}")),
    };
    if let Err(e) = assemble(&spec, &root) {
        die("cannot set up the sandbox", &e);
    }
    exec_builder(&spec)
}

/// Reads the next request on the socket `fd`: its id, body, and the log
/// and status descriptors that came with it; `None` at the end.
#[allow(clippy::type_complexity)]
fn read_request(fd: RawFd) -> Result<Option<(u64, Vec<u8>, OwnedFd, OwnedFd)>, String> {
    let mut header = [0u8; 12];
    let mut cmsg = nix::cmsg_space!([RawFd; 2]);
    let (n, mut fds) = {
        let mut iov = [IoSliceMut::new(&mut header)];
        let msg = recvmsg::<()>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
            .map_err(|e| format!("cannot read a request: {e}"))?;
        let mut fds = Vec::new();
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(got) = c {
                    // SAFETY: the kernel just gave us these descriptors.
                    fds.extend(got.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
                }
            }
        }
        (msg.bytes, fds)
    };
    if n == 0 {
        return Ok(None);
    }
    // SAFETY: `fd` stays open for as long as this borrowed File lives.
    let mut stream = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
    if n < header.len() {
        stream
            .read_exact(&mut header[n..])
            .map_err(|e| format!("short request: {e}"))?;
    }
    let id = u64::from_le_bytes(header[..8].try_into().unwrap_or_default());
    let len = u32::from_le_bytes(header[8..].try_into().unwrap_or_default()) as usize;
    let mut body = vec![0u8; len];
    stream
        .read_exact(&mut body)
        .map_err(|e| format!("short request: {e}"))?;
    if fds.len() != 2 {
        return Err("a request came without its log and status pipes".into());
    }
    let status = fds.pop().ok_or("no status pipe")?;
    let log = fds.pop().ok_or("no log")?;
    Ok(Some((id, body, log, status)))
}

/// Sends a request: header and descriptors in one message, then the body.
fn send_request(fd: RawFd, id: u64, body: &[u8], fds: &[&OwnedFd]) -> std::io::Result<()> {
    let mut header = [0u8; 12];
    header[..8].copy_from_slice(&id.to_le_bytes());
    header[8..].copy_from_slice(&(body.len() as u32).to_le_bytes());
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    sendmsg::<()>(
        fd,
        &[IoSlice::new(&header)],
        &[ControlMessage::ScmRights(&raw)],
        MsgFlags::empty(),
        None,
    )?;
    // SAFETY: `fd` stays open for as long as this borrowed File lives.
    let mut stream = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
    stream.write_all(body)
}

/// Enters a user namespace of its own where the builder is `uid`:`gid`
/// (mapped onto the build user, so files stay its own).
fn enter_ids(uid: u32, gid: u32) -> Result<(), String> {
    let (outer_uid, outer_gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| format!("unshare: {}", e.desc()))?;
    for (path, text) in [
        ("/proc/self/setgroups", "deny".to_string()),
        ("/proc/self/uid_map", format!("{uid} {outer_uid} 1")),
        ("/proc/self/gid_map", format!("{gid} {outer_gid} 1")),
    ] {
        std::fs::write(path, text).map_err(|e| format!("cannot write {path}: {e}"))?;
    }
    Ok(())
}

/// Enters a new user namespace and a private mount namespace. As an
/// ordinary user, the caller's uid and gid become the build user's (the
/// only mapping an unprivileged process may write). As root (`build_user`,
/// the build user's host ids), uid 0 stays root and the build user maps to
/// the subordinate ids: a mapping only a process in the parent namespace
/// with `CAP_SETUID` may write, so a helper forked beforehand writes it.
fn enter_user_namespace(build_user: Option<(u32, u32)>) -> Result<(), String> {
    match build_user {
        None => {
            let uid = nix::unistd::getuid();
            let gid = nix::unistd::getgid();
            unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS)
                .map_err(|e| format!("unshare: {}", e.desc()))?;
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
                std::fs::write(path, text).map_err(|e| format!("cannot write {path}: {e}"))?;
            }
        }
        Some(host) => map_by_helper(host)?,
    }
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("cannot make / private: {e}"))?;
    // The namespaces each build unshares must work here too.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let code = match unshare(build_flags(true)) {
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

/// Enters a new user and mount namespace whose id maps ([`super::user::maps`])
/// are written by a helper forked beforehand, still root in the namespace
/// above: the only writer the kernel accepts for a mapping of ids other
/// than the caller's own.
fn map_by_helper(host: (u32, u32)) -> Result<(), String> {
    let (ours, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let server = nix::unistd::getpid();
    // SAFETY: the server is single-threaded (it runs before any thread is
    // started), so the child may do anything the parent could.
    let child = match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(ours);
            let mut go = [0u8; 1];
            let answer = match (&theirs).read(&mut go) {
                Ok(1) => {
                    let (uid_map, gid_map) = super::user::maps(host);
                    [("uid_map", uid_map), ("gid_map", gid_map)]
                        .into_iter()
                        .find_map(|(file, text)| {
                            let path = format!("/proc/{server}/{file}");
                            std::fs::write(&path, text)
                                .err()
                                .map(|e| format!("cannot write {path}: {e}"))
                        })
                        .unwrap_or_default()
                }
                _ => "the server went away".into(),
            };
            let _ = (&theirs).write_all(answer.as_bytes());
            leave(0)
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => return Err(format!("cannot fork: {e}")),
    };
    drop(theirs);
    let entered = unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("unshare: {}", e.desc()));
    // Said even when unshare failed: the helper must end either way.
    let _ = (&ours).write_all(if entered.is_ok() { b"1" } else { b"" });
    let _ = ours.shutdown(std::net::Shutdown::Write);
    let mut answer = String::new();
    let _ = (&ours).read_to_string(&mut answer);
    let _ = waitpid(child, None);
    entered?;
    if !answer.is_empty() {
        return Err(answer);
    }
    // The maps make this process uid 0 again inside, with every capability
    // of the new namespace.
    Ok(())
}

/// The namespaces each build gets beside the server's user namespace.
fn build_flags(network: bool) -> CloneFlags {
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    if !network {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    flags
}

/// Network namespaces with loopback up, made ahead of time by a helper and
/// recycled: a monitor gives its namespace back once every process of its
/// build is gone (its pid namespace died with pid 1). A build cannot change
/// a namespace's configuration (it holds no capability there), so what it
/// leaves is at most closing TCP connections; creating and destroying a
/// namespace per build cost about 0.6 ms of CPU time each.
struct NetPool {
    maker: UnixStream,
    returned: UnixStream,
}

/// Namespaces the helper makes at first.
const NET_POOL: usize = 4;

/// The socket monitors give their network namespace back on (-1: none).
static GIVE_BACK: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

impl NetPool {
    /// Forks the helper; `None` if it cannot be started (builds then make
    /// their own).
    fn start() -> Option<NetPool> {
        let (ours, theirs) = UnixStream::pair().ok()?;
        let (returned, give_back) = UnixStream::pair().ok()?;
        let server = nix::unistd::getpid();
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                drop(ours);
                die_with_parent(Some(server));
                net_maker(theirs)
            }
            Ok(ForkResult::Parent { .. }) => {
                drop(theirs);
                ours.set_nonblocking(true).ok()?;
                returned.set_nonblocking(true).ok()?;
                // Inherited by every monitor forked from now on.
                GIVE_BACK.store(give_back.as_raw_fd(), Ordering::Relaxed);
                std::mem::forget(give_back);
                Some(NetPool {
                    maker: ours,
                    returned,
                })
            }
            Err(_) => None,
        }
    }

    /// A ready namespace, if one is there: a recycled one, else a new one
    /// (and the helper is asked for the next).
    fn take(&mut self) -> Option<OwnedFd> {
        if let Some(fd) = recv_fd(&self.returned, false) {
            return Some(fd);
        }
        let fd = recv_fd(&self.maker, false);
        let _ = (&self.maker).write(&[1]);
        fd
    }
}

/// A descriptor sent on `socket`: the one waiting there (`wait`: the next
/// one to come).
fn recv_fd(socket: &UnixStream, wait: bool) -> Option<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [IoSliceMut::new(&mut byte)];
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        if wait {
            MsgFlags::MSG_CMSG_CLOEXEC
        } else {
            MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT
        },
    )
    .ok()?;
    let mut fd = None;
    for c in msg.cmsgs().ok()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for f in fds {
                // SAFETY: the kernel just gave us this descriptor.
                fd.get_or_insert(unsafe { OwnedFd::from_raw_fd(f) });
            }
        }
    }
    fd
}

/// Sends a build's network namespace back to the server's pool, once the
/// build is over.
fn give_back_network(ns: &OwnedFd) {
    let sock = GIVE_BACK.load(Ordering::Relaxed);
    if sock < 0 {
        return;
    }
    let fds = [ns.as_raw_fd()];
    let _ = sendmsg::<()>(
        sock,
        &[IoSlice::new(&[0])],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_DONTWAIT,
        None,
    );
}

/// This process's network namespace (to give back later: once the build's
/// pid namespace is gone, `/proc/self/ns` is no longer reachable).
fn own_network() -> Option<OwnedFd> {
    std::fs::File::open("/proc/self/ns/net")
        .ok()
        .map(OwnedFd::from)
}

/// The helper: makes a network namespace (moving into it), brings loopback
/// up and sends it; [`NET_POOL`] at first, then one per request byte.
fn net_maker(socket: UnixStream) -> ! {
    let make = || -> Option<()> {
        unshare(CloneFlags::CLONE_NEWNET).ok()?;
        loopback_up().ok()?;
        let ns = std::fs::File::open("/proc/self/ns/net").ok()?;
        let fds = [ns.as_raw_fd()];
        sendmsg::<()>(
            socket.as_raw_fd(),
            &[IoSlice::new(&[0])],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .ok()?;
        Some(())
    };
    for _ in 0..NET_POOL {
        if make().is_none() {
            leave(0);
        }
    }
    let mut byte = [0u8; 1];
    while let Ok(1) = (&socket).read(&mut byte) {
        if make().is_none() {
            break;
        }
    }
    leave(0)
}

/// The skeleton root for `spec`'s toolchain layer, prepared on first use
/// under `spec.root`.
fn skeleton(made: &mut Vec<(Vec<super::Bind>, PathBuf)>, spec: &Head) -> Result<PathBuf, String> {
    if let Some((_, root)) = made.iter().find(|(t, _)| *t == spec.toolchain) {
        return Ok(root.clone());
    }
    let root = Path::new(&spec.root).join(made.len().to_string());
    mkdir(&root)?;
    mount(
        Some("tmpfs"),
        &root,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0755"),
    )
    .map_err(|e| format!("mount a tmpfs on {}: {e}", root.display()))?;
    let inside = |p: &str| root.join(p.trim_start_matches('/'));
    for d in ["/proc", "/tmp", "/build", "/.cbuild", &spec.store_dir] {
        mkdir(&inside(d))?;
    }
    let dev = inside("/dev");
    mkdir(&dev)?;
    // No `tty`: it would be the caller's terminal.
    for d in ["null", "zero", "full", "random", "urandom"] {
        let target = dev.join(d);
        std::fs::write(&target, "").map_err(|e| format!("create {}: {e}", target.display()))?;
        mount(
            Some(format!("/dev/{d}").as_str()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("bind /dev/{d}: {e}"))?;
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
    for b in &spec.toolchain {
        bind(&b.source, &inside(&b.target), b.writable)?;
    }
    // The store, read-only, beside the root (outside it: builds never see
    // it whole). A bind of a path under a read-only mount is read-only, so
    // each input is then one mount call instead of a bind and a remount.
    if !spec.store_dir.is_empty() && Path::new(&spec.store_dir).is_dir() {
        bind(&spec.store_dir, &store_view_of(&root), false)?;
    }
    // Read-only from now on: every build of the realise shares this tmpfs
    // (a copied mount namespace shares its mounts' contents), so a build
    // must not be able to leave anything in it for the next.
    mount(
        None::<&str>,
        &root,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        Some("mode=0755"),
    )
    .map_err(|e| format!("make the root read-only: {e}"))?;
    made.push((spec.toolchain.clone(), root.clone()));
    Ok(root)
}

/// Asks for `SIGKILL` when the parent exits, so that nothing outlives the
/// cbuild that started it.
/// `expected` is the parent's pid when it can be checked: a parent that died
/// between the fork and this call sends no signal, so the child goes itself.
/// (Pid 1 of a new pid namespace sees no parent pid; it is covered by its
/// monitor, which only waits, and by the namespace dying with it.)
fn die_with_parent(expected: Option<nix::unistd::Pid>) {
    unsafe {
        nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL, 0, 0, 0);
    }
    if expected.is_some_and(|p| nix::unistd::getppid() != p) {
        unsafe { nix::libc::_exit(0) }
    }
}

/// Enters a build's namespaces: the network one from the pool when there
/// is one, a new one otherwise (unless `network`, the host's). Returns
/// whether the network namespace is new (its loopback is still down).
fn enter(net: &Option<OwnedFd>, network: bool) -> Result<bool, String> {
    let mut flags = build_flags(true);
    let mut own_net = false;
    match net {
        Some(fd) => nix::sched::setns(fd, CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("cannot enter the build's network namespace: {e}"))?,
        None if !network => {
            flags |= CloneFlags::CLONE_NEWNET;
            own_net = true;
        }
        None => {}
    }
    unshare(flags).map_err(|e| format!("cannot create the build namespaces: {e}"))?;
    Ok(own_net)
}

/// One build, in a fresh monitor: enters its namespaces and runs it.
fn monitor(
    spec: &SandboxSpec,
    log: OwnedFd,
    status: OwnedFd,
    root: Option<&Path>,
    net: Option<OwnedFd>,
    server: nix::unistd::Pid,
) -> ! {
    die_with_parent(Some(server));
    let mut own_net = false;
    if spec.namespaces {
        match enter(&net, spec.network) {
            Ok(own) => own_net = own,
            Err(e) => {
                report(&status, Some(&log), 128, &format!("cbuild sandbox: {e}\n"));
                leave(0)
            }
        }
    }
    let ns = if spec.namespaces && !spec.network {
        net.or_else(own_network)
    } else {
        None
    };
    run_build(spec, log, status, root, own_net, ns)
}

/// In a monitor that has entered the namespaces: forks the build's pid 1,
/// waits for it and reports its status. The monitor stays in the build's
/// namespaces until then, so their teardown happens after the report, off
/// the build's critical path.
fn run_build(
    spec: &SandboxSpec,
    log: OwnedFd,
    status: OwnedFd,
    root: Option<&Path>,
    own_net: bool,
    ns: Option<OwnedFd>,
) -> ! {
    // The build reads nothing: fd 0 becomes /dev/null instead of the socket.
    unsafe {
        nix::libc::close(0);
        nix::libc::open(c"/dev/null".as_ptr(), nix::libc::O_RDONLY);
    }
    // The first child is pid 1 of the new pid namespace.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(status);
            build_pid1(spec, log, root, own_net)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(log);
            report_started(&status, child);
            let code = loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, code)) => break code,
                    Ok(WaitStatus::Signaled(_, sig, _)) => break 128 + sig as i32,
                    Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => break 128,
                }
            };
            if !spec.namespaces {
                let _ = nix::sys::signal::killpg(child, Signal::SIGKILL);
            }
            report(&status, None, code, "");
            if let Some(ns) = &ns {
                give_back_network(ns);
            }
            leave(0)
        }
        Err(e) => {
            let msg = format!("cbuild sandbox: cannot fork the build process: {e}\n");
            report(&status, Some(&log), 128, &msg);
            leave(0)
        }
    }
}

fn build_pid1(spec: &SandboxSpec, log: OwnedFd, root: Option<&Path>, own_net: bool) -> ! {
    die_with_parent(None);
    // Without a pid namespace, whatever the builder leaves running is found
    // by its process group (its own session, see `exec_builder`) and killed
    // when it exits.
    if dup2_stdout(&log).and_then(|_| dup2_stderr(&log)).is_err() {
        leave(128);
    }
    drop(log);
    let setup = match root {
        Some(root) => premount(&[root.to_path_buf()], own_net).and_then(|()| assemble(spec, root)),
        None => join_cgroups(spec).and_then(|()| {
            chdir(spec.build_dir.as_str()).map_err(|e| format!("enter {}: {e}", spec.build_dir))
        }),
    };
    if let Err(e) = setup {
        die("cannot set up the sandbox", &e);
    }
    exec_builder(spec)
}

fn exec_builder(spec: &SandboxSpec) -> ! {
    // A session of its own: the builder can signal neither cbuild nor other
    // builds through a process group, and has no controlling terminal.
    let _ = nix::unistd::setsid();
    // Descriptors cbuild itself inherited without close-on-exec (a make
    // jobserver, a CI pipe) must not reach the builder.
    unsafe {
        nix::libc::syscall(
            nix::libc::SYS_close_range,
            3u32,
            u32::MAX,
            nix::libc::CLOSE_RANGE_CLOEXEC,
        );
    }
    if let Some(mask) = spec.vary.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    if spec.vary.one_cpu {
        // The first CPU this process may run on, alone.
        if let Ok(cpus) = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
            && let Some(first) =
                (0..nix::sched::CpuSet::count()).find(|&c| cpus.is_set(c).unwrap_or(false))
        {
            let mut one = nix::sched::CpuSet::new();
            if one.set(first).is_ok() {
                let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &one);
            }
        }
    }
    if let Err(e) = become_build_user() {
        die("cannot become the build user", &e);
    }
    if let Some((uid, gid)) = spec.vary.ids
        && let Err(e) = enter_ids(uid, gid)
    {
        die("cannot run the builder under another uid and gid", &e);
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

/// Whether the server's user namespace keeps uid 0 as the host's root (cbuild
/// runs as root): its builders must then become the build user. Set once by
/// the server before it forks anything.
static ROOT_INSIDE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Runs the rest of this process as the build user, with no capability
/// and no way to gain one: when cbuild runs as root, the sandbox processes
/// are uid 0 of their user namespace (the host's root, for the files root
/// owns) until here, and the builder must be the build user, whose host
/// ids are subordinate ones. As an ordinary user the process already is
/// the build user (the caller's ids) and only loses the capabilities.
fn become_build_user() -> Result<(), String> {
    use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};
    if ROOT_INSIDE.load(Ordering::Relaxed) {
        let (uid, gid) = (
            Uid::from_raw(spec::BUILD_UID),
            Gid::from_raw(spec::BUILD_GID),
        );
        // The server's supplementary groups are root's on the host.
        setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
        setresgid(gid, gid, gid).map_err(|e| format!("setresgid: {e}"))?;
        // A change of uid away from 0 clears every capability set.
        setresuid(uid, uid, uid).map_err(|e| format!("setresuid: {e}"))?;
        // The change of uid made the process undumpable: its /proc/self
        // would belong to root, and a `check --vary` user namespace could
        // not write its own maps.
        // SAFETY: prctl with integer arguments only.
        unsafe {
            nix::libc::prctl(nix::libc::PR_SET_DUMPABLE, 1, 0, 0, 0);
        }
        // The change of uid also cleared the parent-death signal: the build
        // must still die with its monitor. (The monitor only dies with the
        // server, which dies with cbuild; pid 1 cannot check its parent in
        // between, it has none in its pid namespace.)
        die_with_parent(None);
    }
    // Set-uid and file-capability binaries (the host's /usr is in the
    // toolchain layer) give the builder nothing.
    // SAFETY: prctl with integer arguments only.
    if unsafe { nix::libc::prctl(nix::libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "PR_SET_NO_NEW_PRIVS: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Entries of a build's `/proc` bound read-only onto themselves.
const PROC_READ_ONLY: [&str; 5] = ["sys", "sysrq-trigger", "irq", "bus", "fs"];

/// Mounts what every build has of its own on a copy of the skeleton
/// `root`: `/proc` (of the build's pid namespace) and `/.cbuild` (`/tmp`
/// comes with the build, see [`assemble`]).
/// Also names the host and brings up loopback in a new network namespace.
fn premount(roots: &[PathBuf], own_net: bool) -> Result<(), String> {
    let m = |what: &str, e: nix::errno::Errno| format!("{what}: {e}");
    for root in roots {
        let inside = |p: &str| root.join(p.trim_start_matches('/'));
        mount(
            Some("proc"),
            &inside("/proc"),
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .map_err(|e| m("mount /proc", e))?;
        // What in procfs changes the host rather than the build's own
        // namespaces is read-only, as Docker and bubblewrap make it: kernel
        // settings (`core_pattern` runs a program as the host's root),
        // SysRq, interrupt affinities, bus devices.
        for sub in PROC_READ_ONLY {
            let p = inside("/proc").join(sub);
            if p.exists() {
                let p = p.to_string_lossy();
                bind_mount(&p, Path::new(p.as_ref()), true, true)?;
            }
        }
        // The tool links live on a tmpfs of their own: the skeleton is shared.
        mount(
            Some("tmpfs"),
            &inside("/.cbuild"),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        )
        .map_err(|e| m("mount /.cbuild", e))?;
    }
    sethostname("localhost").map_err(|e| m("set the hostname", e))?;
    if own_net {
        loopback_up().map_err(|e| format!("bring up loopback: {e}"))?;
    }
    Ok(())
}

/// Mounts what is this build's alone on the premounted `root` (tool links,
/// `/tmp`, inputs, outputs, `/build`) and moves into it.
fn assemble(spec: &SandboxSpec, root: &Path) -> Result<(), String> {
    let m = |what: &str, e: nix::errno::Errno| format!("{what}: {e}");
    join_cgroups(spec)?;
    let inside = |p: &str| root.join(p.trim_start_matches('/'));
    for (link, target) in &spec.symlinks {
        if !link.starts_with("/.cbuild/") {
            return Err(format!("symlink {link} outside /.cbuild"));
        }
        let at = inside(link);
        if let Some(parent) = at.parent() {
            mkdir(parent)?;
        }
        std::os::unix::fs::symlink(target, &at).map_err(|e| format!("symlink {link}: {e}"))?;
    }
    let under = |b: &super::Bind, dir: &str| {
        !dir.is_empty()
            && b.target
                .strip_prefix(dir)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    for b in &spec.binds {
        if !under(b, &spec.store_dir) && !under(b, "/.cbuild") {
            return Err(format!(
                "cannot bind {} at {}: the root is read-only; binds go into the store \
                 directory {} or /.cbuild",
                b.source, b.target, spec.store_dir
            ));
        }
    }
    // `/tmp` before anything is mounted under it (a store under /tmp is):
    // the build's directory on disk, else a tmpfs.
    let tmp = inside("/tmp");
    match &spec.tmp_dir {
        Some(dir) => bind(dir, &tmp, true)?,
        None => mount(
            Some("tmpfs"),
            &tmp,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        )
        .map_err(|e| m("mount /tmp", e))?,
    }
    let view = store_view_of(root);
    let view = view.is_dir().then_some(view);
    // Inputs are bound by name from inside the store directory once the
    // build's view is there: one path walk fewer per input.
    let mut in_store = false;
    for b in &spec.binds {
        // An input (a store path at its own path, read-only) comes from the
        // read-only view of the store, already read-only, onto the mount
        // point the build's view of the store has for it: one mount call.
        // A store path has no mounts under it, so the bind is not recursive.
        let from_view = view.as_ref().and_then(|v| {
            let rest = b.source.strip_prefix(&spec.store_dir)?.strip_prefix('/')?;
            (!b.writable && b.source == b.target).then(|| v.join(rest))
        });
        let at = inside(&b.target);
        match &from_view {
            Some(v) => {
                let v = v.to_string_lossy();
                let name = b.target.strip_prefix(&spec.store_dir);
                let at = match name.and_then(|n| n.strip_prefix('/')) {
                    Some(name) if in_store => PathBuf::from(name),
                    _ => at,
                };
                match mount(
                    Some(v.as_ref()),
                    &at,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                ) {
                    Ok(()) => {}
                    // No mount point made for it: make one like the source.
                    Err(nix::errno::Errno::ENOENT) => {
                        let kind = Kind::of(&b.source)?;
                        mount_point(&kind, &at)?;
                        if !matches!(kind, Kind::Symlink(_)) {
                            bind_mount(&v, &at, false, false)?;
                        }
                    }
                    Err(e) => return Err(format!("bind {v} at {}: {e}", b.target)),
                }
            }
            None => {
                bind(&b.source, &at, b.writable)?;
                if b.target == spec.store_dir && !in_store {
                    chdir(&at).map_err(|e| m("enter the store directory", e))?;
                    in_store = true;
                }
            }
        }
    }
    let build = spec.vary.build_dir();
    if !(build == "/build" || build.starts_with("/.cbuild/")) {
        return Err(format!("cannot put the build directory at {build}"));
    }
    bind(&spec.build_dir, &inside(build), true)?;
    if let Some(h) = &spec.vary.hostname {
        sethostname(h).map_err(|e| m("set the hostname", e))?;
    }
    chdir(root).map_err(|e| m("enter the root", e))?;
    pivot_root(".", ".").map_err(|e| m("pivot_root", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| m("detach the old root", e))?;
    chdir(build).map_err(|e| m(&format!("enter {build}"), e))?;
    Ok(())
}

/// Moves this process (the build's first) into the build's control groups,
/// while the host's paths are still visible: everything it starts is in
/// them from then on.
fn join_cgroups(spec: &SandboxSpec) -> Result<(), String> {
    for procs in &spec.cgroup_procs {
        std::fs::write(procs, "0").map_err(|e| format!("join the control group {procs}: {e}"))?;
    }
    Ok(())
}

/// Where the skeleton `root`'s read-only view of the store is mounted.
fn store_view_of(root: &Path) -> PathBuf {
    let mut name = root.as_os_str().to_owned();
    name.push(".store");
    PathBuf::from(name)
}

/// Binds `source` at `target` (created as a directory or an empty file like
/// the source), read-only unless `writable`.
fn bind(source: &str, target: &Path, writable: bool) -> Result<(), String> {
    let kind = Kind::of(source)?;
    mount_point(&kind, target)?;
    if matches!(kind, Kind::Symlink(_)) {
        return Ok(());
    }
    bind_mount(source, target, !writable, true)
}

/// What a bind's source is, read once: it decides the mount point's kind.
enum Kind {
    Dir,
    File,
    /// A symlink (an input whose output is one) is copied as a symlink: a
    /// bind would follow it inside, where the host's paths are still
    /// visible.
    Symlink(PathBuf),
}

impl Kind {
    fn of(source: &str) -> Result<Kind, String> {
        match std::fs::symlink_metadata(source) {
            Ok(m) if m.file_type().is_symlink() => std::fs::read_link(source)
                .map(Kind::Symlink)
                .map_err(|e| format!("read {source}: {e}")),
            Ok(m) if !m.is_dir() => Ok(Kind::File),
            // What is missing fails at the bind, naming it.
            _ => Ok(Kind::Dir),
        }
    }
}

/// Makes `target` ready for a source of `kind` to be bound there: a
/// directory or an empty file, or the symlink itself. One call in the
/// common case (the parent exists): a deep closure makes thousands.
fn mount_point(kind: &Kind, target: &Path) -> Result<(), String> {
    use nix::sys::stat::{Mode, SFlag, mknod};
    let make = || -> nix::Result<()> {
        let r = match kind {
            Kind::Dir => nix::unistd::mkdir(target, Mode::from_bits_truncate(0o755)),
            Kind::File => mknod(target, SFlag::S_IFREG, Mode::from_bits_truncate(0o644), 0),
            Kind::Symlink(link) => {
                nix::unistd::symlinkat(link.as_path(), nix::fcntl::AT_FDCWD, target)
            }
        };
        match r {
            Err(nix::errno::Errno::EEXIST) if !matches!(kind, Kind::Symlink(_)) => Ok(()),
            r => r,
        }
    };
    let made = match make() {
        Err(nix::errno::Errno::ENOENT) => {
            if let Some(parent) = target.parent() {
                mkdir(parent)?;
            }
            make()
        }
        r => r,
    };
    made.map_err(|e| format!("create {}: {e}", target.display()))
}

/// Binds `source` (with the mounts under it, if `recursive`) at the
/// existing `target`, then remounts it read-only if asked (a bind of a
/// read-only mount is read-only already).
fn bind_mount(source: &str, target: &Path, read_only: bool, recursive: bool) -> Result<(), String> {
    let flags = if recursive {
        MsFlags::MS_BIND | MsFlags::MS_REC
    } else {
        MsFlags::MS_BIND
    };
    mount(Some(source), target, None::<&str>, flags, None::<&str>)
        .map_err(|e| format!("bind {source} at {}: {e}", target.display()))?;
    if read_only {
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
    leave(128)
}

/// Ends a process forked by the server at once: the exit handlers of the
/// C library and of the allocator (which returns its free pages to the
/// kernel first) are the server's to run, not each monitor's.
fn leave(code: i32) -> ! {
    unsafe { nix::libc::_exit(code) }
}
