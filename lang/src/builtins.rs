//! The builtin functions: their names and parameters, and their behaviour.
//!
//! Every builtin is a global name that a recipe may shadow. Builtins take
//! positional and named arguments exactly as closures do; the parameter list
//! of each is in [`Builtin::params`]. The six that touch the outside world
//! (`derivation`, `source`, `fetch`, `host_tool`, `import`, `read_file`)
//! delegate to the [`crate::Host`].

use std::rc::Rc;

use crate::eval::{EResult, Evaluator};
use crate::span::Span;
use crate::value::{ContextBuilder, Derivation, Function, Record, Str, Thunk, Value};

/// A builtin function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Builtin {
    Derivation,
    Source,
    Fetch,
    HostTool,
    Import,
    ReadFile,
    Len,
    Keys,
    Values,
    Has,
    Get,
    Map,
    Filter,
    Fold,
    Concat,
    Join,
    Split,
    Replace,
    StartsWith,
    EndsWith,
    ToString,
    ToJson,
    FromJson,
    Sort,
    Range,
    Trace,
    Error,
}

/// Largest list `range` builds, so that a typo cannot exhaust memory.
pub const MAX_RANGE: i64 = 10_000_000;

impl Builtin {
    /// Every builtin, in the order of the global table.
    pub const ALL: [Builtin; 27] = [
        Builtin::Derivation,
        Builtin::Source,
        Builtin::Fetch,
        Builtin::HostTool,
        Builtin::Import,
        Builtin::ReadFile,
        Builtin::Len,
        Builtin::Keys,
        Builtin::Values,
        Builtin::Has,
        Builtin::Get,
        Builtin::Map,
        Builtin::Filter,
        Builtin::Fold,
        Builtin::Concat,
        Builtin::Join,
        Builtin::Split,
        Builtin::Replace,
        Builtin::StartsWith,
        Builtin::EndsWith,
        Builtin::ToString,
        Builtin::ToJson,
        Builtin::FromJson,
        Builtin::Sort,
        Builtin::Range,
        Builtin::Trace,
        Builtin::Error,
    ];

    /// The global name.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Derivation => "derivation",
            Builtin::Source => "source",
            Builtin::Fetch => "fetch",
            Builtin::HostTool => "host_tool",
            Builtin::Import => "import",
            Builtin::ReadFile => "read_file",
            Builtin::Len => "len",
            Builtin::Keys => "keys",
            Builtin::Values => "values",
            Builtin::Has => "has",
            Builtin::Get => "get",
            Builtin::Map => "map",
            Builtin::Filter => "filter",
            Builtin::Fold => "fold",
            Builtin::Concat => "concat",
            Builtin::Join => "join",
            Builtin::Split => "split",
            Builtin::Replace => "replace",
            Builtin::StartsWith => "starts_with",
            Builtin::EndsWith => "ends_with",
            Builtin::ToString => "to_string",
            Builtin::ToJson => "to_json",
            Builtin::FromJson => "from_json",
            Builtin::Sort => "sort",
            Builtin::Range => "range",
            Builtin::Trace => "trace",
            Builtin::Error => "error",
        }
    }

    /// Parameter names and, for optional ones, the default as shown in
    /// messages. Optional parameters come last.
    pub fn params(self) -> &'static [(&'static str, Option<&'static str>)] {
        match self {
            Builtin::Derivation => &[("attrs", None)],
            Builtin::Source => &[
                ("path", None),
                ("exclude", Some("[]")),
                ("gitignore", Some("false")),
                ("recipes", Some("false")),
            ],
            Builtin::Fetch => &[("url", None), ("hash", None), ("unpack", Some("false"))],
            Builtin::HostTool => &[("name", None)],
            Builtin::Import | Builtin::ReadFile => &[("path", None)],
            Builtin::Len | Builtin::ToString | Builtin::ToJson => &[("value", None)],
            Builtin::Keys | Builtin::Values => &[("record", None)],
            Builtin::Has => &[("record", None), ("key", None)],
            Builtin::Get => &[("record", None), ("key", None), ("default", Some("error"))],
            Builtin::Map | Builtin::Filter => &[("f", None), ("list", None)],
            Builtin::Fold => &[("f", None), ("init", None), ("list", None)],
            Builtin::Concat => &[("lists", None)],
            Builtin::Join => &[("sep", None), ("list", None)],
            Builtin::Split => &[("sep", None), ("string", None)],
            Builtin::Replace => &[("string", None), ("from", None), ("to", None)],
            Builtin::StartsWith => &[("string", None), ("prefix", None)],
            Builtin::EndsWith => &[("string", None), ("suffix", None)],
            Builtin::FromJson => &[("string", None)],
            Builtin::Sort => &[("list", None), ("less", Some("null"))],
            Builtin::Range => &[("from", None), ("to", None)],
            Builtin::Trace => &[("message", None), ("value", None)],
            Builtin::Error => &[("message", None)],
        }
    }

    /// `name(a, b = default)`, for messages.
    pub fn signature(self) -> String {
        let params: Vec<String> = self
            .params()
            .iter()
            .map(|(n, d)| match d {
                Some(d) => format!("{n} = {d}"),
                None => (*n).to_string(),
            })
            .collect();
        format!("{}({})", self.name(), params.join(", "))
    }
}

