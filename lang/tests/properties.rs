//! Properties: the parser and the evaluator never panic, whatever the input,
//! and every failure renders as a diagnostic that names a location.

use cbuild_lang::{Evaluator, FsHost, SourceMap, render};
use proptest::prelude::*;

/// Bytes of a recipe-like alphabet: most random strings of these hit deep
/// corners of the grammar (strings, interpolation, indented strings, paths).
fn recipe_soup() -> impl Strategy<Value = String> {
    let tokens = prop::sample::select(vec![
        "let ",
        " in ",
        "if ",
        " then ",
        " else ",
        "fn",
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        ",",
        " = ",
        "=>",
        ".",
        "..",
        "??",
        "+",
        "-",
        "*",
        "/",
        "==",
        "!=",
        "<",
        "<=",
        ">",
        ">=",
        "&&",
        "||",
        "!",
        "\"",
        "''",
        "'''",
        "''$",
        "''\\n",
        "${",
        "$",
        "\\",
        "\\u{1F600}",
        "\n",
        " ",
        "#c\n",
        "x",
        "y",
        "f",
        "a",
        "b",
        "0",
        "1",
        "9223372036854775807",
        "-",
        "./p",
        "../q",
        "/r",
        "true",
        "false",
        "null",
        "len",
        "map",
        "range",
        "sort",
        "join",
        "to_json",
        "from_json",
        "error",
        "keys",
        "fold",
        "é",
        "\t",
    ]);
    prop::collection::vec(tokens, 0..40).prop_map(|v| v.concat())
}

fn parse_renders(text: &str) {
    let mut sources = SourceMap::new();
    let file = sources.add("p.cb".into(), None, text.into());
    if let Err(errors) = cbuild_lang::parser::parse(file, text) {
        assert!(!errors.is_empty());
        let d = cbuild_lang::diag::from_parse_errors(&sources, file, &errors);
        let out = render(&d, 80, false);
        let blank = text.trim().is_empty();
        assert!(
            out.contains("p.cb:") || (blank && out.contains("p.cb is empty")),
            "no location in:\n{out}"
        );
    }
}

fn eval_renders(text: String) {
    cbuild_lang::with_big_stack(move || {
        let mut host = FsHost::new("in property tests", "/nonexistent-dir".into());
        let mut ev = Evaluator::new(&mut host, "/nonexistent-dir".into()).expect("prelude");
        if let Err(d) = ev.eval_expr("e.cb", &text).and_then(|v| ev.to_json(&v)) {
            let out = render(&d, 80, false);
            assert!(!out.is_empty());
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn parser_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        parse_renders(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn parser_never_panics_on_token_soup(text in recipe_soup()) {
        parse_renders(&text);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    #[test]
    fn evaluator_never_panics_on_token_soup(text in recipe_soup()) {
        eval_renders(text);
    }
}

/// A generated expression tree (cloneable, unlike the AST).
#[derive(Clone, Debug)]
enum G {
    Null,
    Bool(bool),
    Int(i64),
    Str(Vec<GPart>),
    Path(String),
    Var(String),
    List(Vec<G>),
    Record(Vec<GField>),
    Select(Box<G>, String),
    Coalesce(Box<G>, Box<G>),
    Binary(u8, Box<G>, Box<G>),
    Unary(bool, Box<G>),
    Let(Vec<(String, G)>, Box<G>),
    Fn(Vec<(String, Option<G>)>, Box<G>),
    Call(Box<G>, Vec<G>, Vec<(String, G)>),
    If(Box<G>, Box<G>, Box<G>),
}

#[derive(Clone, Debug)]
enum GPart {
    Lit(String),
    Interp(G),
}

#[derive(Clone, Debug)]
enum GField {
    Assign(String, G),
    Spread(G),
}

fn name() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "src", "x_1", "map", "pkgs"]).prop_map(String::from)
}

fn field_name() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "in", "name", "c-ares", "", "with space", "é"])
        .prop_map(String::from)
}

fn text() -> impl Strategy<Value = String> {
    "[a-z$\"\\\\{}\n\t'é ]{0,8}"
}

fn tree() -> impl Strategy<Value = G> {
    let leaf = prop_oneof![
        Just(G::Null),
        any::<bool>().prop_map(G::Bool),
        any::<i64>().prop_map(G::Int),
        text().prop_map(|t| G::Str(vec![GPart::Lit(t)])),
        prop::sample::select(vec!["./a", "../b/c", "/usr/lib", "./."])
            .prop_map(|p| G::Path(p.into())),
        name().prop_map(G::Var),
    ];
    leaf.prop_recursive(5, 48, 4, |inner| {
        let boxed = inner.clone().prop_map(Box::new);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(G::List),
            prop::collection::vec(
                prop_oneof![
                    (field_name(), inner.clone()).prop_map(|(k, v)| GField::Assign(k, v)),
                    inner.clone().prop_map(GField::Spread),
                ],
                0..4
            )
            .prop_map(G::Record),
            (boxed.clone(), field_name()).prop_map(|(b, k)| G::Select(b, k)),
            (boxed.clone(), boxed.clone()).prop_map(|(a, b)| G::Coalesce(a, b)),
            (0u8..12, boxed.clone(), boxed.clone()).prop_map(|(o, a, b)| G::Binary(o, a, b)),
            (any::<bool>(), boxed.clone()).prop_map(|(n, x)| G::Unary(n, x)),
            (
                prop::collection::vec((name(), inner.clone()), 1..3),
                boxed.clone()
            )
                .prop_map(|(b, body)| G::Let(b, body)),
            (
                prop::collection::vec((name(), prop::option::of(inner.clone())), 0..3),
                boxed.clone()
            )
                .prop_map(|(p, body)| G::Fn(p, body)),
            (
                boxed.clone(),
                prop::collection::vec(inner.clone(), 0..3),
                prop::collection::vec((name(), inner.clone()), 0..2)
            )
                .prop_map(|(f, p, n)| G::Call(f, p, n)),
            (boxed.clone(), boxed.clone(), boxed.clone()).prop_map(|(c, t, f)| G::If(c, t, f)),
            prop::collection::vec(
                prop_oneof![
                    text().prop_map(GPart::Lit),
                    inner.clone().prop_map(GPart::Interp)
                ],
                1..4
            )
            .prop_map(G::Str),
        ]
    })
}

