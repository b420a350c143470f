//! One build: a resolved derivation run in the sandbox at scratch output
//! paths, and its outputs made ready to register (normalised, named by their
//! content, self-references rewritten, references found).
//!
//! A job runs on a worker thread (or the scheduler's) and touches no shared
//! state but the files of its own work directory and a database connection
//! it only reads; the scheduler ([`super::realise`]) places and registers
//! what it returns.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::build::ca;
use crate::build::export;
use crate::build::fetch;
use crate::build::log;
use crate::build::normalise::normalise;
use crate::build::realise::BuildError;
use crate::build::refscan::scan;
use crate::build::sandbox::linux::Sandboxes;
use crate::build::sandbox::spec::in_host_toolchain;
use crate::build::sandbox::{Bind, SandboxSpec};
use crate::build::views::{View, Views};
use crate::derivation::{
    Derivation, DrvHash, ObjectKind, StoreDir, StorePath, base32, placeholder, prefix,
};
use crate::store::tree_hash::{self, Node};
use crate::store::{Db, StoreError, make_writable_recursive};

/// What every job of one realise shares.
pub struct Context<'a> {
    /// The sandbox server, started by the scheduler before the first build
    /// that needs it.
    pub sandboxes: &'a std::sync::OnceLock<Sandboxes>,
    /// The store root.
    pub root: PathBuf,
    /// The store directory.
    pub dir: StoreDir,
    /// An empty directory each sandbox mounts its root on.
    pub sandbox_root: PathBuf,
    /// Run builders in namespaces (false: `--sandbox=off`).
    pub namespaces: bool,
    /// Keep the work directory of a failed build.
    pub keep_failed: bool,
    /// `CBUILD_CORES` for builders.
    pub cores: usize,
    /// The host toolchain layer's binds (for builds that declare tools).
    pub toolchain: Vec<Bind>,
    /// The directories that appear as the store inside sandboxes.
    pub views: Views,
    /// The build user's host ids when cbuild runs as root (see
    /// [`crate::build::sandbox::user`]): what a build writes is handed to it.
    pub build_user: Option<(u32, u32)>,
    /// How long a build may take and stay silent (`--timeout`,
    /// `--max-silent-time`); a recipe's `timeout` may shorten the first.
    pub limits: Limits,
    /// Where builds' control groups are made, when they can be (found once
    /// per realise).
    pub cgroups: Option<crate::build::sandbox::cgroup::Parents>,
    /// The builds running now and the last line each wrote, for the
    /// progress display ([`Live`]).
    pub live: std::sync::Arc<Live>,
}

/// The builds running now, by `.drv` path: when each started and the last
/// line of its log so far, which a progress display shows for builds that
/// run long (`crate::cli::progress`).
#[derive(Debug, Default)]
pub struct Live(std::sync::Mutex<BTreeMap<StorePath, (std::time::Instant, String)>>);

impl Live {
    /// Most characters of a line kept.
    const LINE: usize = 200;

    fn start(&self, drv: &StorePath) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(drv.clone(), (std::time::Instant::now(), String::new()));
        }
    }

    /// Takes the last non-empty line of `bytes`, a chunk of the log.
    fn wrote(&self, drv: &StorePath, bytes: &[u8]) {
        let Some(line) = bytes
            .split(|&b| b == b'\n' || b == b'\r')
            .rfind(|l| l.iter().any(|b| !b.is_ascii_whitespace()))
        else {
            return;
        };
        let text: String = String::from_utf8_lossy(line)
            .chars()
            .take(Self::LINE)
            .collect();
        if let Ok(mut m) = self.0.lock()
            && let Some(e) = m.get_mut(drv)
        {
            e.1 = text;
        }
    }

    fn end(&self, drv: &StorePath) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(drv);
        }
    }

    /// Each running build: its `.drv`, seconds running, last line.
    pub fn snapshot(&self) -> Vec<(StorePath, u64, String)> {
        self.0.lock().map_or_else(
            |_| Vec::new(),
            |m| {
                m.iter()
                    .map(|(d, (at, line))| (d.clone(), at.elapsed().as_secs(), line.clone()))
                    .collect()
            },
        )
    }
}

/// Limits of builds: a build past a time limit is stopped and fails.
#[derive(Clone, Copy, Debug, Default)]
pub struct Limits {
    /// The longest a build may run.
    pub timeout: Option<std::time::Duration>,
    /// The longest a build may go without writing to its log.
    pub max_silent: Option<std::time::Duration>,
    /// Processes and memory of each build, where control groups can be
    /// made.
    pub cgroup: crate::build::sandbox::cgroup::Limits,
}

