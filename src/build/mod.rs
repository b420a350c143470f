//! Building derivations: the scheduler ([`realise`]), one build ([`job`]),
//! downloads ([`fetch`]), the sandbox and the views of the store it shows
//! ([`views`]), and what happens to outputs
//! (normalisation, hashing modulo self-references, reference scanning) and
//! logs.

pub mod ca;
pub mod export;
pub mod fetch;
pub mod job;
pub mod log;
pub mod normalise;
pub mod realise;
pub mod rebuild;
pub mod refscan;
pub mod repair;
pub mod sandbox;
pub mod views;
