//! Realising derivations: the scheduler that builds what is missing of a
//! DAG, up to `jobs` builds at once, and reuses what is already built.
//!
//! Planning walks the targets' inputs from the database and stops at every
//! derivation whose hash is realised already, so a no-op realise is a few
//! look-ups, not a walk of the tree. Then, in dependency order, each
//! derivation's inputs' placeholders are replaced by their real output paths
//! (the *resolved* derivation); if the resolved hash is realised (an input
//! was rebuilt to identical bytes) nothing runs: early cutoff. Otherwise a
//! worker thread builds it ([`super::job`]); the only runnable build (a
//! chain's next link) runs on the scheduler's own thread instead.
//!
//! A finished build's outputs are *placed* at once (moved to their final
//! paths under their locks), so that its dependents can start, and
//! *registered* by a registrar thread a batch at a time, within
//! `HOLD_AT_MOST`: one `syncfs` and one transaction for many builds, off
//! the critical path. Until then the scheduler knows the placed objects'
//! references itself, for its dependents' input closures.
//!
//! A failed build stops the scheduling of new builds (running ones finish
//! and are kept) unless `keep_going`; its dependents are skipped.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::Instant;

use crate::build::job::{self, Context, Job, JobResult};
use crate::build::normalise::NormaliseError;
use crate::build::refscan::ScanError;
use crate::build::sandbox::linux::{SandboxError, Sandboxes};
use crate::derivation::{Derivation, DrvHash, StorePath, diff, placeholder};
use crate::store::outputs::{BuiltObject, Placed};
use crate::store::{Db, Store, StoreError};

pub use crate::build::log::read_log;

/// Why a build (or a whole realise) failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The sandbox could not be set up.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// An output could not be normalised.
    #[error(transparent)]
    Normalise(#[from] NormaliseError),
    /// An output could not be scanned.
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// The builder failed.
    #[error("building {drv} failed with exit code {code}\n{tail}\nthe whole log: cbuild log {drv}")]
    Failed {
        /// The `.drv` path.
        drv: String,
        /// The builder's exit code.
        code: i32,
        /// The end of its log.
        tail: String,
    },
    /// A registered output is not on disk (deleted by hand).
    #[error(
        "{path} is registered as built but is not on disk (removed by hand?); `cbuild store \
         verify --repair` builds it again"
    )]
    GoneFromDisk {
        /// The output's path.
        path: String,
    },
    /// A build past a time limit, stopped.
    #[error("building {drv} was stopped: {why}\n{tail}\nthe whole log: cbuild log {drv}")]
    Stopped {
        /// The `.drv` path.
        drv: String,
        /// Which limit.
        why: String,
        /// The last lines of its log.
        tail: String,
    },
    /// The builder succeeded without producing an output.
    #[error("building {drv} did not produce its output `{output}` (${output} was never created)")]
    MissingOutput {
        /// The `.drv` path.
        drv: String,
        /// The output.
        output: String,
    },
    /// Outputs of one build that refer to each other both ways.
    #[error(
        "the outputs {} of {drv} refer to each other in a cycle; an output can only refer to \
         outputs that do not refer back",
        outputs.join(", ")
    )]
    OutputCycle {
        /// The `.drv` path.
        drv: String,
        /// The outputs in the cycle.
        outputs: Vec<String>,
    },
    /// An export build (into a conda prefix) asked for without namespaces.
    #[error("{drv} builds into a conda prefix, which needs the sandbox (not --sandbox=off)")]
    ExportNeedsSandbox {
        /// The `.drv` path.
        drv: String,
    },
    /// An export build changed, replaced or removed a file its host inputs
    /// laid into the prefix.
    #[error(
        "building {drv} {how} `{path}`, which a host input put into the prefix; a package may \
         only add files"
    )]
    ChangedHostFile {
        /// The `.drv` path.
        drv: String,
        /// The file, relative to the prefix.
        path: String,
        /// `changed` or `removed`.
        how: &'static str,
    },
    /// Two layers of an export build: a directory in one, a file or
    /// symlink in another.
    #[error(
        "the host inputs laid into the prefix clash at `{path}`: a directory in {layer}, a file or \
         symlink in another"
    )]
    LayerClash {
        /// Relative to the prefix.
        path: String,
        /// The layer with the directory.
        layer: String,
    },
    /// A download failed or did not match its hash.
    #[error(transparent)]
    Fetch(#[from] crate::build::fetch::FetchError),
    /// A failure whose build directory was kept (`--keep-failed`).
    #[error("{error}\nthe build directory is kept at {}", dir.display())]
    Kept {
        /// The failure.
        error: Box<BuildError>,
        /// The kept directory.
        dir: std::path::PathBuf,
    },
}

