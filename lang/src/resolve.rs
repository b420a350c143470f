//! Static scoping: binds every variable reference to a slot before evaluation.
//!
//! The language is lexically scoped with no `with` and no recursive records,
//! so every name can be resolved before anything runs. That makes lookups two
//! integers instead of a string search, and it reports every unknown name,
//! duplicate key, binding or parameter in a file at once, even in code that
//! would never run.

use std::collections::HashMap;
use std::rc::Rc;

use crate::ast::*;
use crate::diag::suggest;
use crate::span::Span;

/// A problem found while resolving.
#[derive(Debug, Clone)]
pub struct ResolveError {
    /// Stable code.
    pub code: &'static str,
    /// Headline.
    pub message: String,
    /// Where.
    pub span: Span,
    /// Label under the span.
    pub label: String,
    /// Another place that explains the error (e.g. the first definition).
    pub other: Option<(Span, String)>,
    /// A hint.
    pub help: Option<String>,
}

struct Scope {
    names: Vec<(Rc<str>, Span)>,
    /// How many of `names` are visible (let bindings see only earlier ones).
    visible: usize,
}

/// Resolves `expr` in place. `globals` maps builtin and prelude names to their
/// index in the global table.
pub fn resolve(expr: &Expr, globals: &HashMap<Rc<str>, u32>) -> Result<(), Vec<ResolveError>> {
    let mut r = Resolver {
        scopes: Vec::new(),
        globals,
        errors: Vec::new(),
    };
    r.expr(expr);
    if r.errors.is_empty() {
        Ok(())
    } else {
        Err(r.errors)
    }
}

struct Resolver<'g> {
    scopes: Vec<Scope>,
    globals: &'g HashMap<Rc<str>, u32>,
    errors: Vec<ResolveError>,
}

