//! Evaluation must never panic or overflow the stack: every input either
//! gives a value or a diagnostic. The host refuses all IO, so the fuzzer
//! cannot read files or devices.
#![no_main]

use std::path::Path;

use cbuild_lang::value::{Derivation, Record, Str};
use cbuild_lang::{Evaluator, Host, HostError, render};
use libfuzzer_sys::fuzz_target;

struct NoIo;

impl Host for NoIo {
    fn read_file(&mut self, _: &Path) -> Result<String, HostError> {
        Err(HostError::new("no files while fuzzing"))
    }
    fn import_path(&mut self, _: &Path) -> Result<Str, HostError> {
        Err(HostError::new("no store while fuzzing"))
    }
    fn source(&mut self, _: &Path, _: &[String], _: bool, _: bool) -> Result<Str, HostError> {
        Err(HostError::new("no store while fuzzing"))
    }
    fn fetch(&mut self, _: &str, _: &str, _: bool) -> Result<Derivation, HostError> {
        Err(HostError::new("no store while fuzzing"))
    }
    fn host_tool(&mut self, _: &str) -> Result<Str, HostError> {
        Err(HostError::new("no store while fuzzing"))
    }
    fn derivation(&mut self, _: &Record) -> Result<Derivation, HostError> {
        Err(HostError::new("no store while fuzzing"))
    }
    fn trace(&mut self, _: &str, _: &str) {}
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let text = text.to_string();
    cbuild_lang::with_big_stack(move || {
        let mut host = NoIo;
        let Ok(mut ev) = Evaluator::new(&mut host, "/nonexistent".into()) else {
            panic!("the prelude must load");
        };
        match ev.eval_expr("fuzz.cb", &text).and_then(|v| ev.to_json(&v)) {
            Ok(_) => {}
            Err(d) => {
                let _ = render(&d, 80, false);
            }
        }
    });
});
