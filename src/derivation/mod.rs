//! The derivation model: pure data, no IO.
//!
//! A [`Derivation`] is everything that determines a build. Its canonical
//! serialisation ([`canonical`]) is the `.drv` file and the input of its
//! hash ([`DrvHash`]); its `.drv` store path follows from that hash and its
//! name ([`store_path`]). Outputs are content-addressed, so a derivation
//! names its own and its inputs' outputs by [`placeholder`]s.
//!
//! What feeds which hash (the `cargo fingerprint` table for cbuild):
//!
//! | input | drv hash | resolved hash (issue 3) | output path | only `meta` |
//! | --- | --- | --- | --- | --- |
//! | `name`, `version`, `system` | yes | yes | name only (via the content) | |
//! | `script` / `builder`, `args` | yes | yes | via the content | |
//! | `env` values | yes | yes | via the content | |
//! | `outputs` (names and order) | yes | yes | one object each | |
//! | input derivations and the outputs used | yes (their `.drv` paths) | replaced by the inputs' output paths | via the content | |
//! | input sources (imported paths) | yes (their store paths) | yes | via the content | |
//! | host tools (name, path, resolved path, BLAKE3) | yes | yes | via the content | |
//! | `build_inputs` order (PATH) and `host_inputs` | yes | yes | via the content | |
//! | fixed-output hash, url, unpack | yes | yes | the declared hash | |
//! | `run_inputs` | no | no | no | yes (export) |
//! | `meta`, `about`, license, summary, ... | no | no | no | yes |
//! | the store directory | yes (inside every store path) | yes | yes | |
//! | mtimes, owners, absolute source location, comments, key order | never | never | never | never |
//!
//! The output path of a content-addressed output is the tree digest of what
//! the build produced (modulo self-references), so two derivations that build
//! the same bytes share one object; that is issue 3's business.

pub mod base32;
pub mod canonical;
pub mod diff;
pub mod hash;
pub mod placeholder;
pub mod prefix;
pub mod store_path;

use std::collections::{BTreeMap, BTreeSet};

pub use hash::{DrvHash, FileDigest, TreeDigest};
pub use store_path::{ObjectKind, StoreDir, StorePath, StorePathError};

/// A derivation: one build's complete description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Derivation {
    /// The name; the `.drv` and the outputs are named after it.
    pub name: String,
    /// The version, if any.
    pub version: Option<String>,
    /// The platform it builds on, e.g. `x86_64-linux`.
    pub system: String,
    /// The program that runs the build.
    pub builder: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// The environment beyond the fixed variables the sandbox sets.
    pub env: BTreeMap<String, String>,
    /// Output names in declared order.
    pub outputs: Vec<String>,
    /// Input derivations (by `.drv` path) and the outputs used of each.
    pub input_drvs: BTreeMap<StorePath, BTreeSet<String>>,
    /// Imported sources.
    pub input_sources: BTreeSet<StorePath>,
    /// Pinned host tools by name.
    pub host_tools: BTreeMap<String, HostTool>,
    /// `build_inputs` as strings (placeholders and tool paths), in order:
    /// each one's `bin/`, or the tool itself, goes on `PATH`.
    pub path_inputs: Vec<String>,
    /// `host_inputs` as placeholders: what the output links against.
    pub host_inputs: Vec<String>,
    /// For a fixed-output derivation, the declared hash.
    pub fixed: Option<FixedOutput>,
}

/// A host tool pinned by path and content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostTool {
    /// Where it was found on `PATH`.
    pub path: String,
    /// The file that path resolves to, symlinks followed.
    pub resolved: String,
    /// BLAKE3 of that file.
    pub digest: FileDigest,
}

/// The hash a fixed-output derivation's download must have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixedOutput {
    /// The algorithm.
    pub algo: HashAlgo,
    /// The expected digest of the downloaded bytes.
    pub digest: Vec<u8>,
    /// Whether the download is unpacked into the output.
    pub unpack: bool,
    /// Where it comes from (`file://`, `http://`, `https://`); empty when the
    /// derivation builds the content itself.
    pub url: String,
}

/// Hash algorithms a fixed output may be declared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashAlgo {
    /// SHA-256, as conda recipes give them.
    Sha256,
    /// BLAKE3.
    Blake3,
}

impl HashAlgo {
    /// `sha256` or `blake3`.
    pub fn as_str(self) -> &'static str {
        match self {
            HashAlgo::Sha256 => "sha256",
            HashAlgo::Blake3 => "blake3",
        }
    }

    /// Parses [`Self::as_str`].
    pub fn parse(s: &str) -> Option<HashAlgo> {
        match s {
            "sha256" => Some(HashAlgo::Sha256),
            "blake3" => Some(HashAlgo::Blake3),
            _ => None,
        }
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        32
    }
}