/// How to realise.
#[derive(Clone, Debug)]
pub struct Options {
    /// Builds at once.
    pub jobs: usize,
    /// Go on past failed builds with everything that does not depend on them.
    pub keep_going: bool,
    /// Keep the work directory of failed builds.
    pub keep_failed: bool,
    /// Run builders in namespaces (false: `--sandbox=off`).
    pub namespaces: bool,
    /// Say why each derivation is built.
    pub explain: bool,
    /// Time limits of each build.
    pub limits: crate::build::job::Limits,
    /// Where running builds leave their last log line, for a progress
    /// display to show.
    pub live: std::sync::Arc<crate::build::job::Live>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            keep_going: false,
            keep_failed: false,
            namespaces: true,
            explain: false,
            limits: Default::default(),
            live: Default::default(),
        }
    }
}

/// What happens, as it happens (for progress displays).
#[derive(Debug)]
pub enum Event<'a> {
    /// Planning is done: this many derivations may need building.
    Planned {
        /// Derivations not realised under their own hash.
        todo: usize,
    },
    /// A builder starts.
    Started {
        /// The `.drv`.
        drv: &'a StorePath,
        /// Why it is built, with [`Options::explain`].
        reason: Option<String>,
    },
    /// A builder finished and its outputs are registered.
    Built {
        /// The `.drv`.
        drv: &'a StorePath,
        /// Seconds it took.
        secs: f64,
    },
    /// A derivation was reused (realised, or cut off).
    Cached {
        /// The `.drv`.
        drv: &'a StorePath,
    },
    /// A build failed.
    Failed {
        /// The `.drv`.
        drv: &'a StorePath,
        /// Why.
        error: &'a BuildError,
    },
}

/// What a realise did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Output paths of every derivation realised, by `.drv` path, in the
    /// order of its `outputs` list.
    pub outputs: BTreeMap<StorePath, Vec<(String, StorePath)>>,
    /// Derivations whose builder ran.
    pub built: Vec<StorePath>,
    /// Derivations reused (already realised, or cut off).
    pub cached: Vec<StorePath>,
    /// Derivations whose build failed, with why.
    pub failed: Vec<(StorePath, BuildError)>,
    /// Derivations not built because an input failed.
    pub skipped: Vec<StorePath>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Running,
    Done,
    Failed,
    Skipped,
}

struct Node {
    path: StorePath,
    drv: Derivation,
    hash: DrvHash,
    /// Inputs not finished yet.
    waiting: usize,
    dependents: Vec<usize>,
    state: State,
}

