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
    /// Name to its first index in `names` (a let may bind thousands of names).
    index: HashMap<Rc<str>, usize>,
    /// How many of `names` are visible (let bindings see only earlier ones).
    visible: usize,
}

impl Scope {
    fn new(names: Vec<(Rc<str>, Span)>) -> Scope {
        let mut index = HashMap::with_capacity(names.len());
        for (k, (n, _)) in names.iter().enumerate() {
            index.entry(n.clone()).or_insert(k);
        }
        Scope {
            names,
            index,
            visible: 0,
        }
    }
}

/// Resolves `expr` in place. `globals` maps builtin and prelude names to their
/// index in the global table.
pub fn resolve(expr: &Expr, globals: &HashMap<Rc<str>, u32>) -> Result<(), Vec<ResolveError>> {
    let mut r = Resolver {
        scopes: Vec::new(),
        records: Vec::new(),
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
    /// Static keys of the record literals being resolved, innermost last.
    records: Vec<Vec<Rc<str>>>,
    globals: &'g HashMap<Rc<str>, u32>,
    errors: Vec<ResolveError>,
}

impl Resolver<'_> {
    fn lookup(&self, name: &str) -> Option<Slot> {
        for (depth, scope) in self.scopes.iter().rev().enumerate() {
            if let Some(&index) = scope.index.get(name).filter(|&&i| i < scope.visible) {
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
        // The name is bound in an enclosing `let`, but not visible yet.
        let later = self
            .scopes
            .iter()
            .rev()
            .any(|s| s.index.get(name).is_some_and(|&i| i >= s.visible));
        if later {
            let help = format!(
                "a let binding sees only the bindings before it (a function also sees itself); move `{name}` before this use"
            );
            self.unknown(
                format!("`{name}` is used before it is defined"),
                span,
                "not visible here",
                help,
            );
            return;
        }
        if self
            .records
            .iter()
            .any(|keys| keys.iter().any(|k| &**k == name))
        {
            let help = format!(
                "the fields of a record do not see each other: bind `{name}` with `let` and use it in both places"
            );
            self.unknown(
                format!("unknown variable `{name}`"),
                span,
                "not defined",
                help,
            );
            return;
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
        self.unknown(
            format!("unknown variable `{name}`"),
            span,
            "not defined",
            help,
        );
    }

    fn unknown(&mut self, message: String, span: Span, label: &str, help: String) {
        self.errors.push(ResolveError {
            code: "eval::unknown_variable",
            message,
            span,
            label: label.into(),
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
                self.records.push(
                    fields
                        .iter()
                        .filter_map(|f| match f {
                            Field::Assign { key, .. } => match &key.kind {
                                KeyKind::Static(k) => Some(k.clone()),
                                KeyKind::Dynamic(_) => None,
                            },
                            Field::Spread(_) => None,
                        })
                        .collect(),
                );
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
                self.records.pop();
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
                let scope = Scope::new(names);
                for (k, b) in bindings.iter().enumerate() {
                    let first = scope.index[&b.name];
                    if first != k {
                        self.duplicate("binding", &b.name, scope.names[first].1, b.name_span);
                    }
                }
                self.scopes.push(scope);
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
                let scope = Scope::new(names);
                for (k, p) in def.params.iter().enumerate() {
                    let first = scope.index[&p.name];
                    if first != k {
                        self.duplicate("parameter", &p.name, scope.names[first].1, p.span);
                    }
                }
                self.scopes.push(scope);
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
