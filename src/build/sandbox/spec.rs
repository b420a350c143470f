//! What a sandboxed build sees: pure data, serialised to the helper process.

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
    /// An empty host directory that becomes the sandbox's root.
    pub root: String,
    /// Paths to bind into the root.
    pub binds: Vec<Bind>,
    /// The host directory that appears as `/build` (the working directory).
    pub build_dir: String,
    /// The program to run (a path inside the sandbox) and its arguments.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// The whole environment of the program.
    pub env: Vec<(String, String)>,
    /// Keep the host's network (fixed-output derivations only).
    pub network: bool,
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
