//! The canonical serialisation of a derivation: the bytes of its `.drv`
//! file, and the input of its hash. Written by hand, versioned, and parsed
//! back strictly: bytes that are not exactly what [`write()`] would produce
//! are rejected, so one derivation has one serialisation.
//!
//! Grammar (every line ends with `\n`; `S` is a length-prefixed string
//! `<decimal byte length>:<bytes>`, so values may hold any byte, newlines
//! included; `N` is a decimal count; lists and maps are written in order,
//! maps sorted by key and free of duplicates):
//!
//! ```text
//! cbuild-derivation 1
//! name S
//! version S | version -
//! system S
//! builder S
//! args N            then N lines: S
//! env N             then N lines: S S            (sorted by key)
//! outputs N         then N lines: S              (declared order, no duplicates)
//! input-drvs N      then N lines: S M S...        (.drv base name, output count, outputs sorted)
//! input-sources N   then N lines: S              (base names, sorted)
//! host-tools N      then N lines: S S S H        (name, path, resolved path, BLAKE3 hex; sorted by name)
//! path-inputs N     then N lines: S              (declared order)
//! host-inputs N     then N lines: S              (declared order)
//! fixed -  |  fixed S H B S                      (algorithm, digest hex, unpack 0/1, url)
//! ```

use std::collections::{BTreeMap, BTreeSet};

use super::hash::{FileDigest, hex, unhex};
use super::store_path::StorePath;
use super::{Derivation, FixedOutput, HashAlgo, HostTool};

/// The first line: format name and version.
pub const HEADER: &str = "cbuild-derivation 1\n";

/// Why bytes are not a canonical derivation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a canonical derivation at byte {offset}: {reason}")]
pub struct ParseError {
    /// Where the problem starts.
    pub offset: usize,
    /// What is wrong.
    pub reason: String,
}

/// Serialises `d`.
pub fn write(d: &Derivation) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(1024));
    w.raw(HEADER);
    w.field("name", &d.name);
    match &d.version {
        Some(v) => w.field("version", v),
        None => w.raw("version -\n"),
    }
    w.field("system", &d.system);
    w.field("builder", &d.builder);
    w.list("args", &d.args);
    w.count("env", d.env.len());
    for (k, v) in &d.env {
        w.string(k);
        w.raw(" ");
        w.string(v);
        w.raw("\n");
    }
    w.list("outputs", &d.outputs);
    w.count("input-drvs", d.input_drvs.len());
    for (p, outs) in &d.input_drvs {
        w.string(&p.base_name());
        w.raw(" ");
        w.number(outs.len());
        for o in outs {
            w.raw(" ");
            w.string(o);
        }
        w.raw("\n");
    }
    w.count("input-sources", d.input_sources.len());
    for p in &d.input_sources {
        w.string(&p.base_name());
        w.raw("\n");
    }
    w.count("host-tools", d.host_tools.len());
    for (name, t) in &d.host_tools {
        w.string(name);
        w.raw(" ");
        w.string(&t.path);
        w.raw(" ");
        w.string(&t.resolved);
        w.raw(" ");
        w.raw(&t.digest.to_hex());
        w.raw("\n");
    }
    w.list("path-inputs", &d.path_inputs);
    w.list("host-inputs", &d.host_inputs);
    match &d.fixed {
        None => w.raw("fixed -\n"),
        Some(f) => {
            w.raw("fixed ");
            w.string(f.algo.as_str());
            w.raw(&format!(" {} {} ", hex(&f.digest), u8::from(f.unpack)));
            w.string(&f.url);
            w.raw("\n");
        }
    }
    w.0
}

struct Writer(Vec<u8>);

