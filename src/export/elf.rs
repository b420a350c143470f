//! ELF files in a package: their machine, the glibc symbol versions they
//! need, and RPATH/RUNPATH entries rewritten from the placeholder prefix to
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
    /// The highest `GLIBC_X.Y` version it needs, as (X, Y).
    pub glibc: Option<(u32, u32)>,
    /// RPATH/RUNPATH strings: (file offset, length, entries).
    pub search_paths: Vec<(usize, usize, String)>,
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
        ..ElfInfo::default()
    };
    if let Some(vn) = &elf.verneed {
        for need in vn.iter() {
            for aux in need.iter() {
                let Some(name) = elf.dynstrtab.get_at(aux.vna_name) else {
                    continue;
                };
                if let Some(v) = name.strip_prefix("GLIBC_").and_then(parse_version) {
                    info.glibc = info.glibc.max(Some(v));
                }
            }
        }
    }
    if let Some(dynamic) = &elf.dynamic {
        let strtab = file_offset(&elf, dynamic.info.strtab as u64);
        for d in &dynamic.dyns {
            if d.d_tag != DT_RPATH && d.d_tag != DT_RUNPATH {
                continue;
            }
            let Some(base) = strtab else { continue };
            let off = base + d.d_val as usize;
            let Some(rest) = bytes.get(off..) else {
                continue;
            };
            let len = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            info.search_paths
                .push((off, len, String::from_utf8_lossy(&rest[..len]).into_owned()));
        }
    }
    Some(info)
}

fn parse_version(v: &str) -> Option<(u32, u32)> {
    let mut it = v.split('.');
    let major = it.next()?.parse().ok()?;
    let minor = it.next().map_or(Some(0), |m| m.parse().ok())?;
    Some((major, minor))
}

/// The file offset of virtual address `vaddr`, through the loadable
/// segments.
fn file_offset(elf: &Elf<'_>, vaddr: u64) -> Option<usize> {
    elf.program_headers
        .iter()
        .filter(|p| p.p_type == goblin::elf::program_header::PT_LOAD)
        .find(|p| vaddr >= p.p_vaddr && vaddr < p.p_vaddr + p.p_filesz)
        .map(|p| (vaddr - p.p_vaddr + p.p_offset) as usize)
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
pub struct OutsidePrefix {
    /// The entry.
    pub entry: String,
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
) -> Result<bool, OutsidePrefix> {
    let mut changed = false;
    let dir_depth = rel.matches('/').count();
    for (off, len, text) in &info.search_paths {
        let mut entries = Vec::new();
        for e in text.split(':').filter(|e| !e.is_empty()) {
            if e.starts_with("$ORIGIN") || e.starts_with("${ORIGIN}") {
                entries.push(e.to_string());
            } else if let Some(inside) = e.strip_prefix(prefix) {
                if !(inside.is_empty() || inside.starts_with('/')) {
                    return Err(OutsidePrefix {
                        entry: e.to_string(),
                    });
                }
                let up = "/..".repeat(dir_depth);
                let target = inside.trim_end_matches('/');
                entries.push(format!("$ORIGIN{up}{target}"));
            } else {
                return Err(OutsidePrefix {
                    entry: e.to_string(),
                });
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        entries.retain(|e| seen.insert(e.clone()));
        let new = entries.join(":");
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

    #[test]
    fn glibc_versions_parse() {
        assert_eq!(parse_version("2.34"), Some((2, 34)));
        assert_eq!(parse_version("2.2.5"), Some((2, 2)));
        assert_eq!(parse_version("PRIVATE"), None);
        assert!((2, 34) > (2, 4));
    }
}
