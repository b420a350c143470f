//! The evaluator's memory limit: an evaluation that grows past it stops
//! with an error naming the expression that was growing, instead of taking
//! the machine's memory (a recipe of `range`s in a `map` reached 11.8 GB
//! and was killed).
//!
//! The limit is `CBUILD_EVAL_MEMORY_MB` mebibytes, else half the machine's
//! memory, at most 8 GiB. What counts is the process's resident memory,
//! read from `/proc/self/status` whenever the lists and strings built since
//! the last reading add up to [`CHECK_EVERY`] bytes, and before any single
//! value that large is built: a cost of a few microseconds per 64 MiB.

use std::cell::Cell;

/// Bytes of new values between two readings of the resident size.
pub const CHECK_EVERY: usize = 64 << 20;

/// Most memory an evaluation may hold by default.
pub const DEFAULT_MAX: u64 = 8 << 30;

/// Bytes a list element takes, about (a value and its share of the list).
pub const ELEMENT: usize = 32;

/// The limit and what was built since the last reading.
pub struct Budget {
    limit: u64,
    since: Cell<usize>,
}

impl Budget {
    /// The limit from the environment, else the default.
    pub fn from_env() -> Budget {
        let limit = std::env::var("CBUILD_EVAL_MEMORY_MB")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .filter(|&mb| mb > 0)
            .map(|mb| mb << 20)
            .unwrap_or_else(|| (physical() / 2).clamp(256 << 20, DEFAULT_MAX));
        Budget {
            limit,
            since: Cell::new(0),
        }
    }

    /// The limit, in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Charges `bytes` about to be built; `Err(resident)` when the process
    /// holds, or would hold with them, more than the limit.
    pub fn charge(&self, bytes: usize) -> Result<(), u64> {
        let since = self.since.get().saturating_add(bytes);
        if since < CHECK_EVERY && bytes < CHECK_EVERY {
            self.since.set(since);
            return Ok(());
        }
        self.since.set(0);
        let resident = resident();
        if resident.saturating_add(bytes as u64) > self.limit {
            return Err(resident);
        }
        Ok(())
    }
}

/// This process's resident memory in bytes (`VmRSS`; 0 when it cannot be
/// read).
fn resident() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb << 10)
}

/// The machine's memory in bytes (`MemTotal`), or 16 GiB when unknown.
fn physical() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(16 << 30, |kb| kb << 10)
}
