//! The grammar: turns source text into an [`Expr`].
//!
//! One function per rule, each documented with the rule it parses. Binary
//! operators are parsed by precedence climbing over the table in
//! `LEVELS`; everything else is recursive descent on top of the token
//! parsers in [`crate::lexer`].
//!
//! ```text
//! file     = ws expr EOF
//! expr     = binary(0)
//! binary(n)= unary (op(n) unary)*          op levels: ?? | || | && | == != < <= > >= | + - | * /
//! unary    = "-" unary | "!" unary | postfix
//! postfix  = primary ( "." key | "(" args ")" | record )*
//! primary  = int | string | istring | path | name | "true" | "false" | "null"
//!          | "(" expr ")" | list | record | let | if | fn
//! list     = "[" (expr ("," expr)* ","?)? "]"
//! record   = "{" (field ("," field)* ","?)? "}"
//! field    = ".." expr | key "=" expr
//! key      = name | keyword | string
//! let      = "let" name "=" expr ("," name "=" expr)* ","? "in" expr
//! if       = "if" expr "then" expr "else" expr
//! fn       = "fn" "(" (param ("," param)* ","?)? ")" "=>" expr
//! param    = name ("=" expr)?
//! args     = (arg ("," arg)* ","?)?        positional arguments before named ones
//! arg      = name "=" expr | expr
//! ```

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use nom::Err;

use crate::ast::*;
use crate::diag::{describe_found, found_len};
use crate::lexer::*;
use crate::span::{FileId, Span};

/// Parses a whole file. On failure returns every error found (at least one).
pub fn parse(file: FileId, text: &str) -> Result<Expr, Vec<PError>> {
    let state = State {
        file,
        text,
        depth: Cell::new(0),
        errors: RefCell::new(Vec::new()),
    };
    let i = In::new_extra(text, &state);
    let i = ws(i);
    let result = match expr(i) {
        Ok((rest, e)) => {
            if rest.fragment().is_empty() {
                Ok(e)
            } else {
                let mut err = PError::expected(&rest, "an operator");
                err.expected.push("end of file");
                Err(err)
            }
        }
        Err(Err::Error(e)) | Err(Err::Failure(e)) => Err(e),
        Err(Err::Incomplete(_)) => Err(PError::expected(&i, "more input")),
    };
    let mut errors = state.errors.take();
    match result {
        Ok(e) if errors.is_empty() => Ok(e),
        Ok(_) => Err(errors),
        // An unclosed bracket after recovered errors is usually one of their
        // consequences (recovery skipped the closing bracket).
        Err(e)
            if !errors.is_empty()
                && e.custom
                    .as_ref()
                    .is_some_and(|c| c.code == "parse::unclosed") =>
        {
            Err(errors)
        }
        Err(e) => {
            errors.push(e);
            Err(errors)
        }
    }
}

/// Records `e` and skips to the next item of the list being parsed (after
/// the next `,` at this level) or to its closing bracket, so that the parse
/// can report later, independent errors too. `None` when the error cannot be
/// recovered from (the end of the file, nesting limits, too many errors).
fn recover<'a>(i: In<'a>, e: PError, close: u8) -> Result<In<'a>, PError> {
    let state = i.extra;
    let at_end = e.offset >= state.text.trim_end().len();
    // Inside a string or at a nesting limit, no place to resume is reliable.
    let fatal = e.custom.as_ref().is_some_and(|c| {
        matches!(
            c.code,
            "parse::too_deep"
                | "parse::unclosed"
                | "parse::bad_escape"
                | "parse::bad_unicode_escape"
                | "parse::unterminated_string"
                | "parse::unterminated_interpolation"
        )
    });
    if at_end || fatal || state.errors.borrow().len() + 1 >= MAX_ERRORS {
        return Err(e);
    }
    let from = e.offset.max(i.location_offset());
    let bytes = state.text.as_bytes();
    let mut k = from;
    let mut depth = 0usize;
    while k < bytes.len() {
        match bytes[k] {
            b'"' => k = skip_string(bytes, k),
            b'\'' if bytes.get(k + 1) == Some(&b'\'') => k = skip_indented(bytes, k),
            b'#' => {
                while k < bytes.len() && bytes[k] != b'\n' {
                    k += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                k += 1;
            }
            c @ (b')' | b']' | b'}') => {
                if depth == 0 {
                    if c == close {
                        break;
                    }
                } else {
                    depth -= 1;
                }
                k += 1;
            }
            b',' if depth == 0 => {
                k += 1;
                break;
            }
            _ => k += 1,
        }
    }
    state.errors.borrow_mut().push(e);
    Ok(ws(advance(i, k - i.location_offset())))
}

