//! Conda subdirs: which exist, and their `arch` and `platform` fields.

/// The subdirs conda knows (conda's and rattler's `Platform` list).
pub const SUBDIRS: [&str; 18] = [
    "noarch",
    "linux-32",
    "linux-64",
    "linux-aarch64",
    "linux-armv6l",
    "linux-armv7l",
    "linux-ppc64",
    "linux-ppc64le",
    "linux-riscv32",
    "linux-riscv64",
    "linux-s390x",
    "osx-64",
    "osx-arm64",
    "win-32",
    "win-64",
    "win-arm64",
    "emscripten-wasm32",
    "wasi-wasm32",
];

/// Whether conda knows `subdir`.
pub fn is_known(subdir: &str) -> bool {
    SUBDIRS.contains(&subdir)
}

/// `(arch, platform)` of index.json for a subdir; both null for `noarch`.
pub fn arch_platform(subdir: &str) -> (Option<&'static str>, Option<&'static str>) {
    let arch = match subdir {
        "noarch" => return (None, None),
        "linux-32" | "win-32" => "x86",
        "linux-64" | "osx-64" | "win-64" => "x86_64",
        "linux-aarch64" => "aarch64",
        "osx-arm64" | "win-arm64" => "arm64",
        "linux-armv6l" => "armv6l",
        "linux-armv7l" => "armv7l",
        "linux-ppc64" => "ppc64",
        "linux-ppc64le" => "ppc64le",
        "linux-riscv32" => "riscv32",
        "linux-riscv64" => "riscv64",
        "linux-s390x" => "s390x",
        "emscripten-wasm32" | "wasi-wasm32" => "wasm32",
        _ => return (None, None),
    };
    let platform = match subdir.split('-').next() {
        Some("linux") => "linux",
        Some("osx") => "osx",
        Some("win") => "win",
        Some("emscripten") => "emscripten",
        Some("wasi") => "wasi",
        _ => return (None, None),
    };
    (Some(arch), Some(platform))
}
