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
