//! `derivation { ... }`: validates the attributes of the language spec and
//! builds the [`Derivation`], collecting its inputs from string context.

use std::collections::{BTreeMap, BTreeSet};

use cbuild_lang::value::{Derivation as LangDrv, Record, Str, Value};
use cbuild_lang::{ContextElem, HostError};

use super::{Instantiator, parse_fixed_hash};
use crate::derivation::{Derivation, HostTool, StorePath, placeholder};

/// The attributes `derivation` accepts.
pub const ATTRIBUTES: [&str; 13] = [
    "args",
    "build_inputs",
    "builder",
    "env",
    "fixed_hash",
    "host_inputs",
    "meta",
    "name",
    "outputs",
    "run_inputs",
    "script",
    "timeout",
    "version",
];

/// Inputs found in string contexts.
#[derive(Default)]
struct Inputs {
    drvs: BTreeMap<StorePath, BTreeSet<String>>,
    sources: BTreeSet<StorePath>,
    tools: BTreeMap<String, HostTool>,
}

pub(super) fn derivation(
    inst: &mut Instantiator<'_>,
    attrs: &Record,
) -> Result<LangDrv, HostError> {
    for key in attrs.fields.keys() {
        if !ATTRIBUTES.contains(&&**key) {
            let mut help = String::new();
            if let Some(s) = cbuild_lang::diag::suggest(key, ATTRIBUTES.iter().copied()) {
                help.push_str(&format!("did you mean `{s}`? "));
            }
            help.push_str(&format!("the attributes are {}", ATTRIBUTES.join(", ")));
            return Err(
                HostError::new(format!("`derivation` has no attribute `{key}`")).with_help(help),
            );
        }
    }
    let get = |k: &str| attrs.get_forced(k).filter(|v| !matches!(v, Value::Null));
    let mut inputs = Inputs::default();

    let name = match get("name") {
        Some(Value::Str(s)) => s.text.to_string(),
        Some(other) => return Err(type_err("name", "a string", &other)),
        None => return Err(HostError::new("`derivation` needs a `name`")),
    };
    validate_drv_name(&name)?;
    let version = match get("version") {
        Some(Value::Str(s)) => Some(s.text.to_string()),
        Some(other) => return Err(type_err("version", "a string", &other)),
        None => None,
    };

    let outputs: Vec<String> = match get("outputs") {
        None => vec!["out".into()],
        Some(Value::List(l)) => {
            let mut out = Vec::new();
            for v in l.iter() {
                let Value::Str(s) = v else {
                    return Err(type_err("outputs", "a list of strings", v));
                };
                let o = s.text.to_string();
                let ok = o
                    .as_bytes()
                    .first()
                    .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
                    && o.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_');
                if !ok {
                    return Err(HostError::new(format!("output name `{o}` is not valid"))
                        .with_help("output names are identifiers: letters, digits and `_`"));
                }
                if out.contains(&o) {
                    return Err(HostError::new(format!("output `{o}` is listed twice")));
                }
                out.push(o);
            }
            if out.is_empty() {
                return Err(HostError::new(
                    "`outputs` is empty: a derivation needs at least one output",
                ));
            }
            out
        }
        Some(other) => return Err(type_err("outputs", "a list of strings", &other)),
    };

    let (builder, args) = match (get("script"), get("builder")) {
        (Some(_), Some(_)) => {
            return Err(HostError::new(
                "`derivation` takes `script` or `builder`, not both",
            ));
        }
        (Some(Value::Str(script)), None) => {
            if get("args").is_some() {
                return Err(HostError::new(
                    "`args` goes with `builder`, not with `script`",
                ));
            }
            inputs.add(inst, &script)?;
            let (sh, pin) = inst.tools.pin("sh")?;
            inputs.tools.insert("sh".into(), pin);
            (
                sh,
                vec!["-eu".to_string(), "-c".to_string(), script.text.to_string()],
            )
        }
        (Some(other), None) => return Err(type_err("script", "a string", &other)),
        (None, Some(b)) => {
            let b = env_string(inst, "builder", &b)?;
            inputs.add(inst, &b)?;
            let mut args = Vec::new();
            match get("args") {
                None => {}
                Some(Value::List(l)) => {
                    for v in l.iter() {
                        let s = env_string(inst, "args", v)?;
                        inputs.add(inst, &s)?;
                        args.push(s.text.to_string());
                    }
                }
                Some(other) => return Err(type_err("args", "a list", &other)),
            }
            (b.text.to_string(), args)
        }
        (None, None) => {
            return Err(
                HostError::new("`derivation` needs a `script` or a `builder`")
                    .with_help("script = ''...'' runs with the pinned host `sh`"),
            );
        }
    };

    let mut env = BTreeMap::new();
    match get("env") {
        None => {}
        Some(Value::Record(r)) => {
            for key in r.fields.keys() {
                if key.is_empty() || key.contains('=') || key.contains('\0') {
                    return Err(HostError::new(format!(
                        "`env` key `{key}` is not a valid variable name"
                    )));
                }
                if outputs.iter().any(|o| o == &**key) {
                    return Err(HostError::new(format!(
                        "`env.{key}` would hide the path of output `{key}`"
                    )));
                }
                let v = r.get_forced(key).unwrap_or(Value::Null);
                let s = env_string(inst, &format!("env.{key}"), &v)?;
                inputs.add(inst, &s)?;
                env.insert(key.to_string(), s.text.to_string());
            }
        }
        Some(other) => return Err(type_err("env", "a record", &other)),
    }
    for o in &outputs {
        env.insert(o.clone(), placeholder::own_output(o));
    }

    let mut path_inputs = Vec::new();
    for v in list(get("build_inputs"), "build_inputs")? {
        let s = match &v {
            Value::Derivation(d) => out_of(d)?,
            Value::Str(s) if s.context_iter().any(|c| matches!(c, ContextElem::Tool(_))) => {
                s.clone()
            }
            other => {
                return Err(HostError::new(format!(
                    "`build_inputs` holds derivations and host tools, found {}",
                    describe(other)
                ))
                .with_help("write host_tool(\"name\") for a program of this machine"));
            }
        };
        inputs.add(inst, &s)?;
        path_inputs.push(s.text.to_string());
    }
    let mut host_inputs = Vec::new();
    for v in list(get("host_inputs"), "host_inputs")? {
        // A derivation (its `out`) or one of its outputs as given by
        // `d.outputs.o`: exactly one output in the context, nothing added.
        let one_output = |s: &Str| {
            let mut it = s.context_iter();
            matches!(
                (it.next(), it.next()),
                (Some(ContextElem::Output { .. }), None)
            ) && s.text.starts_with('/')
                && !s.text[1..].contains('/')
        };
        let s = match &v {
            Value::Derivation(d) => out_of(d)?,
            Value::Str(s) if one_output(s) => s.clone(),
            _ => {
                return Err(HostError::new(format!(
                    "`host_inputs` holds derivations or their outputs (`d.outputs.dev`), found {}",
                    describe(&v)
                )));
            }
        };
        inputs.add(inst, &s)?;
        host_inputs.push(s.text.to_string());
    }
    let mut run_inputs = Vec::new();
    for v in list(get("run_inputs"), "run_inputs")? {
        let Value::Derivation(d) = &v else {
            return Err(HostError::new(format!(
                "`run_inputs` holds derivations, found {}",
                describe(&v)
            )));
        };
        run_inputs.push(
            inst.store
                .dir()
                .parse(&d.drv_path.text)
                .map_err(|e| HostError::new(e.to_string()))?,
        );
    }

    let fixed = match get("fixed_hash") {
        None => None,
        Some(Value::Str(s)) => Some(parse_fixed_hash(&s.text, "fixed_hash")?),
        Some(other) => return Err(type_err("fixed_hash", "a string", &other)),
    };

    let meta_value = get("meta").unwrap_or(Value::Null);
    let mut meta = match &meta_value {
        Value::Null => serde_json::json!({}),
        Value::Record(_) => to_json(inst, &meta_value, "meta")?,
        other => return Err(type_err("meta", "a record", other)),
    };
    // How long a build may run, in seconds: kept beside the meta, not in
    // the hash (a new limit rebuilds nothing).
    match get("timeout") {
        None | Some(Value::Null) => {}
        Some(Value::Int(n)) if n > 0 => meta["timeout"] = n.into(),
        Some(other) => return Err(type_err("timeout", "a number of seconds above 0", &other)),
    }

    let drv = Derivation {
        name,
        version,
        system: inst.system.clone(),
        builder,
        args,
        env,
        outputs,
        input_drvs: inputs.drvs,
        input_sources: inputs.sources,
        host_tools: inputs.tools,
        path_inputs,
        host_inputs,
        fixed,
    };
    inst.finish(drv, meta, run_inputs, meta_value, Value::Null)
}

