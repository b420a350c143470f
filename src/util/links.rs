//! Where the links of a tree lead, resolved as an extractor or a program
//! would follow them: one resolver for the package audit (tar members), the
//! export (the prefix about to be packed) and the output audit (a store
//! object). Pure, no IO: the tree is a map from relative paths to what
//! they are.
//!
//! A tree is safe when nothing in it can make a reader leave its root:
//! - a symlink whose target, followed through the tree's other symlinks,
//!   climbs above the root or is absolute (`sub/up -> ..`, then
//!   `sub/esc -> up/..` escapes although each link looks harmless);
//! - an entry whose folder is reached through such a symlink (an extractor
//!   writing `sub/esc/x` writes outside);
//! - a hard link whose target (relative to the root, not to the link's
//!   folder, as tar stores it) lies outside.

use std::collections::{BTreeMap, VecDeque};

/// What an entry of a tree is, as far as links go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A file or directory.
    Plain,
    /// A symlink and its target, as stored.
    Symlink(String),
    /// A hard link and its target, relative to the root.
    HardLink(String),
}

/// Symlinks followed in one resolution before it is called a loop (the
/// kernel's own limit).
const MAX_HOPS: usize = 40;

/// Where a path leads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// Inside the root: its components.
    Inside(Vec<String>),
    /// Above the root: `ups` levels above it, then `rest` (what a relative
    /// link inside a store object names beside it: `../<object>/...` is one
    /// level up).
    Above {
        /// Levels above the root.
        ups: usize,
        /// The components after climbing.
        rest: Vec<String>,
    },
    /// An absolute path, normalised lexically (outside the tree).
    Absolute(String),
    /// More than [`MAX_HOPS`] symlinks: a loop.
    Loop,
}

/// Resolves `path` (components relative to the root) through the tree's
/// symlinks, all of them, the last component included.
pub fn resolve<'a>(
    tree: &BTreeMap<String, Entry>,
    path: impl IntoIterator<Item = &'a str>,
) -> Resolved {
    let mut done: Vec<String> = Vec::new();
    let mut todo: VecDeque<String> = path.into_iter().map(str::to_string).collect();
    let mut hops = 0;
    while let Some(c) = todo.pop_front() {
        match c.as_str() {
            "" | "." => {}
            ".." => {
                if done.pop().is_none() {
                    // Above the root: what follows is lexical from here on
                    // (the tree knows nothing there).
                    return above(1, todo);
                }
            }
            _ => {
                done.push(c);
                if let Some(Entry::Symlink(target)) = tree.get(&done.join("/")) {
                    hops += 1;
                    if hops > MAX_HOPS {
                        return Resolved::Loop;
                    }
                    done.pop();
                    if target.starts_with('/') {
                        let mut all: Vec<String> = target.split('/').map(str::to_string).collect();
                        all.extend(todo);
                        return Resolved::Absolute(lexical_absolute(&all));
                    }
                    for t in target.split('/').rev() {
                        todo.push_front(t.to_string());
                    }
                }
            }
        }
    }
    Resolved::Inside(done)
}

/// Climbed `ups` levels above the root with `todo` left: normalised
/// lexically.
fn above(mut ups: usize, todo: VecDeque<String>) -> Resolved {
    let mut rest: Vec<String> = Vec::new();
    for c in todo {
        match c.as_str() {
            "" | "." => {}
            ".." => {
                if rest.pop().is_none() {
                    ups += 1;
                }
            }
            _ => rest.push(c),
        }
    }
    if ups == 0 {
        return Resolved::Inside(rest);
    }
    Resolved::Above { ups, rest }
}

/// `/` + components, `..` and `.` resolved lexically.
fn lexical_absolute(parts: &[String]) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in parts {
        match c.as_str() {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    format!("/{}", out.join("/"))
}

/// Where a symlink in `folder` (components) with `target` leads: an
/// absolute target lexically, a relative one through the tree.
pub fn follow(tree: &BTreeMap<String, Entry>, folder: &[&str], target: &str) -> Resolved {
    if target.starts_with('/') {
        let parts: Vec<String> = target.split('/').map(str::to_string).collect();
        return Resolved::Absolute(lexical_absolute(&parts));
    }
    resolve(tree, folder.iter().copied().chain(target.split('/')))
}

/// The folder of `rel` as components (empty at the root).
fn parent(rel: &str) -> Vec<&str> {
    let mut parts: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    parts.pop();
    parts
}

/// One way out of the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Escape {
    /// The entry.
    pub path: String,
    /// What it does, for a finding: "links to ..., outside the prefix".
    pub what: String,
}

