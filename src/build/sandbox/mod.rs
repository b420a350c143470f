//! The build sandbox: what a build sees ([`spec::SandboxSpec`], pure data)
//! and how it is entered on Linux ([`linux`]).
//!
//! A build runs in fresh mount, pid, ipc and uts namespaces, a network
//! namespace no other build is using, and a user namespace shared by the
//! builds of one realise; `pivot_root`ed into a read-only root that holds
//! only what the spec lists: its
//! inputs read-only, its outputs and `/build` writable, a private `/tmp` (on disk, beside
//! `/build`, for builds of a realise), a
//! minimal `/dev` and `/proc`, generated `/etc/passwd`, `/etc/group` and
//! `/etc/hosts`, and, when host tools are declared, the host's `/usr`, `/bin`
//! and `/lib*` read-only. Only loopback networking, unless the spec allows
//! the network (fixed-output derivations).
//!
//! The builder is uid 1000 inside, and on the host either the caller (an
//! ordinary user) or, when cbuild runs as root, a subordinate build user
//! that owns nothing ([`user`]); it runs with no capability, `no_new_privs`
//! set, and `/proc/sys` and the other host-wide parts of procfs read-only.
//!
//! Namespaces are entered by a single-threaded server process (`cbuild
//! __sandbox`) and its children, never by a thread of the caller: `unshare`
//! of a user namespace needs a single-threaded process.

pub mod cgroup;
pub mod linux;
pub mod spec;
pub mod user;

pub use spec::{Bind, SandboxSpec};