/// An argument after binding: its value and where it was written.
pub(crate) type ArgVal = Option<(Value, Span)>;

impl Evaluator<'_> {
    /// Runs a builtin on bound arguments (`args[i]` is parameter `i`;
    /// required ones are present).
    pub(crate) fn call_builtin(
        &mut self,
        b: Builtin,
        args: Vec<ArgVal>,
        call: Span,
    ) -> EResult<Value> {
        let mut it = args.into_iter();
        let mut next = || it.next().flatten();
        let fname = b.name();
        macro_rules! arg {
            () => {
                next().expect("required arguments are bound before the call")
            };
        }
        match b {
            Builtin::Derivation => {
                let (v, sp) = arg!();
                let rec = self.expect_record(&v, sp, "attrs", fname)?;
                self.force_deep(&v, sp)?;
                let mut d: Derivation = self
                    .host
                    .derivation(&rec)
                    .map_err(|e| self.host_error(e, call))?;
                d.span = Some(call);
                self.record_derivation(call, &d.drv_path.text);
                // The attributes as given: the evaluator's own record, not a
                // copy the host would have to make.
                d.attrs = v.clone();
                Ok(Value::Derivation(Rc::new(d)))
            }
            Builtin::Source => {
                let (p, psp) = arg!();
                let path = self.expect_path(&p, psp, "path", fname)?;
                let exclude = match next() {
                    Some((v, sp)) => {
                        let list = self.expect_list(&v, sp, "exclude", fname)?;
                        let mut out = Vec::new();
                        for x in list.iter() {
                            out.push(self.expect_str(x, sp, "exclude", fname)?.text.to_string());
                        }
                        out
                    }
                    None => Vec::new(),
                };
                let gitignore = match next() {
                    Some((v, sp)) => self.expect_bool(&v, sp, "gitignore", fname)?,
                    None => false,
                };
                let recipes = match next() {
                    Some((v, sp)) => self.expect_bool(&v, sp, "recipes", fname)?,
                    None => false,
                };
                let s = self
                    .host
                    .source(&path, &exclude, gitignore, recipes)
                    .map_err(|e| self.host_error(e, call))?;
                Ok(Value::Str(s))
            }
            Builtin::Fetch => {
                let (u, usp) = arg!();
                let url = self.expect_str(&u, usp, "url", fname)?;
                let (h, hsp) = arg!();
                let hash = self.expect_str(&h, hsp, "hash", fname)?;
                let unpack = match next() {
                    Some((v, sp)) => self.expect_bool(&v, sp, "unpack", fname)?,
                    None => false,
                };
                let mut d = self
                    .host
                    .fetch(&url.text, &hash.text, unpack)
                    .map_err(|e| self.host_error(e, call))?;
                d.span = Some(call);
                Ok(Value::Derivation(Rc::new(d)))
            }
            Builtin::HostTool => {
                let (n, sp) = arg!();
                let name = self.expect_str(&n, sp, "name", fname)?;
                let s = self
                    .host
                    .host_tool(&name.text)
                    .map_err(|e| self.host_error(e, call))?;
                Ok(Value::Str(s))
            }
            Builtin::Import => {
                let (p, sp) = arg!();
                let path = self.expect_path(&p, sp, "path", fname)?;
                self.record_read(call, &path);
                self.import(&path, call)
            }
            Builtin::ReadFile => {
                let (p, sp) = arg!();
                let path = self.expect_path(&p, sp, "path", fname)?;
                self.record_read(call, &path);
                let text = self
                    .host
                    .read_file(&path)
                    .map_err(|e| self.host_error(e, call))?;
                Ok(Value::string(text))
            }
            Builtin::Len => {
                let (v, sp) = arg!();
                let n = match &v {
                    Value::Str(s) => s.text.chars().count(),
                    Value::List(l) => l.len(),
                    Value::Record(r) => r.fields.len(),
                    other => {
                        return Err(self.type_error(
                            sp,
                            format!(
                                "`len` takes a string, list or record, found {}",
                                other.type_name()
                            ),
                            other.type_name(),
                        ));
                    }
                };
                Ok(Value::Int(n as i64))
            }
            Builtin::Keys | Builtin::Values => {
                let (v, sp) = arg!();
                let r = self.expect_record(&v, sp, "record", fname)?;
                if b == Builtin::Keys {
                    Ok(Value::List(Rc::new(
                        r.fields.keys().map(|k| Value::string(k.clone())).collect(),
                    )))
                } else {
                    let mut out = Vec::with_capacity(r.fields.len());
                    for t in r.fields.values() {
                        out.push(self.force(t, sp)?);
                    }
                    Ok(Value::List(Rc::new(out)))
                }
            }
            Builtin::Has => {
                let (v, sp) = arg!();
                let (k, ksp) = arg!();
                let key = self.expect_str(&k, ksp, "key", fname)?;
                match &v {
                    Value::Derivation(d) => Ok(Value::Bool(d.field(&key.text).is_some())),
                    _ => {
                        let r = self.expect_record(&v, sp, "record", fname)?;
                        Ok(Value::Bool(r.fields.contains_key(&key.text)))
                    }
                }
            }
            Builtin::Get => {
                let (v, sp) = arg!();
                let (k, ksp) = arg!();
                let key = self.expect_str(&k, ksp, "key", fname)?;
                let default = next();
                let found = match &v {
                    Value::Derivation(d) => d.field(&key.text).map(Thunk::Ready),
                    _ => {
                        let r = self.expect_record(&v, sp, "record", fname)?;
                        r.fields.get(&key.text).cloned()
                    }
                };
                match (found, default) {
                    (Some(t), _) => self.force(&t, ksp),
                    (None, Some((d, _))) => Ok(d),
                    (None, None) => Err(self
                        .missing_field(&v, &key.text, ksp)
                        .with_help_suffix("or give a default: get(record, key, default)")),
                }
            }
            Builtin::Map | Builtin::Filter => {
                let (f, fsp) = arg!();
                self.expect_function(&f, fsp, "f", fname)?;
                let (l, lsp) = arg!();
                let list = self.expect_list(&l, lsp, "list", fname)?;
                self.check_size(list.len(), "list", call)?;
                let mut out = Vec::with_capacity(list.len());
                for x in list.iter() {
                    let r = self.call_value(&f, vec![(x.clone(), lsp)], call, "<fn>")?;
                    if b == Builtin::Map {
                        out.push(r);
                    } else if self.expect_bool_result(&r, call, "filter")? {
                        out.push(x.clone());
                    }
                }
                Ok(Value::List(Rc::new(out)))
            }
            Builtin::Fold => {
                let (f, fsp) = arg!();
                self.expect_function(&f, fsp, "f", fname)?;
                let (mut acc, _) = arg!();
                let (l, lsp) = arg!();
                let list = self.expect_list(&l, lsp, "list", fname)?;
                for x in list.iter() {
                    acc = self.call_value(&f, vec![(acc, call), (x.clone(), lsp)], call, "<fn>")?;
                }
                Ok(acc)
            }
            Builtin::Concat => {
                let (l, lsp) = arg!();
                let list = self.expect_list(&l, lsp, "lists", fname)?;
                let mut out = Vec::new();
                for x in list.iter() {
                    match x {
                        Value::List(inner) => {
                            self.check_size(out.len() + inner.len(), "list", call)?;
                            out.extend(inner.iter().cloned());
                        }
                        other => {
                            return Err(self
                                .type_error(
                                    lsp,
                                    format!(
                                        "`concat` takes a list of lists, found {} in the list",
                                        crate::eval::article(other.type_name())
                                    ),
                                    "list with a non-list element",
                                )
                                .with_help("to join strings, use join(sep, list)"));
                        }
                    }
                }
                Ok(Value::List(Rc::new(out)))
            }
            Builtin::Join => {
                let (s, ssp) = arg!();
                let sep = self.expect_str(&s, ssp, "sep", fname)?;
                let (l, lsp) = arg!();
                let list = self.expect_list(&l, lsp, "list", fname)?;
                let mut text = String::new();
                let mut ctx = ContextBuilder::default();
                ctx.add(&sep);
                for (k, x) in list.iter().enumerate() {
                    if k > 0 {
                        text.push_str(&sep.text);
                    }
                    let piece = self.coerce_interp(x, lsp)?;
                    self.check_size(text.len() + piece.text.len(), "string", call)?;
                    text.push_str(&piece.text);
                    ctx.add(&piece);
                }
                Ok(Value::Str(Str {
                    text: text.into(),
                    context: ctx.finish(),
                }))
            }
            Builtin::Split => {
                let (s, ssp) = arg!();
                let sep = self.expect_str(&s, ssp, "sep", fname)?;
                let (v, vsp) = arg!();
                let string = self.expect_str(&v, vsp, "string", fname)?;
                if sep.text.is_empty() {
                    return Err(self.error(
                        "eval::bad_argument",
                        "`split` needs a non-empty separator",
                        ssp,
                        "empty separator",
                    ));
                }
                Ok(Value::List(Rc::new(
                    string
                        .text
                        .split(&*sep.text)
                        .map(|p| {
                            Value::Str(Str {
                                text: p.into(),
                                context: string.context.clone(),
                            })
                        })
                        .collect(),
                )))
            }
            Builtin::Replace => {
                let (v, vsp) = arg!();
                let string = self.expect_str(&v, vsp, "string", fname)?;
                let (f, fsp) = arg!();
                let from = self.expect_str(&f, fsp, "from", fname)?;
                let (t, tsp) = arg!();
                let to = self.expect_str(&t, tsp, "to", fname)?;
                if from.text.is_empty() {
                    return Err(self.error(
                        "eval::bad_argument",
                        "`replace` needs a non-empty string to replace",
                        fsp,
                        "empty",
                    ));
                }
                let mut ctx = ContextBuilder::default();
                ctx.add(&string);
                if string.text.contains(&*from.text) {
                    ctx.add(&to);
                }
                let growth = to.text.len().saturating_sub(from.text.len());
                let count = if growth > 0 {
                    string.text.matches(&*from.text).count()
                } else {
                    0
                };
                self.check_size(string.text.len() + growth * count, "string", call)?;
                Ok(Value::Str(Str {
                    text: string.text.replace(&*from.text, &to.text).into(),
                    context: ctx.finish(),
                }))
            }
            Builtin::StartsWith | Builtin::EndsWith => {
                let (v, vsp) = arg!();
                let string = self.expect_str(&v, vsp, "string", fname)?;
                let (a, asp) = arg!();
                let affix = self.expect_str(
                    &a,
                    asp,
                    if b == Builtin::StartsWith {
                        "prefix"
                    } else {
                        "suffix"
                    },
                    fname,
                )?;
                Ok(Value::Bool(if b == Builtin::StartsWith {
                    string.text.starts_with(&*affix.text)
                } else {
                    string.text.ends_with(&*affix.text)
                }))
            }
            Builtin::ToString => {
                let (v, sp) = arg!();
                Ok(Value::Str(match &v {
                    Value::Str(s) => s.clone(),
                    Value::Int(n) => Str::plain(n.to_string()),
                    Value::Bool(b) => Str::plain(if *b { "true" } else { "false" }),
                    Value::Null => Str::plain("null"),
                    Value::Path(p) => Str::plain(p.to_string_lossy().into_owned()),
                    Value::Derivation(_) => self.coerce_interp(&v, sp)?,
                    other => {
                        return Err(self
                            .type_error(
                                sp,
                                format!("cannot convert a {} to a string", other.type_name()),
                                other.type_name(),
                            )
                            .with_help("to_json(value) turns lists and records into text"));
                    }
                }))
            }
            Builtin::ToJson => {
                let (v, sp) = arg!();
                let mut out = String::new();
                let mut ctx = ContextBuilder::default();
                self.write_json(&v, sp, &mut out, &mut ctx)?;
                Ok(Value::Str(Str {
                    text: out.into(),
                    context: ctx.finish(),
                }))
            }
            Builtin::FromJson => {
                let (v, sp) = arg!();
                let s = self.expect_str(&v, sp, "string", fname)?;
                self.parse_json(&s.text, sp)
            }
            Builtin::Sort => {
                let (l, lsp) = arg!();
                let list = self.expect_list(&l, lsp, "list", fname)?;
                let less = match next() {
                    Some((Value::Null, _)) | None => None,
                    Some((f, fsp)) => {
                        self.expect_function(&f, fsp, "less", fname)?;
                        Some(f)
                    }
                };
                self.sort(&list, less, lsp, call)
            }
            Builtin::Range => {
                let (a, asp) = arg!();
                let from = self.expect_int(&a, asp, "from", fname)?;
                let (z, zsp) = arg!();
                let to = self.expect_int(&z, zsp, "to", fname)?;
                let n = (to as i128 - from as i128).max(0);
                if n > MAX_RANGE as i128 {
                    return Err(self.error(
                        "eval::range_too_large",
                        format!(
                            "range({from}, {to}) would have {n} elements, more than {MAX_RANGE}"
                        ),
                        call,
                        "too large",
                    ));
                }
                self.check_size(n as usize, "list", call)?;
                Ok(Value::List(Rc::new(
                    (from..to.max(from)).map(Value::Int).collect(),
                )))
            }
            Builtin::Trace => {
                let (m, msp) = arg!();
                let (v, _) = arg!();
                let text = match &m {
                    Value::Str(s) => s.text.to_string(),
                    other => {
                        let mut out = String::new();
                        let mut ctx = ContextBuilder::default();
                        self.write_json(other, msp, &mut out, &mut ctx)?;
                        out
                    }
                };
                let loc = self.sources.location(call);
                self.host.trace(&loc, &text);
                Ok(v)
            }
            Builtin::Error => {
                let (m, msp) = arg!();
                let msg = self.expect_str(&m, msp, "message", fname)?;
                Err(self.error(
                    "eval::error_called",
                    msg.text.to_string(),
                    call,
                    "error raised here",
                ))
            }
        }
    }

    fn sort(
        &mut self,
        list: &Rc<Vec<Value>>,
        less: Option<Value>,
        lsp: Span,
        call: Span,
    ) -> EResult<Value> {
        let mut items: Vec<Value> = list.as_ref().clone();
        match less {
            None => {
                let kind = items.first().map(Value::type_name);
                for x in &items {
                    let ok = matches!(
                        (kind, x),
                        (Some("int"), Value::Int(_)) | (Some("string"), Value::Str(_))
                    );
                    if !ok {
                        return Err(self
                            .type_error(
                                lsp,
                                match kind {
                                    Some(k @ ("int" | "string")) => format!(
                                        "`sort` without `less` sorts a list of only ints or only strings, found {} and {}",
                                        crate::eval::article(k),
                                        crate::eval::article(x.type_name())
                                    ),
                                    _ => format!(
                                        "`sort` without `less` sorts ints or strings, found {}",
                                        crate::eval::article(x.type_name())
                                    ),
                                },
                                "mixed or unsortable list",
                            )
                            .with_help("pass `less = fn(a, b) => ...` to sort other values"));
                    }
                }
                items.sort_by(|a, b| match (a, b) {
                    (Value::Int(x), Value::Int(y)) => x.cmp(y),
                    (Value::Str(x), Value::Str(y)) => x.text.cmp(&y.text),
                    _ => std::cmp::Ordering::Equal,
                });
            }
            Some(f) => {
                items = self.merge_sort(items, &f, lsp, call)?;
            }
        }
        Ok(Value::List(Rc::new(items)))
    }

    /// A stable merge sort through the user's `less`, called once per
    /// comparison. Written out because `slice::sort_by` may panic when the
    /// comparison is not a total order, and a user's function need not be.
    fn merge_sort(
        &mut self,
        items: Vec<Value>,
        less: &Value,
        lsp: Span,
        call: Span,
    ) -> EResult<Vec<Value>> {
        if items.len() <= 1 {
            return Ok(items);
        }
        let mut right = items;
        let left = right.drain(..right.len() / 2).collect::<Vec<_>>();
        let left = self.merge_sort(left, less, lsp, call)?;
        let right = self.merge_sort(right, less, lsp, call)?;
        let mut out = Vec::with_capacity(left.len() + right.len());
        let (mut l, mut r) = (left.into_iter().peekable(), right.into_iter().peekable());
        while let (Some(a), Some(b)) = (l.peek(), r.peek()) {
            // Take from the right only when it is strictly less: stable.
            let res =
                self.call_value(less, vec![(b.clone(), lsp), (a.clone(), lsp)], call, "less")?;
            if self.expect_bool_result(&res, call, "sort")? {
                out.extend(r.next());
            } else {
                out.extend(l.next());
            }
        }
        out.extend(l);
        out.extend(r);
        Ok(out)
    }

    fn expect_bool_result(&self, v: &Value, call: Span, what: &str) -> EResult<bool> {
        match v {
            Value::Bool(b) => Ok(*b),
            other => Err(self.type_error(
                call,
                format!(
                    "the function given to `{what}` must return a bool, it returned {}",
                    crate::eval::article(other.type_name())
                ),
                format!("in this call to `{what}`"),
            )),
        }
    }

    /// A `record` argument; derivations are not records.
    pub(crate) fn expect_record(
        &self,
        v: &Value,
        sp: Span,
        param: &str,
        func: &str,
    ) -> EResult<Rc<Record>> {
        match v {
            Value::Record(r) => Ok(r.clone()),
            other => Err(self.arg_type(sp, "a record", other, param, func)),
        }
    }

    pub(crate) fn expect_list(
        &self,
        v: &Value,
        sp: Span,
        param: &str,
        func: &str,
    ) -> EResult<Rc<Vec<Value>>> {
        match v {
            Value::List(l) => Ok(l.clone()),
            other => Err(self.arg_type(sp, "a list", other, param, func)),
        }
    }

    pub(crate) fn expect_str(&self, v: &Value, sp: Span, param: &str, func: &str) -> EResult<Str> {
        match v {
            Value::Str(s) => Ok(s.clone()),
            other => Err(self.arg_type(sp, "a string", other, param, func)),
        }
    }

    fn expect_int(&self, v: &Value, sp: Span, param: &str, func: &str) -> EResult<i64> {
        match v {
            Value::Int(n) => Ok(*n),
            other => Err(self.arg_type(sp, "an int", other, param, func)),
        }
    }

    fn expect_bool(&self, v: &Value, sp: Span, param: &str, func: &str) -> EResult<bool> {
        match v {
            Value::Bool(b) => Ok(*b),
            other => Err(self.arg_type(sp, "a bool", other, param, func)),
        }
    }

    fn expect_path(
        &self,
        v: &Value,
        sp: Span,
        param: &str,
        func: &str,
    ) -> EResult<std::path::PathBuf> {
        match v {
            Value::Path(p) => Ok(p.to_path_buf()),
            other => Err(self
                .arg_type(sp, "a path", other, param, func)
                .with_help("write a path literal such as ./file or ../dir (not a string)")),
        }
    }

    fn expect_function(&self, v: &Value, sp: Span, param: &str, func: &str) -> EResult<()> {
        match v {
            Value::Function(_) => Ok(()),
            other => Err(self.arg_type(sp, "a function", other, param, func)),
        }
    }

    /// A closure or builtin as a value, for the global table.
    pub(crate) fn builtin_value(b: Builtin) -> Value {
        Value::Function(Rc::new(Function::Builtin(b)))
    }
}
