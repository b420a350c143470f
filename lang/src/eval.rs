//! The evaluator: turns resolved expressions into [`Value`]s.
//!
//! Strict, with lazy record fields and let bindings (see the module docs of
//! [`crate::value`]). Recursion is bounded by [`MAX_DEPTH`], and every error
//! carries a span, so a user always sees where evaluation failed and, inside
//! functions, the calls that led there.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use crate::ast::*;
use crate::builtins::{ArgVal, Builtin};
use crate::diag::{self, Diagnostic, suggest};
use crate::host::{Host, HostError};
use crate::resolve::join_names;
use crate::span::{FileId, SourceMap, Span};
use crate::value::*;

/// How deep evaluation may nest (expressions inside expressions, calls inside
/// calls) before it is reported as runaway recursion.
pub const MAX_DEPTH: u32 = 100_000;

/// Largest string (bytes) or list (elements) `+`, `join` and `concat`
/// build.
pub const MAX_SIZE: usize = 1 << 28;

/// The prelude is always the first file loaded.
const PRELUDE: FileId = FileId(0);

/// How many call frames an error shows.
const TRACE_FRAMES: usize = 8;

/// An evaluation error before it is rendered.
#[derive(Debug)]
pub(crate) struct EvalError {
    code: &'static str,
    message: String,
    span: Span,
    label: String,
    help: Option<String>,
    labels: Vec<(Span, String)>,
    /// The innermost calls at the time of the error, innermost first, with
    /// runs of the same call collapsed into one entry and a count, and how
    /// many calls were active in all.
    trace: Vec<(Rc<str>, Span, usize)>,
    trace_total: usize,
    /// A parse or resolve error of an imported file, already rendered.
    nested: Option<Box<Diagnostic>>,
}

impl EvalError {
    pub(crate) fn with_help(mut self: Box<Self>, help: impl Into<String>) -> Box<Self> {
        self.help = Some(help.into());
        self
    }

    pub(crate) fn with_help_suffix(mut self: Box<Self>, more: &str) -> Box<Self> {
        let help = match self.help.take() {
            Some(h) => format!("{h}; {more}"),
            None => more.to_string(),
        };
        self.help = Some(help);
        self
    }

    fn with_label(mut self: Box<Self>, span: Span, label: impl Into<String>) -> Box<Self> {
        self.labels.push((span, label.into()));
        self
    }
}

pub(crate) type EResult<T> = Result<T, Box<EvalError>>;

enum Import {
    InProgress,
    Done(Value),
}

/// Which recipe files each derivation comes from
/// ([`Evaluator::recipe_files`]).
#[derive(Debug, Default)]
pub struct RecipeFiles {
    /// The file each derivation is written in, by `.drv` path.
    pub defined_in: HashMap<String, PathBuf>,
    /// Each of those files with every file it imports or reads,
    /// transitively (itself included).
    pub closures: HashMap<PathBuf, std::collections::BTreeSet<PathBuf>>,
}

/// Evaluates recipe files and expressions against a [`Host`].
pub struct Evaluator<'h> {
    pub(crate) host: &'h mut dyn Host,
    pub(crate) sources: SourceMap,
    /// The directory relative paths resolve against, per file.
    dirs: Vec<PathBuf>,
    globals: Vec<Thunk>,
    global_names: HashMap<Rc<str>, u32>,
    imports: HashMap<PathBuf, Import>,
    import_chain: Vec<PathBuf>,
    depth: u32,
    calls: Vec<(Rc<str>, Span)>,
    cwd: PathBuf,
    /// Where each imported file was first imported from.
    import_sites: HashMap<FileId, Span>,
    /// The files each file imported or read with `read_file`.
    reads_by_file: HashMap<FileId, std::collections::BTreeSet<PathBuf>>,
    /// The file each derivation was written in (by `.drv` path): the
    /// innermost call outside the prelude that made it.
    defined_in: HashMap<Rc<str>, FileId>,
    /// The memory limit and what was built since it was last checked.
    memory: crate::memory::Budget,
    /// Field path of the value `write_json` is at, for its errors.
    json_path: Vec<String>,
    depth_json: u32,
    /// Frames that may hold values pointing back to themselves (a `let`'s
    /// bindings close over the `let`): cleared when the evaluator is dropped,
    /// so reference counting frees them.
    cyclic: Vec<std::rc::Weak<Frame>>,
    cyclic_prune_at: usize,
    /// Every parsed file's tree.
    trees: Vec<Rc<Expr>>,
    /// The whole expression of the last file or `--expr` evaluated: errors
    /// found while printing its value point there.
    root: Span,
}

impl<'h> Evaluator<'h> {
    /// An evaluator with the builtins and the prelude in scope. `cwd` is the
    /// directory `--expr` paths resolve against and file names are shown
    /// relative to.
    pub fn new(host: &'h mut dyn Host, cwd: PathBuf) -> Result<Evaluator<'h>, Box<Diagnostic>> {
        let mut ev = Evaluator {
            host,
            sources: SourceMap::new(),
            dirs: Vec::new(),
            globals: Vec::new(),
            global_names: HashMap::new(),
            imports: HashMap::new(),
            import_chain: Vec::new(),
            depth: 0,
            calls: Vec::new(),
            cwd,
            root: Span::new(FileId(0), 0, 0),
            trees: Vec::new(),
            cyclic: Vec::new(),
            cyclic_prune_at: 1024,
            json_path: Vec::new(),
            depth_json: 0,
            import_sites: HashMap::new(),
            reads_by_file: HashMap::new(),
            defined_in: HashMap::new(),
            memory: crate::memory::Budget::from_env(),
        };
        for b in Builtin::ALL {
            ev.add_global(b.name(), Thunk::Ready(Self::builtin_value(b)));
        }
        let platform = ev.host.target_platform();
        ev.add_global(
            "target_platform",
            Thunk::Ready(Value::Str(Str::plain(platform))),
        );
        let prelude = ev.eval_text(
            "<prelude>".into(),
            None,
            Arc::from(crate::prelude::SOURCE),
            PathBuf::from("/"),
        )?;
        let Value::Record(r) = prelude else {
            return Err(Box::new(Diagnostic::plain(
                "internal::prelude",
                "the prelude must evaluate to a record",
            )));
        };
        for (k, t) in r.fields.iter() {
            ev.add_global(k, t.clone());
        }
        Ok(ev)
    }

    fn add_global(&mut self, name: &str, t: Thunk) {
        let idx = self.globals.len() as u32;
        self.globals.push(t);
        self.global_names.insert(Rc::from(name), idx);
    }

    /// The names in global scope: builtins and prelude.
    pub fn global_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.global_names.keys().map(|k| &**k).collect();
        v.sort_unstable();
        v
    }

    /// The sources loaded so far.
    pub fn sources(&self) -> &SourceMap {
        &self.sources
    }

