//! Every example in `lang/README.md` is run.
//!
//! A fenced block tagged `cb` is evaluated (relative paths resolve against
//! `lang/`); when the next fenced block is tagged `json`, the value's JSON
//! must equal it. A block tagged `cb-fail CODE` must fail with a diagnostic
//! whose code is `CODE`.

use std::path::Path;

use cbuild_lang::{Evaluator, FsHost, render};

struct Block {
    info: String,
    text: String,
    line: usize,
}

fn blocks(md: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut lines = md.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let Some(info) = line.trim_start().strip_prefix("```") else {
            continue;
        };
        let mut text = String::new();
        for (_, l) in lines.by_ref() {
            if l.trim_start().starts_with("```") {
                break;
            }
            text.push_str(l);
            text.push('\n');
        }
        out.push(Block {
            info: info.trim().to_string(),
            text,
            line: n + 1,
        });
    }
    out
}

fn eval(src: &str) -> Result<String, String> {
    let src = src.to_string();
    cbuild_lang::with_big_stack(move || {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf();
        let mut host = FsHost::new("in the README tests", dir.clone());
        let mut ev = Evaluator::new(&mut host, dir).map_err(|d| render(&d, 80, false))?;
        let v = ev
            .eval_expr("<example>", &src)
            .map_err(|d| render(&d, 80, false))?;
        ev.to_json(&v).map_err(|d| render(&d, 80, false))
    })
}

#[test]
fn readme_examples() {
    let md = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("lang/README.md");
    let blocks = blocks(&md);
    let mut failures = Vec::new();
    let mut ran = 0;
    for (k, b) in blocks.iter().enumerate() {
        if b.info == "cb" {
            ran += 1;
            match eval(&b.text) {
                Ok(json) => {
                    if let Some(next) = blocks.get(k + 1).filter(|n| n.info == "json") {
                        let want: serde_json::Value = serde_json::from_str(&next.text)
                            .unwrap_or_else(|e| panic!("README line {}: bad JSON: {e}", next.line));
                        let got: serde_json::Value = serde_json::from_str(&json).unwrap();
                        if want != got {
                            failures.push(format!(
                                "README line {}: expected {want}, got {got}",
                                b.line
                            ));
                        }
                    }
                }
                Err(d) => failures.push(format!("README line {} failed:\n{d}", b.line)),
            }
        } else if let Some(code) = b.info.strip_prefix("cb-fail") {
            ran += 1;
            let code = code.trim();
            match eval(&b.text) {
                Ok(json) => failures.push(format!(
                    "README line {}: expected an error, got {json}",
                    b.line
                )),
                Err(d) if !code.is_empty() && !d.contains(code) => failures.push(format!(
                    "README line {}: expected error {code}, got:\n{d}",
                    b.line
                )),
                Err(_) => {}
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(ran >= 20, "only {ran} examples in lang/README.md");
}
