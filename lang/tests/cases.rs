//! The language corpus: one file per behaviour in `tests/cases/`.
//!
//! - `eval-okay-NAME.cb` evaluates, and its JSON (sorted keys, compact) equals
//!   `eval-okay-NAME.exp`.
//! - `eval-fail-NAME.cb` fails during evaluation and `parse-fail-NAME.cb`
//!   fails to parse; the rendered diagnostic (no colour, 80 columns) is
//!   snapshot-tested with insta in `tests/snapshots/`.
//!
//! Files under `cases/lib/` and `cases/data/` are imported or read by cases.

use std::path::{Path, PathBuf};

use cbuild_lang::{Evaluator, FsHost, render};

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases")
}

/// Evaluates a case file as `cbuild eval FILE` would, from the cases folder.
fn eval_case(path: &Path) -> Result<String, String> {
    let name = path.file_name().unwrap().to_owned();
    cbuild_lang::with_big_stack(move || {
        let mut host = FsHost::new("in the language tests", cases_dir());
        let mut ev = Evaluator::new(&mut host, cases_dir()).map_err(|d| render(&d, 80, false))?;
        let v = ev
            .eval_file(Path::new(&name))
            .map_err(|d| render(&d, 80, false))?;
        ev.to_json(&v).map_err(|d| render(&d, 80, false))
    })
}

#[test]
fn eval_okay() {
    let mut n = 0;
    let mut failures = Vec::new();
    insta::glob!("cases/eval-okay-*.cb", |path| {
        n += 1;
        let exp_path = path.with_extension("exp");
        let expected = std::fs::read_to_string(&exp_path)
            .unwrap_or_else(|_| panic!("{} has no .exp file", path.display()));
        match eval_case(path) {
            Ok(json) if json == expected.trim_end() => {}
            Ok(json) => failures.push(format!(
                "{}:\n  expected {}\n  got      {json}",
                path.display(),
                expected.trim_end()
            )),
            Err(diag) => failures.push(format!("{} failed:\n{diag}", path.display())),
        }
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(n >= 80, "only {n} eval-okay cases");
}

#[test]
fn eval_fail() {
    let mut n = 0;
    insta::glob!("cases/eval-fail-*.cb", |path| {
        n += 1;
        let diag = match eval_case(path) {
            Ok(json) => panic!("{} evaluated to {json}", path.display()),
            Err(d) => d,
        };
        assert!(
            !diag.contains("parse::"),
            "{} failed to parse:\n{diag}",
            path.display()
        );
        insta::assert_snapshot!(diag);
    });
    assert!(n >= 30, "only {n} eval-fail cases");
}

#[test]
fn parse_fail() {
    let mut n = 0;
    insta::glob!("cases/parse-fail-*.cb", |path| {
        n += 1;
        let diag = match eval_case(path) {
            Ok(json) => panic!("{} evaluated to {json}", path.display()),
            Err(d) => d,
        };
        assert!(
            diag.contains("parse::"),
            "{} did not fail to parse:\n{diag}",
            path.display()
        );
        insta::assert_snapshot!(diag);
    });
    assert!(n >= 15, "only {n} parse-fail cases");
}
