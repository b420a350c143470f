//! What a package's dependents get from it: its `run_exports` (as conda
//! writes `run_exports.json`) or else an exact pin, and what a recipe's
//! `ignore_run_exports` takes away from its host inputs.

use serde_json::{Value, json};

use super::package::check_name;

/// A recipe's `ignore_run_exports`: what its host inputs would make run
/// dependencies and should not (a `-dev` or static input, a header-only
/// library), as rattler-build reads it.
#[derive(Debug, Default)]
pub(super) struct IgnoreRunExports {
    /// Package names whose specs are dropped, whichever input exports them.
    pub(super) by_name: Vec<String>,
    /// Host inputs (by package name) whose run exports, or exact pin, are
    /// not applied at all.
    pub(super) from_package: Vec<String>,
}

impl IgnoreRunExports {
    /// Reads `meta.ignore_run_exports` (`{ by_name = [...], from_package =
    /// [...] }`; absent or null: nothing ignored).
    pub(super) fn of(meta: &Value) -> Result<IgnoreRunExports, String> {
        let Some(v) = meta.get("ignore_run_exports").filter(|v| !v.is_null()) else {
            return Ok(IgnoreRunExports::default());
        };
        let Value::Object(m) = v else {
            return Err("must be a record `{ by_name = [...], from_package = [...] }`".into());
        };
        let mut out = IgnoreRunExports::default();
        for (k, v) in m {
            let names: Vec<String> = match v {
                Value::Array(a) if a.iter().all(Value::is_string) => strings(Some(v)),
                Value::Null => Vec::new(),
                _ => return Err(format!("`{k}` must be a list of package names")),
            };
            for name in &names {
                check_name(name)?;
            }
            match k.as_str() {
                "by_name" => out.by_name = names,
                "from_package" => out.from_package = names,
                _ => {
                    return Err(format!(
                        "unknown key `{k}`; the keys are by_name, from_package"
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Whether `spec`'s package is ignored by name.
    pub(super) fn drops(&self, spec: &str) -> bool {
        let name = spec
            .split(|c: char| c.is_whitespace() || "=<>!~[".contains(c))
            .next()
            .unwrap_or_default();
        self.by_name.iter().any(|n| n == name)
    }
}

/// Match specs a dependent gets from a package (its exact pin `spec`, its
/// `run_exports`) under `keys` of its
/// `run_exports`: `weak` and `strong` (else an exact pin), or
/// `weak_constrains` and `strong_constrains` (for its `constrains`).
pub(super) fn specs_from(spec: &str, run_exports: &Option<Value>, keys: [&str; 2]) -> Vec<String> {
    let specs: Vec<String> = match run_exports {
        Some(Value::Object(m)) => keys.iter().flat_map(|k| strings(m.get(*k))).collect(),
        _ => Vec::new(),
    };
    // Without `weak` or `strong` specs (none, or constrains only): a pin.
    if specs.is_empty() && keys[0] == "weak" {
        vec![spec.to_string()]
    } else {
        specs
    }
}

/// The keys of conda's `run_exports.json`.
pub(super) const RUN_EXPORT_KEYS: [&str; 5] = [
    "noarch",
    "strong",
    "strong_constrains",
    "weak",
    "weak_constrains",
];

/// `run_exports` of a recipe as conda's `run_exports.json`: a list means
/// `weak`.
pub(super) fn normalise_run_exports(v: &Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::Array(a) => Some(json!({ "weak": a })),
        Value::String(s) => Some(json!({ "weak": [s] })),
        Value::Object(_) => Some(v.clone()),
        _ => None,
    }
}

/// The strings of a JSON list (or a lone string).
pub(super) fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}
