//! The CLI contract of `cbuild eval`, the exit codes, and bad input of every
//! kind: each ends with exit 2 and a message naming what and where, never a
//! panic.

use std::io::Read;
use std::process::{Command, Stdio};

use crate::support::{Project, cbuild_bin};

#[test]
fn an_expression_may_start_with_a_minus_sign() {
    let p = Project::new();
    assert_eq!(p.run(&["eval", "--expr", "-7 + 10"]).ok().stdout(), "3\n");
    assert_eq!(p.run(&["eval", "--expr=-1"]).ok().stdout(), "-1\n");
}

#[test]
fn eval_expr_prints_sorted_compact_json() {
    let r = Project::new()
        .run(&[
            "eval",
            "--expr",
            "{ b = [1, 2], a = \"x\", c = { z = null, y = true } }",
        ])
        .ok();
    assert_eq!(
        r.stdout(),
        "{\"a\":\"x\",\"b\":[1,2],\"c\":{\"y\":true,\"z\":null}}\n"
    );
}

#[test]
fn eval_file_selects_attributes_and_never_forces_others() {
    let p = Project::new().file(
        "recipe.cb",
        r#"let mk = fn(n) => derivation { name = n, builder = "/bin/true" } in
           { hello = mk("hello"), "c-ares" = { lib = mk("c-ares") }, broken = error("no"), version = "1" }"#,
    );
    let hello = p.run(&["eval", "-A", "hello"]).ok().stdout();
    assert!(hello.trim_end().ends_with("-hello.drv"), "{hello}");
    let two = p
        .run(&["eval", "recipe.cb", "-A", "\"c-ares\".lib", "-A", "hello"])
        .ok()
        .stdout();
    let lines: Vec<&str> = two.lines().collect();
    assert!(
        lines[0].ends_with("-c-ares.drv") && lines[1] == hello.trim_end(),
        "{two}"
    );
    let r = p.run(&["eval", "-A", "hello.nope"]).fails_with(2);
    assert!(r.stderr().contains("has no field `nope`"), "{}", r.stderr());
    let r = p.run(&["eval", "-A", "version"]).fails_with(2);
    assert!(
        r.stderr()
            .contains("attribute `version` is a string, not a derivation"),
        "{}",
        r.stderr()
    );
    let r = p.run(&["eval", "-A", "hello..x"]).fails_with(2);
    assert!(
        r.stderr().contains("invalid attribute path"),
        "{}",
        r.stderr()
    );
    // Without -A every field is looked at, so the broken member fails.
    let r = p.run(&["eval"]).fails_with(2);
    assert!(r.stderr().contains("recipe.cb:2:"), "{}", r.stderr());
}

#[test]
fn recipe_error_exits_2_with_file_line_col_and_caret() {
    let p = Project::new().file("bad.cb", "let x = 1 in\n  x + \"a\"\n");
    let r = p.run(&["eval", "bad.cb"]).fails_with(2);
    let err = r.stderr();
    assert!(err.contains("bad.cb:2:5"), "{err}");
    assert!(err.contains("cannot add an int and a string"), "{err}");
    assert!(err.contains("  x + \"a\""), "source line missing: {err}");
    assert!(err.contains('┬'), "caret missing: {err}");
    assert!(r.stdout().is_empty());
}

#[test]
fn several_resolve_errors_are_reported_together() {
    let p = Project::new().file("two.cb", "{ a = nme, b = verison }");
    let r = p.run(&["eval", "two.cb"]).fails_with(2);
    assert!(
        r.stderr().contains("unknown variable `nme`"),
        "{}",
        r.stderr()
    );
    assert!(
        r.stderr().contains("unknown variable `verison`"),
        "{}",
        r.stderr()
    );
}

#[test]
fn missing_file_directory_and_invalid_utf8() {
    let p = Project::new()
        .file("bin.cb", b"{ a = \"\xff\xfe\" }")
        .file("dir/x", "");
    let r = p.run(&["eval", "nope.cb"]).fails_with(2);
    assert!(
        r.stderr().contains("nope.cb") && r.stderr().contains("no such file"),
        "{}",
        r.stderr()
    );
    let r = p.run(&["eval", "dir"]).fails_with(2);
    assert!(r.stderr().contains("is a directory"), "{}", r.stderr());
    let r = p.run(&["eval", "bin.cb"]).fails_with(2);
    assert!(r.stderr().contains("not UTF-8"), "{}", r.stderr());
    assert!(r.stderr().contains("offset 7"), "{}", r.stderr());
    // With no FILE, ./recipe.cb is meant.
    let r = p.run(&["eval"]).fails_with(2);
    assert!(r.stderr().contains("recipe.cb"), "{}", r.stderr());
}

