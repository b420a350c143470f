//! Instantiation: the store-backed [`Host`] of the recipe language.
//!
//! Evaluating a recipe calls this module to import sources, pin host tools
//! and turn `derivation { ... }` records into hashed [`Derivation`]s whose
//! `.drv` files are written to the store at the end of the run. Inputs are
//! never listed twice: they are collected from the string context of every
//! hashed attribute. Everything is cached per run (a source used by a
//! thousand derivations is imported and hashed once), and evaluation never
//! runs a builder: it reads only recipe files and `read_file`'s (the
//! evaluator records which file read which), imported sources and pinned
//! tools.

mod attrs;
mod tools;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use cbuild_lang::value::{Context, Derivation as LangDrv, Record, Str, Value};
use cbuild_lang::{ContextElem, Host, HostError};

use crate::derivation::{Derivation, DrvHash, FixedOutput, HashAlgo, StorePath, placeholder};
use crate::store::import::Filter;
use crate::store::{PendingDrv, Store, StoreError};

pub use tools::find_on_path;

/// A derivation made during this run, with what `eval --json` and the
/// database need beside it.
#[derive(Clone, Debug)]
pub struct Instantiated {
    /// Its `.drv` path.
    pub path: StorePath,
    /// Its hash.
    pub hash: DrvHash,
    /// Its canonical bytes (the `.drv` file), kept from hashing. The
    /// derivation itself is not kept: a package set's derivations, their
    /// environments and input maps, were a third of a large evaluation's
    /// heap, and every page of it was fresh memory to fault in.
    pub bytes: Vec<u8>,
    /// Its input derivations and sources.
    pub references: Vec<StorePath>,
    /// `meta`, as JSON.
    pub meta: serde_json::Value,
    /// `run_inputs`, as `.drv` paths.
    pub run_inputs: Vec<StorePath>,
}

impl Instantiated {
    /// The derivation, read back from its canonical bytes.
    pub fn derivation(&self) -> Result<Derivation, crate::derivation::canonical::ParseError> {
        crate::derivation::canonical::parse(&self.bytes)
    }
}

/// The store-backed host.
pub struct Instantiator<'s> {
    store: &'s mut Store,
    system: String,
    imports: HashMap<(PathBuf, Filter), StorePath>,
    tools: tools::Tools,
    made: Vec<Instantiated>,
    by_path: HashMap<StorePath, usize>,
    base: PathBuf,
    target_platform: String,
}

