//! ELF files in a package: their machine, the glibc symbol versions and
//! shared libraries they need, and RPATH/RUNPATH entries rewritten from the placeholder prefix to
//! `$ORIGIN`-relative ones, in place (the new string is never longer: the
//! prefix is 255 characters, `$ORIGIN` 7).

use goblin::elf::Elf;
use goblin::elf::dynamic::{DT_RPATH, DT_RUNPATH};
use goblin::elf::header;

/// What the exporter needs to know of one ELF file.
#[derive(Debug, Default)]
pub struct ElfInfo {
    /// `e_machine`.
    pub machine: u16,
    /// The highest `GLIBC_X.Y[.Z]` version it needs.
    pub glibc: Option<Vec<u32>>,
    /// RPATH/RUNPATH strings.
    pub search_paths: Vec<SearchPath>,
    /// `DT_NEEDED`: the shared libraries it loads, by soname.
    pub needed: Vec<String>,
}

/// Whether `bytes` start like an ELF file.
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x7fELF")
}

/// Reads what the exporter needs; `None` for a file goblin cannot parse
/// (a truncated or odd ELF file is packaged as data).
pub fn inspect(bytes: &[u8]) -> Option<ElfInfo> {
    let elf = Elf::parse(bytes).ok()?;
    let mut info = ElfInfo {
        machine: elf.header.e_machine,
        needed: elf.libraries.iter().map(|l| l.to_string()).collect(),
        ..ElfInfo::default()
    };
    if let Some(vn) = &elf.verneed {
        for need in vn.iter() {
            for aux in need.iter() {
                let Some(name) = elf.dynstrtab.get_at(aux.vna_name) else {
                    continue;
                };
                if let Some(v) = name.strip_prefix("GLIBC_").and_then(parse_version) {
                    info.glibc = info.glibc.take().max(Some(v));
                }
            }
        }
    }
    if let Some(dynamic) = &elf.dynamic {
        // goblin gives the string table's file offset (not its address).
        let base = dynamic.info.strtab;
        // Offsets into .dynstr that something else names: a linker may
        // store a string as the tail of a longer one, which an in-place
        // rewrite of the longer one must not clobber.
        let mut others: Vec<usize> = dynamic
            .dyns
            .iter()
            .filter(|d| d.d_tag != DT_RPATH && d.d_tag != DT_RUNPATH)
            .filter(|d| {
                use goblin::elf::dynamic::{DT_NEEDED, DT_SONAME};
                // DT_AUXILIARY and DT_FILTER (not named by goblin).
                [DT_NEEDED, DT_SONAME, 0x7fff_fffd, 0x7fff_ffff].contains(&d.d_tag)
            })
            .map(|d| d.d_val as usize)
            .collect();
        others.extend(elf.dynsyms.iter().map(|s| s.st_name));
        if let Some(vn) = &elf.verneed {
            for need in vn.iter() {
                others.push(need.vn_file);
                others.extend(need.iter().map(|a| a.vna_name));
            }
        }
        for d in &dynamic.dyns {
            if d.d_tag != DT_RPATH && d.d_tag != DT_RUNPATH {
                continue;
            }
            let rel = d.d_val as usize;
            let Some(text) = elf.dynstrtab.get_at(rel) else {
                continue;
            };
            let off = base + rel;
            let len = text.len();
            // The bytes there must be the string goblin read.
            if bytes.get(off..off + len) != Some(text.as_bytes()) {
                continue;
            }
            let shared = others.iter().any(|&o| o > rel && o < rel + len)
                || dynamic
                    .dyns
                    .iter()
                    .filter(|o| o.d_tag == DT_RPATH || o.d_tag == DT_RUNPATH)
                    .any(|o| (o.d_val as usize) > rel && (o.d_val as usize) < rel + len);
            info.search_paths.push(SearchPath {
                offset: off,
                len,
                text: text.to_string(),
                shared,
            });
        }
    }
    Some(info)
}

/// An RPATH or RUNPATH string.
#[derive(Debug)]
pub struct SearchPath {
    /// File offset of its first byte.
    pub offset: usize,
    /// Its length, without the NUL.
    pub len: usize,
    /// The entries, `:`-separated.
    pub text: String,
    /// Whether another string of the table is stored inside it (so it
    /// cannot be rewritten in place).
    pub shared: bool,
}

/// `2.2.5` as `[2, 2, 5]`; compared as numbers, part by part.
fn parse_version(v: &str) -> Option<Vec<u32>> {
    v.split('.').map(|p| p.parse().ok()).collect()
}

