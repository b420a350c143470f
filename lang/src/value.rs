//! Run-time values: what expressions evaluate to.
//!
//! Records hold [`Thunk`]s so that a field is evaluated only when used (the
//! spec's minimum laziness); everything else is strict. Strings carry a
//! [`Context`]: the set of store objects they mention, which `derivation` turns
//! into inputs.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::rc::Rc;

use crate::ast::{Expr, FnDef};
use crate::builtins::Builtin;
use crate::span::Span;

/// A value of the language.
#[derive(Clone, Debug)]
pub enum Value {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A 64-bit signed integer.
    Int(i64),
    /// A string with its context.
    Str(Str),
    /// An absolute, lexically normalised path.
    Path(Rc<Path>),
    /// A list.
    List(Rc<Vec<Value>>),
    /// A record with fields in sorted key order.
    Record(Rc<Record>),
    /// A closure or a builtin.
    Function(Rc<Function>),
    /// A derivation made by the host.
    Derivation(Rc<Derivation>),
}

impl Value {
    /// The type's name as error messages show it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Str(_) => "string",
            Value::Path(_) => "path",
            Value::List(_) => "list",
            Value::Record(_) => "record",
            Value::Function(_) => "function",
            Value::Derivation(_) => "derivation",
        }
    }

    /// A string value without context.
    pub fn string(s: impl Into<Rc<str>>) -> Value {
        Value::Str(Str::plain(s))
    }
}

/// One store object a string mentions. The host decides what the strings
/// inside mean; the language only carries and merges them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ContextElem {
    /// A source imported into the store, by its store path.
    Source(Rc<str>),
    /// An output of a derivation: the `.drv` path and the output name.
    Output {
        /// The derivation's `.drv` store path.
        drv: Rc<str>,
        /// The output name.
        output: Rc<str>,
    },
    /// A pinned host tool, identified by the host.
    Tool(Rc<str>),
}

/// The set of store objects a string mentions: sorted, without repeats.
/// Most strings with a context mention one or two objects, so a sorted
/// vector is the set (a `BTreeSet` allocated a node of eleven slots for
/// each, a fifth of a large evaluation's heap).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context(Vec<ContextElem>);

impl Context {
    /// The empty set.
    pub fn new() -> Context {
        Context(Vec::new())
    }

    /// Adds `e` unless it is there already.
    pub fn insert(&mut self, e: ContextElem) {
        if let Err(at) = self.0.binary_search(&e) {
            // Grown one at a time: most sets stay at one or two elements.
            self.0.reserve_exact(1);
            self.0.insert(at, e);
        }
    }

    /// The elements in order.
    pub fn iter(&self) -> std::slice::Iter<'_, ContextElem> {
        self.0.iter()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many elements it has.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl Extend<ContextElem> for Context {
    fn extend<I: IntoIterator<Item = ContextElem>>(&mut self, items: I) {
        for e in items {
            self.insert(e);
        }
    }
}

impl FromIterator<ContextElem> for Context {
    fn from_iter<I: IntoIterator<Item = ContextElem>>(items: I) -> Context {
        let mut c = Context::new();
        c.extend(items);
        c
    }
}

impl<'a> IntoIterator for &'a Context {
    type Item = &'a ContextElem;
    type IntoIter = std::slice::Iter<'a, ContextElem>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// A string and its context.
#[derive(Clone, Debug)]
pub struct Str {
    /// The text.
    pub text: Rc<str>,
    /// The store objects it mentions (`None` when empty, the common case).
    pub context: Option<Rc<Context>>,
}

impl Str {
    /// A string without context.
    pub fn plain(text: impl Into<Rc<str>>) -> Str {
        Str {
            text: text.into(),
            context: None,
        }
    }

    /// A string with the given context.
    pub fn with_context(text: impl Into<Rc<str>>, context: Context) -> Str {
        Str {
            text: text.into(),
            context: if context.is_empty() {
                None
            } else {
                Some(Rc::new(context))
            },
        }
    }

