//! Export derivations: for each target and each package it needs, the same
//! build with `$out` at the placeholder prefix, its host inputs' exported
//! contents laid into that prefix, and every interpolation of a host input
//! resolving to the prefix. Build tools and sources stay at their store
//! paths. Export derivations are ordinary derivations, registered in the
//! store and realised (cached, logged, sandboxed) like any other.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::derivation::{Derivation, DrvHash, StorePath, placeholder, prefix};
use crate::store::{PendingDrv, Store};

use super::ExportError;

/// A package: output `output` of the export derivation of node `node`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PackageRef {
    /// Index into [`Plan::nodes`].
    pub node: usize,
    /// The output.
    pub output: String,
}

/// One derivation to export.
pub struct Node {
    /// The original `.drv`.
    pub original: StorePath,
    /// The original derivation.
    pub drv: Derivation,
    /// Its `meta`.
    pub meta: serde_json::Value,
    /// The export derivation's `.drv`.
    pub export_path: StorePath,
    /// The export derivation.
    pub export_drv: Derivation,
    /// Packages of its host inputs, in the order given.
    pub host: Vec<PackageRef>,
    /// Packages of its `run_inputs`.
    pub run: Vec<PackageRef>,
    /// Packages laid into the prefix before its build (its host inputs and
    /// what they need at run time, transitively), ordered by package name.
    pub layers: Vec<PackageRef>,
    /// Whether the user selected it (else it is a host or run input of one).
    pub target: bool,
}

/// The export derivations of some targets, inputs before dependents.
#[derive(Default)]
pub struct Plan {
    /// Every node, in dependency order.
    pub nodes: Vec<Node>,
    index: HashMap<StorePath, usize>,
}

impl Plan {
    /// The package names of node `i`, by output: `out` is the derivation's
    /// name, output `o` is `<name>-<o>` unless `meta.names` names it.
    pub fn package_name(&self, p: &PackageRef) -> String {
        let n = &self.nodes[p.node];
        if let Some(name) = n
            .meta
            .get("names")
            .and_then(|m| m.get(&p.output))
            .and_then(|v| v.as_str())
        {
            return name.to_string();
        }
        if p.output == "out" {
            n.drv.name.clone()
        } else {
            format!("{}-{}", n.drv.name, p.output)
        }
    }

    /// What package `p` needs at run time, directly: every host input and
    /// run input of its derivation and, for an output other than `out`, the
    /// `out` package of the same build.
    pub fn package_deps(&self, p: &PackageRef) -> Vec<PackageRef> {
        let n = &self.nodes[p.node];
        let mut deps: Vec<PackageRef> = n.host.iter().chain(&n.run).cloned().collect();
        if p.output != "out" && n.drv.outputs.iter().any(|o| o == "out") {
            deps.push(PackageRef {
                node: p.node,
                output: "out".into(),
            });
        }
        let mut seen = BTreeSet::new();
        deps.retain(|d| seen.insert(d.clone()));
        deps
    }
}

/// Plans and registers the export derivations of `targets` (original
/// `.drv` paths) and of every package they need.
pub fn plan(store: &mut Store, targets: &[StorePath]) -> Result<Plan, ExportError> {
    let mut plan = Plan::default();
    for t in targets {
        let i = visit(store, &mut plan, t, &mut Vec::new())?;
        plan.nodes[i].target = true;
    }
    let pending: Vec<PendingDrv> = plan
        .nodes
        .iter()
        .map(|n| {
            let bytes = n.export_drv.to_canonical_bytes();
            PendingDrv {
                path: n.export_path.clone(),
                hash: DrvHash(*blake3::hash(&bytes).as_bytes()),
                bytes,
                references: n.export_drv.references().cloned().collect(),
                meta: n.meta.to_string(),
                run_inputs: "[]".into(),
            }
        })
        .collect();
    let written: Vec<StorePath> = plan
        .nodes
        .iter()
        .filter(|n| n.target)
        .map(|n| n.export_path.clone())
        .collect();
    store.add_derivations(&pending, &written)?;
    Ok(plan)
}