impl Writer {
    fn raw(&mut self, s: &str) {
        self.0.extend_from_slice(s.as_bytes());
    }
    fn number(&mut self, n: usize) {
        let mut digits = [0u8; 20];
        let mut k = digits.len();
        let mut n = n;
        loop {
            k -= 1;
            digits[k] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.0.extend_from_slice(&digits[k..]);
    }
    fn string(&mut self, s: &str) {
        self.number(s.len());
        self.0.push(b':');
        self.0.extend_from_slice(s.as_bytes());
    }
    fn field(&mut self, key: &str, value: &str) {
        self.raw(key);
        self.raw(" ");
        self.string(value);
        self.raw("\n");
    }
    fn count(&mut self, key: &str, n: usize) {
        self.raw(key);
        self.raw(" ");
        self.number(n);
        self.raw("\n");
    }
    fn list(&mut self, key: &str, items: &[String]) {
        self.count(key, items.len());
        for x in items {
            self.string(x);
            self.raw("\n");
        }
    }
}

/// Parses canonical bytes; the result serialises back to exactly `bytes`.
pub fn parse(bytes: &[u8]) -> Result<Derivation, ParseError> {
    let mut r = Reader { b: bytes, at: 0 };
    r.literal(HEADER)?;
    let name = r.field("name")?;
    r.literal("version ")?;
    let version = if r.peek_literal("-\n") {
        r.literal("-\n")?;
        None
    } else {
        let v = r.string()?;
        r.literal("\n")?;
        Some(v)
    };
    let system = r.field("system")?;
    let builder = r.field("builder")?;
    let args = r.list("args")?;
    let n = r.count("env")?;
    let mut env = BTreeMap::new();
    let mut last: Option<String> = None;
    for _ in 0..n {
        let at = r.at;
        let k = r.string()?;
        r.literal(" ")?;
        let v = r.string()?;
        r.literal("\n")?;
        if last.as_ref().is_some_and(|l| *l >= k) {
            return Err(r.error_at(at, "env keys are not sorted and unique"));
        }
        last = Some(k.clone());
        env.insert(k, v);
    }
    let outputs = r.list("outputs")?;
    let unique: BTreeSet<&String> = outputs.iter().collect();
    if unique.len() != outputs.len() {
        return Err(r.error_at(r.at, "duplicate output name"));
    }
    let n = r.count("input-drvs")?;
    let mut input_drvs = BTreeMap::new();
    let mut last: Option<StorePath> = None;
    for _ in 0..n {
        let at = r.at;
        let p = r.store_path()?;
        r.literal(" ")?;
        let m = r.number()?;
        let mut outs = BTreeSet::new();
        let mut prev: Option<String> = None;
        for _ in 0..m {
            r.literal(" ")?;
            let o = r.string()?;
            if prev.as_ref().is_some_and(|x| *x >= o) {
                return Err(r.error_at(at, "input outputs are not sorted and unique"));
            }
            prev = Some(o.clone());
            outs.insert(o);
        }
        r.literal("\n")?;
        if last.as_ref().is_some_and(|l| *l >= p) || outs.is_empty() {
            return Err(r.error_at(at, "input derivations are not sorted, unique and non-empty"));
        }
        last = Some(p.clone());
        input_drvs.insert(p, outs);
    }
    let n = r.count("input-sources")?;
    let mut input_sources = BTreeSet::new();
    let mut last: Option<StorePath> = None;
    for _ in 0..n {
        let at = r.at;
        let p = r.store_path()?;
        r.literal("\n")?;
        if last.as_ref().is_some_and(|l| *l >= p) {
            return Err(r.error_at(at, "input sources are not sorted and unique"));
        }
        last = Some(p.clone());
        input_sources.insert(p);
    }
    let n = r.count("host-tools")?;
    let mut host_tools = BTreeMap::new();
    let mut last: Option<String> = None;
    for _ in 0..n {
        let at = r.at;
        let name = r.string()?;
        r.literal(" ")?;
        let path = r.string()?;
        r.literal(" ")?;
        let resolved = r.string()?;
        r.literal(" ")?;
        let digest = FileDigest(r.hex32()?);
        r.literal("\n")?;
        if last.as_ref().is_some_and(|l| *l >= name) {
            return Err(r.error_at(at, "host tools are not sorted and unique"));
        }
        last = Some(name.clone());
        host_tools.insert(
            name,
            HostTool {
                path,
                resolved,
                digest,
            },
        );
    }
    let path_inputs = r.list("path-inputs")?;
    let host_inputs = r.list("host-inputs")?;
    r.literal("fixed ")?;
    let fixed = if r.peek_literal("-\n") {
        r.literal("-\n")?;
        None
    } else {
        let at = r.at;
        let algo = r.string()?;
        let algo =
            HashAlgo::parse(&algo).ok_or_else(|| r.error_at(at, "unknown hash algorithm"))?;
        r.literal(" ")?;
        let digest = r.hex_token()?;
        if digest.len() != algo.digest_len() {
            return Err(r.error_at(at, "digest length does not match the algorithm"));
        }
        r.literal(" ")?;
        let unpack = match r.next_byte()? {
            b'0' => false,
            b'1' => true,
            _ => return Err(r.error_at(r.at - 1, "unpack flag is not 0 or 1")),
        };
        r.literal(" ")?;
        let url = r.string()?;
        r.literal("\n")?;
        Some(FixedOutput {
            algo,
            digest,
            unpack,
            url,
        })
    };
    if r.at != bytes.len() {
        return Err(r.error_at(r.at, "trailing bytes"));
    }
    Ok(Derivation {
        name,
        version,
        system,
        builder,
        args,
        env,
        outputs,
        input_drvs,
        input_sources,
        host_tools,
        path_inputs,
        host_inputs,
        fixed,
    })
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn error_at(&self, offset: usize, reason: &str) -> ParseError {
        ParseError {
            offset,
            reason: reason.into(),
        }
    }

    fn peek_literal(&self, lit: &str) -> bool {
        self.b[self.at..].starts_with(lit.as_bytes())
    }

    fn literal(&mut self, lit: &str) -> Result<(), ParseError> {
        if self.peek_literal(lit) {
            self.at += lit.len();
            Ok(())
        } else {
            Err(self.error_at(self.at, &format!("expected {lit:?}")))
        }
    }

    fn next_byte(&mut self) -> Result<u8, ParseError> {
        let c = *self
            .b
            .get(self.at)
            .ok_or_else(|| self.error_at(self.at, "unexpected end"))?;
        self.at += 1;
        Ok(c)
    }

    /// A decimal number without leading zeros.
    fn number(&mut self) -> Result<usize, ParseError> {
        let start = self.at;
        while self.b.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        let digits = &self.b[start..self.at];
        if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') || digits.len() > 12 {
            return Err(self.error_at(start, "expected a canonical decimal number"));
        }
        Ok(std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(usize::MAX))
    }

