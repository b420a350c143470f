//! `-A PATH`: dotted attribute paths such as `hello`, `pkgs.lib` or
//! `pkgs."c-ares"`, and selecting them in an evaluated value.

use cbuild_lang::{Evaluator, Value};

use super::error::CliError;

/// Splits an attribute path into its names. Names are identifiers or
/// double-quoted strings (for keys such as `"c-ares"`).
pub fn parse(attr: &str) -> Result<Vec<String>, CliError> {
    let bad = |reason| CliError::AttrSyntax {
        attr: attr.to_string(),
        reason,
    };
    let mut out = Vec::new();
    let mut rest = attr;
    loop {
        if let Some(after) = rest.strip_prefix('"') {
            let end = after
                .find('"')
                .ok_or_else(|| bad("an unterminated quoted name"))?;
            out.push(after[..end].to_string());
            rest = &after[end + 1..];
        } else {
            let end = rest.find('.').unwrap_or(rest.len());
            let name = &rest[..end];
            if name.is_empty() {
                return Err(bad("an empty name (two dots, or a dot at either end)"));
            }
            out.push(name.to_string());
            rest = &rest[end..];
        }
        if rest.is_empty() {
            return Ok(out);
        }
        rest = rest
            .strip_prefix('.')
            .ok_or_else(|| bad("names must be separated by `.`"))?;
        if rest.is_empty() {
            return Err(bad("an empty name (two dots, or a dot at either end)"));
        }
    }
}

/// Selects `attr` in `root`, forcing only the fields along the way.
pub fn select(
    ev: &mut Evaluator<'_>,
    root: &Value,
    attr: &str,
    file: &str,
) -> Result<Value, CliError> {
    let names = parse(attr)?;
    let mut v = root.clone();
    for (k, name) in names.iter().enumerate() {
        let so_far = names[..k].join(".");
        let here = if so_far.is_empty() {
            "the recipe's value".to_string()
        } else {
            format!("`{so_far}`")
        };
        let (fields, found): (Vec<String>, Option<Value>) = match &v {
            Value::Record(r) => (
                r.fields.keys().map(|k| k.to_string()).collect(),
                match r.fields.get(name.as_str()) {
                    Some(t) => Some(ev.force_thunk(t)?),
                    None => None,
                },
            ),
            Value::Derivation(d) => (
                cbuild_lang::Derivation::FIELDS
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                d.field(name),
            ),
            other => {
                return Err(CliError::Attr {
                    attr: attr.into(),
                    file: file.into(),
                    reason: format!(
                        "{here} is {}, not a record",
                        cbuild_lang::eval::article(other.type_name())
                    ),
                });
            }
        };
        let Some(found) = found else {
            return Err(CliError::Attr {
                attr: attr.into(),
                file: file.into(),
                reason: format!(
                    "{here} has no field `{name}`; {}",
                    if fields.is_empty() {
                        "it has no fields".to_string()
                    } else {
                        format!("its fields are {}", fields.join(", "))
                    }
                ),
            });
        };
        v = found;
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn paths() {
        assert_eq!(parse("a").unwrap(), ["a"]);
        assert_eq!(parse("a.b").unwrap(), ["a", "b"]);
        assert_eq!(parse("a.\"c-d\".e").unwrap(), ["a", "c-d", "e"]);
        for bad in ["", "a.", ".a", "a..b", "\"a", "\"a\"b"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
