//! The parser and resolver must never panic, whatever the bytes, and every
//! failure must render as a diagnostic.
#![no_main]

use cbuild_lang::{SourceMap, render};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut sources = SourceMap::new();
    let file = sources.add("fuzz.cb".into(), None, text.as_ref().into());
    if let Err(errors) = cbuild_lang::parser::parse(file, &text) {
        let d = cbuild_lang::diag::from_parse_errors(&sources, file, &errors);
        let _ = render(&d, 80, false);
    }
});