mod build {
    use super::{G, GField, GPart};
    use cbuild_lang::ast::*;
    use cbuild_lang::span::{FileId, Span};
    use std::cell::Cell;
    use std::rc::Rc;

    const SP: Span = Span {
        file: FileId(0),
        start: 0,
        end: 0,
    };
    const OPS: [BinaryOp; 12] = [
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Eq,
        BinaryOp::Ne,
        BinaryOp::Lt,
        BinaryOp::Le,
        BinaryOp::Gt,
        BinaryOp::Ge,
        BinaryOp::And,
        BinaryOp::Or,
    ];

    fn e(kind: ExprKind) -> Expr {
        Expr { span: SP, kind }
    }

    fn parts(ps: &[GPart]) -> Vec<StrPart> {
        ps.iter()
            .map(|p| match p {
                GPart::Lit(t) => StrPart::Lit(Rc::from(t.as_str())),
                GPart::Interp(g) => StrPart::Interp(expr(g)),
            })
            .collect()
    }

    fn key(k: &str) -> Key {
        Key {
            span: SP,
            kind: KeyKind::Static(Rc::from(k)),
        }
    }

    pub fn expr(g: &G) -> Expr {
        e(match g {
            G::Null => ExprKind::Null,
            G::Bool(b) => ExprKind::Bool(*b),
            G::Int(n) => ExprKind::Int(*n),
            G::Str(p) => ExprKind::Str(parts(p)),
            G::Path(p) => ExprKind::Path(Rc::from(p.as_str())),
            G::Var(n) => ExprKind::Var {
                name: Rc::from(n.as_str()),
                slot: Cell::new(Slot::Unresolved),
            },
            G::List(xs) => ExprKind::List(xs.iter().map(expr).collect()),
            G::Record(fs) => ExprKind::Record(
                fs.iter()
                    .map(|f| match f {
                        GField::Assign(k, v) => Field::Assign {
                            key: key(k),
                            value: Rc::new(expr(v)),
                        },
                        GField::Spread(v) => Field::Spread(expr(v)),
                    })
                    .collect(),
            ),
            G::Select(b, k) => ExprKind::Select {
                base: Box::new(expr(b)),
                key: key(k),
            },
            G::Coalesce(a, b) => ExprKind::Coalesce(Box::new(expr(a)), Box::new(expr(b))),
            G::Binary(o, a, b) => {
                ExprKind::Binary(OPS[*o as usize], Box::new(expr(a)), Box::new(expr(b)))
            }
            G::Unary(neg, x) => ExprKind::Unary(
                if *neg { UnaryOp::Neg } else { UnaryOp::Not },
                Box::new(expr(x)),
            ),
            G::Let(bs, body) => ExprKind::Let {
                bindings: bs
                    .iter()
                    .map(|(n, v)| Binding {
                        name: Rc::from(n.as_str()),
                        name_span: SP,
                        value: Rc::new(expr(v)),
                    })
                    .collect(),
                body: Box::new(expr(body)),
            },
            G::Fn(ps, body) => ExprKind::Fn(Rc::new(FnDef {
                params: ps
                    .iter()
                    .map(|(n, d)| Param {
                        name: Rc::from(n.as_str()),
                        span: SP,
                        default: d.as_ref().map(expr),
                    })
                    .collect(),
                body: expr(body),
                head: SP,
            })),
            G::Call(f, pos, named) => ExprKind::Call {
                func: Box::new(expr(f)),
                args: pos
                    .iter()
                    .map(|v| Arg {
                        name: None,
                        value: expr(v),
                    })
                    .chain(named.iter().map(|(n, v)| Arg {
                        name: Some((Rc::from(n.as_str()), SP)),
                        value: expr(v),
                    }))
                    .collect(),
            },
            G::If(c, t, f) => ExprKind::If(Box::new(expr(c)), Box::new(expr(t)), Box::new(expr(f))),
        })
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, .. ProptestConfig::default() })]

    /// print → parse → print gives the same text: the printer and the parser
    /// agree on precedence, associativity, escapes and every form.
    #[test]
    fn printed_trees_reparse_to_the_same_tree(g in tree()) {
        let printed = cbuild_lang::printer::print(&build::expr(&g));
        let reparsed = match cbuild_lang::parser::parse(cbuild_lang::FileId(0), &printed) {
            Ok(e) => e,
            Err(errs) => panic!("{printed}\ndoes not parse: {errs:?}"),
        };
        let again = cbuild_lang::printer::print(&reparsed);
        prop_assert_eq!(printed, again);
    }
}
