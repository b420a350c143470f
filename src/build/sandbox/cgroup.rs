//! A control group per build, where the machine lets cbuild make one: the
//! number of processes a build may have and the memory it may use are
//! bounded there (`--max-build-pids`, `--max-build-memory`), so that a fork
//! bomb or a runaway link step stops at its own limits instead of the
//! host's.
//!
//! cbuild makes the groups under the group it runs in, wherever it may
//! write there: as root always, as an ordinary user where the group was
//! delegated to it (owned by the user, as systemd's `Delegate=yes` and
//! container runtimes hand them out). In cgroup v2 the `pids` and `memory`
//! controllers must be available; since a v2 group that holds processes
//! cannot enable controllers for its children, cbuild, when it is alone in
//! its group, first moves itself into a leaf of its own
//! (`cbuild-<pid>-supervisor`), as Nix's daemon does. Otherwise the v1
//! `pids` and `memory` hierarchies are used. The build's first process
//! moves itself in before it runs the builder (writing `0`, itself, to each
//! group's `cgroup.procs`), so everything the build starts is inside.
//! Where no group can be made, the user's own limits hold. What was made is
//! removed when the build is over.

use std::path::{Path, PathBuf};

/// Processes (and threads) a build may have at once, by default.
pub const DEFAULT_PIDS: u64 = 8192;

/// Limits of one build's group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most processes and threads at once.
    pub pids: u64,
    /// Most memory in bytes (`None`: the host's).
    pub memory: Option<u64>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            pids: DEFAULT_PIDS,
            memory: None,
        }
    }
}

/// Where this process may make groups for its builds: found once per
/// realise ([`Parents::find`]); each build's group is then one directory
/// and a limit or two ([`Parents::create`]).
#[derive(Debug)]
pub struct Parents {
    /// cgroup v2: this process's group, with `pids` and `memory` enabled
    /// for its children.
    v2: Option<PathBuf>,
    /// cgroup v1: this process's group in the `pids` and `memory`
    /// hierarchies that are mounted.
    v1: Vec<(&'static str, PathBuf)>,
    next: std::sync::atomic::AtomicU64,
}

impl Parents {
    /// Where groups can be made; `None` where this machine or user cannot
    /// (an ordinary user without a delegated group: said in `cbuild
    /// --help`, not an error). Groups of cbuild processes that are gone
    /// (killed before they removed theirs) are removed on the way.
    pub fn find() -> Option<Parents> {
        let mine = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
        let mut found = Parents {
            v2: None,
            v1: Vec::new(),
            next: std::sync::atomic::AtomicU64::new(0),
        };
        if let Some(unified) = mount_of(&mounts, "cgroup2", None)
            && let Some(path) = group_of(&mine, "")
        {
            let parent = unified.join(path.trim_start_matches('/'));
            if enables_limits(&parent) || adopt_v2(&parent) {
                found.v2 = Some(parent);
            }
        }
        if found.v2.is_none() {
            for controller in ["pids", "memory"] {
                if let (Some(root), Some(path)) = (
                    mount_of(&mounts, "cgroup", Some(controller)),
                    group_of(&mine, controller),
                ) {
                    let parent = root.join(path.trim_start_matches('/'));
                    if may_write(&parent) {
                        found.v1.push((controller, parent));
                    }
                }
            }
        }
        let parents: Vec<&PathBuf> = found
            .v2
            .iter()
            .chain(found.v1.iter().map(|(_, p)| p))
            .collect();
        if parents.is_empty() {
            return None;
        }
        for p in parents {
            remove_stale(p);
        }
        Some(found)
    }

    /// Makes the groups of one build (`cbuild-<pid>-<n>`) with `limits`;
    /// `None` when the kernel refuses.
    pub fn create(&self, limits: Limits) -> Option<Cgroup> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("cbuild-{}-{n}", std::process::id());
        let mut made = Cgroup { dirs: Vec::new() };
        if let Some(parent) = &self.v2 {
            let dir = parent.join(&name);
            std::fs::create_dir(&dir).ok()?;
            made.dirs.push(dir.clone());
            write(&dir, "pids.max", &limits.pids.to_string())?;
            if let Some(m) = limits.memory {
                write(&dir, "memory.max", &m.to_string())?;
                write(&dir, "memory.swap.max", "0");
            }
            return Some(made);
        }
        for (controller, parent) in &self.v1 {
            let dir = parent.join(&name);
            if std::fs::create_dir(&dir).is_err() {
                continue;
            }
            made.dirs.push(dir.clone());
            let (file, value) = if *controller == "pids" {
                ("pids.max", Some(limits.pids))
            } else {
                ("memory.limit_in_bytes", limits.memory)
            };
            if let Some(v) = value {
                write(&dir, file, &v.to_string())?;
            }
        }
        (!made.dirs.is_empty()).then_some(made)
    }
}

/// The groups made for one build, removed when dropped.
#[derive(Debug)]
pub struct Cgroup {
    dirs: Vec<PathBuf>,
}