    /// The context elements, possibly none.
    pub fn context_iter(&self) -> impl Iterator<Item = &ContextElem> {
        self.context.iter().flat_map(|c| c.iter())
    }
}

/// Merges context sets while building a string. A string built from parts
/// of which one has a context shares that part's set.
#[derive(Default)]
pub(crate) enum ContextBuilder {
    #[default]
    Empty,
    Shared(Rc<Context>),
    Merged(Context),
}

impl ContextBuilder {
    pub(crate) fn add(&mut self, s: &Str) {
        let Some(c) = &s.context else { return };
        *self = match std::mem::take(self) {
            ContextBuilder::Empty => ContextBuilder::Shared(c.clone()),
            ContextBuilder::Shared(first) if Rc::ptr_eq(&first, c) || *first == **c => {
                ContextBuilder::Shared(first)
            }
            ContextBuilder::Shared(first) => {
                let mut merged = (*first).clone();
                merged.extend(c.iter().cloned());
                ContextBuilder::Merged(merged)
            }
            ContextBuilder::Merged(mut merged) => {
                merged.extend(c.iter().cloned());
                ContextBuilder::Merged(merged)
            }
        };
    }

    pub(crate) fn finish(self) -> Option<Rc<Context>> {
        match self {
            ContextBuilder::Empty => None,
            ContextBuilder::Shared(c) => (!c.is_empty()).then_some(c),
            ContextBuilder::Merged(c) => (!c.is_empty()).then(|| Rc::new(c)),
        }
    }
}

/// A record: fields in sorted key order.
#[derive(Clone, Debug, Default)]
pub struct Record {
    /// The fields.
    pub fields: Fields,
}

/// A record's fields, sorted by name, without repeats. Most records hold a
/// handful of fields, so a sorted vector is the map (a `BTreeMap` allocated
/// a node of eleven slots for each record, the largest part of a package
/// set's evaluated heap).
#[derive(Clone, Debug, Default)]
pub struct Fields(Vec<(Rc<str>, Thunk)>);

impl Fields {
    /// From pairs in any order; of two with the same name the later wins.
    pub fn from_pairs(mut pairs: Vec<(Rc<str>, Thunk)>) -> Fields {
        // Stable: equal names keep their order, and the last one is kept.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(Rc<str>, Thunk)> = Vec::with_capacity(pairs.len());
        for p in pairs {
            match out.last_mut() {
                Some(last) if last.0 == p.0 => *last = p,
                _ => out.push(p),
            }
        }
        out.shrink_to_fit();
        Fields(out)
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| (**k).cmp(key))
    }

    /// The field `key`.
    pub fn get(&self, key: &str) -> Option<&Thunk> {
        self.find(key).ok().map(|i| &self.0[i].1)
    }

    /// Whether there is a field `key`.
    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// Sets `key`, returning what it held.
    pub fn insert(&mut self, key: Rc<str>, value: Thunk) -> Option<Thunk> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (key, value));
                None
            }
        }
    }

    /// How many fields there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The fields in name order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&Rc<str>, &Thunk)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// The names in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &Rc<str>> {
        self.0.iter().map(|(k, _)| k)
    }

    /// The values in name order.
    pub fn values(&self) -> impl ExactSizeIterator<Item = &Thunk> {
        self.0.iter().map(|(_, v)| v)
    }
}

/// `fields["name"]`, like a map's: the field must be there.
impl std::ops::Index<&str> for Fields {
    type Output = Thunk;
    fn index(&self, key: &str) -> &Thunk {
        match self.get(key) {
            Some(t) => t,
            None => panic!("no field `{key}`"),
        }
    }
}

impl FromIterator<(Rc<str>, Thunk)> for Fields {
    fn from_iter<I: IntoIterator<Item = (Rc<str>, Thunk)>>(pairs: I) -> Fields {
        Fields::from_pairs(pairs.into_iter().collect())
    }
}

impl Record {
    /// The value of a field that has already been evaluated. The host only
    /// sees records the evaluator forced completely, so there this is total.
    pub fn get_forced(&self, key: &str) -> Option<Value> {
        self.fields.get(key).and_then(Thunk::forced)
    }
}

/// A value that may not have been computed yet.
#[derive(Clone)]
pub enum Thunk {
    /// Already a value.
    Ready(Value),
    /// Computed on first use.
    Lazy(Rc<RefCell<ThunkState>>),
}

/// The state of a lazy thunk.
pub enum ThunkState {
    /// Not evaluated yet: the code and its environment.
    Pending(Rc<Expr>, Env),
    /// Being evaluated: reaching it again means a value depends on itself.
    Forcing,
    /// Evaluated.
    Done(Value),
}

