//! cbuild: Nix-grade hashing, caching and hermetic builds, with conda-grade
//! distribution.
//!
//! The recipe language lives in the `cbuild-lang` crate; this crate holds the
//! command line ([`cli`]) and, as they land, the derivation model, the store,
//! instantiation, builds, export and audit (see DESIGN.md for the layering).

pub mod audit;
pub mod build;
pub mod cli;
pub mod derivation;
pub mod export;
pub mod instantiate;
pub mod publish;
pub mod store;
pub mod util;
