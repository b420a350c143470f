//! The prelude: definitions written in the recipe language itself and in
//! scope in every file (`base_tools`, `package`). Its source is
//! `prelude.cb` beside this file, compiled into the binary.

/// The prelude's source text.
pub const SOURCE: &str = include_str!("prelude.cb");
