//! The package reader (`cbuild audit PKG`) must never panic, whatever the
//! bytes of a `.conda` or `.tar.bz2`, and must never write outside the
//! directory it unpacks into.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    let ext = if kind & 1 == 0 { ".conda" } else { ".tar.bz2" };
    let dir = tempfile::tempdir().expect("temp dir");
    let p = dir.path().join(format!("p-1-h0_0{ext}"));
    std::fs::write(&p, bytes).expect("write");
    let Ok(found) = cbuild::audit::package::inspect(&p) else {
        return;
    };
    let passed = !found
        .findings
        .iter()
        .any(|f| f.severity == cbuild::audit::output::Severity::Error);
    if passed {
        let to = dir.path().join("unpacked");
        std::fs::create_dir(&to).expect("mkdir");
        let _ = cbuild::audit::package::unpack_payload(&p, &to);
    }
});