    /// The file a call at `span` was written in: the innermost call outside
    /// the prelude when `span` is inside it (`package` calls `derivation`).
    pub(crate) fn user_file(&self, span: Span) -> FileId {
        if span.file != PRELUDE {
            return span.file;
        }
        self.calls
            .iter()
            .rev()
            .map(|(_, sp)| sp.file)
            .find(|f| *f != PRELUDE)
            .unwrap_or(span.file)
    }

    /// Records that the file of `call` read `path` (an import or
    /// `read_file`).
    pub(crate) fn record_read(&mut self, call: Span, path: &Path) {
        let file = self.user_file(call);
        self.reads_by_file
            .entry(file)
            .or_default()
            .insert(path.to_path_buf());
    }

    /// Records that the derivation `drv_path` was made by a call at `call`.
    pub(crate) fn record_derivation(&mut self, call: Span, drv_path: &Rc<str>) {
        let file = self.user_file(call);
        self.defined_in.entry(drv_path.clone()).or_insert(file);
    }

    /// The value of every file evaluated so far (the one evaluation started
    /// from and those it imported), by path.
    pub fn file_values(&self) -> Vec<(PathBuf, Value)> {
        let mut out: Vec<(PathBuf, Value)> = self
            .imports
            .iter()
            .filter_map(|(p, i)| match i {
                Import::Done(v) => Some((p.clone(), v.clone())),
                Import::InProgress => None,
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The recipe files of the derivations made so far: the file each is
    /// written in and every file that file imports or reads, transitively.
    /// They do not depend on which file the evaluation started from (an
    /// export records them, and its build string hashes them), only on
    /// where a derivation is written. Derivations written in no file
    /// (`--expr`) are left out.
    pub fn recipe_files(&self) -> RecipeFiles {
        let ids: HashMap<&Path, FileId> = (0..self.sources.len())
            .map(|i| FileId(i as u32))
            .filter_map(|id| Some((self.sources.get(id).path.as_deref()?, id)))
            .collect();
        let mut out = RecipeFiles::default();
        for (drv, &file) in &self.defined_in {
            let Some(start) = self.sources.get(file).path.clone() else {
                continue;
            };
            // Many derivations share a file: its closure is walked once.
            if !out.closures.contains_key(&start) {
                let mut files = std::collections::BTreeSet::from([start.clone()]);
                let mut todo = vec![file];
                let mut seen = std::collections::HashSet::from([file]);
                while let Some(f) = todo.pop() {
                    for p in self.reads_by_file.get(&f).into_iter().flatten() {
                        files.insert(p.clone());
                        if let Some(&id) = ids.get(p.as_path())
                            && seen.insert(id)
                        {
                            todo.push(id);
                        }
                    }
                }
                out.closures.insert(start.clone(), files);
            }
            out.defined_in.insert(drv.to_string(), start);
        }
        out
    }

    /// Evaluates the recipe file at `path`.
    pub fn eval_file(&mut self, path: &Path) -> Result<Value, Box<Diagnostic>> {
        let abs = normalize(&self.cwd.join(path));
        let text = self.host.read_file(&abs).map_err(|e| {
            let mut d = Diagnostic::plain("io::read", e.message);
            d.help = e.help;
            Box::new(d)
        })?;
        let dir = abs
            .parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
        self.imports.insert(abs.clone(), Import::InProgress);
        self.import_chain.push(abs.clone());
        let name = self.display_name(&abs);
        let r = self.eval_text(name, Some(abs.clone()), Arc::from(text), dir);
        self.import_chain.pop();
        if let Ok(v) = &r {
            self.imports.insert(abs, Import::Done(v.clone()));
        }
        r
    }

    /// Evaluates source text given directly (`cbuild eval --expr`); relative
    /// paths resolve against the working directory.
    pub fn eval_expr(&mut self, name: &str, text: &str) -> Result<Value, Box<Diagnostic>> {
        let cwd = self.cwd.clone();
        self.eval_text(name.into(), None, Arc::from(text), cwd)
    }

    fn eval_text(
        &mut self,
        name: String,
        path: Option<PathBuf>,
        text: Arc<str>,
        dir: PathBuf,
    ) -> Result<Value, Box<Diagnostic>> {
        let file = self.sources.add(name, path, text.clone());
        self.dirs.push(dir);
        let expr = Rc::new(self.parse_and_resolve(file, &text)?);
        self.root = expr.span;
        // The tree lives as long as the evaluator: values keep pointing into
        // it, and freeing it early would only move the cost.
        self.trees.push(expr.clone());
        self.eval(&expr, &Env::default())
            .map_err(|e| self.diagnostic(*e))
    }

    fn parse_and_resolve(&mut self, file: FileId, text: &str) -> Result<Expr, Box<Diagnostic>> {
        let expr = crate::parser::parse(file, text)
            .map_err(|errs| Box::new(diag::from_parse_errors(&self.sources, file, &errs)))?;
        crate::resolve::resolve(&expr, &self.global_names)
            .map_err(|errs| Box::new(diag::from_resolve_errors(&self.sources, &errs)))?;
        Ok(expr)
    }

    fn display_name(&self, abs: &Path) -> String {
        crate::host::shown_path(abs, &self.cwd)
    }

    /// Evaluates every field and element of `v`, recursively, so that
    /// printing or hashing it cannot fail half-way.
    pub fn force_value(&mut self, v: &Value) -> Result<(), Box<Diagnostic>> {
        let span = self.root;
        self.force_deep(v, span).map_err(|e| self.diagnostic(*e))
    }

    /// The value of a record field, evaluating it if needed.
    pub fn force_thunk(&mut self, t: &Thunk) -> Result<Value, Box<Diagnostic>> {
        let span = self.root;
        self.force(t, span).map_err(|e| self.diagnostic(*e))
    }

    /// `v` as JSON text with sorted keys (derivations as their `.drv` path).
    pub fn to_json(&mut self, v: &Value) -> Result<String, Box<Diagnostic>> {
        let span = self.root;
        let mut out = String::new();
        let mut ctx = ContextBuilder::default();
        self.write_json(v, span, &mut out, &mut ctx)
            .map_err(|e| self.diagnostic(*e))?;
        Ok(out)
    }

    // ----- errors -----

    pub(crate) fn error(
        &self,
        code: &'static str,
        message: impl Into<String>,
        span: Span,
        label: impl Into<String>,
    ) -> Box<EvalError> {
        let mut span = span;
        // An error inside the prelude is the caller's mistake: point at the
        // innermost call written in the user's files.
        if span.file == PRELUDE
            && let Some((_, call)) = self.calls.iter().rev().find(|(_, sp)| sp.file != PRELUDE)
        {
            span = *call;
        }
        let mut trace: Vec<(Rc<str>, Span, usize)> = Vec::new();
        // The prelude's calls, and the innermost call when the error already
        // points into it, tell the user nothing.
        let user_calls: Vec<&(Rc<str>, Span)> = self
            .calls
            .iter()
            .rev()
            .filter(|(_, sp)| sp.file != PRELUDE)
            .collect();
        let skip = usize::from(user_calls.first().is_some_and(|(_, sp)| {
            sp.file == span.file && sp.start <= span.start && span.end <= sp.end
        }));
        for (name, sp) in user_calls.iter().skip(skip).copied() {
            if let Some((n, s, count)) = trace.last_mut()
                && n == name
                && s == sp
            {
                *count += 1;
            } else if trace.len() == TRACE_FRAMES {
                break;
            } else {
                trace.push((name.clone(), *sp, 1));
            }
        }
        Box::new(EvalError {
            code,
            message: message.into(),
            span,
            label: label.into(),
            help: None,
            labels: Vec::new(),
            trace,
            trace_total: user_calls.len() - skip,
            nested: None,
        })
    }

    pub(crate) fn type_error(
        &self,
        span: Span,
        message: impl Into<String>,
        label: impl Into<String>,
    ) -> Box<EvalError> {
        self.error("eval::type_error", message, span, label)
    }

    pub(crate) fn arg_type(
        &self,
        sp: Span,
        want: &str,
        got: &Value,
        param: &str,
        func: &str,
    ) -> Box<EvalError> {
        self.type_error(
            sp,
            format!(
                "`{param}` of `{func}` must be {want}, found {}",
                got.type_name()
            ),
            format!("this is {}", article(got.type_name())),
        )
    }

    pub(crate) fn host_error(&self, e: HostError, call: Span) -> Box<EvalError> {
        self.host_error_labelled(e, call, "in this call")
    }

    fn host_error_labelled(&self, e: HostError, at: Span, label: &str) -> Box<EvalError> {
        let mut err = self.error("eval::host", e.message, at, label);
        err.help = e.help;
        err
    }

    pub(crate) fn missing_field(&self, v: &Value, key: &str, span: Span) -> Box<EvalError> {
        let names: Vec<&str> = match v {
            Value::Record(r) => r.fields.keys().map(|k| &**k).collect(),
            Value::Derivation(_) => Derivation::FIELDS.to_vec(),
            _ => Vec::new(),
        };
        let mut help = match suggest(key, names.iter().copied()) {
            Some(s) => format!("did you mean `{s}`? "),
            None => String::new(),
        };
        if names.is_empty() {
            help.push_str("the record is empty");
        } else {
            help.push_str(&format!("its fields are {}", join_names(&names)));
        }
        self.error(
            "eval::missing_field",
            format!("{} has no field `{key}`", article(v.type_name())),
            span,
            "no such field",
        )
        .with_help(help)
    }

    /// Renders an error with its source.
    fn diagnostic(&self, e: EvalError) -> Box<Diagnostic> {
        if let Some(mut d) = e.nested {
            self.add_import_sites(&mut d, e.span.file);
            return d;
        }
        let mut d = Diagnostic::at(&self.sources, e.code, e.message, e.span, e.label);
        for (sp, l) in e.labels {
            d = d.label(&self.sources, sp, l);
        }
        let mut help = e.help.unwrap_or_default();
        if !e.trace.is_empty() {
            if !help.is_empty() {
                help.push('\n');
            }
            help.push_str("call trace, innermost first:");
            let mut shown = 0;
            for (name, sp, count) in &e.trace {
                help.push_str(&format!(
                    "\n  `{name}` called at {}",
                    self.sources.location(*sp)
                ));
                if *count > 1 {
                    help.push_str(&format!(" ({count} times)"));
                }
                shown += count;
            }
            if e.trace_total > shown {
                help.push_str(&format!("\n  … and {} more", e.trace_total - shown));
            }
        }
        d.help = if help.is_empty() { None } else { Some(help) };
        self.add_import_sites(&mut d, e.span.file);
        Box::new(d)
    }

    /// Notes for the chain of imports that led to `file`, so an error in
    /// an imported file shows where it was imported from, however late the
    /// failing code ran.
    fn add_import_sites(&self, d: &mut Diagnostic, file: FileId) {
        let mut file = file;
        let mut seen = std::collections::HashSet::new();
        while let Some(&sp) = self.import_sites.get(&file) {
            if !seen.insert(file) {
                break;
            }
            d.related.push(Diagnostic::at(
                &self.sources,
                "note",
                format!(
                    "{} is imported at {}",
                    self.sources.get(file).name,
                    self.sources.location(sp)
                ),
                sp,
                "imported here",
            ));
            file = sp.file;
        }
    }

    // ----- evaluation -----

    pub(crate) fn eval(&mut self, e: &Expr, env: &Env) -> EResult<Value> {
        let at = self.calls.last().map_or(e.span, |(_, sp)| *sp);
        self.nested(at, "evaluation", |ev| ev.eval_inner(e, env))
    }

    /// Runs `f` one level deeper. Two guards: the depth the language allows,
    /// and the stack actually left on this thread (builtins such as `map` add
    /// frames that the depth does not count).
    fn nested<T>(
        &mut self,
        span: Span,
        what: &str,
        f: impl FnOnce(&mut Self) -> EResult<T>,
    ) -> EResult<T> {
        self.depth += 1;
        if self.depth > MAX_DEPTH || stack_low() {
            let message = if self.depth > MAX_DEPTH {
                format!("{what} nested more than {MAX_DEPTH} levels deep")
            } else {
                format!(
                    "{what} nested too deeply for the stack ({} levels)",
                    self.depth
                )
            };
            self.depth -= 1;
            return Err(self
                .error("eval::too_deep", message, span, "the limit is reached here")
                .with_help("this is usually a function that calls itself without end"));
        }
        let r = f(self);
        self.depth -= 1;
        r
    }

    fn eval_inner(&mut self, e: &Expr, env: &Env) -> EResult<Value> {
        match &e.kind {
            ExprKind::Null => Ok(Value::Null),
            ExprKind::Bool(b) => Ok(Value::Bool(*b)),
            ExprKind::Int(n) => Ok(Value::Int(*n)),
            ExprKind::Str(parts) => self.eval_string(parts, env),
            ExprKind::Path(raw) => Ok(Value::Path(self.resolve_path(raw, e.span).into())),
            ExprKind::Var { name, slot } => {
                let t = match slot.get() {
                    Slot::Local { depth, index } => env.lookup(depth, index),
                    Slot::Global(g) => self.globals.get(g as usize).cloned(),
                    Slot::Unresolved => None,
                };
                match t {
                    Some(t) => self.force(&t, e.span),
                    None => Err(self.error(
                        "internal::unresolved",
                        format!("internal error: `{name}` was not resolved"),
                        e.span,
                        "here",
                    )),
                }
            }
            ExprKind::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for x in items {
                    out.push(self.eval(x, env)?);
                }
                Ok(Value::List(Rc::new(out)))
            }
            ExprKind::Record(fields) => self.eval_record(fields, env),
            ExprKind::Select { base, key } => {
                let b = self.eval(base, env)?;
                let k = self.eval_key(key, env)?;
                self.select(&b, &k, key.span)
            }
            ExprKind::Coalesce(lhs, rhs) => {
                let v = self.eval_optional(lhs, env)?;
                match v {
                    Some(v) if !matches!(v, Value::Null) => Ok(v),
                    _ => self.eval(rhs, env),
                }
            }
            ExprKind::Let { bindings, body } => {
                let inner = env.push(bindings.len());
                self.track_cyclic(&inner);
                {
                    let frame = inner.frame();
                    for b in bindings {
                        let t = self.thunk(&b.value, &inner);
                        frame.slots.borrow_mut().push(t);
                    }
                }
                self.eval(body, &inner)
            }
            ExprKind::Fn(def) => Ok(Value::Function(Rc::new(Function::Closure {
                def: def.clone(),
                env: env.clone(),
            }))),
            ExprKind::Call { func, args } => {
                let f = self.eval(func, env)?;
                let name: Rc<str> = match &func.kind {
                    ExprKind::Var { name, .. } => name.clone(),
                    ExprKind::Select { key, .. } => match &key.kind {
                        KeyKind::Static(k) => k.clone(),
                        KeyKind::Dynamic(_) => Rc::from("<function>"),
                    },
                    _ => Rc::from("<function>"),
                };
                let mut positional = Vec::new();
                let mut named = Vec::new();
                for a in args {
                    let v = self.eval(&a.value, env)?;
                    match &a.name {
                        None => positional.push((v, a.value.span)),
                        Some((n, nsp)) => named.push((n.clone(), *nsp, v, a.value.span)),
                    }
                }
                self.apply(&f, func.span, positional, named, e.span, &name)
            }
            ExprKind::If(c, t, f) => {
                let cv = self.eval(c, env)?;
                match cv {
                    Value::Bool(true) => self.eval(t, env),
                    Value::Bool(false) => self.eval(f, env),
                    other => Err(self
                        .type_error(
                            c.span,
                            format!("the condition of `if` must be a bool, found {}", other.type_name()),
                            format!("this is {}", article(other.type_name())),
                        )
                        .with_help("there is no truthiness: compare explicitly, e.g. `x != null` or `len(l) > 0`")),
                }
            }
            ExprKind::Unary(op, x) => {
                let v = self.eval(x, env)?;
                match (op, v) {
                    (UnaryOp::Neg, Value::Int(n)) => {
                        n.checked_neg().map(Value::Int).ok_or_else(|| {
                            self.error(
                                "eval::overflow",
                                "integer overflow in negation",
                                e.span,
                                "overflows",
                            )
                        })
                    }
                    (UnaryOp::Not, Value::Bool(b)) => Ok(Value::Bool(!b)),
                    (op, other) => Err(self.type_error(
                        x.span,
                        format!(
                            "`{}` needs {}, found {}",
                            if *op == UnaryOp::Neg { "-" } else { "!" },
                            if *op == UnaryOp::Neg {
                                "an int"
                            } else {
                                "a bool"
                            },
                            other.type_name()
                        ),
                        format!("this is {}", article(other.type_name())),
                    )),
                }
            }
            ExprKind::Binary(op, a, b) => self.eval_binary(*op, a, b, e.span, env),
        }
    }

    /// Remembers a frame that may end up in a reference cycle. Frames that
    /// were freed anyway are pruned whenever the list doubles, so a `let` in
    /// a function called a million times does not pin a million frames.
    fn track_cyclic(&mut self, env: &Env) {
        if self.cyclic.len() >= self.cyclic_prune_at {
            self.cyclic.retain(|w| w.strong_count() > 0);
            self.cyclic_prune_at = (self.cyclic.len() * 2).max(1024);
        }
        self.cyclic.push(env.weak());
    }

    /// A lazy thunk for `expr`, or the value itself when computing it cannot
    /// fail and costs nothing.
    fn thunk(&mut self, expr: &Rc<Expr>, env: &Env) -> Thunk {
        match &expr.kind {
            ExprKind::Null => Thunk::Ready(Value::Null),
            ExprKind::Bool(b) => Thunk::Ready(Value::Bool(*b)),
            ExprKind::Int(n) => Thunk::Ready(Value::Int(*n)),
            ExprKind::Str(parts) if matches!(parts.as_slice(), [StrPart::Lit(_)]) => {
                let [StrPart::Lit(s)] = parts.as_slice() else {
                    unreachable!()
                };
                Thunk::Ready(Value::string(s.clone()))
            }
            ExprKind::Fn(def) => Thunk::Ready(Value::Function(Rc::new(Function::Closure {
                def: def.clone(),
                env: env.clone(),
            }))),
            _ => Thunk::lazy(expr.clone(), env.clone()),
        }
    }

    /// The value of a thunk, computing it on first use.
    pub(crate) fn force(&mut self, t: &Thunk, span: Span) -> EResult<Value> {
        let cell = match t {
            Thunk::Ready(v) => return Ok(v.clone()),
            Thunk::Lazy(cell) => cell,
        };
        if let ThunkState::Done(v) = &*cell.borrow() {
            return Ok(v.clone());
        }
        let state = std::mem::replace(&mut *cell.borrow_mut(), ThunkState::Forcing);
        match state {
            ThunkState::Done(v) => {
                *cell.borrow_mut() = ThunkState::Done(v.clone());
                Ok(v)
            }
            ThunkState::Forcing => Err(self
                .error(
                    "eval::infinite_recursion",
                    "infinite recursion: this value depends on itself",
                    span,
                    "needed while computing itself",
                )
                .with_help("a let binding or record field refers back to itself")),
            ThunkState::Pending(expr, env) => match self.eval(&expr, &env) {
                Ok(v) => {
                    *cell.borrow_mut() = ThunkState::Done(v.clone());
                    Ok(v)
                }
                Err(err) => {
                    *cell.borrow_mut() = ThunkState::Pending(expr, env);
                    Err(err)
                }
            },
        }
    }

    fn eval_string(&mut self, parts: &[StrPart], env: &Env) -> EResult<Value> {
        if let [StrPart::Lit(s)] = parts {
            return Ok(Value::string(s.clone()));
        }
        let mut text = String::new();
        let mut ctx = ContextBuilder::default();
        for p in parts {
            match p {
                StrPart::Lit(s) => text.push_str(s),
                StrPart::Interp(x) => {
                    let v = self.eval(x, env)?;
                    let s = self.coerce_interp(&v, x.span)?;
                    self.check_size(text.len() + s.text.len(), "string", x.span)?;
                    text.push_str(&s.text);
                    ctx.add(&s);
                }
            }
        }
        Ok(Value::Str(Str {
            text: text.into(),
            context: ctx.finish(),
        }))
    }

    /// What `"${v}"` turns `v` into.
    pub(crate) fn coerce_interp(&mut self, v: &Value, span: Span) -> EResult<Str> {
        match v {
            Value::Str(s) => Ok(s.clone()),
            Value::Int(n) => Ok(Str::plain(n.to_string())),
            Value::Path(p) => {
                let p = p.clone();
                self.host
                    .import_path(&p)
                    .map_err(|e| self.host_error_labelled(e, span, "interpolated here"))
            }
            Value::Derivation(d) => d.out().cloned().ok_or_else(|| {
                self.error(
                    "eval::no_outputs",
                    "this derivation has no outputs",
                    span,
                    "here",
                )
            }),
            other => Err(self
                .type_error(
                    span,
                    format!(
                        "cannot interpolate {} into a string",
                        article(other.type_name())
                    ),
                    format!("this is {}", article(other.type_name())),
                )
                .with_help(match other {
                    Value::List(_) => "use join(sep, list) or to_json(list)",
                    Value::Record(_) => "select a field, or use to_json(record)",
                    Value::Null => "give a default with `x ?? \"\"`, or test `x != null` first",
                    Value::Bool(_) => "use to_string(value)",
                    _ => "only strings, ints, paths and derivations can be interpolated",
                })),
        }
    }

    fn eval_key(&mut self, key: &Key, env: &Env) -> EResult<Rc<str>> {
        match &key.kind {
            KeyKind::Static(k) => Ok(k.clone()),
            KeyKind::Dynamic(parts) => match self.eval_string(parts, env)? {
                // A key is only a name: a store path in it would lose the
                // dependency silently.
                Value::Str(s) if s.context.is_some() => Err(self
                    .type_error(
                        key.span,
                        "a record key cannot refer to store objects",
                        "this key mentions a store path",
                    )
                    .with_help("use the store path as a value, not as a key")),
                Value::Str(s) => Ok(s.text),
                _ => unreachable!("eval_string returns a string"),
            },
        }
    }

    fn eval_record(&mut self, fields: &[Field], env: &Env) -> EResult<Value> {
        // In order: a later pair overrides an earlier one of the same name.
        let mut pairs: Vec<(Rc<str>, Thunk)> = Vec::with_capacity(fields.len());
        // Explicit keys written in this literal (spread ones may be overridden).
        let mut explicit: HashMap<Rc<str>, Span> = HashMap::new();
        for f in fields {
            match f {
                Field::Spread(x) => {
                    let v = self.eval(x, env)?;
                    match v {
                        Value::Record(r) => {
                            pairs.extend(r.fields.iter().map(|(k, t)| (k.clone(), t.clone())));
                        }
                        other => {
                            return Err(self.type_error(
                                x.span,
                                format!("`..` spreads a record, found {}", other.type_name()),
                                format!("this is {}", article(other.type_name())),
                            ));
                        }
                    }
                }
                Field::Assign { key, value } => {
                    let k = self.eval_key(key, env)?;
                    if let Some(first) = explicit.insert(k.clone(), key.span) {
                        return Err(self
                            .error(
                                "eval::duplicate_name",
                                format!("duplicate key `{k}`"),
                                key.span,
                                "defined again here",
                            )
                            .with_label(first, "first defined here"));
                    }
                    let t = self.thunk(value, env);
                    pairs.push((k, t));
                }
            }
        }
        Ok(Value::Record(Rc::new(Record {
            fields: Fields::from_pairs(pairs),
        })))
    }

    fn select(&mut self, base: &Value, key: &str, span: Span) -> EResult<Value> {
        match base {
            Value::Record(r) => match r.fields.get(key) {
                Some(t) => {
                    let t = t.clone();
                    self.force(&t, span)
                }
                None => Err(self.missing_field(base, key, span)),
            },
            Value::Derivation(d) => d
                .field(key)
                .ok_or_else(|| self.missing_field(base, key, span)),
            other => Err(self.type_error(
                span,
                format!(
                    "cannot select field `{key}` from {}",
                    article(other.type_name())
                ),
                format!("the value is {}", article(other.type_name())),
            )),
        }
    }

    /// The left side of `??`: `None` when a field along a selection chain is
    /// missing or selected from `null`.
    fn eval_optional(&mut self, e: &Expr, env: &Env) -> EResult<Option<Value>> {
        // `a ?? b ?? c`: each alternative may be missing in turn.
        if let ExprKind::Coalesce(a, b) = &e.kind {
            return match self.eval_optional(a, env)? {
                Some(v) if !matches!(v, Value::Null) => Ok(Some(v)),
                _ => self.eval_optional(b, env),
            };
        }
        let ExprKind::Select { base, key } = &e.kind else {
            return self.eval(e, env).map(Some);
        };
        let b = match self.eval_optional(base, env)? {
            None | Some(Value::Null) => return Ok(None),
            Some(b) => b,
        };
        let k = self.eval_key(key, env)?;
        let present = match &b {
            Value::Record(r) => r.fields.contains_key(&k),
            Value::Derivation(d) => d.field(&k).is_some(),
            _ => true,
        };
        if !present {
            return Ok(None);
        }
        self.select(&b, &k, key.span).map(Some)
    }

    /// Resolves a path literal against the directory of its file.
    fn resolve_path(&self, raw: &str, span: Span) -> PathBuf {
        let p = Path::new(raw);
        if p.is_absolute() {
            normalize(p)
        } else {
            let dir = &self.dirs[span.file.0 as usize];
            normalize(&dir.join(p))
        }
    }

    // ----- calls -----

    /// Calls `f` with positional values (used by builtins such as `map`).
    pub(crate) fn call_value(
        &mut self,
        f: &Value,
        args: Vec<(Value, Span)>,
        call: Span,
        name: &str,
    ) -> EResult<Value> {
        self.apply(f, call, args, Vec::new(), call, name)
    }

    fn apply(
        &mut self,
        f: &Value,
        fspan: Span,
        positional: Vec<(Value, Span)>,
        named: Vec<(Rc<str>, Span, Value, Span)>,
        call: Span,
        name: &str,
    ) -> EResult<Value> {
        let func = match f {
            Value::Function(func) => func.clone(),
            other => {
                return Err(self.type_error(
                    fspan,
                    format!("cannot call {}", article(other.type_name())),
                    format!("this is {}, not a function", article(other.type_name())),
                ));
            }
        };
        match &*func {
            Function::Builtin(b) => {
                let params: Vec<(&str, bool)> =
                    b.params().iter().map(|(n, d)| (*n, d.is_some())).collect();
                let bound =
                    self.bind_args(&params, positional, named, call, name, &b.signature())?;
                self.calls.push((Rc::from(b.name()), call));
                let r = self.call_builtin(*b, bound, call);
                self.calls.pop();
                r
            }
            Function::Closure { def, env } => {
                let params: Vec<(&str, bool)> = def
                    .params
                    .iter()
                    .map(|p| (&*p.name, p.default.is_some()))
                    .collect();
                let bound = self.bind_args(
                    &params,
                    positional,
                    named,
                    call,
                    name,
                    &closure_signature(def, name),
                )?;
                let inner = env.push(def.params.len());
                self.calls.push((Rc::from(name), call));
                let r = (|| {
                    for (p, a) in def.params.iter().zip(bound) {
                        let v = match (a, &p.default) {
                            (Some((v, _)), _) => v,
                            (None, Some(d)) => {
                                // A default may be a closure over this very
                                // frame, stored in it: a cycle.
                                self.track_cyclic(&inner);
                                self.eval(d, &inner)?
                            }
                            (None, None) => unreachable!("bind_args checks required parameters"),
                        };
                        inner.frame().slots.borrow_mut().push(Thunk::Ready(v));
                    }
                    self.eval(&def.body, &inner)
                })();
                self.calls.pop();
                r
            }
        }
    }

    /// Matches arguments to parameters `(name, optional)`.
    fn bind_args(
        &self,
        params: &[(&str, bool)],
        positional: Vec<(Value, Span)>,
        named: Vec<(Rc<str>, Span, Value, Span)>,
        call: Span,
        fname: &str,
        signature: &str,
    ) -> EResult<Vec<ArgVal>> {
        let mut bound: Vec<ArgVal> = vec![None; params.len()];
        let sig_help = format!("the parameters are `{signature}`");
        let npos = positional.len();
        for (k, (v, sp)) in positional.into_iter().enumerate() {
            if k >= params.len() {
                return Err(self
                    .error(
                        "eval::wrong_arguments",
                        format!(
                            "`{fname}` takes {} argument{}, but {npos} were given",
                            params.len(),
                            if params.len() == 1 { "" } else { "s" }
                        ),
                        sp,
                        "unexpected argument",
                    )
                    .with_help(sig_help));
            }
            bound[k] = Some((v, sp));
        }
        for (n, nsp, v, vsp) in named {
            match params.iter().position(|(p, _)| *p == &*n) {
                Some(k) if bound[k].is_some() => {
                    return Err(self
                        .error(
                            "eval::wrong_arguments",
                            format!("argument `{n}` of `{fname}` is given twice"),
                            nsp,
                            "already given by position",
                        )
                        .with_help(sig_help));
                }
                Some(k) => bound[k] = Some((v, vsp)),
                None => {
                    let mut help = String::new();
                    if let Some(s) = suggest(&n, params.iter().map(|(p, _)| *p)) {
                        help.push_str(&format!("did you mean `{s}`? "));
                    }
                    help.push_str(&sig_help);
                    return Err(self
                        .error(
                            "eval::wrong_arguments",
                            format!("`{fname}` has no parameter `{n}`"),
                            nsp,
                            "unknown parameter",
                        )
                        .with_help(help));
                }
            }
        }
        for (k, (p, optional)) in params.iter().enumerate() {
            if bound[k].is_none() && !optional {
                return Err(self
                    .error(
                        "eval::wrong_arguments",
                        format!("missing argument `{p}` in call to `{fname}`"),
                        call,
                        format!("`{p}` is not given"),
                    )
                    .with_help(sig_help));
            }
        }
        Ok(bound)
    }

    // ----- operators -----

    fn eval_binary(
        &mut self,
        op: BinaryOp,
        a: &Expr,
        b: &Expr,
        span: Span,
        env: &Env,
    ) -> EResult<Value> {
        let av = self.eval(a, env)?;
        if matches!(op, BinaryOp::And | BinaryOp::Or) {
            let Value::Bool(x) = av else {
                return Err(self.operand_error(op, a, &av));
            };
            if (op == BinaryOp::And && !x) || (op == BinaryOp::Or && x) {
                return Ok(Value::Bool(x));
            }
            let bv = self.eval(b, env)?;
            return match bv {
                Value::Bool(y) => Ok(Value::Bool(y)),
                other => Err(self.operand_error(op, b, &other)),
            };
        }
        let bv = self.eval(b, env)?;
        let overflow = |ev: &Self| {
            ev.error(
                "eval::overflow",
                format!("integer overflow in `{}`", op.symbol()),
                span,
                "the result does not fit in 64 bits",
            )
        };
        match (op, &av, &bv) {
            (BinaryOp::Add, Value::Int(x), Value::Int(y)) => x
                .checked_add(*y)
                .map(Value::Int)
                .ok_or_else(|| overflow(self)),
            (BinaryOp::Sub, Value::Int(x), Value::Int(y)) => x
                .checked_sub(*y)
                .map(Value::Int)
                .ok_or_else(|| overflow(self)),
            (BinaryOp::Mul, Value::Int(x), Value::Int(y)) => x
                .checked_mul(*y)
                .map(Value::Int)
                .ok_or_else(|| overflow(self)),
            (BinaryOp::Div, Value::Int(_), Value::Int(0)) => Err(self
                .error(
                    "eval::division_by_zero",
                    "division by zero",
                    b.span,
                    "this is zero",
                )
                .with_label(span, "in this division")),
            (BinaryOp::Div, Value::Int(x), Value::Int(y)) => x
                .checked_div(*y)
                .map(Value::Int)
                .ok_or_else(|| overflow(self)),
            (BinaryOp::Add, Value::Str(x), Value::Str(y)) => {
                self.check_size(x.text.len() + y.text.len(), "string", span)?;
                let mut text = String::with_capacity(x.text.len() + y.text.len());
                text.push_str(&x.text);
                text.push_str(&y.text);
                let mut ctx = ContextBuilder::default();
                ctx.add(x);
                ctx.add(y);
                Ok(Value::Str(Str {
                    text: text.into(),
                    context: ctx.finish(),
                }))
            }
            (BinaryOp::Add, Value::List(x), Value::List(y)) => {
                self.check_size(x.len() + y.len(), "list", span)?;
                let mut out = Vec::with_capacity(x.len() + y.len());
                out.extend(x.iter().cloned());
                out.extend(y.iter().cloned());
                Ok(Value::List(Rc::new(out)))
            }
            (BinaryOp::Add, Value::Path(p), Value::Str(s)) => {
                if s.context.is_some() {
                    return Err(self.type_error(
                        b.span,
                        "cannot append a string that refers to store objects to a path",
                        "this string has a store context",
                    ));
                }
                let joined = format!("{}{}", p.display(), s.text);
                Ok(Value::Path(normalize(Path::new(&joined)).into()))
            }
            (BinaryOp::Eq, _, _) => Ok(Value::Bool(self.equal(&av, &bv, span)?)),
            (BinaryOp::Ne, _, _) => Ok(Value::Bool(!self.equal(&av, &bv, span)?)),
            (BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge, _, _) => {
                let ord = match (&av, &bv) {
                    (Value::Int(x), Value::Int(y)) => x.cmp(y),
                    (Value::Str(x), Value::Str(y)) => x.text.cmp(&y.text),
                    _ => return Err(self.mismatch(op, a, &av, b, &bv, span)),
                };
                Ok(Value::Bool(match op {
                    BinaryOp::Lt => ord.is_lt(),
                    BinaryOp::Le => ord.is_le(),
                    BinaryOp::Gt => ord.is_gt(),
                    _ => ord.is_ge(),
                }))
            }
            _ => Err(self.mismatch(op, a, &av, b, &bv, span)),
        }
    }

    /// Refuses to build a string or list past [`MAX_SIZE`], so that a
    /// doubling loop ends with an error instead of exhausting memory.
    pub(crate) fn check_size(&self, n: usize, what: &str, span: Span) -> EResult<()> {
        if n > MAX_SIZE {
            return Err(self.error(
                "eval::too_large",
                format!("{what} would be longer than {MAX_SIZE} elements or bytes ({n})"),
                span,
                "too large",
            ));
        }
        let bytes = if what == "string" {
            n
        } else {
            n.saturating_mul(crate::memory::ELEMENT)
        };
        if let Err(resident) = self.memory.charge(bytes) {
            return Err(self
                .error(
                    "eval::out_of_memory",
                    format!(
                        "evaluation stopped: it holds {} MiB, and its limit is {} MiB",
                        resident >> 20,
                        self.memory.limit() >> 20
                    ),
                    span,
                    format!("this {what} was being built"),
                )
                .with_help(
                    "the limit is CBUILD_EVAL_MEMORY_MB (default: half the machine's memory, at \
                     most 8 GiB); a recipe this large usually builds a list or string it need not",
                ));
        }
        Ok(())
    }

    fn operand_error(&self, op: BinaryOp, e: &Expr, v: &Value) -> Box<EvalError> {
        self.type_error(
            e.span,
            format!("`{}` needs bools, found {}", op.symbol(), v.type_name()),
            format!("this is {}", article(v.type_name())),
        )
    }

    fn mismatch(
        &self,
        op: BinaryOp,
        a: &Expr,
        av: &Value,
        b: &Expr,
        bv: &Value,
        span: Span,
    ) -> Box<EvalError> {
        let verb = match op {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "subtract",
            BinaryOp::Mul => "multiply",
            BinaryOp::Div => "divide",
            _ => "compare",
        };
        let (ta, tb) = (av.type_name(), bv.type_name());
        let message = match op {
            BinaryOp::Sub => format!("cannot subtract {} from {}", article(tb), article(ta)),
            _ if op == BinaryOp::Add || verb != "compare" => {
                format!("cannot {verb} {} and {}", article(ta), article(tb))
            }
            _ => format!(
                "cannot compare {} with `{}` and {}",
                article(ta),
                op.symbol(),
                article(tb)
            ),
        };
        let help = match (op, av, bv) {
            (BinaryOp::Add, Value::Str(_), Value::Int(_))
            | (BinaryOp::Add, Value::Int(_), Value::Str(_)) => {
                Some("convert with to_string(n), or interpolate: \"...${n}\"")
            }
            (BinaryOp::Add, Value::Str(_), Value::Path(_)) => {
                Some("interpolate the path to import it: \"${./file}\"")
            }
            (BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge, _, _) => {
                Some("`<`, `<=`, `>` and `>=` compare two ints or two strings")
            }
            _ => None,
        };
        let mut err = self
            .type_error(
                self.operator_span(op, a, b, span),
                message,
                format!("`{}` here", op.symbol()),
            )
            .with_label(a.span, format!("this is {}", article(ta)))
            .with_label(b.span, format!("this is {}", article(tb)));
        err.help = help.map(String::from);
        err
    }

    /// Where the operator between `a` and `b` is written (the whole
    /// expression if it cannot be found).
    fn operator_span(&self, op: BinaryOp, a: &Expr, b: &Expr, whole: Span) -> Span {
        let text = &self.sources.get(whole.file).text;
        let between = text
            .get(a.span.end as usize..b.span.start as usize)
            .unwrap_or("");
        match between.find(op.symbol()) {
            Some(k) => {
                let start = a.span.end as usize + k;
                Span::new(whole.file, start, start + op.symbol().len())
            }
            None => whole,
        }
    }

    /// Deep equality; functions cannot be compared.
    fn equal(&mut self, a: &Value, b: &Value, span: Span) -> EResult<bool> {
        self.nested(span, "compared values", |ev| ev.equal_inner(a, b, span))
    }

    fn equal_inner(&mut self, a: &Value, b: &Value, span: Span) -> EResult<bool> {
        Ok(match (a, b) {
            (Value::Function(_), _) | (_, Value::Function(_)) => {
                return Err(self.type_error(
                    span,
                    "functions cannot be compared",
                    "comparing a function",
                ));
            }
            (Value::Null, Value::Null) => true,
            (Value::Bool(x), Value::Bool(y)) => x == y,
            (Value::Int(x), Value::Int(y)) => x == y,
            (Value::Str(x), Value::Str(y)) => x.text == y.text,
            (Value::Path(x), Value::Path(y)) => x == y,
            (Value::List(x), Value::List(y)) => {
                if x.len() != y.len() {
                    return Ok(false);
                }
                for (p, q) in x.iter().zip(y.iter()) {
                    if !self.equal(p, q, span)? {
                        return Ok(false);
                    }
                }
                true
            }
            (Value::Record(x), Value::Record(y)) => {
                if x.fields.len() != y.fields.len()
                    || !x.fields.keys().zip(y.fields.keys()).all(|(p, q)| p == q)
                {
                    return Ok(false);
                }
                for (p, q) in x.fields.values().zip(y.fields.values()) {
                    let pv = self.force(p, span)?;
                    let qv = self.force(q, span)?;
                    if !self.equal(&pv, &qv, span)? {
                        return Ok(false);
                    }
                }
                true
            }
            (Value::Derivation(x), Value::Derivation(y)) => x.drv_path.text == y.drv_path.text,
            _ => false,
        })
    }

    /// Forces every thunk reachable from `v`.
    pub(crate) fn force_deep(&mut self, v: &Value, span: Span) -> EResult<()> {
        self.nested(span, "value", |ev| {
            match v {
                Value::List(l) => {
                    for x in l.iter() {
                        ev.force_deep(x, span)?;
                    }
                }
                Value::Record(r) => {
                    for t in r.fields.values() {
                        let x = ev.force(t, span)?;
                        ev.force_deep(&x, span)?;
                    }
                }
                _ => {}
            }
            Ok(())
        })
    }

    // ----- JSON -----

    /// Writes `v` as JSON into `out`; on a function, the error names the
    /// field path where it was found.
    pub(crate) fn write_json(
        &mut self,
        v: &Value,
        span: Span,
        out: &mut String,
        ctx: &mut ContextBuilder,
    ) -> EResult<()> {
        if self.depth_json == 0 {
            self.json_path.clear();
        }
        self.depth_json += 1;
        let r = self.nested(span, "value", |ev| ev.write_json_inner(v, span, out, ctx));
        self.depth_json -= 1;
        r
    }

    fn write_json_inner(
        &mut self,
        v: &Value,
        span: Span,
        out: &mut String,
        ctx: &mut ContextBuilder,
    ) -> EResult<()> {
        match v {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(n) => out.push_str(&n.to_string()),
            Value::Str(s) => {
                ctx.add(s);
                json_string(&s.text, out);
            }
            Value::Path(p) => json_string(&p.to_string_lossy(), out),
            Value::Derivation(d) => {
                ctx.add(&d.drv_path);
                json_string(&d.drv_path.text, out);
            }
            Value::List(l) => {
                out.push('[');
                for (k, x) in l.iter().enumerate() {
                    if k > 0 {
                        out.push(',');
                    }
                    self.json_path.push(format!("[{k}]"));
                    self.write_json(x, span, out, ctx)?;
                    self.json_path.pop();
                }
                out.push(']');
            }
            Value::Record(r) => {
                out.push('{');
                for (k, (key, t)) in r.fields.iter().enumerate() {
                    if k > 0 {
                        out.push(',');
                    }
                    json_string(key, out);
                    out.push(':');
                    self.json_path.push(if is_identifier(key) {
                        format!(".{key}")
                    } else {
                        format!(".{:?}", &**key)
                    });
                    let x = self.force(t, span)?;
                    self.write_json(&x, span, out, ctx)?;
                    self.json_path.pop();
                }
                out.push('}');
            }
            Value::Function(_) => {
                let at = if self.json_path.is_empty() {
                    "the value is a function".to_string()
                } else {
                    format!("the function is at `{}`", self.json_path.concat())
                };
                return Err(self
                    .type_error(
                        span,
                        format!("a function cannot be converted to JSON: {at}"),
                        "in this value",
                    )
                    .with_help("call the function, or leave it out of the value"));
            }
        }
        Ok(())
    }

    pub(crate) fn parse_json(&self, text: &str, span: Span) -> EResult<Value> {
        let parsed: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            self.error(
                "eval::bad_json",
                format!("invalid JSON: {e}"),
                span,
                "this string",
            )
        })?;
        self.json_value(&parsed, span)
    }

