//! Build logs: what a builder writes on stdout and stderr, read from a pipe
//! while it runs, compressed with zstd into `logs/<drv base name>.log.zst`,
//! with the last lines kept for an error message.
//!
//! A build that prints nothing leaves no file (creating one costs more than
//! a trivial build's other file operations); `cbuild log` prints nothing for
//! it. A log is kept in memory until it passes `SPILL` compressed bytes,
//! then streamed to its file.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::derivation::StorePath;
use crate::store::{Store, StoreError};

/// Compressed bytes kept in memory before the log goes to its file.
const SPILL: usize = 1 << 20;
/// Lines kept for the error message of a failed build.
pub const TAIL_LINES: usize = 25;
/// Bytes of the log tail kept at most.
const TAIL_BYTES: usize = 16 * 1024;

/// The log file of `drv` in the store at `root`.
pub fn log_path(root: &Path, drv: &StorePath) -> PathBuf {
    root.join("logs")
        .join(format!("{}.log.zst", drv.base_name()))
}

/// The log of one build as it is written: compressed into
/// `logs/<drv>.log.zst`, with its last lines kept.
pub struct LogWriter {
    path: PathBuf,
    /// Made only once there is something to compress (about a megabyte of
    /// state): most trivial builds print nothing.
    sink: Option<zstd::stream::Encoder<'static, Spill>>,
    tail: VecDeque<u8>,
}

impl LogWriter {
    /// A log for `drv` in the store at `root`.
    pub fn new(root: &Path, drv: &StorePath) -> LogWriter {
        LogWriter {
            path: log_path(root, drv),
            sink: None,
            tail: VecDeque::new(),
        }
    }

    fn err(&self) -> impl Fn(std::io::Error) -> StoreError + '_ {
        |source| StoreError::Write {
            path: self.path.clone(),
            source,
        }
    }

    /// Appends what the builder wrote.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        if self.sink.is_none() {
            let enc = zstd::stream::Encoder::new(Spill::Memory(Vec::new(), self.path.clone()), 3)
                .map_err(self.err())?;
            self.sink = Some(enc);
        }
        if let Some(enc) = &mut self.sink {
            enc.write_all(bytes).map_err(|source| StoreError::Write {
                path: self.path.clone(),
                source,
            })?;
        }
        for &b in &bytes[bytes.len().saturating_sub(TAIL_BYTES)..] {
            if self.tail.len() == TAIL_BYTES {
                self.tail.pop_front();
            }
            self.tail.push_back(b);
        }
        Ok(())
    }

    /// Writes the file; returns the last lines. When nothing was written,
    /// there is no file (and none is left from an earlier build), unless
    /// `always` (a failed build's log exists, even empty, so that `cbuild
    /// log` has something to show).
    pub fn finish(mut self, always: bool) -> Result<String, StoreError> {
        if always && self.sink.is_none() {
            self.write(&[])?;
        }
        match self.sink.take() {
            Some(enc) => enc.finish().and_then(Spill::finish).map_err(self.err())?,
            None => {
                let _ = std::fs::remove_file(&self.path);
            }
        }
        let text = String::from_utf8_lossy(self.tail.make_contiguous()).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        // Shown on terminals and in JSON: the builder's escape sequences
        // are written out, never acted on.
        Ok(crate::util::text::escape_controls(
            &lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n"),
        ))
    }
}

/// Compressed bytes in memory until there are too many, then a file.
enum Spill {
    Memory(Vec<u8>, PathBuf),
    File(File),
}

impl Spill {
    fn finish(self) -> std::io::Result<()> {
        match self {
            Spill::Memory(bytes, path) => std::fs::write(path, bytes),
            Spill::File(mut f) => f.flush(),
        }
    }
}

impl Write for Spill {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        match self {
            Spill::File(f) => f.write(data),
            Spill::Memory(bytes, path) => {
                bytes.extend_from_slice(data);
                if bytes.len() > SPILL {
                    let mut f = File::create(&*path)?;
                    f.write_all(bytes)?;
                    *self = Spill::File(f);
                }
                Ok(data.len())
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Spill::File(f) => f.flush(),
            Spill::Memory(..) => Ok(()),
        }
    }
}

/// Makes sure `drv` has a log file (an empty one if it printed nothing).
pub fn ensure(root: &Path, drv: &StorePath) {
    let path = log_path(root, drv);
    if !path.exists() {
        let _ = zstd::stream::encode_all(&[][..], 3).map(|frame| std::fs::write(&path, frame));
    }
}

/// The stored log of the last build of `drv`: `None` when it has none (it
/// was never built here, or printed nothing).
pub fn read_log(store: &Store, drv: &StorePath) -> Result<Option<Vec<u8>>, StoreError> {
    let path = log_path(store.root(), drv);
    match File::open(&path) {
        Ok(f) => zstd::stream::decode_all(f)
            .map(Some)
            .map_err(|source| StoreError::Read { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::Read { path, source }),
    }
}