#[test]
fn a_100_mb_line_fails_cleanly_with_a_short_message() {
    // One line of 100 MB: a list with an unknown name at its very end.
    let mut text = String::with_capacity(100 << 20);
    text.push('[');
    while text.len() < 100 << 20 {
        text.push_str("1234567,");
    }
    text.push_str("oops]");
    let p = Project::new().file("huge.cb", text);
    let r = p.run(&["eval", "huge.cb"]).fails_with(2);
    let err = r.stderr();
    assert!(
        err.contains("unknown variable `oops`"),
        "{}",
        &err[..err.len().min(2000)]
    );
    assert!(
        err.contains("huge.cb:1:"),
        "{}",
        &err[..err.len().min(2000)]
    );
    assert!(err.len() < 4000, "diagnostic is {} bytes", err.len());
}

#[test]
fn deeply_nested_brackets_and_long_chains_fail_cleanly() {
    let deep = format!("{}1{}", "[".repeat(200_000), "]".repeat(200_000));
    let chain = format!("1{}", "+1".repeat(500_000));
    let p = Project::new().file("deep.cb", deep).file("chain.cb", chain);
    for f in ["deep.cb", "chain.cb"] {
        let r = p.run(&["eval", f]).fails_with(2);
        assert!(r.stderr().contains("parse::too_deep"), "{}", r.stderr());
        assert!(r.stderr().len() < 4000);
    }
}

#[test]
fn runaway_recursion_is_an_error_with_a_trace() {
    let r = Project::new()
        .run(&["eval", "--expr", "let f = fn(n) => 1 + f(n + 1) in f(0)"])
        .fails_with(2);
    assert!(r.stderr().contains("eval::too_deep"), "{}", r.stderr());
    assert!(
        r.stderr().contains("`f` called at <expr>:1:22"),
        "{}",
        r.stderr()
    );
}

#[test]
fn a_closed_pipe_exits_0() {
    let mut child = Command::new(cbuild_bin())
        .args(["eval", "--expr", "range(0, 2000000)"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut first = [0u8; 16];
    child
        .stdout
        .as_mut()
        .expect("stdout")
        .read_exact(&mut first)
        .expect("read");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn help_lists_every_command_of_the_contract() {
    let r = Project::new().run(&["--help"]).ok();
    for cmd in [
        "eval",
        "show-derivation",
        "realise",
        "log",
        "check",
        "audit",
        "export",
        "gc",
        "store",
    ] {
        assert!(
            r.stdout().lines().any(|l| l.trim_start().starts_with(cmd)),
            "`{cmd}` missing from --help:\n{}",
            r.stdout()
        );
    }
    for flag in ["--store", "--jobs", "--json", "--verbose", "--quiet"] {
        assert!(r.stdout().contains(flag), "{flag} missing:\n{}", r.stdout());
    }
}

#[test]
fn gc_and_verify_work_on_a_new_store() {
    let p = Project::new();
    let r = p.run(&["gc", "--dry-run"]).ok();
    assert!(
        r.stdout().contains("would delete 0 object(s)"),
        "{}",
        r.stdout()
    );
    let r = p.run(&["store", "verify"]).ok();
    assert!(
        r.stdout().contains("verified 0 object(s)"),
        "{}",
        r.stdout()
    );
}

#[test]
fn global_flags_parse_before_and_after_the_command() {
    let p = Project::new();
    p.run(&[
        "--store", "s", "-j", "2", "-v", "--json", "eval", "--expr", "1",
    ])
    .ok();
    p.run(&["eval", "--expr", "1", "--store", "s", "-j", "3", "-q"])
        .ok();
    let r = p.run(&["eval", "--expr", "1", "-j", "0"]).fails_with(2);
    assert!(r.stderr().contains("--jobs"), "{}", r.stderr());
    let r = p.run(&["eval", "--expr", "1", "--bogus"]).fails_with(2);
    assert!(r.stderr().contains("--bogus"), "{}", r.stderr());
    p.run(&["eval", "--expr", "1", "-v", "-q"]).fails_with(2);
}

#[test]
fn expr_can_make_derivations_and_prints_their_drv_path() {
    let r = Project::new()
        .run(&[
            "eval",
            "--expr",
            "[derivation { name = \"x\", builder = \"/bin/true\" }, 1]",
        ])
        .ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout()).unwrap();
    assert!(v[0].as_str().unwrap().ends_with("-x.drv"), "{v}");
}

#[test]
fn imports_are_evaluated_once_and_cycles_named() {
    let p = Project::new()
        .file("lib.cb", "trace(\"loading lib\", { v = 1 })")
        .file(
            "main.cb",
            "[import(./lib.cb).v, import(./lib.cb).v, import(./sub/../lib.cb).v]",
        )
        .file("a.cb", "{ ..import(./b.cb) }")
        .file("b.cb", "{ ..import(./a.cb) }");
    let r = p.run(&["eval", "--expr", "import(./main.cb)"]).ok();
    assert_eq!(r.stdout(), "[1,1,1]\n");
    assert_eq!(
        r.stderr().matches("loading lib").count(),
        1,
        "{}",
        r.stderr()
    );
    assert!(
        r.stderr().contains("trace: lib.cb:1:1: loading lib"),
        "{}",
        r.stderr()
    );
    let r = p.run(&["eval", "a.cb"]).fails_with(2);
    assert!(
        r.stderr().contains("import cycle: a.cb → b.cb → a.cb"),
        "{}",
        r.stderr()
    );
}
