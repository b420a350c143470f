//! What a sandboxed build sees: pure data, serialised to the sandbox server.

use serde::{Deserialize, Serialize};

/// One path made visible inside the sandbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bind {
    /// The path on the host.
    pub source: String,
    /// Where it appears inside (absolute).
    pub target: String,
    /// Whether the build may write to it.
    pub writable: bool,
}

/// Everything the helper needs to set up one build.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// An empty host directory under which the sandbox server mounts its
    /// roots (it may be shared by every build of a realise).
    pub root: String,
    /// The host toolchain layer, bound read-only (the same for many
    /// builds: the sandbox server prepares it once per realise).
    #[serde(default)]
    pub toolchain: Vec<Bind>,
    /// The store directory (it appears at the same path inside).
    #[serde(default)]
    pub store_dir: String,
    /// Paths to bind into the root for this build alone.
    pub binds: Vec<Bind>,
    /// The host directory that appears as `/build` (the working directory).
    pub build_dir: String,
    /// A host directory that appears as `/tmp` (on disk, under the build's
    /// own directory, so that a build's temporary files are charged to the
    /// disk, not to the host's memory as a tmpfs is); `None`: a tmpfs.
    #[serde(default)]
    pub tmp_dir: Option<String>,
    /// `cgroup.procs` files of the build's control groups (see
    /// [`super::cgroup`]): its first process moves itself in before the
    /// builder runs.
    #[serde(default)]
    pub cgroup_procs: Vec<String>,
    /// The program to run (a path inside the sandbox) and its arguments.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// The whole environment of the program.
    pub env: Vec<(String, String)>,
    /// Symlinks to create inside the root, as (link, target): the declared
    /// tools under `/.cbuild/bin`.
    #[serde(default)]
    pub symlinks: Vec<(String, String)>,
    /// Keep the host's network (fixed-output derivations only).
    pub network: bool,
    /// Enter namespaces (false only for `--sandbox=off`: the program then
    /// runs on the host, in `build_dir`, with the spec's environment, and
    /// `root`, `binds` and `symlinks` are ignored).
    #[serde(default = "yes")]
    pub namespaces: bool,
    /// Conditions a hermetic build must not depend on, changed for `cbuild
    /// check --vary`.
    #[serde(default)]
    pub vary: Variation,
}

/// How a `check --vary` rebuild differs from a plain one. The default is
/// no change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variation {
    /// Where the build directory appears instead of `/build` (under
    /// `/.cbuild`, which the sandbox can bind into).
    pub build_path: Option<String>,
    /// The host name instead of `localhost`.
    pub hostname: Option<String>,
    /// The umask instead of the inherited one.
    pub umask: Option<u32>,
    /// Run on one CPU only (what `nproc` reads).
    pub one_cpu: bool,
    /// A later clock: the host's libfaketime, preloaded with this offset
    /// (e.g. `+5y`). Programs that do not use the C library's clock (static
    /// binaries, Go) are not fooled.
    pub faketime: Option<(String, String)>,
    /// Another uid and gid for the builder than [`BUILD_UID`] and
    /// [`BUILD_GID`] (a user namespace of its own, entered last; the ids
    /// are not in `/etc/passwd`).
    pub ids: Option<(u32, u32)>,
}

/// Where a variation's libfaketime appears inside the sandbox.
pub const FAKETIME_LIB: &str = "/.cbuild/faketime/libfaketime.so.1";

impl Variation {
    /// The build directory as the build sees it.
    pub fn build_dir(&self) -> &str {
        self.build_path.as_deref().unwrap_or("/build")
    }
}

/// The default of [`SandboxSpec::namespaces`].
pub(crate) fn yes() -> bool {
    true
}

/// The host's toolchain layer: bound read-only into builds that declare a
/// host tool.
pub const HOST_TOOLCHAIN: [&str; 6] = [
    "/usr",
    "/bin",
    "/lib",
    "/lib64",
    "/lib32",
    "/etc/alternatives",
];

/// Read-only binds of the parts of [`HOST_TOOLCHAIN`] this host has.
pub fn host_toolchain_binds() -> Vec<Bind> {
    HOST_TOOLCHAIN
        .iter()
        .filter(|d| std::path::Path::new(d).exists())
        .map(|d| Bind {
            source: (*d).into(),
            target: (*d).into(),
            writable: false,
        })
        .collect()
}

/// Whether `path` lies inside the toolchain layer.
pub fn in_host_toolchain(path: &str) -> bool {
    HOST_TOOLCHAIN.iter().any(|d| {
        path.strip_prefix(d)
            .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// The user the build runs as inside the sandbox.
pub const BUILD_UID: u32 = 1000;
/// Its group.
pub const BUILD_GID: u32 = 100;

/// `/etc/passwd` inside the sandbox.
pub fn passwd() -> String {
    format!(
        "root:x:0:0:root:/build:/noshell\ncbuild:x:{BUILD_UID}:{BUILD_GID}:cbuild build user:/build:/noshell\nnobody:x:65534:65534:nobody:/:/noshell\n"
    )
}

/// `/etc/group` inside the sandbox.
pub fn group() -> String {
    format!("root:x:0:\ncbuild:x:{BUILD_GID}:\nnogroup:x:65534:\n")
}

/// `/etc/hosts` inside the sandbox.
pub fn hosts() -> String {
    "127.0.0.1 localhost\n::1 localhost\n".into()
}
