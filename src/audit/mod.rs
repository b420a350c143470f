//! Reproducibility and self-containment evidence: a rebuild compared with
//! what is stored, file by file ([`diff`], for `cbuild check`), and what a
//! built output needs or mentions beyond its closure ([`output`], for
//! `cbuild audit`), and whether a package file is what it says
//! ([`package`], for `cbuild audit PKG.conda`), and whether it came from its
//! recipe ([`origin`], with [`attest`] for the in-toto statement).

pub mod attest;
pub mod diff;
pub mod origin;
pub mod output;
pub mod package;
