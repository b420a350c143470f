//! The garbage collector: deletes what no root keeps alive.
//!
//! Liveness is the closure over references of every root (link, explicit,
//! export roots younger than `keep_days`, and the temporary roots of running
//! processes), plus, with `keep_derivations`, the derivations that built
//! live outputs and their closures. The candidates are computed without
//! locks; then, holding `locks/gc.lock` exclusively (so that no process is
//! between listing a temporary root and checking validity), the temporary
//! roots are read again and what they keep is dropped from the candidates,
//! which are unregistered in one transaction, referrers first. Files are
//! removed after the commit: a crash leaves unregistered paths, never a
//! registered object without its files, and the next collection removes
//! them (each under its path lock, since an object being placed is also
//! unregistered for a moment).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::roots::{Root, RootKind, open_gc_lock, temporary_roots};
use super::{Store, StoreError, make_writable_recursive};
use crate::derivation::{ObjectKind, StorePath};

/// How to collect.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Only say what would be deleted.
    pub dry_run: bool,
    /// Stop once this many bytes of objects are freed.
    pub max_freed: Option<u64>,
    /// Export roots are kept this many days (0: not at all).
    pub keep_days: u64,
    /// Keep the derivations (and logs) of live outputs.
    pub keep_derivations: bool,
}

/// One root and what it keeps.
#[derive(Clone, Debug)]
pub struct KeptRoot {
    /// The root.
    pub root: Root,
    /// Bytes of its closure.
    pub closure_bytes: u64,
    /// Objects in its closure.
    pub closure_objects: usize,
}

/// What a collection did (or, dry, would do).
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The roots, each with its closure.
    pub roots: Vec<KeptRoot>,
    /// Stale root files removed (or that would be).
    pub stale_roots: Vec<PathBuf>,
    /// Objects deleted (base names).
    pub deleted: Vec<String>,
    /// Their bytes.
    pub freed: u64,
    /// Unregistered paths in `store/` removed (a crash's leftovers).
    pub leftovers: Vec<String>,
    /// Unregistered paths left alone because there were more of them than
    /// registered objects (a database that lost rows, not a crash).
    pub leftovers_refused: usize,
    /// Unregistered paths that could not be removed (not the caller's to
    /// delete, say), with why.
    pub leftovers_stuck: Vec<(String, String)>,
    /// Logs, cached packages and file-cache rows pruned.
    pub pruned_logs: usize,
    /// Cached packages removed.
    pub pruned_packages: usize,
    /// File-cache rows removed.
    pub pruned_file_cache: usize,
    /// Objects still live.
    pub live: usize,
}

/// The closure of `start` (object ids) over `edges`.
fn closure(start: impl IntoIterator<Item = i64>, edges: &HashMap<i64, Vec<i64>>) -> HashSet<i64> {
    let mut seen = HashSet::new();
    let mut todo: Vec<i64> = start.into_iter().collect();
    while let Some(id) = todo.pop() {
        if seen.insert(id)
            && let Some(next) = edges.get(&id)
        {
            todo.extend(next.iter().copied());
        }
    }
    seen
}