impl Thunk {
    /// A thunk for `expr` in `env`.
    pub fn lazy(expr: Rc<Expr>, env: Env) -> Thunk {
        Thunk::Lazy(Rc::new(RefCell::new(ThunkState::Pending(expr, env))))
    }

    /// The value, if computed.
    pub fn forced(&self) -> Option<Value> {
        match self {
            Thunk::Ready(v) => Some(v.clone()),
            Thunk::Lazy(cell) => match &*cell.borrow() {
                ThunkState::Done(v) => Some(v.clone()),
                _ => None,
            },
        }
    }
}

impl fmt::Debug for Thunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.forced() {
            Some(v) => v.fmt(f),
            None => f.write_str("<thunk>"),
        }
    }
}

/// A scope at run time: the values of one `let` or one call's parameters,
/// and the enclosing scope.
#[derive(Clone, Default)]
pub struct Env(pub(crate) Option<Rc<Frame>>);

pub(crate) struct Frame {
    pub(crate) slots: RefCell<Vec<Thunk>>,
    pub(crate) parent: Env,
}

impl Env {
    pub(crate) fn push(&self, capacity: usize) -> Env {
        Env(Some(Rc::new(Frame {
            slots: RefCell::new(Vec::with_capacity(capacity)),
            parent: self.clone(),
        })))
    }

    pub(crate) fn weak(&self) -> std::rc::Weak<Frame> {
        Rc::downgrade(self.0.as_ref().expect("a pushed environment has a frame"))
    }

    pub(crate) fn frame(&self) -> &Frame {
        self.0.as_ref().expect("a pushed environment has a frame")
    }

    /// The thunk `depth` scopes up at `index`, as the resolver computed.
    pub(crate) fn lookup(&self, depth: u32, index: u32) -> Option<Thunk> {
        let mut env = self;
        for _ in 0..depth {
            env = &env.0.as_ref()?.parent;
        }
        env.0.as_ref()?.slots.borrow().get(index as usize).cloned()
    }
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<env>")
    }
}

/// A callable value.
#[derive(Debug)]
pub enum Function {
    /// A `fn` literal with the scope it closed over.
    Closure {
        /// The code.
        def: Rc<FnDef>,
        /// The captured scope.
        env: Env,
    },
    /// A builtin.
    Builtin(Builtin),
}

/// A derivation as the language sees it. The host builds it; the language
/// reads its fields and interpolates its `out` output.
#[derive(Debug)]
pub struct Derivation {
    /// `name`
    pub name: Rc<str>,
    /// `version`, if given.
    pub version: Option<Rc<str>>,
    /// The `.drv` store path, with the derivation itself as context.
    pub drv_path: Str,
    /// Output name to the string standing for that output's path (a
    /// placeholder until built), with context naming the output.
    pub outputs: BTreeMap<Rc<str>, Str>,
    /// `meta`, never hashed.
    pub meta: Value,
    /// The attributes as given to `derivation`.
    pub attrs: Value,
    /// Where the derivation was created, for diagnostics.
    pub span: Option<Span>,
}

impl Derivation {
    /// The fields a derivation value has.
    pub const FIELDS: [&'static str; 7] = [
        "attrs", "drv_path", "meta", "name", "out", "outputs", "version",
    ];

    /// The `out` output, or the first output when there is no `out`.
    pub fn out(&self) -> Option<&Str> {
        self.outputs
            .get("out")
            .or_else(|| self.outputs.values().next())
    }

    /// The value of a field, if the derivation has it.
    pub fn field(&self, key: &str) -> Option<Value> {
        Some(match key {
            "name" => Value::string(self.name.clone()),
            "version" => self.version.clone().map_or(Value::Null, Value::string),
            "out" => Value::Str(self.out()?.clone()),
            "outputs" => Value::Record(Rc::new(Record {
                fields: self
                    .outputs
                    .iter()
                    .map(|(k, v)| (k.clone(), Thunk::Ready(Value::Str(v.clone()))))
                    .collect(),
            })),
            "drv_path" => Value::Str(self.drv_path.clone()),
            "meta" => self.meta.clone(),
            "attrs" => self.attrs.clone(),
            _ => return None,
        })
    }
}