/// Every entry of `tree` through which a reader would leave the root
/// (`place` names the root in messages: "the prefix", "the package").
pub fn escapes(tree: &BTreeMap<String, Entry>, place: &str) -> Vec<Escape> {
    let mut out = Vec::new();
    let outside = |r: &Resolved| !matches!(r, Resolved::Inside(_));
    let describe = |r: &Resolved| match r {
        Resolved::Loop => "a loop of symlinks".to_string(),
        Resolved::Absolute(p) => format!("{p}, outside {place}"),
        _ => format!("outside {place}"),
    };
    for (rel, entry) in tree {
        let folder = parent(rel);
        // Written through a symlinked folder that leads out.
        let through = resolve(tree, folder.iter().copied());
        if !folder.is_empty() && outside(&through) {
            out.push(Escape {
                path: rel.clone(),
                what: format!(
                    "lies in a folder reached through a symlink that leads {}",
                    describe(&through)
                ),
            });
            continue;
        }
        match entry {
            Entry::Plain => {}
            Entry::Symlink(target) => {
                let leads = follow(tree, &folder, target);
                if outside(&leads) {
                    out.push(Escape {
                        path: rel.clone(),
                        what: format!("links to {target}: {}", describe(&leads)),
                    });
                }
            }
            Entry::HardLink(target) => {
                let leads = if target.starts_with('/') {
                    Resolved::Absolute(target.clone())
                } else {
                    resolve(tree, target.split('/'))
                };
                if outside(&leads) {
                    out.push(Escape {
                        path: rel.clone(),
                        what: format!("is a hard link to {target}: {}", describe(&leads)),
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(entries: &[(&str, Entry)]) -> BTreeMap<String, Entry> {
        entries
            .iter()
            .map(|(p, e)| (p.to_string(), e.clone()))
            .collect()
    }

    fn link(t: &str) -> Entry {
        Entry::Symlink(t.into())
    }

    #[test]
    fn chains_of_harmless_looking_links_that_escape_are_found() {
        let t = tree(&[
            ("sub", Entry::Plain),
            ("sub/up", link("..")),
            ("sub/esc", link("up/..")),
            ("sub/esc/x", Entry::Plain),
        ]);
        let found: Vec<String> = escapes(&t, "the prefix")
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(found, ["sub/esc", "sub/esc/x"]);
    }

    #[test]
    fn links_inside_pass_and_absolute_or_climbing_ones_do_not() {
        let t = tree(&[
            ("lib/libz.so", link("libz.so.1")),
            ("lib/libz.so.1", Entry::Plain),
            ("bin/z", link("../lib/libz.so")),
            ("passwd", link("/etc/passwd")),
            ("shadow", link("../../../../etc/shadow")),
            ("h", Entry::HardLink("lib/libz.so.1".into())),
            ("h2", Entry::HardLink("../outside".into())),
            ("loop", link("loop")),
        ]);
        let found: Vec<String> = escapes(&t, "the prefix")
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(found, ["h2", "loop", "passwd", "shadow"]);
    }

    #[test]
    fn a_store_object_may_name_its_neighbours_one_level_up() {
        let t = tree(&[("lib", link("../abc-dep/lib"))]);
        assert_eq!(
            resolve(&t, ["lib", "x.so"]),
            Resolved::Above {
                ups: 1,
                rest: vec!["abc-dep".into(), "lib".into(), "x.so".into()]
            }
        );
        assert_eq!(
            resolve(&tree(&[]), ["..", "..", "etc"]),
            Resolved::Above {
                ups: 2,
                rest: vec!["etc".into()]
            }
        );
        assert_eq!(
            resolve(&tree(&[("a", link("/s/../etc/./x"))]), ["a", "y"]),
            Resolved::Absolute("/etc/x/y".into())
        );
    }

    use proptest::prelude::*;

    /// A component of a generated path or target: names that collide,
    /// `..`, `.`, empty and absolute starts.
    fn component() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("..".to_string()),
            Just(".".to_string()),
            Just(String::new()),
        ]
    }

    fn path() -> impl Strategy<Value = String> {
        proptest::collection::vec(component(), 1..5).prop_map(|c| c.join("/"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Any tree of links (loops, chains, absolute targets) is judged
        /// without panicking or looping, and an absolute or climbing
        /// symlink at the root is always an escape.
        #[test]
        fn any_tree_is_judged(
            entries in proptest::collection::vec((path(), 0u8..3, path(), any::<bool>()), 0..12),
        ) {
            let mut t = BTreeMap::new();
            for (p, kind, target, absolute) in entries {
                let target = if absolute { format!("/{target}") } else { target };
                let e = match kind {
                    0 => Entry::Plain,
                    1 => Entry::Symlink(target),
                    _ => Entry::HardLink(target),
                };
                t.insert(p, e);
            }
            let found = escapes(&t, "the prefix");
            for (p, e) in &t {
                let climbs = |s: &str| s.starts_with('/') || s.split('/').find(|c| !c.is_empty() && *c != ".") == Some("..");
                if !p.contains('/') && matches!(e, Entry::Symlink(s) if climbs(s)) {
                    prop_assert!(found.iter().any(|f| &f.path == p), "{p}: {e:?} not found in {found:?}");
                }
            }
        }
    }
}