impl<'a> Context<'a> {
    /// What the builds of one store share, with a fresh directory for the
    /// sandbox roots in the store's scratch space.
    pub fn new(
        store: &crate::store::Store,
        sandboxes: &'a std::sync::OnceLock<Sandboxes>,
        namespaces: bool,
        keep_failed: bool,
    ) -> Result<Context<'a>, StoreError> {
        let sandbox_root = store.scratch_path("root");
        mkdirs(&[&sandbox_root])?;
        let views = Views::new(
            store.scratch_path("views"),
            PathBuf::from(store.dir().as_str()),
        );
        Ok(Context {
            views,
            sandboxes,
            root: store.root().to_path_buf(),
            dir: store.dir().clone(),
            sandbox_root,
            namespaces,
            keep_failed,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            toolchain: crate::build::sandbox::spec::host_toolchain_binds(),
            build_user: crate::build::sandbox::user::build_user(),
            limits: Limits::default(),
            cgroups: namespaces
                .then(crate::build::sandbox::cgroup::Parents::find)
                .flatten(),
            live: Default::default(),
        })
    }
}

/// A build to run.
pub struct Job {
    /// The `.drv` being built.
    pub drv_path: StorePath,
    /// Its resolved form: inputs' placeholders replaced by real paths.
    pub drv: Derivation,
    /// The resolved derivation's hash.
    pub resolved_hash: DrvHash,
    /// The store objects the build may see (its inputs' closure).
    pub inputs: BTreeSet<String>,
    /// A fresh scratch directory for this build.
    pub work: PathBuf,
    /// Build even when it is realised already (`cbuild check`); the result
    /// is then compared, never registered.
    pub again: bool,
    /// Conditions changed for `cbuild check --vary`.
    pub vary: crate::build::sandbox::spec::Variation,
    /// The recipe's `timeout`, if it gives one.
    pub timeout: Option<std::time::Duration>,
}

/// An output ready to be moved into the store and registered.
pub struct ReadyOutput {
    /// The output name.
    pub output: String,
    /// Where it lies now.
    pub tmp: PathBuf,
    /// Its final store path.
    pub path: StorePath,
    /// Its tree.
    pub node: Node,
    /// What it refers to (base names, itself and its siblings included).
    pub references: Vec<String>,
}

/// What a job came to.
pub enum JobResult {
    /// Built: outputs to register, while the lock is still held.
    Built {
        /// The outputs in the derivation's order.
        outputs: Vec<ReadyOutput>,
        /// The per-derivation build lock.
        lock: File,
        /// The scratch directory to remove once they are registered.
        work: PathBuf,
    },
    /// Another process built it while this one waited for the lock.
    Done,
}

/// Runs `job` under its per-derivation lock. `db` is this worker's own view
/// of the database, used to see whether another process built it meanwhile.
/// `before_wait` runs if the lock is held elsewhere, before waiting for it.
pub fn run(
    cx: &Context<'_>,
    db: &Db,
    job: Job,
    before_wait: &mut dyn FnMut() -> Result<(), StoreError>,
) -> Result<JobResult, BuildError> {
    // One builder per derivation across processes: whoever holds the lock
    // builds, the others find it realised when they get it.
    let lock = crate::store::lock_path(&cx.root, &job.drv_path, before_wait)?;
    if !job.again
        && job.drv.outputs.iter().try_fold(true, |all, o| {
            Ok::<_, StoreError>(all && db.realisation(&job.resolved_hash, o)?.is_some())
        })?
    {
        discard(&job.work);
        return Ok(JobResult::Done);
    }
    mkdirs(&[&job.work])?;
    let result = if job.drv.fixed.is_some() && job.drv.builder == fetch::BUILDER {
        fetch::fetch(cx, &job)
    } else {
        build(cx, &job)
    };
    match result {
        Ok(outputs) => Ok(JobResult::Built {
            outputs,
            lock,
            work: job.work,
        }),
        Err(e) => {
            let e = if cx.keep_failed {
                // Out of this process's scratch space, which goes when it
                // ends: into `kept/`, which cbuild never cleans.
                let kept = cx.root.join("kept").join(format!(
                    "{}-{}",
                    job.drv_path.base_name(),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis())
                ));
                let moved = std::fs::create_dir_all(cx.root.join("kept"))
                    .and_then(|()| std::fs::rename(&job.work, &kept));
                BuildError::Kept {
                    error: Box::new(e),
                    dir: if moved.is_ok() {
                        kept
                    } else {
                        job.work.clone()
                    },
                }
            } else {
                discard(&job.work);
                e
            };
            Err(e)
        }
    }
}

