//! Whether a process that named a file after itself is still there.

/// Whether no process has the id `pid` any more (`kill(pid, 0)` says
/// `ESRCH`). A pid in use again by another process counts as there: what
/// is named after it waits until that one ends too, never the other way.
pub fn gone(pid: i32) -> bool {
    pid > 0
        && matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        )
}