impl Derivation {
    /// The canonical bytes: the `.drv` file's content.
    pub fn to_canonical_bytes(&self) -> Vec<u8> {
        canonical::write(self)
    }

    /// BLAKE3 of the canonical bytes.
    pub fn drv_hash(&self) -> DrvHash {
        DrvHash(*blake3::hash(&self.to_canonical_bytes()).as_bytes())
    }

    /// This derivation with every occurrence of each `from` replaced by its
    /// `to` in the strings a build sees (builder, arguments, environment,
    /// build and host inputs): how placeholders are resolved.
    pub fn with_replaced(&self, subst: &[(String, String)]) -> Derivation {
        self.map_strings(|s| {
            subst
                .iter()
                .fold(s.clone(), |acc, (from, to)| acc.replace(from, to))
        })
    }

    /// Like [`Self::with_replaced`], but in one pass: text a replacement
    /// put in is never replaced again, and where two `from`s match at one
    /// place the longer wins. For substitutions whose results may contain
    /// another's `from` (rebasing one store directory onto another).
    pub fn with_replaced_at_once(&self, subst: &[(String, String)]) -> Derivation {
        let ac = aho_corasick::AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
            .build(subst.iter().map(|(from, _)| from));
        let Ok(ac) = ac else {
            return self.with_replaced(subst);
        };
        let to: Vec<&str> = subst.iter().map(|(_, to)| to.as_str()).collect();
        self.map_strings(|s| ac.replace_all(s, &to))
    }

    /// This derivation with `r` applied to the strings a build sees.
    fn map_strings(&self, r: impl Fn(&String) -> String) -> Derivation {
        let r = &r;
        Derivation {
            builder: r(&self.builder),
            args: self.args.iter().map(r).collect(),
            env: self.env.iter().map(|(k, v)| (k.clone(), r(v))).collect(),
            path_inputs: self.path_inputs.iter().map(r).collect(),
            host_inputs: self.host_inputs.iter().map(r).collect(),
            ..self.clone()
        }
    }

    /// For a download (`builtin:fetch`), the realisation key that depends
    /// only on what is fetched, not where from: BLAKE3 of
    /// `cbuild-fixed-output-v1:<algo>:<digest hex>:<unpack 0|1>:<name>`. A
    /// mirror's URL for the same bytes under the same name is then reused
    /// without downloading.
    pub fn fixed_output_key(&self) -> Option<DrvHash> {
        let f = self
            .fixed
            .as_ref()
            .filter(|_| self.builder == "builtin:fetch")?;
        let hex: String = f.digest.iter().map(|b| format!("{b:02x}")).collect();
        let text = format!(
            "cbuild-fixed-output-v1:{}:{hex}:{}:{}",
            f.algo.as_str(),
            u8::from(f.unpack),
            self.name
        );
        Some(DrvHash(*blake3::hash(text.as_bytes()).as_bytes()))
    }

    /// The `.drv` store path, given the hash of this derivation.
    pub fn drv_path(&self, store: &StoreDir, hash: &DrvHash) -> Result<StorePath, StorePathError> {
        StorePath::compute(
            store,
            ObjectKind::Drv,
            &hash.0,
            &format!("{}.drv", self.name),
        )
    }

    /// The store objects the `.drv` file refers to: input derivations and
    /// sources.
    pub fn references(&self) -> impl Iterator<Item = &StorePath> {
        self.input_drvs.keys().chain(self.input_sources.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A derivation named `x` with one output and nothing else.
    pub(crate) fn bare(builder: &str) -> Derivation {
        Derivation {
            name: "x".into(),
            version: None,
            system: "s".into(),
            builder: builder.into(),
            args: Vec::new(),
            env: BTreeMap::new(),
            outputs: vec!["out".into()],
            input_drvs: BTreeMap::new(),
            input_sources: BTreeSet::new(),
            host_tools: BTreeMap::new(),
            path_inputs: Vec::new(),
            host_inputs: Vec::new(),
            fixed: None,
        }
    }

    #[test]
    fn replacing_at_once_never_replaces_a_replacement() {
        let d = bare("/store/aaa-src/build.sh /store/bbb-tool");
        // Rebasing the store `/store` onto `/cbuild/store`: the rebased
        // source path contains `/store/` again.
        let subst = [
            (
                "/store/aaa-src".to_string(),
                "/cbuild/store/ccc-src".to_string(),
            ),
            ("/store/".to_string(), "/cbuild/store/".to_string()),
        ];
        assert_eq!(
            d.with_replaced_at_once(&subst).builder,
            "/cbuild/store/ccc-src/build.sh /cbuild/store/bbb-tool"
        );
        assert_eq!(
            d.with_replaced(&subst).builder,
            "/cbuild/cbuild/store/ccc-src/build.sh /cbuild/store/bbb-tool",
            "why rebasing needs the one-pass form"
        );
    }
}