impl<'s> Instantiator<'s> {
    /// A host writing into `store`; file names in messages are shown relative
    /// to `base`.
    pub fn new(store: &'s mut Store, base: PathBuf) -> Instantiator<'s> {
        Instantiator {
            store,
            system: system(),
            imports: HashMap::new(),
            tools: tools::Tools::new(std::env::var_os("PATH")),
            made: Vec::new(),
            by_path: HashMap::new(),
            base,
            target_platform: cbuild_lang::host::host_subdir().to_string(),
        }
    }

    /// Evaluates for another conda subdir: `target_platform` in recipes.
    pub fn with_target_platform(mut self, subdir: &str) -> Self {
        self.target_platform = subdir.to_string();
        self
    }

    /// The derivation made with this `.drv` path.
    pub fn get(&self, path: &StorePath) -> Option<&Instantiated> {
        self.by_path.get(path).map(|&k| &self.made[k])
    }

    /// How many distinct derivations this run made.
    pub fn made_count(&self) -> usize {
        self.made.len()
    }

    /// The directories imported as sources, with their filters, sorted.
    pub fn imported_dirs(&self) -> Vec<(PathBuf, Filter)> {
        let mut v: Vec<(PathBuf, Filter)> = self
            .imports
            .keys()
            .filter(|(p, _)| p.is_dir())
            .cloned()
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Registers every derivation made in this run, writing the `.drv`
    /// files of `targets`.
    pub fn flush(&mut self, targets: &[StorePath]) -> Result<(), StoreError> {
        let pending: Vec<PendingDrv> = self
            .made
            .iter_mut()
            .map(|m| PendingDrv {
                path: m.path.clone(),
                bytes: std::mem::take(&mut m.bytes),
                hash: m.hash,
                references: m.references.clone(),
                meta: m.meta.to_string(),
                run_inputs: serde_json::Value::from(
                    m.run_inputs
                        .iter()
                        .map(|p| p.base_name())
                        .collect::<Vec<_>>(),
                )
                .to_string(),
            })
            .collect();
        // A few targets are files a user may open; a package set's are not
        // (creating 10,000 inodes costs seconds on ext4, and every command
        // that needs a `.drv` file writes it from the database).
        let files = if targets.len() <= crate::store::DRV_FILES_MAX {
            targets
        } else {
            &[]
        };
        let added = self.store.add_derivations(&pending, files);
        // The bytes stay readable through `get`.
        for (m, p) in self.made.iter_mut().zip(pending) {
            m.bytes = p.bytes;
        }
        added
    }

    /// The store.
    pub fn store(&self) -> &Store {
        self.store
    }

    fn shown(&self, p: &Path) -> String {
        cbuild_lang::host::shown_path(p, &self.base)
    }

    fn import(&mut self, path: &Path, filter: Filter) -> Result<Str, HostError> {
        let key = (path.to_path_buf(), filter);
        let sp = match self.imports.get(&key) {
            Some(sp) => sp.clone(),
            None => {
                // Not following a symlink: it is stored as a symlink.
                let is_dir = std::fs::symlink_metadata(path)
                    .map(|m| m.is_dir())
                    .unwrap_or(false);
                // Named by content and the recipe's text only: a directory's
                // own name depends on where the checkout is.
                let name = if is_dir {
                    "source".to_string()
                } else {
                    path.file_name()
                        .map(|n| sanitize_name(&n.to_string_lossy()))
                        .unwrap_or_else(|| "source".into())
                };
                let sp = self.store.import(path, &name, &key.1).map_err(|e| {
                    store_error(&e, &format!("cannot import `{}`", self.shown(path)))
                })?;
                self.imports.insert(key, sp.clone());
                sp
            }
        };
        let full = self.store.dir().path_of(&sp);
        Ok(with_context(full.clone(), ContextElem::Source(full.into())))
    }
}

impl Host for Instantiator<'_> {
    fn read_file(&mut self, path: &Path) -> Result<String, HostError> {
        cbuild_lang::host::read_text_file(path, &self.shown(path))
    }

    fn import_path(&mut self, path: &Path) -> Result<Str, HostError> {
        self.import(path, Filter::default())
    }

    fn source(
        &mut self,
        path: &Path,
        exclude: &[String],
        gitignore: bool,
        recipes: bool,
    ) -> Result<Str, HostError> {
        self.import(
            path,
            Filter {
                exclude: exclude.to_vec(),
                gitignore,
                skip_recipes: !recipes,
            },
        )
    }

    fn target_platform(&self) -> String {
        self.target_platform.clone()
    }

    fn fetch(&mut self, url: &str, hash: &str, unpack: bool) -> Result<LangDrv, HostError> {
        let scheme_ok = ["file://", "http://", "https://"]
            .iter()
            .any(|s| url.starts_with(s));
        if !scheme_ok {
            return Err(HostError::new(format!("`fetch`: unsupported URL `{url}`"))
                .with_help("URLs start with file://, http:// or https://"));
        }
        let fixed = parse_fixed_hash(hash, "fetch")?;
        let last = url
            .split(['?', '#'])
            .next()
            .unwrap_or(url)
            .rsplit('/')
            .find(|s| !s.is_empty())
            .unwrap_or("download");
        let drv = Derivation {
            name: sanitize_name(last),
            version: None,
            system: self.system.clone(),
            builder: "builtin:fetch".into(),
            args: Vec::new(),
            env: BTreeMap::from([("out".to_string(), placeholder::own_output("out"))]),
            outputs: vec!["out".into()],
            input_drvs: BTreeMap::new(),
            input_sources: BTreeSet::new(),
            host_tools: BTreeMap::new(),
            path_inputs: Vec::new(),
            host_inputs: Vec::new(),
            fixed: Some(FixedOutput {
                unpack,
                url: url.into(),
                ..fixed
            }),
        };
        self.finish(
            drv,
            serde_json::json!({}),
            Vec::new(),
            Value::Null,
            Value::Null,
        )
    }

    fn host_tool(&mut self, name: &str) -> Result<Str, HostError> {
        let (path, _) = self.tools.pin(name)?;
        Ok(with_context(path, ContextElem::Tool(name.into())))
    }

    fn derivation(&mut self, attrs: &Record) -> Result<LangDrv, HostError> {
        attrs::derivation(self, attrs)
    }
}

impl Instantiator<'_> {
    /// Hashes `drv`, queues its `.drv` file, and returns the language's view
    /// of it.
    fn finish(
        &mut self,
        drv: Derivation,
        meta: serde_json::Value,
        run_inputs: Vec<StorePath>,
        meta_value: Value,
        attrs_value: Value,
    ) -> Result<LangDrv, HostError> {
        let bytes = drv.to_canonical_bytes();
        let hash = DrvHash(*blake3::hash(&bytes).as_bytes());
        let path = drv
            .drv_path(self.store.dir(), &hash)
            .map_err(|e| HostError::new(e.to_string()))?;
        let full: Rc<str> = self.store.dir().path_of(&path).into();
        let outputs = drv
            .outputs
            .iter()
            .map(|o| {
                let elem = ContextElem::Output {
                    drv: full.clone(),
                    output: Rc::from(o.as_str()),
                };
                (
                    Rc::from(o.as_str()),
                    with_context(placeholder::input_output(&hash, o), elem),
                )
            })
            .collect();
        let lang = LangDrv {
            name: drv.name.as_str().into(),
            version: drv.version.as_deref().map(Rc::from),
            drv_path: with_context(full.to_string(), ContextElem::Source(full.clone())),
            outputs,
            meta: meta_value,
            attrs: attrs_value,
            span: None,
        };
        if !self.by_path.contains_key(&path) {
            self.by_path.insert(path.clone(), self.made.len());
            self.made.push(Instantiated {
                path,
                hash,
                references: drv.references().cloned().collect(),
                bytes,
                meta,
                run_inputs,
            });
        } else if let Some(&k) = self.by_path.get(&path) {
            // Same derivation again: the latest meta wins (it is not hashed).
            self.made[k].meta = meta;
            self.made[k].run_inputs = run_inputs;
        }
        Ok(lang)
    }
}