impl Inputs {
    fn add(&mut self, inst: &Instantiator<'_>, s: &Str) -> Result<(), HostError> {
        let dir = inst.store.dir();
        for c in s.context_iter() {
            match c {
                ContextElem::Source(p) => {
                    let sp = dir.parse(p).map_err(|e| HostError::new(e.to_string()))?;
                    self.sources.insert(sp);
                }
                ContextElem::Output { drv, output } => {
                    let sp = dir.parse(drv).map_err(|e| HostError::new(e.to_string()))?;
                    self.drvs.entry(sp).or_default().insert(output.to_string());
                }
                ContextElem::Tool(name) => {
                    let pin = inst.tools.get(name).ok_or_else(|| {
                        HostError::new(format!("internal error: host tool `{name}` was not pinned"))
                    })?;
                    self.tools.insert(name.to_string(), pin.clone());
                    // A compiler runs the assembler and linker it was built
                    // with: they are pinned with it.
                    for (companion, pin) in inst.tools.companions(name) {
                        self.tools.insert(companion.clone(), pin.clone());
                    }
                }
            }
        }
        Ok(())
    }
}

/// A value as an environment string: strings as they are, ints in decimal,
/// `true` as `1` and `false` as the empty string, paths imported, derivations
/// as their `out` output.
fn env_string(inst: &mut Instantiator<'_>, what: &str, v: &Value) -> Result<Str, HostError> {
    use cbuild_lang::Host;
    Ok(match v {
        Value::Str(s) => s.clone(),
        Value::Int(n) => Str::plain(n.to_string()),
        Value::Bool(true) => Str::plain("1"),
        Value::Bool(false) => Str::plain(""),
        Value::Path(p) => inst.import_path(p)?,
        Value::Derivation(d) => out_of(d)?,
        other => {
            return Err(HostError::new(format!(
                "`{what}` must be a string, int, bool, path or derivation, found {}",
                describe(other)
            ))
            .with_help("join lists with join(\" \", list); convert records with to_json(record)"));
        }
    })
}

