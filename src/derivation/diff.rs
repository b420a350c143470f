//! What changed between two derivations of the same name: the reason
//! `cbuild realise -v` gives for a rebuild.

use std::collections::BTreeMap;

use super::{Derivation, DrvHash, StorePath, placeholder};

/// The fields of `new` that differ from `old`, each as a short phrase
/// (`input zlib`, `env CFLAGS`, `builder`, ...), in a fixed order.
/// `hashes` gives the derivation hash of input `.drv`s (of both), so that a
/// string that differs only by which build of an input it names is not
/// reported beside the input itself.
pub fn differences(
    old: &Derivation,
    new: &Derivation,
    hashes: &BTreeMap<StorePath, DrvHash>,
) -> Vec<String> {
    let old = &neutral(old, hashes);
    let new = &neutral(new, hashes);
    let mut out = Vec::new();
    let by_name = |d: &Derivation| -> BTreeMap<String, StorePath> {
        d.input_drvs
            .keys()
            .map(|p| (p.name().trim_end_matches(".drv").to_string(), p.clone()))
            .collect()
    };
    let (a, b) = (by_name(old), by_name(new));
    for (name, p) in &b {
        match a.get(name) {
            Some(q) if q == p => {}
            Some(_) => out.push(format!("input {name}")),
            None => out.push(format!("new input {name}")),
        }
    }
    for name in a.keys().filter(|n| !b.contains_key(*n)) {
        out.push(format!("input {name} removed"));
    }
    let src = |d: &Derivation| -> BTreeMap<String, StorePath> {
        d.input_sources
            .iter()
            .map(|p| (p.name().to_string(), p.clone()))
            .collect()
    };
    let (a, b) = (src(old), src(new));
    for (name, p) in &b {
        if a.get(name) != Some(p) {
            out.push(format!("source {name}"));
        }
    }
    for name in a.keys().filter(|n| !b.contains_key(*n)) {
        out.push(format!("source {name} removed"));
    }
    for (k, v) in &new.env {
        if old.env.get(k) != Some(v) {
            out.push(format!("env {k}"));
        }
    }
    for k in old.env.keys().filter(|k| !new.env.contains_key(*k)) {
        out.push(format!("env {k} removed"));
    }
    for (k, t) in &new.host_tools {
        if old.host_tools.get(k) != Some(t) {
            out.push(format!("host tool {k}"));
        }
    }
    for (what, changed) in [
        ("builder", old.builder != new.builder),
        ("args", old.args != new.args),
        ("outputs", old.outputs != new.outputs),
        (
            "build inputs",
            old.path_inputs.len() != new.path_inputs.len(),
        ),
        (
            "host inputs",
            old.host_inputs.len() != new.host_inputs.len(),
        ),
        ("fixed hash", old.fixed != new.fixed),
        ("version", old.version != new.version),
        ("system", old.system != new.system),
    ] {
        if changed {
            out.push(what.to_string());
        }
    }
    out
}

/// `d` with its inputs' placeholders replaced by names that do not depend on
/// which build of the input they stand for.
fn neutral(d: &Derivation, hashes: &BTreeMap<StorePath, DrvHash>) -> Derivation {
    let mut subst = Vec::new();
    for (input, outs) in &d.input_drvs {
        let Some(h) = hashes.get(input) else { continue };
        for o in outs {
            subst.push((
                placeholder::input_output(h, o),
                format!("<{}:{o}>", input.name().trim_end_matches(".drv")),
            ));
        }
    }
    d.with_replaced(&subst)
}