/// The offset after the double-quoted string starting at `k`.
fn skip_string(b: &[u8], mut k: usize) -> usize {
    k += 1;
    while k < b.len() {
        match b[k] {
            b'\\' => k += 2,
            b'"' => return k + 1,
            _ => k += 1,
        }
    }
    b.len()
}

/// The offset after the indented string starting at `k`.
fn skip_indented(b: &[u8], mut k: usize) -> usize {
    k += 2;
    while k + 1 < b.len() {
        if b[k] == b'\'' && b[k + 1] == b'\'' {
            match b.get(k + 2) {
                Some(b'\'' | b'$' | b'\\') => k += 3,
                _ => return k + 2,
            }
        } else {
            k += 1;
        }
    }
    b.len()
}

/// Guards recursion: fails cleanly past [`MAX_NESTING`] levels.
fn nested<'a, T>(i: In<'a>, f: impl FnOnce(In<'a>) -> PResult<'a, T>) -> PResult<'a, T> {
    let state = i.extra;
    let d = state.depth.get() + 1;
    if d > MAX_NESTING || crate::eval::stack_low() {
        return fail(PError::custom(
            i.location_offset(),
            1,
            "parse::too_deep",
            format!("expression nested more than {MAX_NESTING} levels deep"),
            "nesting limit reached here",
            Some("split the expression with `let` bindings".into()),
        ));
    }
    state.depth.set(d);
    let r = f(i);
    state.depth.set(d - 1);
    r
}

