//! Reproducibility evidence: a rebuild compared with what is stored, file by
//! file ([`diff`]), for `cbuild check`.

pub mod diff;