    fn json_value(&self, j: &serde_json::Value, span: Span) -> EResult<Value> {
        Ok(match j {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => {
                match n.as_i64() {
                    Some(i) => Value::Int(i),
                    None => {
                        return Err(self
                        .error(
                            "eval::bad_json",
                            format!("JSON number {n} is not a 64-bit integer"),
                            span,
                            "this string",
                        )
                        .with_help("the language has 64-bit integers only; put other numbers in strings"));
                    }
                }
            }
            serde_json::Value::String(s) => Value::string(s.as_str()),
            serde_json::Value::Array(a) => {
                let mut out = Vec::with_capacity(a.len());
                for x in a {
                    out.push(self.json_value(x, span)?);
                }
                Value::List(Rc::new(out))
            }
            serde_json::Value::Object(o) => {
                let mut pairs = Vec::with_capacity(o.len());
                for (k, x) in o {
                    pairs.push((
                        Rc::from(k.as_str()),
                        Thunk::Ready(self.json_value(x, span)?),
                    ));
                }
                Value::Record(Rc::new(Record {
                    fields: Fields::from_pairs(pairs),
                }))
            }
        })
    }

    // ----- import -----

    pub(crate) fn import(&mut self, path: &Path, call: Span) -> EResult<Value> {
        match self.imports.get(path) {
            Some(Import::Done(v)) => return Ok(v.clone()),
            Some(Import::InProgress) => {
                let start = self
                    .import_chain
                    .iter()
                    .position(|p| p == path)
                    .unwrap_or(0);
                let chain: Vec<String> = self.import_chain[start..]
                    .iter()
                    .chain(std::iter::once(&path.to_path_buf()))
                    .map(|p| self.display_name(p))
                    .collect();
                return Err(self.error(
                    "eval::import_cycle",
                    format!("import cycle: {}", chain.join(" → ")),
                    call,
                    "this import closes the cycle",
                ));
            }
            None => {}
        }
        let text = self
            .host
            .read_file(path)
            .map_err(|e| self.host_error(e, call))?;
        let name = self.display_name(path);
        let file = self
            .sources
            .add(name, Some(path.to_path_buf()), Arc::from(text.as_str()));
        self.import_sites.insert(file, call);
        self.dirs.push(
            path.parent()
                .map_or_else(|| PathBuf::from("/"), Path::to_path_buf),
        );
        let expr = match crate::parser::parse(file, &text) {
            Ok(e) => e,
            Err(errs) => {
                let d = diag::from_parse_errors(&self.sources, file, &errs);
                return Err(self.nested_diagnostic(d, file));
            }
        };
        if let Err(errs) = crate::resolve::resolve(&expr, &self.global_names) {
            let d = diag::from_resolve_errors(&self.sources, &errs);
            return Err(self.nested_diagnostic(d, file));
        }
        let expr = Rc::new(expr);
        self.trees.push(expr.clone());
        self.imports.insert(path.to_path_buf(), Import::InProgress);
        self.import_chain.push(path.to_path_buf());
        // An imported file starts with no call stack of its own.
        let saved_calls = std::mem::take(&mut self.calls);
        let r = self.eval(&expr, &Env::default());
        self.calls = saved_calls;
        self.import_chain.pop();
        match r {
            Ok(v) => {
                self.imports
                    .insert(path.to_path_buf(), Import::Done(v.clone()));
                Ok(v)
            }
            Err(e) => {
                self.imports.remove(path);
                Err(e)
            }
        }
    }