/// `expr = binary(0)`
pub fn expr(i: In<'_>) -> PResult<'_, Expr> {
    nested(i, |i| binary(i, 0))
}

/// Operators by level, loosest first. Longer symbols come before their
/// prefixes (`<=` before `<`).
const LEVELS: [&[(&str, Op)]; 6] = [
    &[("??", Op::Coalesce)],
    &[("||", Op::Bin(BinaryOp::Or))],
    &[("&&", Op::Bin(BinaryOp::And))],
    &[
        ("==", Op::Bin(BinaryOp::Eq)),
        ("!=", Op::Bin(BinaryOp::Ne)),
        ("<=", Op::Bin(BinaryOp::Le)),
        (">=", Op::Bin(BinaryOp::Ge)),
        ("<", Op::Bin(BinaryOp::Lt)),
        (">", Op::Bin(BinaryOp::Gt)),
    ],
    &[("+", Op::Bin(BinaryOp::Add)), ("-", Op::Bin(BinaryOp::Sub))],
    &[("*", Op::Bin(BinaryOp::Mul)), ("/", Op::Bin(BinaryOp::Div))],
];

#[derive(Clone, Copy)]
enum Op {
    Coalesce,
    Bin(BinaryOp),
}

/// The operator of `level` at the start of `i`, if any. `=` after `<`/`>`
/// belongs to `<=`/`>=`, and `==` is not `=`; a lone `=` is no operator.
fn operator_at(i: &In<'_>, level: usize) -> Option<(usize, Op)> {
    let s = i.fragment();
    for &(sym, op) in LEVELS[level] {
        if s.starts_with(sym) {
            // `=>` never follows an operand; `/` starting a comment-free path
            // is still division in operator position.
            return Some((sym.len(), op));
        }
    }
    None
}

/// `binary(n) = binary(n+1) (op(n) binary(n+1))*`, left-associative.
fn binary(i: In<'_>, level: usize) -> PResult<'_, Expr> {
    if level == LEVELS.len() {
        return unary(i);
    }
    let (mut i, mut lhs) = binary(i, level + 1)?;
    // A chain `a + b + c ...` nests to the left in the tree: every operator
    // counts as one level of nesting, so later passes never recurse deeper
    // than MAX_NESTING whatever the shape of the input.
    let state = i.extra;
    let base_depth = state.depth.get();
    let result = (|| {
        while let Some((len, op)) = operator_at(&i, level) {
            let d = state.depth.get() + 1;
            if d > MAX_NESTING {
                return fail(PError::custom(
                    i.location_offset(),
                    len,
                    "parse::too_deep",
                    format!("expression nested more than {MAX_NESTING} levels deep"),
                    "nesting limit reached here",
                    Some("split long operator chains and deep brackets with `let` bindings".into()),
                ));
            }
            state.depth.set(d);
            let after = ws(advance(i, len));
            let (rest, rhs) = match binary(after, level + 1) {
                Ok(ok) => ok,
                Err(Err::Error(e)) => {
                    let mut e2 = PError::expected(&after, "an expression");
                    if e.offset > after.location_offset() {
                        e2 = e;
                    }
                    return fail(e2);
                }
                Err(e) => return Err(e),
            };
            let span = lhs.span.to(rhs.span);
            let kind = match op {
                Op::Coalesce => ExprKind::Coalesce(Box::new(lhs), Box::new(rhs)),
                Op::Bin(b) => ExprKind::Binary(b, Box::new(lhs), Box::new(rhs)),
            };
            lhs = Expr { span, kind };
            i = rest;
        }
        Ok((i, lhs))
    })();
    state.depth.set(base_depth);
    result
}

/// `unary = "-" unary | "!" unary | postfix`
fn unary(i: In<'_>) -> PResult<'_, Expr> {
    let s = i.fragment();
    let start = i.location_offset();
    let op = if s.starts_with('-') {
        UnaryOp::Neg
    } else if s.starts_with('!') && !s.starts_with("!=") {
        UnaryOp::Not
    } else {
        return postfix(i);
    };
    let after = ws(advance(i, 1));
    // `-123` is one literal so that i64::MIN can be written.
    if op == UnaryOp::Neg && after.fragment().starts_with(|c: char| c.is_ascii_digit()) {
        let (rest, v) = integer(after, true)?;
        let lit = Expr {
            span: span(&i, start, after.location_offset() + digits_len(&after)),
            kind: ExprKind::Int(v),
        };
        return postfix_rest(rest, lit);
    }
    let (rest, e) = nested(after, unary).map_err(|e| commit(e, &after))?;
    Ok((
        rest,
        Expr {
            span: span(&i, start, e.span.end as usize),
            kind: ExprKind::Unary(op, Box::new(e)),
        },
    ))
}

fn digits_len(i: &In<'_>) -> usize {
    i.fragment().bytes().take_while(u8::is_ascii_digit).count()
}

/// Turns a recoverable error into a failure that says an expression was
/// expected at `at` (unless the inner error got further).
fn commit(e: Err<PError>, at: &In<'_>) -> Err<PError> {
    match e {
        Err::Error(inner) if inner.offset <= at.location_offset() => {
            let mut err = PError::expected(at, "an expression");
            for x in inner.expected {
                if !err.expected.contains(&x) {
                    err.expected.push(x);
                }
            }
            Err::Failure(err)
        }
        Err::Error(inner) => Err::Failure(inner),
        other => other,
    }
}

/// `postfix = primary ( "." key | "(" args ")" | record )*`
fn postfix(i: In<'_>) -> PResult<'_, Expr> {
    let (i, e) = primary(i)?;
    postfix_rest(i, e)
}

fn postfix_rest(mut i: In<'_>, mut e: Expr) -> PResult<'_, Expr> {
    loop {
        let s = i.fragment();
        if s.starts_with('.') && !s.starts_with("..") {
            let after = ws(advance(i, 1));
            let (rest, key) = key(after).map_err(|err| match err {
                Err::Error(mut x) => {
                    x.expected = vec!["a field name"];
                    Err::Failure(x)
                }
                other => other,
            })?;
            let span = e.span.to(key.span);
            e = Expr {
                span,
                kind: ExprKind::Select {
                    base: Box::new(e),
                    key,
                },
            };
            i = rest;
        } else if s.starts_with('(') {
            let (rest, (args, close)) = call_args(i)?;
            let span = e.span.to(close);
            e = Expr {
                span,
                kind: ExprKind::Call {
                    func: Box::new(e),
                    args,
                },
            };
            i = rest;
        } else if s.starts_with('{') && record_call_allowed(&i, &e) {
            let (rest, rec) = nested(i, record)?;
            let span = e.span.to(rec.span);
            e = Expr {
                span,
                kind: ExprKind::Call {
                    func: Box::new(e),
                    args: vec![Arg {
                        name: None,
                        value: rec,
                    }],
                },
            };
            i = rest;
        } else {
            return Ok((i, e));
        }
    }
}

/// `f { ... }` is a call only when `f` is a name, a field access or a call,
/// and the `{` is on the same line: a record after a literal, or on the next
/// line, is far more often a missing `,` or `in` than a call.
fn record_call_allowed(i: &In<'_>, callee: &Expr) -> bool {
    let callee_ok = matches!(
        callee.kind,
        ExprKind::Var { .. } | ExprKind::Select { .. } | ExprKind::Call { .. }
    );
    let between = &i.extra.text[callee.span.end as usize..i.location_offset()];
    callee_ok && !between.contains('\n')
}

/// `primary = int | string | istring | path | name | ... | let | if | fn`
fn primary(i: In<'_>) -> PResult<'_, Expr> {
    let start = i.location_offset();
    let s = i.fragment();
    let Some(&c) = s.as_bytes().first() else {
        return backtrack(PError::expected(&i, "an expression"));
    };
    let mk = |kind, end: usize| Expr {
        span: span(&i, start, end),
        kind,
    };
    match c {
        b'0'..=b'9' => {
            let (rest, v) = integer(i, false)?;
            Ok((rest, mk(ExprKind::Int(v), start + digits_len(&i))))
        }
        b'"' => {
            let (rest, (parts, sp)) = string(i, expr)?;
            Ok((rest, mk(ExprKind::Str(parts), sp.end as usize)))
        }
        b'\'' if s.starts_with("''") => {
            let (rest, (parts, sp)) = indented_string(i, expr)?;
            Ok((rest, mk(ExprKind::Str(parts), sp.end as usize)))
        }
        b'.' | b'/' if at_path(&i) => {
            let (rest, (p, sp)) = path(i)?;
            Ok((rest, mk(ExprKind::Path(p), sp.end as usize)))
        }
        b'(' => nested(i, |i| {
            let (after, _) = symbol(i, "(", "`(`")?;
            let (after, mut e) = expr(after).map_err(|e| commit(e, &after))?;
            let (rest, close) = closing(after, ")", "`)`", start)?;
            // The parenthesised span, so errors underline the whole group.
            e.span = span(&i, start, close.end as usize);
            Ok((rest, e))
        }),
        b'[' => nested(i, list),
        b'{' => nested(i, record),
        _ => match peek_word(&i) {
            Some("true") => {
                let (rest, sp) = keyword(i, "true", "`true`")?;
                Ok((rest, mk(ExprKind::Bool(true), sp.end as usize)))
            }
            Some("false") => {
                let (rest, sp) = keyword(i, "false", "`false`")?;
                Ok((rest, mk(ExprKind::Bool(false), sp.end as usize)))
            }
            Some("null") => {
                let (rest, sp) = keyword(i, "null", "`null`")?;
                Ok((rest, mk(ExprKind::Null, sp.end as usize)))
            }
            Some("let") => let_expr(i),
            Some("if") => if_expr(i),
            Some("fn") => fn_expr(i),
            Some(w @ ("in" | "then" | "else")) => fail(PError::custom(
                start,
                w.len(),
                "parse::unexpected_keyword",
                format!("expected an expression, found the keyword `{w}`"),
                "unexpected keyword",
                None,
            )),
            Some(_) => {
                let (rest, (name, sp)) = ident(i)?;
                Ok((
                    rest,
                    Expr {
                        span: sp,
                        kind: ExprKind::Var {
                            name,
                            slot: Cell::new(Slot::Unresolved),
                        },
                    },
                ))
            }
            None => backtrack(PError::expected(&i, "an expression")),
        },
    }
}

/// A closing bracket; when it is missing, the error also points at the
/// opening one at `open`.
fn closing<'a>(i: In<'a>, sym: &'static str, what: &'static str, open: usize) -> PResult<'a, Span> {
    match symbol(i, sym, what) {
        Ok(ok) => Ok(ok),
        Err(_) => fail(unclosed(&i, what, open)),
    }
}

/// "expected `)`" where the closing bracket should be, pointing also at the
/// opening one. At the end of the file the opening bracket is the main place.
fn unclosed(i: &In<'_>, what: &'static str, open: usize) -> PError {
    let opener = &i.extra.text[open..open + 1];
    if i.fragment().trim_start().is_empty() {
        return PError::custom(
            open,
            1,
            "parse::unclosed",
            format!("`{opener}` is never closed: expected {what} before the end of the file"),
            "opened here",
            None,
        );
    }
    let at = i.location_offset();
    PError::custom(
        at,
        found_len(i.extra.text, at),
        "parse::unclosed",
        format!(
            "expected {what} to close the `{opener}`, found {}",
            describe_found(i.extra.text, at)
        ),
        format!("expected {what} here"),
        None,
    )
    .also(open, 1, format!("this `{opener}` is not closed"))
}

/// Parses `item ("," item)* ","?` up to the closing symbol `close`.
fn comma_list<'a, T>(
    mut i: In<'a>,
    close: &'static str,
    close_what: &'static str,
    open: usize,
    mut item: impl FnMut(In<'a>) -> PResult<'a, T>,
) -> PResult<'a, (Vec<T>, Span)> {
    let mut items = Vec::new();
    loop {
        if i.fragment().starts_with(close) {
            let (rest, sp) = symbol(i, close, close_what)?;
            return Ok((rest, (items, sp)));
        }
        let eof = i.location_offset() + i.fragment().len();
        let close_byte = close.as_bytes()[0];
        let (rest, x) = match item(i) {
            Ok(ok) => ok,
            Err(Err::Error(e) | Err::Failure(e)) if e.custom.is_none() && e.offset >= eof => {
                return fail(unclosed(&advance(i, i.fragment().len()), close_what, open));
            }
            Err(Err::Error(mut e) | Err::Failure(mut e)) => {
                if e.custom.is_none()
                    && e.offset == i.location_offset()
                    && !e.expected.contains(&close_what)
                {
                    e.expected.push(close_what);
                }
                match recover(i, e, close_byte) {
                    Ok(next) => {
                        i = next;
                        continue;
                    }
                    Err(e) => return fail(e),
                }
            }
            Err(e) => return Err(e),
        };
        items.push(x);
        i = rest;
        if i.fragment().starts_with(',') {
            i = ws(advance(i, 1));
            continue;
        }
        if i.fragment().starts_with(close) {
            continue;
        }
        if i.fragment().is_empty() {
            return fail(unclosed(&i, close_what, open));
        }
        let mut e = PError::expected(&i, "`,`");
        e.expected.push(close_what);
        match recover(i, e, close_byte) {
            Ok(next) => i = next,
            Err(e) => return fail(e),
        }
    }
}

/// `list = "[" (expr ("," expr)* ","?)? "]"`
fn list(i: In<'_>) -> PResult<'_, Expr> {
    let start = i.location_offset();
    let (after, _) = symbol(i, "[", "`[`")?;
    let (rest, (items, close)) = comma_list(after, "]", "`]`", start, expr)?;
    Ok((
        rest,
        Expr {
            span: span(&i, start, close.end as usize),
            kind: ExprKind::List(items),
        },
    ))
}

/// `record = "{" (field ("," field)* ","?)? "}"`
fn record(i: In<'_>) -> PResult<'_, Expr> {
    let start = i.location_offset();
    let (after, _) = symbol(i, "{", "`{`")?;
    let (rest, (fields, close)) = comma_list(after, "}", "`}`", start, field)?;
    Ok((
        rest,
        Expr {
            span: span(&i, start, close.end as usize),
            kind: ExprKind::Record(fields),
        },
    ))
}

/// `field = ".." expr | key "=" expr`
fn field(i: In<'_>) -> PResult<'_, Field> {
    if i.fragment().starts_with("..") && !i.fragment().starts_with("../") {
        let after = ws(advance(i, 2));
        let (rest, e) = expr(after).map_err(|e| commit(e, &after))?;
        return Ok((rest, Field::Spread(e)));
    }
    let (after_key, k) = key(i)?;
    let (after_eq, _) = assign(after_key, "`=` after the field name")?;
    let (rest, value) = expr(after_eq).map_err(|e| commit(e, &after_eq))?;
    Ok((
        rest,
        Field::Assign {
            key: k,
            value: Rc::new(value),
        },
    ))
}

/// A single `=` (not `==` or `=>`).
fn assign<'a>(i: In<'a>, what: &'static str) -> PResult<'a, Span> {
    let s = i.fragment();
    if s.starts_with('=') && !s.starts_with("==") && !s.starts_with("=>") {
        symbol(i, "=", what)
    } else {
        fail(PError::expected(&i, what))
    }
}

/// `key = name | keyword | string`: keywords are fine as field names.
fn key(i: In<'_>) -> PResult<'_, Key> {
    if let Some(w) = peek_word(&i) {
        let start = i.location_offset();
        let rest = ws(advance(i, w.len()));
        return Ok((
            rest,
            Key {
                span: span(&i, start, start + w.len()),
                kind: KeyKind::Static(Rc::from(w)),
            },
        ));
    }
    if i.fragment().starts_with('"') {
        let (rest, (mut parts, sp)) = string(i, expr)?;
        let kind = match parts.as_slice() {
            [StrPart::Lit(s)] => KeyKind::Static(s.clone()),
            _ => KeyKind::Dynamic(std::mem::take(&mut parts)),
        };
        return Ok((rest, Key { span: sp, kind }));
    }
    backtrack(PError::expected(&i, "a field name"))
}

/// `let = "let" name "=" expr ("," name "=" expr)* ","? "in" expr`
fn let_expr(i: In<'_>) -> PResult<'_, Expr> {
    let start = i.location_offset();
    let (mut i2, _) = keyword(i, "let", "`let`")?;
    let mut bindings = Vec::new();
    loop {
        if peek_word(&i2) == Some("in") && !bindings.is_empty() {
            break;
        }
        let (after, (name, name_span)) = ident(i2).map_err(|e| match e {
            Err::Error(x) => Err::Failure(x),
            other => other,
        })?;
        let (after, _) = assign(after, "`=` after the name")?;
        let (after, value) = expr(after).map_err(|e| commit(e, &after))?;
        bindings.push(Binding {
            name,
            name_span,
            value: Rc::new(value),
        });
        i2 = after;
        if i2.fragment().starts_with(',') {
            i2 = ws(advance(i2, 1));
            continue;
        }
        if peek_word(&i2) == Some("in") {
            break;
        }
        let mut e = PError::expected(&i2, "`,`");
        e.expected.push("`in`");
        return fail(e);
    }
    let (after_in, _) = keyword(i2, "in", "`in`")?;
    let (rest, body) = expr(after_in).map_err(|e| commit(e, &after_in))?;
    Ok((
        rest,
        Expr {
            span: span(&i, start, body.span.end as usize),
            kind: ExprKind::Let {
                bindings,
                body: Box::new(body),
            },
        },
    ))
}

/// `if = "if" expr "then" expr "else" expr`
fn if_expr(i: In<'_>) -> PResult<'_, Expr> {
    let start = i.location_offset();
    let (after, _) = keyword(i, "if", "`if`")?;
    let (after, c) = expr(after).map_err(|e| commit(e, &after))?;
    let (after, _) = keyword(after, "then", "`then`").map_err(to_failure)?;
    let (after, t) = expr(after).map_err(|e| commit(e, &after))?;
    let (after, _) = keyword(after, "else", "`else`").map_err(to_failure)?;
    let (rest, e) = expr(after).map_err(|e| commit(e, &after))?;
    Ok((
        rest,
        Expr {
            span: span(&i, start, e.span.end as usize),
            kind: ExprKind::If(Box::new(c), Box::new(t), Box::new(e)),
        },
    ))
}

fn to_failure(e: Err<PError>) -> Err<PError> {
    match e {
        Err::Error(x) => Err::Failure(x),
        other => other,
    }
}

/// `fn = "fn" "(" (param ("," param)* ","?)? ")" "=>" expr`
fn fn_expr(i: In<'_>) -> PResult<'_, Expr> {
    let start = i.location_offset();
    let (after, _) = keyword(i, "fn", "`fn`")?;
    let open = after.location_offset();
    let (after, _) = symbol(after, "(", "`(` after `fn`").map_err(to_failure)?;
    let (after, (params, close)) = comma_list(after, ")", "`)`", open, param)?;
    let head = span(&i, start, close.end as usize);
    let (after, _) = symbol(after, "=>", "`=>` before the function body").map_err(to_failure)?;
    let (rest, body) = expr(after).map_err(|e| commit(e, &after))?;
    Ok((
        rest,
        Expr {
            span: span(&i, start, body.span.end as usize),
            kind: ExprKind::Fn(Rc::new(FnDef { params, body, head })),
        },
    ))
}

/// `param = name ("=" expr)?`
fn param(i: In<'_>) -> PResult<'_, Param> {
    let (after, (name, sp)) = ident(i)?;
    let s = after.fragment();
    if s.starts_with('=') && !s.starts_with("==") && !s.starts_with("=>") {
        let (after, _) = symbol(after, "=", "`=`")?;
        let (rest, d) = expr(after).map_err(|e| commit(e, &after))?;
        return Ok((
            rest,
            Param {
                name,
                span: sp,
                default: Some(d),
            },
        ));
    }
    Ok((
        after,
        Param {
            name,
            span: sp,
            default: None,
        },
    ))
}

/// `"(" args ")"`, returning the arguments and the span of `)`.
fn call_args(i: In<'_>) -> PResult<'_, (Vec<Arg>, Span)> {
    let open = i.location_offset();
    let (after, _) = symbol(i, "(", "`(`")?;
    nested(after, |after| comma_list(after, ")", "`)`", open, arg)).and_then(
        |(rest, (args, close))| {
            // Positional arguments must come first.
            let mut seen_named: Option<Span> = None;
            for a in &args {
                match &a.name {
                    Some((_, sp)) => seen_named = seen_named.or(Some(*sp)),
                    None => {
                        if seen_named.is_some() {
                            return fail(PError::custom(
                                a.value.span.start as usize,
                                a.value.span.len().max(1),
                                "parse::positional_after_named",
                                "positional argument after a named argument",
                                "positional argument",
                                Some(
                                    "write positional arguments first, then `name = value` ones"
                                        .into(),
                                ),
                            ));
                        }
                    }
                }
            }
            Ok((rest, (args, close)))
        },
    )
}

/// `arg = name "=" expr | expr`
fn arg(i: In<'_>) -> PResult<'_, Arg> {
    if let Some(w) = peek_word(&i)
        && !KEYWORDS.contains(&w)
    {
        let after_name = ws(advance(i, w.len()));
        let s = after_name.fragment();
        if s.starts_with('=') && !s.starts_with("==") && !s.starts_with("=>") {
            let start = i.location_offset();
            let after = ws(advance(after_name, 1));
            let (rest, value) = expr(after).map_err(|e| commit(e, &after))?;
            return Ok((
                rest,
                Arg {
                    name: Some((Rc::from(w), span(&i, start, start + w.len()))),
                    value,
                },
            ));
        }
    }
    let (rest, value) = expr(i)?;
    Ok((rest, Arg { name: None, value }))
}