fn visit(
    store: &Store,
    plan: &mut Plan,
    path: &StorePath,
    stack: &mut Vec<StorePath>,
) -> Result<usize, ExportError> {
    if let Some(&i) = plan.index.get(path) {
        return Ok(i);
    }
    if stack.contains(path) {
        // run_inputs live outside the hash, so they can form a cycle.
        return Err(ExportError::Cycle {
            drvs: stack.iter().map(|p| store.dir().path_of(p)).collect(),
        });
    }
    stack.push(path.clone());
    let drv = store.read_derivation(path)?;
    let (meta, run_inputs) = store
        .db()
        .derivation_meta(&path.base_name())?
        .unwrap_or_else(|| ("{}".into(), "[]".into()));
    let meta: serde_json::Value = serde_json::from_str(&meta).unwrap_or_default();
    let run_inputs: Vec<String> = serde_json::from_str(&run_inputs).unwrap_or_default();

    // Which input output each placeholder stands for.
    let mut by_placeholder: HashMap<String, (StorePath, String)> = HashMap::new();
    let mut input_outputs: BTreeMap<StorePath, Vec<String>> = BTreeMap::new();
    for input in drv.input_drvs.keys() {
        let d = store.read_derivation(input)?;
        let h = d.drv_hash();
        for o in &d.outputs {
            by_placeholder.insert(placeholder::input_output(&h, o), (input.clone(), o.clone()));
        }
        input_outputs.insert(input.clone(), d.outputs.clone());
    }
    let shown = store.dir().path_of(path);
    let mut host = Vec::new();
    for h in &drv.host_inputs {
        let Some((input, output)) = by_placeholder.get(h).cloned() else {
            return Err(ExportError::HostInputNotADerivation {
                drv: shown,
                input: h.clone(),
            });
        };
        let node = visit(store, plan, &input, stack)?;
        host.push(PackageRef { node, output });
    }
    let mut run = Vec::new();
    for r in &run_inputs {
        let p = StorePath::from_base_name(r).ok_or_else(|| ExportError::BadRunInput {
            drv: shown.clone(),
            input: r.clone(),
        })?;
        let node = visit(store, plan, &p, stack)?;
        run.push(PackageRef {
            node,
            output: "out".into(),
        });
    }
    stack.pop();

    // The host environment: host inputs and their run-time needs.
    let mut layers: BTreeSet<PackageRef> = BTreeSet::new();
    let mut todo: Vec<PackageRef> = host.clone();
    while let Some(p) = todo.pop() {
        if layers.insert(p.clone()) {
            todo.extend(plan.package_deps(&p));
        }
    }
    let mut layers: Vec<PackageRef> = layers.into_iter().collect();
    // By package name: the order must not depend on where the store is.
    layers.sort_by_key(|p| (plan.package_name(p), p.output.clone()));
    // One prefix holds one package of a name, as conda installs it.
    for w in layers.windows(2) {
        let (a, b) = (plan.package_name(&w[0]), plan.package_name(&w[1]));
        if a == b {
            return Err(ExportError::TwoOfOneName {
                drv: shown,
                name: a,
                drvs: [&w[0], &w[1]]
                    .iter()
                    .map(|p| store.dir().path_of(&plan.nodes[p.node].original))
                    .collect(),
            });
        }
    }
    if !layers.is_empty() && !drv.outputs.iter().any(|o| o == "out") {
        return Err(ExportError::NoOutOutput { drv: shown });
    }

    let mut subst: Vec<(String, String)> = drv
        .outputs
        .iter()
        .map(|o| (placeholder::own_output(o), prefix::output_prefix(o)))
        .collect();
    for h in &drv.host_inputs {
        subst.push((h.clone(), prefix::PREFIX.to_string()));
    }
    let mut e = drv.with_replaced(&subst);
    let mut seen = BTreeSet::new();
    e.host_inputs.retain(|h| seen.insert(h.clone()));
    // Inputs no longer mentioned (host inputs now in the prefix) go; the
    // layers' export derivations come in.
    let strings: Vec<&String> = std::iter::once(&e.builder)
        .chain(&e.args)
        .chain(e.env.values())
        .chain(&e.path_inputs)
        .chain(&e.host_inputs)
        .collect();
    e.input_drvs.retain(|input, _| {
        let h = by_placeholder
            .iter()
            .filter(|(_, (p, _))| p == input)
            .map(|(ph, _)| ph);
        h.into_iter()
            .any(|ph| strings.iter().any(|s| s.contains(ph.as_str())))
    });
    let mut layer_strings = Vec::new();
    for l in &layers {
        let n = &plan.nodes[l.node];
        let h = n.export_drv.drv_hash();
        layer_strings.push(placeholder::input_output(&h, &l.output));
        e.input_drvs
            .entry(n.export_path.clone())
            .or_default()
            .insert(l.output.clone());
    }
    e.env
        .insert(prefix::LAYERS_ENV.into(), layer_strings.join(" "));
    e.env
        .entry("PREFIX".into())
        .or_insert_with(|| prefix::PREFIX.to_string());
    if e.name.len() <= 190 {
        e.name = format!("{}-conda", e.name);
    }
    let h = e.drv_hash();
    let export_path = e.drv_path(store.dir(), &h)?;
    let i = plan.nodes.len();
    plan.nodes.push(Node {
        original: path.clone(),
        drv,
        meta,
        export_path,
        export_drv: e,
        host,
        run,
        layers,
        target: false,
    });
    plan.index.insert(path.clone(), i);
    Ok(i)
}
