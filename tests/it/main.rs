//! Integration tests: the real `cbuild` binary on real recipes.

mod cli;
mod format;
mod support;
