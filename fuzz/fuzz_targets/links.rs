//! Link resolution (the package audit, export and the output audit judge
//! links with it) must never panic or loop, whatever the tree: each line of
//! the input is `PATH`, `PATH -> TARGET` (a symlink) or `PATH => TARGET` (a
//! hard link). What it accepts must be accepted again (it is pure).
#![no_main]

use std::collections::BTreeMap;

use cbuild::util::links::{Entry, escapes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut tree = BTreeMap::new();
    for line in text.lines().take(256) {
        let (path, entry) = if let Some((p, t)) = line.split_once(" -> ") {
            (p, Entry::Symlink(t.to_string()))
        } else if let Some((p, t)) = line.split_once(" => ") {
            (p, Entry::HardLink(t.to_string()))
        } else {
            (line, Entry::Plain)
        };
        tree.insert(path.to_string(), entry);
    }
    let first = escapes(&tree, "the prefix");
    assert_eq!(first, escapes(&tree, "the prefix"));
});
