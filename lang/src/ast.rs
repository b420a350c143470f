//! The abstract syntax tree produced by the parser.
//!
//! Every node carries a [`Span`]. Sub-expressions that become lazy thunks (let
//! bindings, record fields) and function definitions are reference-counted so
//! that a thunk or a closure can hold on to its code without borrowing the tree.
//! Variable references start unresolved; [`crate::resolve`] fills in their
//! [`Slot`] before evaluation.

use std::cell::Cell;
use std::rc::Rc;

use crate::span::Span;

/// An expression with its span.
#[derive(Debug)]
pub struct Expr {
    /// Where it is in the source.
    pub span: Span,
    /// What it is.
    pub kind: ExprKind,
}

/// Where a variable lives at run time, decided by the resolver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Not resolved yet.
    Unresolved,
    /// `depth` scopes up from the current one, at `index` in that scope.
    Local {
        /// Number of scopes to walk up.
        depth: u32,
        /// Index inside that scope.
        index: u32,
    },
    /// A builtin or prelude name, by index in the global table.
    Global(u32),
}

/// The forms of the language.
#[derive(Debug)]
pub enum ExprKind {
    /// `null`
    Null,
    /// `true`, `false`
    Bool(bool),
    /// A decimal integer.
    Int(i64),
    /// A string, plain or indented, with its interpolations.
    Str(Vec<StrPart>),
    /// A path literal, as written (`./a`, `../b`, `/c`).
    Path(Rc<str>),
    /// A variable reference.
    Var {
        /// The name.
        name: Rc<str>,
        /// Filled in by the resolver.
        slot: Cell<Slot>,
    },
    /// `[a, b]`
    List(Vec<Expr>),
    /// `{ a = 1, ..base }`
    Record(Vec<Field>),
    /// `e.a` or `e."a"`
    Select {
        /// The record.
        base: Box<Expr>,
        /// The field name.
        key: Key,
    },
    /// `e ?? d`
    Coalesce(Box<Expr>, Box<Expr>),
    /// `let a = 1, b = 2 in body`
    Let {
        /// The bindings, in order.
        bindings: Vec<Binding>,
        /// The body.
        body: Box<Expr>,
    },
    /// `fn(x, y = 2) => body`
    Fn(Rc<FnDef>),
    /// `f(a, b = c)` and `f { ... }`
    Call {
        /// The function.
        func: Box<Expr>,
        /// Positional arguments, then named ones.
        args: Vec<Arg>,
    },
    /// `if c then a else b`
    If(Box<Expr>, Box<Expr>, Box<Expr>),
    /// `-x`, `!b`
    Unary(UnaryOp, Box<Expr>),
    /// `a + b` and the other binary operators except `??`.
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
}

/// A piece of a string literal.
#[derive(Debug)]
pub enum StrPart {
    /// Literal text, escapes already decoded.
    Lit(Rc<str>),
    /// `${expr}`
    Interp(Expr),
}

/// A record key or field name.
#[derive(Debug)]
pub struct Key {
    /// Where the key is written.
    pub span: Span,
    /// The key itself.
    pub kind: KeyKind,
}

/// A key known when parsing, or computed by interpolation.
#[derive(Debug)]
pub enum KeyKind {
    /// An identifier or a string without interpolation.
    Static(Rc<str>),
    /// A string with interpolation.
    Dynamic(Vec<StrPart>),
}

/// A member of a record literal.
#[derive(Debug)]
pub enum Field {
    /// `key = value`
    Assign {
        /// The key.
        key: Key,
        /// The value, evaluated lazily.
        value: Rc<Expr>,
    },
    /// `..base`
    Spread(Expr),
}

/// `name = value` in a `let`.
#[derive(Debug)]
pub struct Binding {
    /// The bound name.
    pub name: Rc<str>,
    /// Where the name is written.
    pub name_span: Span,
    /// The value, evaluated lazily.
    pub value: Rc<Expr>,
}

/// A function literal.
#[derive(Debug)]
pub struct FnDef {
    /// The parameters, in order.
    pub params: Vec<Param>,
    /// The body.
    pub body: Expr,
    /// The span of the `fn(...)` head, shown in argument errors.
    pub head: Span,
}

/// A function parameter.
#[derive(Debug)]
pub struct Param {
    /// Its name.
    pub name: Rc<str>,
    /// Where the name is written.
    pub span: Span,
    /// Its default value, evaluated when the argument is missing.
    pub default: Option<Expr>,
}

/// An argument in a call.
#[derive(Debug)]
pub struct Arg {
    /// `Some` for a named argument `name = value`.
    pub name: Option<(Rc<str>, Span)>,
    /// The value.
    pub value: Expr,
}

/// Prefix operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryOp {
    /// `-`
    Neg,
    /// `!`
    Not,
}

/// Binary operators other than `??`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `&&`
    And,
    /// `||`
    Or,
}

impl BinaryOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Eq => "==",
            BinaryOp::Ne => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::And => "&&",
            BinaryOp::Or => "||",
        }
    }
}
