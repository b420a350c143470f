//! Who a build runs as on the host.
//!
//! Inside the sandbox a build is always uid [`BUILD_UID`], gid
//! [`BUILD_GID`]. On the host that is:
//!
//! - the caller's own uid and gid when cbuild runs as an ordinary user: the
//!   build has exactly the caller's power, no more;
//! - a *build user* when cbuild runs as root (uid 0 of the host): the first
//!   subordinate uid and gid that `/etc/subuid` and `/etc/subgid` give
//!   `root`, else [`DEFAULT_BUILD_ID`]. A build mapped to host uid 0 would
//!   be "global root" for every file the host's root owns (procfs'
//!   `/proc/sys/kernel/core_pattern` among them), whatever its
//!   capabilities; a build user owns nothing on the host. This is what
//!   Nix's build users are for.
//!
//! In the second case the directories a build writes are handed to the
//! build user before it runs ([`hand_over`]) and its outputs are given back
//! to the store's owner when they are normalised.

use std::path::Path;

use super::spec::{BUILD_GID, BUILD_UID};

/// The host uid and gid builds run as when cbuild runs as root and
/// `/etc/subuid` or `/etc/subgid` has no range for root: far above any
/// account a distribution allocates, below 2^31 (some tools read ids as
/// signed), and away from Nix's automatic build users (872415232).
pub const DEFAULT_BUILD_ID: u32 = 0x7c00_0000;

/// The host ids of builds, when they differ from the caller's: `Some` only
/// when cbuild runs as the host's root.
pub fn build_user() -> Option<(u32, u32)> {
    if !is_host_root() {
        return None;
    }
    let uid = first_subordinate("/etc/subuid").unwrap_or(DEFAULT_BUILD_ID);
    let gid = first_subordinate("/etc/subgid").unwrap_or(DEFAULT_BUILD_ID);
    Some((uid, gid))
}

/// Whether this process is uid 0 of the host: uid 0 here and uid 0 in the
/// namespace above (a user namespace made by root with `unshare -Ur` maps 0
/// to 0: its processes are still host root for every file root owns).
pub fn is_host_root() -> bool {
    if !nix::unistd::geteuid().is_root() {
        return false;
    }
    let Ok(map) = std::fs::read_to_string("/proc/self/uid_map") else {
        // No procfs: assume the worst.
        return true;
    };
    map.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        matches!(f.as_slice(), ["0", "0", _])
    })
}

/// The first id of root's range in a subordinate-id file (`NAME:START:COUNT`
/// lines, by name or by uid).
fn first_subordinate(file: &str) -> Option<u32> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        let (who, start, count) = (f.next()?, f.next()?, f.next()?);
        let start: u32 = start.parse().ok()?;
        let count: u32 = count.parse().ok()?;
        // Never uid 0 itself, and a range that holds at least one id.
        ((who == "root" || who == "0") && start > 0 && count > 0).then_some(start)
    })
}

/// The `uid_map` and `gid_map` lines of the sandbox server's user namespace
/// when cbuild runs as root: uid 0 stays the host's root (the server
/// prepares roots and binds paths only root may read), the build user is
/// the subordinate one.
pub fn maps(host: (u32, u32)) -> (String, String) {
    (
        format!("0 0 1\n{BUILD_UID} {} 1\n", host.0),
        format!("0 0 1\n{BUILD_GID} {} 1\n", host.1),
    )
}

/// Gives `path` (and, if `recursive`, everything under it, without
/// following symlinks or crossing into other file systems) to the build
/// user `host`, so that a build may write there.
pub fn hand_over(path: &Path, host: (u32, u32), recursive: bool) -> std::io::Result<()> {
    let own = |p: &Path| std::os::unix::fs::lchown(p, Some(host.0), Some(host.1));
    if !recursive {
        return own(path);
    }
    for e in walkdir::WalkDir::new(path)
        .follow_links(false)
        .same_file_system(true)
    {
        own(e.map_err(std::io::Error::other)?.path())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_keep_root_and_map_the_build_user_to_the_subordinate_ids() {
        let (u, g) = maps((200_000, 300_000));
        assert_eq!(u, format!("0 0 1\n{BUILD_UID} 200000 1\n"));
        assert_eq!(g, format!("0 0 1\n{BUILD_GID} 300000 1\n"));
    }

    #[test]
    fn subordinate_ranges_of_root_are_read_by_name_or_uid() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("subuid");
        std::fs::write(&f, "alice:100000:65536\nroot:0:10\n0:500000:65536\n").unwrap();
        // `root:0:…` would make the build user root again: skipped.
        assert_eq!(first_subordinate(f.to_str().unwrap()), Some(500_000));
        std::fs::write(&f, "alice:100000:65536\n").unwrap();
        assert_eq!(first_subordinate(f.to_str().unwrap()), None);
    }
}
