//! Integration tests: the real `cbuild` binary on real recipes.

mod audit;
mod audit_origin;
mod check;
mod cli;
mod examples;
mod export;
mod faults;
mod fetch;
mod format;
mod gc;
mod hashing;
mod hostile;
mod publish;
mod realise;
mod robustness;
mod sandbox;
mod security;
mod store;
mod support;