/// Collects garbage in `store`.
pub fn collect(store: &mut Store, opts: &Options) -> Result<Report, StoreError> {
    let mut report = Report::default();
    // A damaged database could make live objects look dead.
    if let Some(first) = store.db().integrity()?.into_iter().next() {
        return Err(StoreError::Unsound {
            path: store.root().join("db.sqlite"),
            first,
        });
    }
    let (roots, stale) = store.roots(false)?;
    if !opts.dry_run {
        for s in &stale {
            let _ = std::fs::remove_file(s);
        }
    }
    report.stale_roots = stale;
    let now = super::now();
    let keep_secs = (opts.keep_days as i64).saturating_mul(86_400);
    let roots: Vec<Root> = roots
        .into_iter()
        .filter(|r| r.kind != RootKind::Export || r.time.is_some_and(|t| now - t < keep_secs))
        .collect();

    let graph = store.db().graph()?;
    let by_path: HashMap<&str, i64> = graph
        .objects
        .iter()
        .map(|o| (o.path.as_str(), o.id))
        .collect();
    let info: HashMap<i64, &super::ObjectInfo> = graph.objects.iter().map(|o| (o.id, o)).collect();
    let mut edges: HashMap<i64, Vec<i64>> = HashMap::new();
    for &(a, b) in &graph.refs {
        if a != b {
            edges.entry(a).or_default().push(b);
        }
    }
    // With `keep_derivations`, an output keeps the derivation that built it.
    let mut live_edges = edges.clone();
    if opts.keep_derivations {
        for o in &graph.objects {
            if let Some(d) = o.deriver.as_deref().and_then(|d| by_path.get(d)) {
                live_edges.entry(o.id).or_default().push(*d);
            }
        }
    }
    let size_of = |ids: &HashSet<i64>| ids.iter().filter_map(|i| info.get(i)).map(|o| o.size).sum();
    let mut root_ids = Vec::new();
    for r in roots {
        let Some(&id) = by_path.get(r.target.as_str()) else {
            continue;
        };
        root_ids.push(id);
        let c = closure([id], &live_edges);
        report.roots.push(KeptRoot {
            closure_bytes: size_of(&c),
            closure_objects: c.len(),
            root: r,
        });
    }
    let live = closure(root_ids.iter().copied(), &live_edges);
    let mut dead: Vec<i64> = graph
        .objects
        .iter()
        .map(|o| o.id)
        .filter(|id| !live.contains(id))
        .collect();

    // Under the collector's lock: no process is between listing a
    // temporary root and checking its validity.
    let lock_path = store.root().join("locks").join("gc.lock");
    let lock = open_gc_lock(&lock_path)?;
    lock.lock().map_err(|source| StoreError::Create {
        path: lock_path.clone(),
        source,
    })?;
    let temp: Vec<i64> = temporary_roots(&store.root().join("tmp"))?
        .into_iter()
        .flat_map(|(_, names)| names)
        .filter_map(|n| by_path.get(n.as_str()).copied())
        .collect();
    let protected = closure(temp, &live_edges);
    dead.retain(|id| !protected.contains(id));
    report.live = graph.objects.len() - dead.len();
    // Referrers before what they refer to: a depth-first post-order over
    // the dead subgraph, reversed.
    let order = referrers_first(&dead, &edges);
    if opts.dry_run {
        drop(lock);
        for id in &order {
            if let Some(o) = info.get(id) {
                report.freed += o.size;
                report.deleted.push(o.path.clone());
            }
        }
        return Ok(report);
    }
    // `--max-freed`: the first objects (referrers first) up to the budget;
    // what they refer to beyond it stays, as anything a survivor refers to.
    let chosen: Vec<i64> = match opts.max_freed {
        None => order,
        Some(max) => {
            let mut sum = 0u64;
            order
                .into_iter()
                .take_while(|id| {
                    let before = sum;
                    sum += info.get(id).map_or(0, |o| o.size);
                    before < max
                })
                .collect()
        }
    };
    let gone = store.db_mut().unregister(&chosen);
    drop(lock);
    let gone = gone?;
    // Unregistered: now the files go, each moved into this process's
    // scratch space first, so that nothing half-deleted is ever at a store
    // path.
    let trash = store.scratch_path("gc");
    let _ = std::fs::create_dir_all(&trash);
    let gone: Vec<&super::ObjectInfo> =
        gone.iter().filter_map(|id| info.get(id).copied()).collect();
    // In parallel: much of an unlink's cost (freeing the inode and its
    // blocks) is spent outside the directory's lock.
    {
        use rayon::prelude::*;
        let dir = Path::new(store.dir().as_str());
        gone.par_iter().with_min_len(64).for_each(|o| {
            // What cannot go now is an unregistered leftover, which the
            // next collection names.
            let _ = remove_object(&dir.join(&o.path), &trash.join(&o.path));
        });
    }
    for o in gone {
        report.freed += o.size;
        report.deleted.push(o.path.clone());
        if o.kind == ObjectKind::Drv {
            let log = store
                .root()
                .join("logs")
                .join(format!("{}.log.zst", o.path));
            if std::fs::remove_file(log).is_ok() {
                report.pruned_logs += 1;
            }
        }
    }
    (
        report.leftovers,
        report.leftovers_refused,
        report.leftovers_stuck,
    ) = remove_leftovers(store, &trash)?;
    make_writable_recursive(&trash);
    let _ = std::fs::remove_dir_all(&trash);
    prune(store, &mut report)?;
    Ok(report)
}