    /// A parse or resolve error in an imported file, shown with the import
    /// site.
    fn nested_diagnostic(&self, d: Diagnostic, file: FileId) -> Box<EvalError> {
        Box::new(EvalError {
            code: "nested",
            message: String::new(),
            span: Span::new(file, 0, 0),
            label: String::new(),
            help: None,
            labels: Vec::new(),
            trace: Vec::new(),
            trace_total: 0,
            nested: Some(Box::new(d)),
        })
    }
}

fn closure_signature(def: &FnDef, name: &str) -> String {
    let params: Vec<String> = def
        .params
        .iter()
        .map(|p| {
            if p.default.is_some() {
                format!("{} = …", p.name)
            } else {
                p.name.to_string()
            }
        })
        .collect();
    format!("{name}({})", params.join(", "))
}

/// "an int", "a string", "null".
pub fn article(type_name: &str) -> String {
    if type_name == "null" {
        return "null".into();
    }
    match type_name.as_bytes().first() {
        Some(b'a' | b'e' | b'i' | b'o' | b'u') => format!("an {type_name}"),
        _ => format!("a {type_name}"),
    }
}

/// Lexical normalisation: removes `.` and resolves `..` without touching the
/// file system (so evaluation reads nothing it does not record).
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir | Component::Prefix(_) | Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(x) => out.push(x),
        }
    }
    out
}

impl Drop for Evaluator<'_> {
    fn drop(&mut self) {
        for frame in self.cyclic.drain(..) {
            if let Some(f) = frame.upgrade() {
                // Moved out first: dropping the values may drop other frames.
                let slots = std::mem::take(&mut *f.slots.borrow_mut());
                drop(slots);
            }
        }
    }
}

/// Whether the current thread's stack is nearly used up.
pub(crate) fn stack_low() -> bool {
    stacker::remaining_stack().is_some_and(|left| left < STACK_RESERVE)
}

/// Stack kept free below the deepest evaluation frame: enough to build and
/// render the error.
const STACK_RESERVE: usize = 256 * 1024;

fn is_identifier(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && crate::lexer::is_ident_start(b[0])
        && b.iter().all(|&c| crate::lexer::is_ident_char(c))
}

fn json_string(s: &str, out: &mut String) {
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}
