//! Building derivations. For now: the sandbox that runs one build in fresh
//! Linux namespaces (issue 3/7 adds the scheduler, output normalisation and
//! registration on top).

pub mod sandbox;