fn out_of(d: &LangDrv) -> Result<Str, HostError> {
    d.out()
        .cloned()
        .ok_or_else(|| HostError::new(format!("derivation `{}` has no outputs", d.name)))
}

fn list(v: Option<Value>, what: &str) -> Result<Vec<Value>, HostError> {
    match v {
        None => Ok(Vec::new()),
        Some(Value::List(l)) => Ok(l.as_ref().clone()),
        Some(other) => Err(type_err(what, "a list", &other)),
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Str(_) => "a plain string".into(),
        other => cbuild_lang::eval::article(other.type_name()),
    }
}

fn type_err(what: &str, want: &str, got: &Value) -> HostError {
    HostError::new(format!(
        "`{what}` of `derivation` must be {want}, found {}",
        cbuild_lang::eval::article(got.type_name())
    ))
}

/// Derivation names: `[A-Za-z0-9+._-]`, 1 to 200 characters, not starting
/// with `.`.
fn validate_drv_name(name: &str) -> Result<(), HostError> {
    use crate::derivation::store_path::{MAX_DRV_NAME_LEN, validate_name};
    if name.len() > MAX_DRV_NAME_LEN {
        return Err(HostError::new(format!(
            "`name` of `derivation` is {} characters long; the limit is {MAX_DRV_NAME_LEN}",
            name.len()
        )));
    }
    validate_name(name).map_err(|e| {
        HostError::new(format!("`name` of `derivation`: {e}")).with_help(
            "names use letters, digits and `+ . _ -`, 1 to 200 characters, not starting with `.`",
        )
    })
}

/// `meta` as JSON: paths are imported (a license file must reach the
/// package), derivations become their `.drv` path.
fn to_json(
    inst: &mut Instantiator<'_>,
    v: &Value,
    at: &str,
) -> Result<serde_json::Value, HostError> {
    use cbuild_lang::Host;
    Ok(match v {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => (*b).into(),
        Value::Int(n) => (*n).into(),
        Value::Str(s) => s.text.to_string().into(),
        Value::Path(p) => inst.import_path(p)?.text.to_string().into(),
        Value::Derivation(d) => d.drv_path.text.to_string().into(),
        Value::List(l) => serde_json::Value::Array(
            l.iter()
                .enumerate()
                .map(|(k, x)| to_json(inst, x, &format!("{at}[{k}]")))
                .collect::<Result<_, _>>()?,
        ),
        Value::Record(r) => {
            let mut m = serde_json::Map::new();
            for k in r.fields.keys() {
                let x = r.get_forced(k).unwrap_or(Value::Null);
                m.insert(k.to_string(), to_json(inst, &x, &format!("{at}.{k}"))?);
            }
            serde_json::Value::Object(m)
        }
        Value::Function(_) => {
            return Err(HostError::new(format!(
                "`{at}` holds a function, which meta cannot keep"
            )));
        }
    })
}
