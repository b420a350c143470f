//! Selecting what to build: a file's value is its own target when it is a
//! derivation; `-A a.b` selects attributes; without `-A`, every derivation
//! found in the value's records, recursively, in sorted key order.

use std::rc::Rc;

use cbuild_lang::value::Derivation as LangDrv;
use cbuild_lang::{Evaluator, Value};

use super::attr_path;
use super::error::CliError;

/// A selected derivation and the attribute path it was found at (empty for
/// a file that is a derivation).
pub struct Target {
    /// `a.b`, or "".
    pub attr: String,
    /// The derivation.
    pub drv: Rc<LangDrv>,
}

/// The targets of `root` for the `-A` paths `attrs`.
pub fn select(
    ev: &mut Evaluator<'_>,
    root: &Value,
    attrs: &[String],
    file: &str,
) -> Result<Vec<Target>, CliError> {
    let mut out = Vec::new();
    if attrs.is_empty() {
        collect(ev, root, "", &mut out, true)?;
    } else {
        for a in attrs {
            let v = attr_path::select(ev, root, a, file)?;
            collect(ev, &v, a, &mut out, true)?;
        }
    }
    Ok(out)
}

fn collect(
    ev: &mut Evaluator<'_>,
    v: &Value,
    attr: &str,
    out: &mut Vec<Target>,
    top: bool,
) -> Result<(), CliError> {
    match v {
        Value::Derivation(d) => out.push(Target {
            attr: attr.to_string(),
            drv: d.clone(),
        }),
        Value::Record(r) => {
            for (k, t) in r.fields.iter() {
                let x = ev.force_thunk(t)?;
                let sub = if attr.is_empty() {
                    k.to_string()
                } else {
                    format!("{attr}.{k}")
                };
                if matches!(x, Value::Derivation(_) | Value::Record(_)) {
                    collect(ev, &x, &sub, out, false)?;
                }
            }
        }
        other if top => {
            return Err(CliError::NotADerivation {
                what: if attr.is_empty() {
                    "the recipe's value".into()
                } else {
                    format!("attribute `{attr}`")
                },
                found: cbuild_lang::eval::article(other.type_name()),
            });
        }
        _ => {}
    }
    Ok(())
}
