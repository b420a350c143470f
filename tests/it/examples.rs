//! Every recipe in `examples/` evaluates: one `.drv` path per target.

use std::path::Path;

use crate::support::Project;

#[test]
fn every_example_evaluates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let store = Project::new();
    let mut n = 0;
    for e in std::fs::read_dir(&root).unwrap() {
        let dir = e.unwrap().path();
        if !dir.join("recipe.cb").is_file() {
            continue;
        }
        n += 1;
        let r = store.run_in(&dir, &["eval", "--json"], &[]).ok();
        let v: serde_json::Value = serde_json::from_str(&r.stdout())
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", dir.display(), r.stdout()));
        for t in v.as_array().unwrap() {
            assert!(t["drv_path"].as_str().unwrap().ends_with(".drv"), "{t}");
        }
    }
    assert!(n >= 3, "only {n} examples");
}

#[test]
fn the_spec_example_has_both_targets_and_hello_depends_on_libgreet() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/greet");
    let store = Project::new();
    let r = store.run_in(&dir, &["eval", "--json"], &[]).ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout()).unwrap();
    let attrs: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["attr"].as_str().unwrap())
        .collect();
    assert_eq!(attrs, ["hello", "libgreet"]);
    let lib = v[1]["drv_path"].as_str().unwrap();
    assert!(v[0]["input_drvs"].get(lib).is_some(), "{v}");
    assert_eq!(v[0]["meta"]["license"], "MIT");
}
