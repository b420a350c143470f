//! Building derivations. So far: the sandbox that runs one build in fresh
//! Linux namespaces, output normalisation and reference scanning (issue 3/7
//! adds hashing modulo self-references, registration, realisations and the
//! scheduler on top).

pub mod ca;
pub mod normalise;
pub mod realise;
pub mod refscan;
pub mod sandbox;