/// Removes a work directory, read-only parts included.
pub fn discard(work: &Path) {
    make_writable_recursive(work);
    let _ = std::fs::remove_dir_all(work);
}

fn mkdirs(dirs: &[&Path]) -> Result<(), StoreError> {
    for p in dirs {
        std::fs::create_dir_all(p).map_err(|source| StoreError::Write {
            path: p.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// A scratch output: its name, the directory it is written in and the
/// random hash part of its scratch path.
pub struct Scratch {
    /// Output name.
    pub output: String,
    /// Store object name (`<name>` or `<name>-<output>`).
    pub name: String,
    /// Random 32-character hash part.
    pub part: String,
}

/// Scratch outputs for `d`: random hash parts of the final length.
pub fn scratch_outputs(drv_path: &StorePath, d: &Derivation) -> Vec<Scratch> {
    d.outputs
        .iter()
        .map(|o| {
            let seed = format!(
                "{}:{o}:{}:{:?}:{:?}",
                drv_path.base_name(),
                std::process::id(),
                std::thread::current().id(),
                std::time::SystemTime::now()
            );
            Scratch {
                output: o.clone(),
                name: if o == "out" {
                    d.name.clone()
                } else {
                    format!("{}-{o}", d.name)
                },
                part: base32::encode(&blake3::hash(seed.as_bytes()).as_bytes()[..20]),
            }
        })
        .collect()
}

/// Runs the builder and finishes its outputs.
fn build(cx: &Context<'_>, job: &Job) -> Result<Vec<ReadyOutput>, BuildError> {
    let d = &job.drv;
    let shown = cx.dir.path_of(&job.drv_path);
    let build_dir = job.work.join("build");
    // Outputs are written in a view of the store (a directory that appears
    // as the store inside the sandbox) and moved out to `store/` when the
    // builder is done; without a sandbox, in the store directory itself.
    let view = if cx.namespaces {
        Some(cx.views.take(&job.inputs)?)
    } else {
        None
    };
    let out_dir = if cx.namespaces {
        job.work.join("store")
    } else {
        PathBuf::from(cx.dir.as_str())
    };
    let tmp_dir = job.work.join("tmp");
    mkdirs(&[&build_dir, &build_dir.join("tmp"), &out_dir, &tmp_dir])?;
    let scratch = scratch_outputs(&job.drv_path, d);
    // An export build writes into conda prefixes, not store paths.
    let export = match d.env.get(prefix::LAYERS_ENV) {
        Some(layers) if cx.namespaces => Some(export::Prefixes::lay(&job.work, d, layers)?),
        Some(_) => return Err(BuildError::ExportNeedsSandbox { drv: shown }),
        None => None,
    };
    let own: Vec<(String, String)> = scratch
        .iter()
        .map(|s| {
            (
                placeholder::own_output(&s.output),
                format!("{}/{}-{}", cx.dir.as_str(), s.part, s.name),
            )
        })
        .collect();
    let r = |s: &String| {
        own.iter()
            .fold(s.clone(), |acc, (from, to)| acc.replace(from, to))
    };
    let mut spec = spec(cx, job, &build_dir, &out_dir, view.as_ref(), &r)?;
    if cx.namespaces {
        spec.tmp_dir = Some(tmp_dir.to_string_lossy().into_owned());
    }
    // Removed when this returns, the build over.
    let cgroup = cx.cgroups.as_ref().and_then(|p| p.create(cx.limits.cgroup));
    if let Some(cg) = &cgroup {
        spec.cgroup_procs = cg.procs();
    }
    if let Some(e) = &export {
        spec.binds.extend(e.binds());
    }
    if let Some(user) = cx.build_user {
        // Everything the build may write, and nothing else, becomes the
        // build user's: the build directory, the store view's top (the
        // outputs are made there; its mount points are covered by the
        // inputs' read-only mounts) and the prefixes of an export.
        let give = |p: &Path, recursive: bool| {
            crate::build::sandbox::user::hand_over(p, user, recursive).map_err(|source| {
                StoreError::Write {
                    path: p.to_path_buf(),
                    source,
                }
            })
        };
        give(&build_dir, true)?;
        give(&tmp_dir, true)?;
        give(view.as_ref().map_or(out_dir.as_path(), |v| v.dir()), false)?;
        for b in spec.binds.iter().filter(|b| b.writable) {
            if Path::new(&b.source).starts_with(&job.work) {
                give(Path::new(&b.source), true)?;
            }
        }
    }
    let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| {
        BuildError::from(crate::build::sandbox::linux::SandboxError::Pipe(e.into()))
    })?;
    let sandboxes = cx
        .sandboxes
        .get()
        .ok_or(crate::build::sandbox::linux::SandboxError::Lost)?;
    let running = sandboxes.submit(&spec, writer)?;
    let (status, tail) = follow(cx, job, reader, running)?;
    if let Some(view) = view {
        // The next build that takes the view removes whatever else is there.
        for s in &scratch {
            let name = format!("{}-{}", s.part, s.name);
            let (from, to) = (view.dir().join(&name), out_dir.join(&name));
            match crate::store::rename_object(&from, &to) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(StoreError::Rename {
                        from,
                        to,
                        source: e,
                    }
                    .into());
                }
                _ => {}
            }
        }
    }
    if !status.success() {
        return Err(BuildError::Failed {
            drv: shown,
            code: status.code().unwrap_or(-1),
            tail,
        });
    }
    let found: Vec<(Scratch, PathBuf)> = scratch
        .into_iter()
        .map(|s| {
            let p = out_dir.join(format!("{}-{}", s.part, s.name));
            (s, p)
        })
        .collect();
    if let Some(e) = export {
        let finished = e.finish(&shown, &found);
        if finished.is_err() {
            log::ensure(&cx.root, &job.drv_path);
        }
        finished?;
    }
    for (s, p) in &found {
        if std::fs::symlink_metadata(p).is_err() {
            // Nothing half-made may stay in the store directory.
            for (_, q) in &found {
                discard(q);
            }
            log::ensure(&cx.root, &job.drv_path);
            return Err(BuildError::MissingOutput {
                drv: shown,
                output: s.output.clone(),
            });
        }
    }
    let mut r = finish_outputs(cx, job, &found);
    if r.is_err() {
        // The builder succeeded, the build did not: `cbuild log` must have
        // something to show even if it printed nothing.
        log::ensure(&cx.root, &job.drv_path);
    }
    if let (Ok(ready), Some(fixed)) = (&r, &d.fixed)
        && let Some(o) = ready.first()
        && let Err(e) = fetch::check_output(fixed, &o.tmp, &o.node, &shown)
    {
        r = Err(e);
    }
    if r.is_err() && !cx.namespaces {
        for (_, q) in &found {
            discard(q);
        }
    }
    r
}

/// Reads the build's log while it runs, until its status comes; then what
/// is left in the pipe. A builder that leaves a process holding the log open
/// (possible only with `--sandbox=off`) cannot make this wait for it.
fn follow(
    cx: &Context<'_>,
    job: &Job,
    reader: OwnedFd,
    running: crate::build::sandbox::linux::Running,
) -> Result<(std::process::ExitStatus, String), BuildError> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::io::Read;
    let mut log = log::LogWriter::new(&cx.root, &job.drv_path);
    // The first thing that went wrong with the log; reading goes on.
    let mut failure: Option<StoreError> = None;
    let keep = |log: &mut log::LogWriter, failure: &mut Option<StoreError>, bytes: &[u8]| {
        if failure.is_none()
            && let Err(e) = log.write(bytes)
        {
            *failure = Some(e);
        }
    };
    let mut running = running;
    let mut pipe = File::from(reader);
    let mut buf = [0u8; 16 * 1024];
    let mut open = true;
    let read_err = |source| StoreError::Read {
        path: log::log_path(&cx.root, &job.drv_path),
        source,
    };
    // The recipe's timeout may shorten the command line's, never lengthen it.
    let timeout = match (cx.limits.timeout, job.timeout) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let started = std::time::Instant::now();
    let mut last_output = started;
    cx.live.start(&job.drv_path);
    // Removed from the live list however this returns.
    struct Ended<'a>(&'a Live, &'a StorePath);
    impl Drop for Ended<'_> {
        fn drop(&mut self) {
            self.0.end(self.1);
        }
    }
    let _ended = Ended(&cx.live, &job.drv_path);
    let mut stopped: Option<Stopped> = None;
    let mut exited = None;
    loop {
        // The nearest deadline, if any, bounds the wait.
        let now = std::time::Instant::now();
        let deadlines = [
            timeout.map(|t| (started + t, Stopped::Timeout(t))),
            cx.limits
                .max_silent
                .map(|t| (last_output + t, Stopped::Silent(t))),
        ];
        let next = deadlines
            .iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
            .cloned();
        if stopped.is_none()
            && let Some((at, why)) = &next
            && *at <= now
        {
            running.kill();
            stopped = Some(why.clone());
        }
        let wait = match (&stopped, &next) {
            (None, Some((at, _))) => {
                PollTimeout::try_from(at.saturating_duration_since(now)).unwrap_or(PollTimeout::MAX)
            }
            _ => PollTimeout::NONE,
        };
        let (log_ready, status_ready) = {
            let mut fds = vec![PollFd::new(running.status_fd(), PollFlags::POLLIN)];
            if open {
                fds.push(PollFd::new(pipe.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, wait) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                // Nothing to wait on but the status itself.
                Err(e) => {
                    failure.get_or_insert(read_err(e.into()));
                    break;
                }
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            (open && ready(&fds[1]), ready(&fds[0]))
        };
        if log_ready {
            match pipe.read(&mut buf) {
                Ok(0) => open = false,
                Ok(n) => {
                    last_output = std::time::Instant::now();
                    keep(&mut log, &mut failure, &buf[..n]);
                    cx.live.wrote(&job.drv_path, &buf[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failure.get_or_insert(read_err(e));
                    open = false;
                }
            }
        }
        if status_ready {
            match running.next_event()? {
                crate::build::sandbox::linux::Event::Started => {}
                crate::build::sandbox::linux::Event::Exited(s) => {
                    exited = Some(s);
                    break;
                }
            }
        }
    }
    // The builder is gone: take what it wrote, without waiting for anything
    // it may have left behind.
    if open {
        let flags = nix::fcntl::OFlag::O_NONBLOCK;
        let _ = nix::fcntl::fcntl(&pipe, nix::fcntl::FcntlArg::F_SETFL(flags));
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => keep(&mut log, &mut failure, &buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }
    // The builder has exited (or the sandbox is gone) before this returns,
    // whatever happened to its log: its lock must not be let go earlier.
    let status = match exited {
        Some(s) => s,
        None => running.wait()?,
    };
    if let Some(e) = failure {
        // No log of an earlier build may pass for this one's.
        let _ = std::fs::remove_file(log::log_path(&cx.root, &job.drv_path));
        return Err(e.into());
    }
    let tail = log.finish(!status.success() || stopped.is_some())?;
    if let Some(why) = stopped {
        return Err(BuildError::Stopped {
            drv: cx.dir.path_of(&job.drv_path),
            why: why.to_string(),
            tail,
        });
    }
    Ok((status, tail))
}

/// Why a build was stopped.
#[derive(Clone, Debug)]
enum Stopped {
    Timeout(std::time::Duration),
    Silent(std::time::Duration),
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stopped::Timeout(t) => write!(
                f,
                "it ran for {} s, its time limit (--timeout, or the recipe's `timeout`)",
                t.as_secs_f64()
            ),
            Stopped::Silent(t) => write!(
                f,
                "it wrote nothing for {} s (--max-silent-time)",
                t.as_secs_f64()
            ),
        }
    }
}

/// The sandbox description of a build.
fn spec(
    cx: &Context<'_>,
    job: &Job,
    build_dir: &Path,
    out_dir: &Path,
    view: Option<&View<'_>>,
    r: &dyn Fn(&String) -> String,
) -> Result<SandboxSpec, BuildError> {
    let d = &job.drv;
    let dir = &cx.dir;
    let mut binds = Vec::new();
    let toolchain = if d.host_tools.is_empty() {
        Vec::new()
    } else {
        cx.toolchain.clone()
    };
    // The store directory inside: the build's view, or where outputs go.
    let store_view = view.map_or(out_dir, |v| v.dir());
    binds.push(Bind {
        source: store_view.to_string_lossy().into(),
        target: dir.as_str().into(),
        writable: true,
    });
    // A symlink input is in the view already.
    for b in job
        .inputs
        .iter()
        .filter(|b| view.is_none_or(|v| v.needs_bind(b)))
    {
        binds.push(Bind {
            source: format!("{}/{b}", dir.as_str()),
            target: format!("{}/{b}", dir.as_str()),
            writable: false,
        });
    }
    // PATH: the declared tools and the inputs' bin/ folders only. Every
    // pinned tool appears under the name it was asked for; one outside the
    // toolchain layer is bound in by itself (its resolved file).
    let tool_dir = if cx.namespaces {
        "/.cbuild/bin".to_string()
    } else {
        job.work.join("bin").to_string_lossy().into_owned()
    };
    let mut path = vec![tool_dir.clone()];
    for p in &d.path_inputs {
        if p.starts_with(dir.as_str()) {
            path.push(format!("{p}/bin"));
        }
    }
    let mut symlinks = Vec::new();
    for (name, tool) in &d.host_tools {
        if !cx.namespaces || in_host_toolchain(&tool.path) {
            symlinks.push((format!("{tool_dir}/{name}"), tool.path.clone()));
        } else {
            // Outside the toolchain layer: its resolved file, bound in by
            // itself under the name asked for (the root is read-only).
            binds.push(Bind {
                source: tool.resolved.clone(),
                target: format!("{tool_dir}/{name}"),
                writable: false,
            });
        }
    }
    if !cx.namespaces {
        mkdirs(&[Path::new(&tool_dir)])?;
        for (link, target) in symlinks.drain(..) {
            std::os::unix::fs::symlink(&target, &link).map_err(|source| StoreError::Write {
                path: link.into(),
                source,
            })?;
        }
    }
    let inside_build = if cx.namespaces {
        job.vary.build_dir().to_string()
    } else {
        build_dir.to_string_lossy().into_owned()
    };
    let mut env: BTreeMap<String, String> = d.env.iter().map(|(k, v)| (k.clone(), r(v))).collect();
    let join = |suffixes: &[&str]| {
        d.host_inputs
            .iter()
            .flat_map(|p| suffixes.iter().map(move |s| format!("{p}/{s}")))
            .collect::<Vec<_>>()
            .join(":")
    };
    if !d.host_inputs.is_empty() {
        env.insert("CPATH".into(), join(&["include"]));
        env.insert("LIBRARY_PATH".into(), join(&["lib"]));
        env.insert(
            "PKG_CONFIG_PATH".into(),
            join(&["lib/pkgconfig", "share/pkgconfig"]),
        );
    }
    if let Some((lib, offset)) = &job.vary.faketime {
        binds.push(Bind {
            source: lib.clone(),
            target: crate::build::sandbox::spec::FAKETIME_LIB.into(),
            writable: false,
        });
        env.insert(
            "LD_PRELOAD".into(),
            crate::build::sandbox::spec::FAKETIME_LIB.into(),
        );
        env.insert("FAKETIME".into(), offset.clone());
    }
    // What conda build scripts expect, unless the derivation sets it:
    // where to install (`$out` here; export builds set the placeholder
    // prefix), where the sources are, how many cores to use.
    let defaults = [
        ("PREFIX", env.get("out").cloned()),
        (
            "SRC_DIR",
            Some(
                env.get("src")
                    .cloned()
                    .unwrap_or_else(|| inside_build.clone()),
            ),
        ),
        (
            "CPU_COUNT",
            Some(if job.vary.one_cpu { 1 } else { cx.cores }.to_string()),
        ),
    ];
    for (k, v) in defaults {
        if let Some(v) = v {
            env.entry(k.into()).or_insert(v);
        }
    }
    for (k, v) in [
        ("PATH", path.join(":")),
        ("HOME", "/homeless-shelter".into()),
        ("TMPDIR", format!("{inside_build}/tmp")),
        ("TZ", "UTC".into()),
        ("LC_ALL", "C".into()),
        ("SOURCE_DATE_EPOCH", "1".into()),
        (
            "CBUILD_CORES",
            if job.vary.one_cpu { 1 } else { cx.cores }.to_string(),
        ),
    ] {
        env.insert(k.into(), v);
    }
    Ok(SandboxSpec {
        root: cx.sandbox_root.to_string_lossy().into(),
        toolchain,
        store_dir: dir.as_str().into(),
        binds,
        build_dir: build_dir.to_string_lossy().into(),
        tmp_dir: None,
        cgroup_procs: Vec::new(),
        program: r(&d.builder),
        args: d.args.iter().map(r).collect(),
        env: env.into_iter().collect(),
        symlinks,
        network: d.fixed.is_some(),
        namespaces: cx.namespaces,
        vary: job.vary.clone(),
    })
}

/// Turns built scratch outputs into outputs ready to register. An output
/// that mentions a sibling is finished after it, with the sibling's scratch
/// path rewritten to its final one first; siblings that mention each other
/// in a cycle cannot be named by content and are refused.
pub fn finish_outputs(
    cx: &Context<'_>,
    job: &Job,
    found: &[(Scratch, PathBuf)],
) -> Result<Vec<ReadyOutput>, BuildError> {
    let shown = cx.dir.path_of(&job.drv_path);
    let parts: Vec<String> = found.iter().map(|(s, _)| s.part.clone()).collect();
    // Which siblings each output mentions.
    let mut mentions: Vec<BTreeSet<usize>> = Vec::new();
    for (k, (_, p)) in found.iter().enumerate() {
        let mut m = if parts.len() > 1 {
            scan(p, &parts)?
        } else {
            BTreeSet::new()
        };
        m.remove(&k);
        mentions.push(m);
    }
    // Dependency order among siblings.
    let mut order = Vec::new();
    let mut placed = vec![false; found.len()];
    while order.len() < found.len() {
        let next = (0..found.len()).find(|&k| !placed[k] && mentions[k].iter().all(|&m| placed[m]));
        let Some(k) = next else {
            let names: Vec<String> = (0..found.len())
                .filter(|&k| !placed[k])
                .map(|k| found[k].0.output.clone())
                .collect();
            return Err(BuildError::OutputCycle {
                drv: shown,
                outputs: names,
            });
        };
        placed[k] = true;
        order.push(k);
    }
    let candidates: Vec<String> = job
        .inputs
        .iter()
        .map(|b| b[..32.min(b.len())].to_string())
        .collect();
    let inputs: Vec<&String> = job.inputs.iter().collect();
    let mut finals: Vec<Option<StorePath>> = vec![None; found.len()];
    let mut ready = Vec::new();
    for k in order {
        let (s, p) = &found[k];
        // Siblings it mentions are final already: point at their final paths.
        if !mentions[k].is_empty() {
            let files = all_files(p)?;
            make_writable_recursive(p);
            for &m in &mentions[k] {
                if let Some(fin) = &finals[m] {
                    ca::rewrite(&files, &found[m].0.part, &fin.hash_part())?;
                }
            }
        }
        let hashed = ca::hash_modulo(p, &s.part)?;
        let final_path = StorePath::compute(&cx.dir, ObjectKind::Output, &hashed.digest.0, &s.name)
            .map_err(StoreError::from)?;
        let node = if hashed.self_referencing.is_empty() {
            hashed.node
        } else {
            make_writable_recursive(p);
            ca::rewrite(&hashed.self_referencing, &s.part, &final_path.hash_part())?;
            tree_hash::hash_tree(p)?
        };
        normalise(p)?;
        let mut cands = candidates.clone();
        cands.push(final_path.hash_part());
        let sibling_base = cands.len();
        for f in finals.iter().flatten() {
            cands.push(f.hash_part());
        }
        let sibling_paths: Vec<&StorePath> = finals.iter().flatten().collect();
        let references: Vec<String> = scan(p, &cands)?
            .into_iter()
            .filter_map(|i| {
                if i == sibling_base - 1 {
                    Some(final_path.base_name())
                } else if i >= sibling_base {
                    sibling_paths.get(i - sibling_base).map(|sp| sp.base_name())
                } else {
                    inputs.get(i).map(|b| (*b).clone())
                }
            })
            .collect();
        finals[k] = Some(final_path.clone());
        ready.push(ReadyOutput {
            output: s.output.clone(),
            tmp: p.clone(),
            path: final_path,
            node,
            references,
        });
    }
    // In dependency order: an output comes after the siblings it mentions.
    Ok(ready)
}

/// Every file and symlink under `root` (or `root` itself).
pub fn all_files(root: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut files = Vec::new();
    for e in walkdir::WalkDir::new(root)
        // A symlink at the top is an entry, never followed.
        .follow_root_links(false)
        .follow_links(false)
    {
        let e = e.map_err(|e| {
            let (path, source) = crate::store::walk_error(root, e);
            StoreError::Read { path, source }
        })?;
        if !e.file_type().is_dir() {
            files.push(e.into_path());
        }
    }
    Ok(files)
}