/// The conda subdirs an ELF machine runs in.
pub fn machine_subdirs(machine: u16) -> &'static [&'static str] {
    match machine {
        header::EM_X86_64 => &["linux-64"],
        header::EM_AARCH64 => &["linux-aarch64"],
        header::EM_PPC64 => &["linux-ppc64le", "linux-ppc64"],
        header::EM_S390 => &["linux-s390x"],
        header::EM_386 => &["linux-32"],
        header::EM_ARM => &["linux-armv7l", "linux-armv6l"],
        header::EM_RISCV => &["linux-riscv64", "linux-riscv32"],
        _ => &[],
    }
}

/// A machine's name for messages.
pub fn machine_name(machine: u16) -> String {
    header::machine_to_str(machine).to_string()
}

/// Why a search path cannot be made relative.
#[derive(Debug)]
pub enum RelocateError {
    /// An entry outside the prefix.
    OutsidePrefix {
        /// The entry.
        entry: String,
    },
    /// The string shares its bytes with another one of the string table.
    Shared {
        /// The search path.
        text: String,
    },
}

/// Rewrites the RPATH/RUNPATH strings of the ELF file `bytes` at `rel`
/// (its path inside the prefix) so that entries inside `prefix` become
/// `$ORIGIN/...`. Entries already relative to `$ORIGIN` stay; any other
/// entry is an error. Returns whether anything changed.
pub fn relocate(
    bytes: &mut [u8],
    info: &ElfInfo,
    rel: &str,
    prefix: &str,
) -> Result<bool, RelocateError> {
    let mut changed = false;
    let dir_depth = rel.matches('/').count();
    for sp in &info.search_paths {
        let (off, len, text) = (&sp.offset, &sp.len, &sp.text);
        let mut entries = Vec::new();
        for e in text.split(':').filter(|e| !e.is_empty()) {
            if e.starts_with("$ORIGIN") || e.starts_with("${ORIGIN}") {
                entries.push(e.to_string());
            } else if let Some(inside) = e.strip_prefix(prefix) {
                if !(inside.is_empty() || inside.starts_with('/')) {
                    return Err(RelocateError::OutsidePrefix {
                        entry: e.to_string(),
                    });
                }
                let up = "/..".repeat(dir_depth);
                let target = inside.trim_end_matches('/');
                entries.push(format!("$ORIGIN{up}{target}"));
            } else {
                return Err(RelocateError::OutsidePrefix {
                    entry: e.to_string(),
                });
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        entries.retain(|e| seen.insert(e.clone()));
        let new = entries.join(":");
        if new != *text && sp.shared {
            return Err(RelocateError::Shared { text: text.clone() });
        }
        if new != *text && new.len() <= *len {
            let slot = &mut bytes[*off..*off + *len];
            slot.fill(0);
            slot[..new.len()].copy_from_slice(new.as_bytes());
            changed = true;
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    /// A real executable of this machine (small, with a dynamic section).
    fn sample() -> Vec<u8> {
        ["/bin/true", "/usr/bin/true"]
            .iter()
            .find_map(|p| std::fs::read(p).ok())
            .expect("a /bin/true to mutate")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(512)))]
        /// Whatever a build leaves in an ELF file, reading and relocating
        /// it never panics (a corrupt file is packaged as data or refused).
        #[test]
        fn damaged_elf_files_never_panic(
            flips in proptest::collection::vec((0usize..1_000_000, any::<u8>()), 1..24),
            cut in proptest::option::of(0usize..16384),
        ) {
            let mut bytes = sample();
            for (at, b) in flips {
                let n = bytes.len();
                bytes[at % n] = b;
            }
            if let Some(c) = cut {
                bytes.truncate(c.min(bytes.len()));
            }
            if let Some(info) = inspect(&bytes) {
                let _ = relocate(&mut bytes, &info, "bin/x", "/p");
            }
        }
    }

    #[test]
    fn a_real_executable_reads() {
        let info = inspect(&sample()).expect("parses");
        assert!(!machine_subdirs(info.machine).is_empty());
        assert!(info.glibc.is_some_and(|v| v >= vec![2, 2]));
    }

    #[test]
    fn glibc_versions_parse() {
        assert_eq!(parse_version("2.34"), Some(vec![2, 34]));
        assert_eq!(parse_version("2.2.5"), Some(vec![2, 2, 5]));
        assert_eq!(parse_version("PRIVATE"), None);
        assert!(vec![2, 34] > vec![2, 4]);
        assert!(vec![2, 3] > vec![2, 2, 5]);
    }
}