/// `x86_64-linux` and friends.
pub fn system() -> String {
    format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
}

fn with_context(text: String, elem: ContextElem) -> Str {
    let mut c = Context::new();
    c.insert(elem);
    Str::with_context(text, c)
}

/// A store error as a host error: the headline, then every cause.
fn store_error(e: &StoreError, what: &str) -> HostError {
    let mut msg = format!("{what}: {e}");
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    HostError::new(msg)
}

/// Replaces characters a store name may not hold.
pub fn sanitize_name(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    while out.starts_with('.') {
        out.remove(0);
    }
    out.truncate(200);
    if out.is_empty() { "source".into() } else { out }
}

/// Parses `sha256:<hex>` or `blake3:<hex>`.
fn parse_fixed_hash(hash: &str, what: &str) -> Result<FixedOutput, HostError> {
    let bad = || {
        HostError::new(format!("`{what}`: invalid hash `{hash}`"))
            .with_help("write \"sha256:<64 hex digits>\" or \"blake3:<64 hex digits>\"")
    };
    let (algo, hex) = hash.split_once(':').ok_or_else(bad)?;
    let algo = HashAlgo::parse(algo).ok_or_else(bad)?;
    let digest = crate::derivation::hash::unhex(&hex.to_ascii_lowercase()).ok_or_else(bad)?;
    if digest.len() != algo.digest_len() {
        return Err(bad());
    }
    Ok(FixedOutput {
        algo,
        digest,
        unpack: false,
        url: String::new(),
    })
}