/// `dead` ordered so that an object comes before everything it refers to.
fn referrers_first(dead: &[i64], edges: &HashMap<i64, Vec<i64>>) -> Vec<i64> {
    let set: HashSet<i64> = dead.iter().copied().collect();
    let mut done = HashSet::new();
    let mut post = Vec::with_capacity(dead.len());
    for &start in dead {
        if done.contains(&start) {
            continue;
        }
        // Iterative post-order: (node, children pushed?).
        let mut stack = vec![(start, false)];
        while let Some((id, expanded)) = stack.pop() {
            if expanded {
                post.push(id);
                continue;
            }
            if !done.insert(id) {
                continue;
            }
            stack.push((id, true));
            for &n in edges.get(&id).into_iter().flatten() {
                if set.contains(&n) && !done.contains(&n) {
                    stack.push((n, false));
                }
            }
        }
    }
    post.reverse();
    post
}

/// Deletes the object at `path`: a file or symlink by one unlink (atomic);
/// a directory is first moved to `trash` (so that nothing half-deleted is
/// ever at a store path) and deleted there.
///
/// Returns why the path is still there, if it is.
fn remove_object(path: &Path, trash: &Path) -> Option<String> {
    // Unlinking needs write permission on `store/`, not on the file; most
    // objects are files, so that is tried first.
    match std::fs::remove_file(path) {
        Ok(()) => return None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(_) => {}
    }
    // Moving a directory rewrites its `..`, which needs write permission on
    // it (only root does without): it is going anyway.
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755));
    }
    if std::fs::rename(path, trash).is_ok() {
        make_writable_recursive(trash);
        let _ = std::fs::remove_dir_all(trash);
        return None;
    }
    make_writable_recursive(path);
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Some(e.to_string()),
        _ => None,
    }
}

/// Removes entries of `store/` that are not registered and whose path lock
/// is free (not being placed right now); returns their names, or, when
/// there are more of them than registered objects (a crash leaves a few; a
/// database that lost rows leaves everything), removes none and returns
/// how many there are.
#[allow(clippy::type_complexity)]
fn remove_leftovers(
    store: &Store,
    trash: &Path,
) -> Result<(Vec<String>, usize, Vec<(String, String)>), StoreError> {
    let dir = PathBuf::from(store.dir().as_str());
    let entries = std::fs::read_dir(&dir).map_err(|source| StoreError::Read {
        path: dir.clone(),
        source,
    })?;
    let mut found = Vec::new();
    let mut registered = 0usize;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(p) = StorePath::from_base_name(&name) else {
            continue;
        };
        if store.db().is_valid(&name)? {
            registered += 1;
        } else {
            found.push((name, p, e.path()));
        }
    }
    if found.len() > registered.max(64) {
        return Ok((Vec::new(), found.len(), Vec::new()));
    }
    let (mut out, mut stuck) = (Vec::new(), Vec::new());
    for (name, p, path) in found {
        // An unmaterialised `.drv` file is written from the database, never
        // placed: one on disk but not registered is a leftover too.
        let Some(_lock) = super::try_lock_path(store.root(), &p)? else {
            continue;
        };
        if store.db().is_valid(&name)? {
            continue;
        }
        match remove_object(&path, &trash.join(format!("leftover-{name}"))) {
            None => out.push(name),
            Some(why) => stuck.push((name, why)),
        }
    }
    Ok((out, 0, stuck))
}

/// Prunes logs of derivations no longer registered, cached packages of
/// outputs no longer registered, and file-cache rows of files gone.
fn prune(store: &mut Store, report: &mut Report) -> Result<(), StoreError> {
    let logs = store.root().join("logs");
    if let Ok(entries) = std::fs::read_dir(&logs) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(base) = name.strip_suffix(".log.zst") else {
                continue;
            };
            if !store.db().is_valid(base)? && std::fs::remove_file(e.path()).is_ok() {
                report.pruned_logs += 1;
            }
        }
    }
    let packages = store.root().join("packages");
    if let Ok(entries) = std::fs::read_dir(&packages) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // `<output hash part>-<package file name>`.
            let Some((hash, _)) = name.split_once('-') else {
                continue;
            };
            let alive = store.db().object_by_hash_part(hash)?;
            if !alive && std::fs::remove_file(e.path()).is_ok() {
                report.pruned_packages += 1;
            }
        }
    }
    report.pruned_file_cache = store
        .db_mut()
        .prune_file_cache(|p| std::fs::symlink_metadata(p).is_err())?;
    Ok(())
}