    fn string(&mut self) -> Result<String, ParseError> {
        let start = self.at;
        let len = self.number()?;
        self.literal(":")?;
        let end = self
            .at
            .checked_add(len)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| self.error_at(start, "string runs past the end"))?;
        let s = std::str::from_utf8(&self.b[self.at..end])
            .map_err(|_| self.error_at(self.at, "string is not UTF-8"))?;
        self.at = end;
        Ok(s.to_string())
    }

    fn field(&mut self, key: &str) -> Result<String, ParseError> {
        self.literal(key)?;
        self.literal(" ")?;
        let s = self.string()?;
        self.literal("\n")?;
        Ok(s)
    }

    fn count(&mut self, key: &str) -> Result<usize, ParseError> {
        self.literal(key)?;
        self.literal(" ")?;
        let n = self.number()?;
        self.literal("\n")?;
        if n > self.b.len() {
            return Err(self.error_at(self.at, "count larger than the input"));
        }
        Ok(n)
    }

    fn list(&mut self, key: &str) -> Result<Vec<String>, ParseError> {
        let n = self.count(key)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.string()?);
            self.literal("\n")?;
        }
        Ok(out)
    }

    fn store_path(&mut self) -> Result<StorePath, ParseError> {
        let at = self.at;
        let s = self.string()?;
        StorePath::from_base_name(&s).ok_or_else(|| self.error_at(at, "not a store base name"))
    }

    fn hex_token(&mut self) -> Result<Vec<u8>, ParseError> {
        let start = self.at;
        while self
            .b
            .get(self.at)
            .is_some_and(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
        {
            self.at += 1;
        }
        let s = std::str::from_utf8(&self.b[start..self.at]).unwrap_or("");
        unhex(s)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| self.error_at(start, "expected lowercase hex"))
    }

    fn hex32(&mut self) -> Result<[u8; 32], ParseError> {
        let at = self.at;
        self.hex_token()?
            .try_into()
            .map_err(|_| self.error_at(at, "expected a 32-byte digest"))
    }
}

