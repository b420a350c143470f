//! The CLI contract of `cbuild eval` and the exit codes.

use crate::support::Project;

#[test]
fn eval_expr_prints_sorted_json() {
    let r = Project::new()
        .run(&["eval", "--expr", "{ b = [1, 2], a = \"x\" }"])
        .ok();
    assert_eq!(r.stdout(), "{\"a\":\"x\",\"b\":[1,2]}\n");
}
