//! Small shared helpers that know nothing of cbuild's own model: what every
//! layer may use, depending on none of them.
//!
//! - [`links`]: where the links of a tree of relative paths lead.
//! - [`text`]: outside text made safe for a terminal.
//! - [`stream`]: files of any size read in bounded memory.
//! - [`process`]: whether a process is gone.
//! - [`mention`]: whether a path named in a file stands on its own.

pub mod links;
pub mod mention;
pub mod process;
pub mod stream;
pub mod text;
