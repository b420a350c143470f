//! Inputs the fuzzers found, kept so they stay fixed. Each runs on a thread
//! with a small stack, like the fuzzers' main thread.

use std::path::Path;

use cbuild_lang::{Evaluator, FsHost, render};

fn run_small_stack(text: String) -> String {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let mut host = FsHost::new("in regression tests", "/nonexistent".into());
            let mut ev = Evaluator::new(&mut host, "/nonexistent".into()).expect("prelude");
            match ev.eval_expr("r.cb", &text).and_then(|v| ev.to_json(&v)) {
                Ok(json) => json,
                Err(d) => render(&d, 80, false),
            }
        })
        .expect("thread")
        .join()
        .expect("no panic, no stack overflow")
}

/// cargo-fuzz `parse`, 2026-11-24: 2 KB of nested `(` overflowed the 8 MiB
/// main-thread stack under ASan before the parser checked the stack left.
#[test]
fn fuzz_parse_stack_overflow() {
    let bytes = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/regressions/fuzz-parse-stack-overflow.cb"),
    )
    .unwrap();
    let out = run_small_stack(String::from_utf8_lossy(&bytes).into_owned());
    assert!(out.contains("parse::"), "{out}");
}

/// Deep nesting of every kind on a 2 MiB stack ends in a diagnostic.
#[test]
fn deep_nesting_on_a_small_stack() {
    for (open, close) in [
        ("(", ")"),
        ("[", "]"),
        ("{ a = ", " }"),
        ("-", ""),
        ("!", ""),
    ] {
        let text = format!("{}1{}", open.repeat(5000), close.repeat(5000));
        let out = run_small_stack(text);
        assert!(
            out.contains("too_deep") || out.contains("type_error"),
            "{open}: {out}"
        );
    }
}

/// cargo-fuzz `eval`, 2026-11-24: every evaluator leaked the prelude's let
/// frames (reference cycles); LeakSanitizer flagged it on the first input.
/// The frames are now cleared when the evaluator is dropped.
#[test]
fn fuzz_eval_leak_frames_are_released() {
    let mut host = FsHost::new("in regression tests", "/nonexistent".into());
    let weak = {
        let mut ev = Evaluator::new(&mut host, "/nonexistent".into()).expect("prelude");
        let v = ev
            .eval_expr("r.cb", "let f = fn(x) => f, r = { f = f } in r")
            .unwrap();
        let cbuild_lang::Value::Record(r) = v else {
            panic!()
        };
        let f = ev.force_thunk(&r.fields["f"]).unwrap();
        let cbuild_lang::Value::Function(func) = f else {
            panic!()
        };
        std::rc::Rc::downgrade(&func)
    };
    assert!(
        weak.upgrade().is_none(),
        "the closure outlived its evaluator"
    );
}