impl Resolver<'_> {
    fn lookup(&self, name: &str) -> Option<Slot> {
        for (depth, scope) in self.scopes.iter().rev().enumerate() {
            if let Some(index) = scope.names[..scope.visible]
                .iter()
                .rposition(|(n, _)| &**n == name)
            {
                return Some(Slot::Local {
                    depth: depth as u32,
                    index: index as u32,
                });
            }
        }
        self.globals.get(name).map(|&g| Slot::Global(g))
    }

    fn unknown_variable(&mut self, name: &str, span: Span) {
        let mut local: Vec<&str> = Vec::new();
        for scope in self.scopes.iter().rev() {
            for (n, _) in scope.names[..scope.visible].iter().rev() {
                if !local.contains(&&**n) {
                    local.push(n);
                }
            }
        }
        let mut candidates: Vec<&str> = local.clone();
        candidates.extend(self.globals.keys().map(|k| &**k));
        let mut help = match suggest(name, candidates.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => String::new(),
        };
        if !local.is_empty() {
            local.sort_unstable();
            if !help.is_empty() {
                help.push(' ');
            }
            help.push_str(&format!("names in scope here: {}", join_names(&local)));
        } else if help.is_empty() {
            help.push_str("no local names are in scope here; builtins and the prelude are listed in the language reference");
        }
        self.errors.push(ResolveError {
            code: "eval::unknown_variable",
            message: format!("unknown variable `{name}`"),
            span,
            label: "not defined".into(),
            other: None,
            help: Some(help),
        });
    }

    fn duplicate(&mut self, what: &str, name: &str, first: Span, again: Span) {
        self.errors.push(ResolveError {
            code: "eval::duplicate_name",
            message: format!("duplicate {what} `{name}`"),
            span: again,
            label: "defined again here".into(),
            other: Some((first, "first defined here".into())),
            help: Some(format!("each {what} may appear only once")),
        });
    }

    fn parts(&mut self, parts: &[StrPart]) {
        for p in parts {
            if let StrPart::Interp(e) = p {
                self.expr(e);
            }
        }
    }

    fn expr(&mut self, e: &Expr) {
        match &e.kind {
            ExprKind::Null | ExprKind::Bool(_) | ExprKind::Int(_) | ExprKind::Path(_) => {}
            ExprKind::Str(parts) => self.parts(parts),
            ExprKind::Var { name, slot } => match self.lookup(name) {
                Some(s) => slot.set(s),
                None => self.unknown_variable(name, e.span),
            },
            ExprKind::List(items) => items.iter().for_each(|x| self.expr(x)),
            ExprKind::Record(fields) => {
                let mut seen: HashMap<&str, Span> = HashMap::new();
                for f in fields {
                    match f {
                        Field::Spread(x) => self.expr(x),
                        Field::Assign { key, value } => {
                            match &key.kind {
                                KeyKind::Static(k) => {
                                    if let Some(first) = seen.insert(k, key.span) {
                                        self.duplicate("key", k, first, key.span);
                                    }
                                }
                                KeyKind::Dynamic(parts) => self.parts(parts),
                            }
                            self.expr(value);
                        }
                    }
                }
            }
            ExprKind::Select { base, key } => {
                self.expr(base);
                if let KeyKind::Dynamic(parts) = &key.kind {
                    self.parts(parts);
                }
            }
            ExprKind::Coalesce(a, b) => {
                self.expr(a);
                self.expr(b);
            }
            ExprKind::Let { bindings, body } => {
                let names: Vec<(Rc<str>, Span)> = bindings
                    .iter()
                    .map(|b| (b.name.clone(), b.name_span))
                    .collect();
                for (k, b) in bindings.iter().enumerate() {
                    if let Some((_, first)) = names[..k].iter().find(|(n, _)| *n == b.name) {
                        self.duplicate("binding", &b.name, *first, b.name_span);
                    }
                }
                self.scopes.push(Scope { names, visible: 0 });
                for (k, b) in bindings.iter().enumerate() {
                    // A function sees its own name, so it can recurse; other
                    // values see only the bindings before them.
                    let own = usize::from(matches!(b.value.kind, ExprKind::Fn(_)));
                    self.scopes.last_mut().expect("pushed").visible = k + own;
                    self.expr(&b.value);
                }
                self.scopes.last_mut().expect("pushed").visible = bindings.len();
                self.expr(body);
                self.scopes.pop();
            }
            ExprKind::Fn(def) => {
                let names: Vec<(Rc<str>, Span)> = def
                    .params
                    .iter()
                    .map(|p| (p.name.clone(), p.span))
                    .collect();
                for (k, p) in def.params.iter().enumerate() {
                    if let Some((_, first)) = names[..k].iter().find(|(n, _)| *n == p.name) {
                        self.duplicate("parameter", &p.name, *first, p.span);
                    }
                }
                self.scopes.push(Scope { names, visible: 0 });
                for (k, p) in def.params.iter().enumerate() {
                    self.scopes.last_mut().expect("pushed").visible = k;
                    if let Some(d) = &p.default {
                        self.expr(d);
                    }
                }
                self.scopes.last_mut().expect("pushed").visible = def.params.len();
                self.expr(&def.body);
                self.scopes.pop();
            }
            ExprKind::Call { func, args } => {
                self.expr(func);
                let mut seen: HashMap<&str, Span> = HashMap::new();
                for a in args {
                    if let Some((n, sp)) = &a.name
                        && let Some(first) = seen.insert(n, *sp)
                    {
                        self.duplicate("argument", n, first, *sp);
                    }
                    self.expr(&a.value);
                }
            }
            ExprKind::If(c, t, f) => {
                self.expr(c);
                self.expr(t);
                self.expr(f);
            }
            ExprKind::Unary(_, x) => self.expr(x),
            ExprKind::Binary(_, a, b) => {
                self.expr(a);
                self.expr(b);
            }
        }
    }
}

/// `a, b, c` with backquotes, at most 12 names then "…".
pub(crate) fn join_names<S: AsRef<str>>(names: &[S]) -> String {
    let mut out: Vec<String> = names
        .iter()
        .take(12)
        .map(|n| format!("`{}`", n.as_ref()))
        .collect();
    if names.len() > 12 {
        out.push(format!("and {} more", names.len() - 12));
    }
    out.join(", ")
}