#[cfg(test)]
mod tests {

    use proptest::prelude::*;

    use super::*;
    use crate::derivation::{ObjectKind, StoreDir};

    fn text() -> impl Strategy<Value = String> {
        "[a-z0-9 :\n\\$\"é-]{0,12}"
    }

    fn store_path() -> impl Strategy<Value = StorePath> {
        (any::<[u8; 32]>(), "[a-z][a-z0-9.+_-]{0,10}").prop_map(|(d, n)| {
            StorePath::compute(&StoreDir::new("/s/store"), ObjectKind::Source, &d, &n).unwrap()
        })
    }

    prop_compose! {
        fn derivation()(
            name in "[a-z][a-z0-9-]{0,10}",
            version in proptest::option::of(text()),
            builder in text(),
            args in proptest::collection::vec(text(), 0..4),
            env in proptest::collection::btree_map(text(), text(), 0..4),
            outputs in proptest::collection::btree_set("[a-z]{1,4}", 1..3),
            drvs in proptest::collection::btree_map(store_path(), proptest::collection::btree_set("[a-z]{1,4}", 1..3), 0..3),
            sources in proptest::collection::btree_set(store_path(), 0..3),
            tools in proptest::collection::btree_map("[a-z]{1,5}", (text(), text(), any::<[u8; 32]>()), 0..3),
            path_inputs in proptest::collection::vec(text(), 0..3),
            fixed in proptest::option::of((any::<bool>(), any::<[u8; 32]>(), any::<bool>(), text())),
        ) -> Derivation {
            Derivation {
                name,
                version,
                system: "x86_64-linux".into(),
                builder,
                args,
                env,
                outputs: outputs.into_iter().collect(),
                input_drvs: drvs,
                input_sources: sources,
                host_tools: tools.into_iter().map(|(k, (p, r, d))| (k, HostTool { path: p, resolved: r, digest: FileDigest(d) })).collect(),
                path_inputs,
                host_inputs: Vec::new(),
                fixed: fixed.map(|(sha, d, unpack, url)| FixedOutput {
                    algo: if sha { HashAlgo::Sha256 } else { HashAlgo::Blake3 },
                    digest: d.to_vec(),
                    unpack,
                    url,
                }),
            }
        }
    }

    proptest! {
        /// One derivation, one serialisation, one hash: the bytes parse back
        /// to the same derivation, which serialises to the same bytes.
        #[test]
        fn canonical_form_round_trips(d in derivation()) {
            let bytes = write(&d);
            let back = parse(&bytes).expect("parses");
            prop_assert_eq!(&back, &d);
            prop_assert_eq!(write(&back), bytes);
            prop_assert_eq!(back.drv_hash(), d.drv_hash());
        }

        /// Any change to the bytes either fails to parse or is another
        /// derivation with another hash.
        #[test]
        fn changed_bytes_never_alias(d in derivation(), at in any::<prop::sample::Index>(), b in any::<u8>()) {
            let mut bytes = write(&d);
            let i = at.index(bytes.len());
            if bytes[i] != b {
                bytes[i] = b;
                if let Ok(other) = parse(&bytes) {
                    prop_assert_ne!(other.drv_hash(), d.drv_hash());
                    prop_assert_eq!(write(&other), bytes);
                }
            }
        }
    }

    #[test]
    fn empty_collections_parse() {
        let d = crate::derivation::tests::bare("");
        assert_eq!(parse(&write(&d)).unwrap(), d);
    }
}
