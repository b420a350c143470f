//! Prints an expression back as source text that parses to the same tree.
//!
//! The output is canonical, not pretty: one line, minimal parentheses, string
//! escapes normalised. It exists so that generated trees can be checked to
//! round-trip through the parser, and as the base of a formatter.

use std::fmt::Write;

use crate::ast::*;
use crate::lexer::{KEYWORDS, is_ident_char, is_ident_start};

/// The source text of `e`.
pub fn print(e: &Expr) -> String {
    let mut out = String::new();
    expr(&mut out, e, 0);
    out
}

/// Binding strength: 0 `??`, 1 `||`, 2 `&&`, 3 comparisons, 4 `+ -`, 5 `* /`,
/// 6 prefix operators, 7 postfix and atoms. `let`, `if` and `fn` extend as
/// far right as they can, so they count as the loosest.
fn level(e: &Expr) -> u8 {
    match &e.kind {
        ExprKind::Let { .. } | ExprKind::If(..) | ExprKind::Fn(_) => 0,
        ExprKind::Coalesce(..) => 1,
        ExprKind::Binary(op, ..) => binary_level(*op),
        ExprKind::Unary(..) => 7,
        // A negative literal is a prefix operator as far as `.x` is
        // concerned, and `./a.b` would read as one path.
        ExprKind::Int(n) if *n < 0 => 7,
        ExprKind::Path(_) => 7,
        _ => 8,
    }
}

fn binary_level(op: BinaryOp) -> u8 {
    match op {
        BinaryOp::Or => 2,
        BinaryOp::And => 3,
        BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge => {
            4
        }
        BinaryOp::Add | BinaryOp::Sub => 5,
        BinaryOp::Mul | BinaryOp::Div => 6,
    }
}

/// Prints `e`, in parentheses when it binds less tightly than `min`.
fn expr(out: &mut String, e: &Expr, min: u8) {
    if level(e) < min {
        out.push('(');
        expr(out, e, 0);
        out.push(')');
        return;
    }
    match &e.kind {
        ExprKind::Null => out.push_str("null"),
        ExprKind::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        ExprKind::Int(n) => {
            let _ = write!(out, "{n}");
        }
        ExprKind::Str(parts) => string(out, parts),
        ExprKind::Path(p) => out.push_str(p),
        ExprKind::Var { name, .. } => out.push_str(name),
        ExprKind::List(items) => {
            out.push('[');
            for (k, x) in items.iter().enumerate() {
                if k > 0 {
                    out.push_str(", ");
                }
                expr(out, x, 0);
            }
            out.push(']');
        }
        ExprKind::Record(fields) => {
            out.push('{');
            for (k, f) in fields.iter().enumerate() {
                out.push_str(if k > 0 { ", " } else { " " });
                match f {
                    Field::Spread(x) => {
                        // `../a` would read as a path.
                        let mut inner = String::new();
                        expr(&mut inner, x, 0);
                        out.push_str("..");
                        if inner.starts_with(['.', '/']) {
                            let _ = write!(out, "({inner})");
                        } else {
                            out.push_str(&inner);
                        }
                    }
                    Field::Assign { key: k, value } => {
                        self::key(out, k);
                        out.push_str(" = ");
                        expr(out, value, 0);
                    }
                }
            }
            out.push_str(if fields.is_empty() { "}" } else { " }" });
        }
        ExprKind::Select { base, key: k } => {
            expr(out, base, 8);
            out.push('.');
            key(out, k);
        }
        ExprKind::Coalesce(a, b) => {
            expr(out, a, 1);
            out.push_str(" ?? ");
            expr(out, b, 2);
        }
        ExprKind::Binary(op, a, b) => {
            let l = binary_level(*op);
            expr(out, a, l);
            let _ = write!(out, " {} ", op.symbol());
            expr(out, b, l + 1);
        }
        ExprKind::Unary(op, x) => {
            out.push(if *op == UnaryOp::Neg { '-' } else { '!' });
            // `-5` would read back as a literal, `-5.x` as `(-5).x`:
            // an operand that starts with a digit goes in parentheses.
            let mut inner = String::new();
            expr(&mut inner, x, 7);
            if inner.starts_with(|c: char| c.is_ascii_digit()) {
                out.push('(');
                out.push_str(&inner);
                out.push(')');
            } else {
                out.push_str(&inner);
            }
        }
        ExprKind::Let { bindings, body } => {
            out.push_str("let ");
            for (k, b) in bindings.iter().enumerate() {
                if k > 0 {
                    out.push_str(", ");
                }
                let _ = write!(out, "{} = ", b.name);
                expr(out, &b.value, 0);
            }
            out.push_str(" in ");
            expr(out, body, 0);
        }
        ExprKind::Fn(def) => {
            out.push_str("fn(");
            for (k, p) in def.params.iter().enumerate() {
                if k > 0 {
                    out.push_str(", ");
                }
                out.push_str(&p.name);
                if let Some(d) = &p.default {
                    out.push_str(" = ");
                    expr(out, d, 0);
                }
            }
            out.push_str(") => ");
            expr(out, &def.body, 0);
        }
        ExprKind::Call { func, args } => {
            expr(out, func, 8);
            out.push('(');
            for (k, a) in args.iter().enumerate() {
                if k > 0 {
                    out.push_str(", ");
                }
                if let Some((n, _)) = &a.name {
                    let _ = write!(out, "{n} = ");
                }
                expr(out, &a.value, 0);
            }
            out.push(')');
        }
        ExprKind::If(c, t, f) => {
            out.push_str("if ");
            expr(out, c, 0);
            out.push_str(" then ");
            expr(out, t, 0);
            out.push_str(" else ");
            expr(out, f, 0);
        }
    }
}

fn key(out: &mut String, k: &Key) {
    match &k.kind {
        KeyKind::Static(s) if is_name(s) => out.push_str(s),
        KeyKind::Static(s) => string(out, &[StrPart::Lit(s.clone())]),
        KeyKind::Dynamic(parts) => string(out, parts),
    }
}

/// Whether `s` can be written as a bare field name (keywords included).
fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty() && is_ident_start(b[0]) && b.iter().all(|&c| is_ident_char(c))
}

/// Whether `s` can be a variable name.
pub fn is_variable_name(s: &str) -> bool {
    is_name(s) && !KEYWORDS.contains(&s)
}

fn string(out: &mut String, parts: &[StrPart]) {
    out.push('"');
    for p in parts {
        match p {
            StrPart::Lit(s) => {
                for c in s.chars() {
                    match c {
                        '"' => out.push_str("\\\""),
                        '\\' => out.push_str("\\\\"),
                        '$' => out.push_str("\\$"),
                        '\n' => out.push_str("\\n"),
                        '\t' => out.push_str("\\t"),
                        '\r' => out.push_str("\\r"),
                        c if c.is_control() => {
                            let _ = write!(out, "\\u{{{:X}}}", c as u32);
                        }
                        c => out.push(c),
                    }
                }
            }
            StrPart::Interp(e) => {
                out.push_str("${");
                expr(out, e, 0);
                out.push('}');
            }
        }
    }
    out.push('"');
}