/// Realises `targets` and everything they need. Build failures are in the
/// outcome; an error is returned only when the realise itself cannot go on
/// (the store, or a sandbox this machine cannot create).
pub fn realise(
    store: &mut Store,
    exe: &std::path::Path,
    targets: &[StorePath],
    opts: &Options,
    report: &mut dyn FnMut(Event<'_>),
) -> Result<Outcome, BuildError> {
    let mut out = Outcome::default();
    let mut nodes = plan(store, targets, &mut out)?;
    report(Event::Planned { todo: nodes.len() });
    if nodes.is_empty() {
        return Ok(out);
    }
    let sandboxes: OnceLock<Sandboxes> = OnceLock::new();
    let mut cx = Context::new(store, &sandboxes, opts.namespaces, opts.keep_failed)?;
    cx.limits = opts.limits;
    cx.live = opts.live.clone();
    let db_path = store.root().join("db.sqlite");
    let jobs = opts.jobs.max(1).min(nodes.len()).min(jobs_the_fds_allow());
    let (job_tx, job_rx) = mpsc::channel::<(usize, Job)>();
    let job_rx = Mutex::new(job_rx);
    let (nudge, nudged) = mpsc::channel::<()>();
    let outbox = Outbox {
        placed: Mutex::new(Vec::new()),
        nudge: Mutex::new(Some(nudge)),
        error: Mutex::new(None),
    };
    // Opened here: a registrar that cannot start is an error before any
    // build, not a hang after one.
    let reg_db = Db::open(&store.root().join("db.sqlite"))?;
    let work_pool = WorkPool::new(
        store.scratch_dir().join("pool"),
        jobs + 2 * HAND_OVER,
        nodes.len(),
    );
    let result = std::thread::scope(|s| -> Result<(), BuildError> {
        let job_tx = job_tx;
        let (done_tx, done_rx) = mpsc::channel::<(usize, Result<JobResult, BuildError>)>();
        for _ in 0..jobs {
            let (job_rx, done_tx, cx, db_path) = (&job_rx, done_tx.clone(), &cx, &db_path);
            s.spawn(move || {
                let db = Db::open(db_path);
                loop {
                    let next = job_rx.lock().ok().and_then(|rx| rx.recv().ok());
                    let Some((i, job)) = next else { break };
                    let r = match &db {
                        // A worker holds no lock of its own: it may wait.
                        Ok(db) => job::run(cx, db, job, &mut || Ok(())),
                        Err(e) => Err(BuildError::Store(StoreError::Db {
                            path: db_path.clone(),
                            source: rusqlite::Error::InvalidPath(e.to_string().into()),
                        })),
                    };
                    if done_tx.send((i, r)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        // However this closure returns, the registrar registers what was
        // placed and ends (the scope waits for it).
        let _close = CloseOnDrop(&outbox);
        let (pool, outbox_ref) = (&work_pool, &outbox);
        let reg_dir = store.dir().clone();
        let registrar = s.spawn(move || registrar(reg_db, &reg_dir, nudged, outbox_ref, pool));
        let mut sched = Scheduler {
            store,
            nodes: &mut nodes,
            out: &mut out,
            ready: VecDeque::new(),
            started: HashMap::new(),
            previous: None,
            index: HashMap::new(),
            resolved: HashMap::new(),
            namespaces: opts.namespaces,
            outbox: &outbox,
            pool: &work_pool,
            placed_refs: HashMap::new(),
        };
        sched.index = (0..sched.nodes.len())
            .map(|i| (sched.nodes[i].path.clone(), i))
            .collect();
        sched.ready = (0..sched.nodes.len())
            .filter(|&i| sched.nodes[i].waiting == 0)
            .collect();
        // Before anything is reported as building: a machine that cannot
        // sandbox says so first.
        if sched
            .nodes
            .iter()
            .any(|n| n.drv.builder != crate::build::fetch::BUILDER)
        {
            start_sandboxes(&sandboxes, exe, opts.namespaces)?;
        }
        // An error below leaves the scope, which waits for the workers: the
        // builds they wait on are killed rather than waited for.
        let mut abort = AbortOnError(&sandboxes, true);
        let mut running = 0usize;
        let mut stopping = false;
        let mut inline = None;
        loop {
            while !stopping && running < jobs {
                let Some(i) = sched.ready.pop_front() else {
                    break;
                };
                if let Some(job) = sched.prepare(i, opts, report)? {
                    sched.nodes[i].state = State::Running;
                    sched.started.insert(i, Instant::now());
                    running += 1;
                    if running == 1 && sched.ready.is_empty() {
                        // The only build there is (a chain's next link): run
                        // it here rather than hand it to a worker and back.
                        // Should its lock be held elsewhere, the registrar is
                        // asked to register what this run placed first.
                        let mut release = || outbox.nudge();
                        inline = Some((i, job::run(&cx, sched.store.db(), job, &mut release)));
                        break;
                    }
                    if job_tx.send((i, job)).is_err() {
                        return Err(SandboxError::Lost.into());
                    }
                }
            }
            if running == 0 {
                break;
            }
            let next = match inline.take() {
                Some(r) => Ok(r),
                None => done_rx.recv(),
            };
            let Ok((i, r)) = next else {
                return Err(SandboxError::Lost.into());
            };
            running -= 1;
            match r {
                Ok(r) => {
                    sched.finish(i, r, report)?;
                    if sched.outbox.failed() {
                        break;
                    }
                }
                Err(e) => {
                    sched.fail(i, e, report);
                    if !opts.keep_going {
                        stopping = true;
                    }
                }
            }
        }
        abort.1 = false;
        drop(job_tx);
        drop(sched);
        drop(_close);
        if registrar.join().is_err() {
            return Err(SandboxError::Lost.into());
        }
        outbox.error().map_or(Ok(()), |e| Err(e.into()))
    });
    // The sandbox server goes first: its roots are mounted in this folder.
    let sandbox_root = cx.sandbox_root.clone();
    drop(cx);
    drop(sandboxes);
    let _ = std::fs::remove_dir(&sandbox_root);
    result?;
    Ok(out)
}

/// The `timeout` (seconds) the recipe gave the derivation at `drv`, kept
/// in its meta (not hashed: a new limit rebuilds nothing).
pub(crate) fn recipe_timeout(
    store: &Store,
    drv: &StorePath,
) -> Result<Option<std::time::Duration>, BuildError> {
    let Some((meta, _)) = store.db().derivation_meta(&drv.base_name())? else {
        return Ok(None);
    };
    Ok(serde_json::from_str::<serde_json::Value>(&meta)
        .ok()
        .and_then(|m| m["timeout"].as_u64())
        .filter(|&s| s > 0)
        .map(std::time::Duration::from_secs))
}

/// Builds at once that the open-file limit leaves room for: each worker
/// holds its own database connection (three descriptors with WAL) and a
/// build its log, status and sandbox pipes, about eight in all.
fn jobs_the_fds_allow() -> usize {
    match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) => (soft.saturating_sub(128) / 8).max(1) as usize,
        Err(_) => usize::MAX,
    }
}

pub(crate) fn start_sandboxes(
    cell: &OnceLock<Sandboxes>,
    exe: &std::path::Path,
    namespaces: bool,
) -> Result<(), BuildError> {
    if cell.get().is_none() {
        let s = Sandboxes::start(exe, namespaces)?;
        let _ = cell.set(s);
    }
    Ok(())
}

/// The derivations of the targets' closure that are not realised under their
/// own hash, inputs first; realised ones go straight into `out`.
fn plan(store: &Store, targets: &[StorePath], out: &mut Outcome) -> Result<Vec<Node>, BuildError> {
    let mut nodes: Vec<Node> = Vec::new();
    let mut index: HashMap<StorePath, usize> = HashMap::new();
    let mut seen: HashMap<StorePath, bool> = HashMap::new(); // path -> needs building
    // Iterative depth-first walk: (path, inputs pushed yet).
    let mut stack: Vec<(StorePath, bool)> =
        targets.iter().rev().map(|t| (t.clone(), false)).collect();
    let mut loaded: HashMap<StorePath, (Derivation, DrvHash)> = HashMap::new();
    while let Some((p, expanded)) = stack.pop() {
        if !expanded {
            if seen.contains_key(&p) || loaded.contains_key(&p) {
                continue;
            }
            let (d, hash) = load(store, &p)?;
            if let Some(paths) = realised(store, &hash, &d)? {
                out.outputs.insert(p.clone(), paths);
                out.cached.push(p.clone());
                seen.insert(p, false);
                continue;
            }
            stack.push((p.clone(), true));
            for input in d.input_drvs.keys().rev() {
                if !seen.contains_key(input) {
                    stack.push((input.clone(), false));
                }
            }
            loaded.insert(p, (d, hash));
        } else {
            let Some((d, hash)) = loaded.remove(&p) else {
                continue;
            };
            let i = nodes.len();
            let mut waiting = 0;
            for input in d.input_drvs.keys() {
                if let Some(&j) = index.get(input) {
                    nodes[j].dependents.push(i);
                    waiting += 1;
                }
            }
            index.insert(p.clone(), i);
            seen.insert(p.clone(), true);
            nodes.push(Node {
                path: p,
                drv: d,
                hash,
                waiting,
                dependents: Vec::new(),
                state: State::Waiting,
            });
        }
    }
    Ok(nodes)
}

/// A registered derivation and its stored hash.
fn load(store: &Store, p: &StorePath) -> Result<(Derivation, DrvHash), BuildError> {
    let path = store.real_path(p);
    let (hash, bytes) = store
        .db()
        .derivation_record(&p.base_name())?
        .ok_or_else(|| StoreError::NotValid {
            path: path.to_string_lossy().into_owned(),
            store: store.dir().as_str().into(),
        })?;
    let d = crate::derivation::canonical::parse(&bytes)
        .map_err(|source| StoreError::CorruptDrv { path, source })?;
    Ok((d, hash))
}

/// The realised outputs of `key`, if every output is.
/// `d` resolved: each input's placeholders replaced by the path
/// `output_of(input, output)` gives with the input's hash, the paths added to
/// its sources and its input derivations dropped. Outputs `output_of` does not
/// know stay placeholders.
pub(crate) fn resolve_with(
    d: &Derivation,
    dir: &crate::derivation::StoreDir,
    output_of: impl Fn(&StorePath, &str) -> Option<(DrvHash, StorePath)>,
) -> Derivation {
    let mut subst: Vec<(String, String)> = Vec::new();
    let mut sources = d.input_sources.clone();
    for (input, outs) in &d.input_drvs {
        for o in outs {
            if let Some((ihash, sp)) = output_of(input, o) {
                subst.push((placeholder::input_output(&ihash, o), dir.path_of(&sp)));
                sources.insert(sp);
            }
        }
    }
    Derivation {
        input_drvs: BTreeMap::new(),
        input_sources: sources,
        ..d.with_replaced(&subst)
    }
}

/// The outputs `d` has under `key`, if all are realised and valid; they
/// are temporary GC roots of this process from then on.
fn realised(
    store: &Store,
    key: &DrvHash,
    d: &Derivation,
) -> Result<Option<Vec<(String, StorePath)>>, BuildError> {
    let db = store.db();
    let mut paths = Vec::new();
    for o in &d.outputs {
        let Some(base) = db.realisation(key, o)? else {
            return Ok(None);
        };
        let Some(sp) = StorePath::from_base_name(&base) else {
            return Ok(None);
        };
        paths.push((o.clone(), sp));
    }
    store.protect(paths.iter().map(|(_, p)| p.base_name()))?;
    // A realisation row goes with its object (ON DELETE CASCADE): still
    // there after protecting, the object stays.
    for (o, p) in &paths {
        if db.realisation(key, o)?.as_deref() != Some(p.base_name().as_str()) {
            return Ok(None);
        }
    }
    // The database says built; the disk must agree (one stat each), or a
    // dependent's sandbox fails binding a path that is not there.
    for (_, p) in &paths {
        let real = store.real_path(p);
        if std::fs::symlink_metadata(&real).is_err() {
            return Err(BuildError::GoneFromDisk {
                path: real.to_string_lossy().into_owned(),
            });
        }
    }
    Ok(Some(paths))
}

struct Scheduler<'a> {
    store: &'a mut Store,
    nodes: &'a mut Vec<Node>,
    out: &'a mut Outcome,
    ready: VecDeque<usize>,
    started: HashMap<usize, Instant>,
    /// The last realised `.drv` of each name, for `explain`.
    previous: Option<HashMap<String, StorePath>>,
    /// Node index by `.drv` path.
    index: HashMap<StorePath, usize>,
    /// Resolved hashes of the nodes prepared.
    resolved: HashMap<usize, DrvHash>,
    /// Whether builds run in namespaces.
    namespaces: bool,
    /// Where placed builds go to be registered, off the critical path.
    outbox: &'a Outbox,
    /// Work directories made ahead of time.
    pool: &'a WorkPool,
    /// References of the objects this run placed: until the registrar has
    /// registered them, the database does not know them, and a dependent's
    /// input closure must still include what they refer to.
    placed_refs: HashMap<String, Vec<String>>,
}

/// Placed builds on their way to the registrar, which takes them when it
/// is nudged (a full batch, or a lock someone waits for) and every
/// `HOLD_AT_MOST` anyway: placed builds hold locks, which must not be held
/// for long, and a hand-over per build would wake a thread per build.
struct Outbox {
    placed: Mutex<Vec<Placed>>,
    nudge: Mutex<Option<mpsc::Sender<()>>>,
    /// Why registering failed, if it did.
    error: Mutex<Option<StoreError>>,
}

impl Outbox {
    fn put(&self, p: Placed) {
        let full = self.placed.lock().map(|mut v| {
            v.push(p);
            v.len() >= HAND_OVER
        });
        if full.unwrap_or(true) {
            let _ = self.nudge();
        }
    }

    /// Asks the registrar to register what is here now. Fails when it
    /// cannot: whoever was about to wait for a lock it holds must not.
    fn nudge(&self) -> Result<(), StoreError> {
        let sent = self
            .nudge
            .lock()
            .ok()
            .and_then(|n| n.as_ref().map(|tx| tx.send(()).is_ok()));
        match (sent, self.failed()) {
            (Some(true), false) => Ok(()),
            _ => Err(StoreError::Write {
                path: std::path::PathBuf::from("db.sqlite"),
                source: std::io::Error::other("builds can no longer be registered"),
            }),
        }
    }

    fn fail(&self, e: StoreError) {
        if let Ok(mut err) = self.error.lock() {
            err.get_or_insert(e);
        }
    }

    fn failed(&self) -> bool {
        self.error.lock().map_or(true, |e| e.is_some())
    }

    fn error(&self) -> Option<StoreError> {
        self.error.lock().ok().and_then(|mut e| e.take())
    }

    fn take(&self) -> Vec<Placed> {
        self.placed
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }

    /// No more builds: the registrar registers what is left and ends.
    fn close(&self) {
        if let Ok(mut n) = self.nudge.lock() {
            n.take();
        }
    }
}

struct AbortOnError<'a>(&'a OnceLock<Sandboxes>, bool);

impl Drop for AbortOnError<'_> {
    fn drop(&mut self) {
        if self.1
            && let Some(s) = self.0.get()
        {
            s.abort();
        }
    }
}

struct CloseOnDrop<'a>(&'a Outbox);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Placed builds that make a batch.
const HAND_OVER: usize = 8;
/// Longest time placed builds wait for the registrar.
const HOLD_AT_MOST: std::time::Duration = std::time::Duration::from_millis(20);