impl Cgroup {
    /// The `cgroup.procs` files the build's first process writes itself to.
    pub fn procs(&self) -> Vec<String> {
        self.dirs
            .iter()
            .map(|d| d.join("cgroup.procs").to_string_lossy().into_owned())
            .collect()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // The build's processes are gone with its pid namespace, some a
        // moment after its first one: a group is removed once it is empty.
        for dir in &self.dirs {
            for _ in 0..200 {
                match std::fs::remove_dir(dir) {
                    Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                    _ => break,
                }
            }
        }
    }
}

/// Whether this process may make groups in `dir` and move itself into
/// them: the directory and its `cgroup.procs` are writable to it (root's,
/// or delegated to the user).
fn may_write(dir: &Path) -> bool {
    use nix::unistd::{AccessFlags, access};
    access(dir, AccessFlags::W_OK | AccessFlags::X_OK).is_ok()
        && access(&dir.join("cgroup.procs"), AccessFlags::W_OK).is_ok()
}

/// Whether the v2 group `dir` already enables `pids` and `memory` for its
/// children and this process may make them there.
fn enables_limits(dir: &Path) -> bool {
    has_limits(&std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default())
        && may_write(dir)
}

/// Whether a v2 controller list names both `pids` and `memory`.
fn has_limits(list: &str) -> bool {
    let has = |c: &str| list.split_whitespace().any(|e| e == c);
    has("pids") && has("memory")
}

/// Makes the v2 group `dir`, which this process may write and is alone in,
/// able to hold build groups: the process moves into a leaf of its own
/// (`cbuild-<pid>-supervisor`), then `pids` and `memory` are enabled for
/// `dir`'s children. Anything else in the group (another process, a
/// controller not offered) leaves it untouched, and a step refused by the
/// kernel is undone.
fn adopt_v2(dir: &Path) -> bool {
    let me = std::process::id();
    let offered = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let members = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    let alone = members.split_whitespace().eq([me.to_string().as_str()]);
    if !has_limits(&offered) || !alone || !may_write(dir) {
        return false;
    }
    let leaf = dir.join(format!("cbuild-{me}-supervisor"));
    if std::fs::create_dir(&leaf).is_err() {
        return false;
    }
    let moved = std::fs::write(leaf.join("cgroup.procs"), me.to_string()).is_ok();
    if moved && std::fs::write(dir.join("cgroup.subtree_control"), "+pids +memory").is_ok() {
        return true;
    }
    if moved {
        let _ = std::fs::write(dir.join("cgroup.procs"), me.to_string());
    }
    let _ = std::fs::remove_dir(&leaf);
    false
}

/// Removes the groups in `parent` that a cbuild process made and left
/// (`cbuild-<pid>-<n>` and `cbuild-<pid>-supervisor` whose process is
/// gone): empty by then, as their builds' pid namespaces died with that
/// process. Nothing else is touched.
fn remove_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("cbuild-"))
            .and_then(|rest| rest.split_once('-'))
            .filter(|(_, n)| *n == "supervisor" || n.parse::<u64>().is_ok())
            .and_then(|(pid, _)| pid.parse::<i32>().ok())
        else {
            continue;
        };
        if crate::util::process::gone(pid) {
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

/// Writes `value` to `dir/file`; `None` (and the group is given up) when
/// the kernel refuses.
fn write(dir: &Path, file: &str, value: &str) -> Option<()> {
    std::fs::write(dir.join(file), value).ok()
}

/// Where a cgroup file system of `fstype` is mounted (v1: the one holding
/// `controller` among its options).
fn mount_of(mounts: &str, fstype: &str, controller: Option<&str>) -> Option<PathBuf> {
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (point, kind, options) = (f.get(1)?, f.get(2)?, f.get(3)?);
        if *kind != fstype {
            return None;
        }
        if let Some(c) = controller
            && !options.split(',').any(|o| o == c)
        {
            return None;
        }
        Some(PathBuf::from(point))
    })
}

/// This process's group in the hierarchy of `controller` (`""`: v2's).
fn group_of(cgroup: &str, controller: &str) -> Option<String> {
    cgroup.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        let matches = if controller.is_empty() {
            controllers.is_empty()
        } else {
            controllers.split(',').any(|c| c == controller)
        };
        matches.then(|| path.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_mounts_are_found_in_v1_and_v2_listings() {
        let cg = "9:name=systemd:/\n8:pids:/a\n4:memory:/process_api/x\n0::/user.slice\n";
        assert_eq!(group_of(cg, "pids").as_deref(), Some("/a"));
        assert_eq!(group_of(cg, "memory").as_deref(), Some("/process_api/x"));
        assert_eq!(group_of(cg, "").as_deref(), Some("/user.slice"));
        let mounts = "cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(
            mount_of(mounts, "cgroup", Some("pids")),
            Some(PathBuf::from("/sys/fs/cgroup/pids"))
        );
        assert_eq!(mount_of(mounts, "cgroup", Some("memory")), None);
        assert_eq!(
            mount_of(mounts, "cgroup2", None),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }
}