impl Scheduler<'_> {
    /// Resolves node `i`; finishes it at once when the resolved derivation is
    /// realised (early cutoff), otherwise returns the job that builds it.
    fn prepare(
        &mut self,
        i: usize,
        opts: &Options,
        report: &mut dyn FnMut(Event<'_>),
    ) -> Result<Option<Job>, BuildError> {
        let resolved = self.resolve(i);
        let rhash = resolved.drv_hash();
        // Realised already: the resolved derivation (early cutoff), or the
        // same download from another URL.
        let mut known = realised(self.store, &rhash, &resolved)?;
        if known.is_none()
            && let Some(key) = resolved.fixed_output_key()
        {
            known = realised(self.store, &key, &resolved)?;
        }
        if let Some(paths) = known {
            let hash = self.nodes[i].hash;
            self.reuse(i, &[hash, rhash], paths, report)?;
            return Ok(None);
        }
        let inputs = self.store.closure_with(
            resolved.input_sources.iter().map(StorePath::base_name),
            &self.placed_refs,
        )?;
        let reason = if opts.explain {
            Some(self.reason(i)?)
        } else {
            None
        };
        report(Event::Started {
            drv: &self.nodes[i].path,
            reason,
        });
        self.resolved.insert(i, rhash);
        Ok(Some(Job {
            drv_path: self.nodes[i].path.clone(),
            drv: resolved,
            resolved_hash: rhash,
            inputs,
            work: self.pool.take(),
            again: false,
            vary: Default::default(),
            timeout: recipe_timeout(self.store, &self.nodes[i].path)?,
        }))
    }

    /// Node `i` with its inputs' placeholders replaced by their output paths.
    fn resolve(&self, i: usize) -> Derivation {
        resolve_with(&self.nodes[i].drv, self.store.dir(), |input, o| {
            let paths = self.out.outputs.get(input)?;
            let (_, sp) = paths.iter().find(|(n, _)| n == o)?;
            Some((self.hash_of(input)?, sp.clone()))
        })
    }

    /// The hash of an input derivation: from the plan, or from the database
    /// for inputs that were realised already.
    fn hash_of(&self, p: &StorePath) -> Option<DrvHash> {
        if let Some(&i) = self.index.get(p) {
            return Some(self.nodes[i].hash);
        }
        self.store
            .db()
            .derivation_record(&p.base_name())
            .ok()
            .flatten()
            .map(|(h, _)| h)
    }

    /// Registers a finished job's outputs.
    fn finish(
        &mut self,
        i: usize,
        r: JobResult,
        report: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), BuildError> {
        let hash = self.nodes[i].hash;
        let rhash = match self.resolved.get(&i) {
            Some(h) => *h,
            None => self.resolve(i).drv_hash(),
        };
        match r {
            JobResult::Done => {
                let paths = realised(self.store, &rhash, &self.nodes[i].drv)?.unwrap_or_default();
                self.reuse(i, &[hash], paths, report)?;
            }
            JobResult::Built {
                outputs,
                lock,
                work,
            } => {
                let objects: Vec<BuiltObject> = outputs
                    .iter()
                    .map(|o| BuiltObject {
                        tmp: o.tmp.clone(),
                        path: o.path.clone(),
                        digest: o.node.tree_digest(),
                        size: o.node.size(),
                        references: o.references.clone(),
                    })
                    .collect();
                let fixed = self.nodes[i].drv.fixed_output_key();
                let mut recs = Vec::new();
                for o in &outputs {
                    for key in [Some(rhash), Some(hash), fixed].into_iter().flatten() {
                        recs.push((key, o.output.clone(), o.path.base_name()));
                    }
                }
                let path = self.nodes[i].path.clone();
                // An identical output placed by an earlier build of this run
                // holds its path's lock until it is registered: on contention
                // the placed builds are handed over before waiting.
                let outbox = self.outbox;
                let placed =
                    self.store
                        .place_build(&path, self.namespaces, &objects, recs, &mut || {
                            outbox.nudge()
                        });
                self.pool.discard(work);
                let mut placed = placed?;
                placed.hold(lock);
                for o in &objects {
                    self.placed_refs
                        .insert(o.path.base_name(), o.references.clone());
                }
                self.outbox.put(placed);
                let mut paths: Vec<(String, StorePath)> =
                    outputs.into_iter().map(|o| (o.output, o.path)).collect();
                let order = &self.nodes[i].drv.outputs;
                paths.sort_by_key(|(o, _)| order.iter().position(|x| x == o));
                let secs = self
                    .started
                    .remove(&i)
                    .map_or(0.0, |t| t.elapsed().as_secs_f64());
                report(Event::Built { drv: &path, secs });
                self.done(i, paths, true);
            }
        }
        Ok(())
    }

    /// Node `i` is realised already as `paths`: records them under `keys`
    /// too and finishes it as reused.
    fn reuse(
        &mut self,
        i: usize,
        keys: &[DrvHash],
        paths: Vec<(String, StorePath)>,
        report: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), BuildError> {
        let recs: Vec<(DrvHash, String, String)> = paths
            .iter()
            .flat_map(|(o, p)| keys.iter().map(move |k| (*k, o.clone(), p.base_name())))
            .collect();
        self.store
            .db_mut()
            .register_with(&[], &recs, crate::store::now())?;
        report(Event::Cached {
            drv: &self.nodes[i].path,
        });
        self.done(i, paths, false);
        Ok(())
    }

    fn done(&mut self, i: usize, paths: Vec<(String, StorePath)>, built: bool) {
        let p = self.nodes[i].path.clone();
        self.nodes[i].state = State::Done;
        self.out.outputs.insert(p.clone(), paths);
        if built {
            self.out.built.push(p);
        } else {
            self.out.cached.push(p);
        }
        for k in 0..self.nodes[i].dependents.len() {
            let d = self.nodes[i].dependents[k];
            self.nodes[d].waiting -= 1;
            if self.nodes[d].waiting == 0 && self.nodes[d].state == State::Waiting {
                self.ready.push_back(d);
            }
        }
    }

    /// Records a failure; everything that depends on it is skipped.
    fn fail(&mut self, i: usize, e: BuildError, report: &mut dyn FnMut(Event<'_>)) {
        self.nodes[i].state = State::Failed;
        report(Event::Failed {
            drv: &self.nodes[i].path,
            error: &e,
        });
        self.out.failed.push((self.nodes[i].path.clone(), e));
        let mut todo = self.nodes[i].dependents.clone();
        while let Some(d) = todo.pop() {
            if self.nodes[d].state == State::Waiting {
                self.nodes[d].state = State::Skipped;
                self.out.skipped.push(self.nodes[d].path.clone());
                todo.extend(self.nodes[d].dependents.iter().copied());
            }
        }
    }

    /// Why node `i` is built: never built before, or what changed since the
    /// last build of a derivation of the same name.
    fn reason(&mut self, i: usize) -> Result<String, BuildError> {
        if self.previous.is_none() {
            let mut m = HashMap::new();
            for base in self.store.db().realised_derivations()? {
                if let Some(p) = StorePath::from_base_name(&base) {
                    m.insert(p.name().to_string(), p);
                }
            }
            self.previous = Some(m);
        }
        let node = &self.nodes[i];
        let Some(prev) = self
            .previous
            .as_ref()
            .and_then(|m| m.get(node.path.name()))
            .filter(|p| **p != node.path)
            .cloned()
        else {
            return Ok("not in the store (no derivation of this name was built before)".into());
        };
        let old = self.store.read_derivation(&prev)?;
        let mut hashes = BTreeMap::new();
        for input in old.input_drvs.keys().chain(node.drv.input_drvs.keys()) {
            if let Some((h, _)) = self.store.db().derivation_record(&input.base_name())? {
                hashes.insert(input.clone(), h);
            }
        }
        let changes = diff::differences(&old, &node.drv, &hashes);
        Ok(if changes.is_empty() {
            format!(
                "not in the store (last built as {})",
                self.store.dir().path_of(&prev)
            )
        } else {
            format!(
                "changed since {}: {}",
                self.store.dir().path_of(&prev),
                changes.join(", ")
            )
        })
    }
}

/// Registers placed builds a batch at a time (one sync and one transaction
/// for everything placed meanwhile), and keeps the work directory pool
/// filled; on its own thread, so that neither costs the builds' critical
/// path. Returns the first error.
fn registrar(
    mut db: Db,
    dir: &crate::derivation::StoreDir,
    nudged: mpsc::Receiver<()>,
    outbox: &Outbox,
    pool: &WorkPool,
) {
    loop {
        let last = matches!(
            nudged.recv_timeout(HOLD_AT_MOST),
            Err(mpsc::RecvTimeoutError::Disconnected)
        );
        let batch = outbox.take();
        if !batch.is_empty()
            && let Err(e) = crate::store::outputs::register(&mut db, dir, batch)
        {
            // The scheduler stops at its next step; what is placed after
            // this is left unregistered, as after a crash.
            outbox.fail(e);
        }
        pool.tidy();
        if last {
            break;
        }
    }
    pool.close();
}

/// Work directories (`build/tmp/` and `store/` inside) made ahead of time,
/// and used ones to remove: creating and removing directories costs a file
/// system transaction each, so the registrar does it between builds.
struct WorkPool {
    base: std::path::PathBuf,
    state: Mutex<PoolState>,
}

struct PoolState {
    ready: Vec<std::path::PathBuf>,
    trash: Vec<std::path::PathBuf>,
    made: usize,
    /// How many to keep ready.
    keep: usize,
    /// How many builds may still need one.
    left: usize,
}

impl WorkPool {
    fn new(base: std::path::PathBuf, keep: usize, left: usize) -> WorkPool {
        WorkPool {
            base,
            state: Mutex::new(PoolState {
                ready: Vec::new(),
                trash: Vec::new(),
                made: 0,
                keep,
                left,
            }),
        }
    }

    /// A fresh work directory (its parts are made by the job if missing).
    fn take(&self) -> std::path::PathBuf {
        let Ok(mut st) = self.state.lock() else {
            return self.base.join("fallback");
        };
        st.left = st.left.saturating_sub(1);
        if let Some(w) = st.ready.pop() {
            return w;
        }
        st.made += 1;
        self.base.join(st.made.to_string())
    }

    /// Queues a used work directory for removal.
    fn discard(&self, w: std::path::PathBuf) {
        if let Ok(mut st) = self.state.lock() {
            st.trash.push(w);
        }
    }

    /// Empties used directories for reuse (emptying a directory is much
    /// cheaper than removing and making it again) and makes new ones.
    fn tidy(&self) {
        let trash = match self.state.lock() {
            Ok(mut st) => std::mem::take(&mut st.trash),
            Err(_) => return,
        };
        for w in trash {
            let build = w.join("build");
            let emptied = empty(&build, Some("tmp"))
                && empty(&build.join("tmp"), None)
                && empty(&w.join("store"), None)
                && empty(&w, Some("build"));
            match self.state.lock() {
                Ok(mut st) if emptied && st.ready.len() < st.keep.min(st.left) => st.ready.push(w),
                _ => job::discard(&w),
            }
        }
        let (want, first) = match self.state.lock() {
            Ok(mut st) => {
                let want = st.keep.min(st.left).saturating_sub(st.ready.len());
                let first = st.made + 1;
                st.made += want;
                (want, first)
            }
            Err(_) => return,
        };
        for n in first..first + want {
            let w = self.base.join(n.to_string());
            let ok = [w.join("build/tmp"), w.join("store")]
                .iter()
                .all(|d| std::fs::create_dir_all(d).is_ok());
            if ok && let Ok(mut st) = self.state.lock() {
                st.ready.push(w);
            }
        }
    }

    /// Removes everything left.
    fn close(&self) {
        if let Ok(mut st) = self.state.lock() {
            let st = &mut *st;
            for w in st.ready.drain(..).chain(st.trash.drain(..)) {
                job::discard(&w);
            }
        }
        let _ = std::fs::remove_dir(&self.base);
    }
}

/// Removes everything in `dir` but the entry `keep` (and `store`, for the
/// work directory itself); whether `dir` is now so.
fn empty(dir: &std::path::Path, keep: Option<&str>) -> bool {
    // The build could have replaced `build/tmp` by a symlink to anywhere:
    // only a real directory is read (anything else makes the whole work
    // directory go, symlinks unfollowed).
    if !std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        return false;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let mut ok = true;
    for e in entries.flatten() {
        let name = e.file_name();
        if keep.is_some_and(|k| name == k) || (keep == Some("build") && name == "store") {
            continue;
        }
        let p = e.path();
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        let removed = if is_dir {
            job::discard(&p);
            !p.exists()
        } else {
            std::fs::remove_file(&p).is_ok()
        };
        ok &= removed;
    }
    ok
}
