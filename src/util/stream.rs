//! Reading files of any size in bounded memory: windows of a file that
//! overlap by enough bytes that no pattern up to a given length is ever cut
//! in two.

use std::io::Read;

/// Bytes read at a time.
pub const CHUNK: usize = 1 << 20;

/// Calls `f(window, offset, settled)` for successive windows of `r`: each
/// holds the last `overlap` bytes of the previous window, then the next
/// [`CHUNK`] bytes (fewer at the end); `offset` is where the window starts
/// in the file, and the first `settled` bytes of it are never seen again
/// (all but the last `overlap` bytes; all of them in the last window). A
/// pattern of up to `overlap + 1` bytes lies whole in some window, and one
/// that starts in the settled part is seen whole exactly once. `f` may
/// change the window (mask what it found): the overlap comes back changed.
/// Returns the bytes read.
pub fn windows(
    mut r: impl Read,
    overlap: usize,
    mut f: impl FnMut(&mut [u8], u64, usize) -> std::io::Result<()>,
) -> std::io::Result<u64> {
    let mut data: Vec<u8> = Vec::with_capacity(CHUNK + overlap);
    let mut start = 0u64;
    let mut total = 0u64;
    loop {
        let had = data.len();
        data.resize(had + CHUNK, 0);
        let mut filled = had;
        // A short read is not the end: fill the chunk or reach the end.
        while filled < data.len() {
            match r.read(&mut data[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let last = filled < data.len();
        data.truncate(filled);
        total += (filled - had) as u64;
        let settled = if last {
            data.len()
        } else {
            data.len() - overlap.min(data.len())
        };
        f(&mut data, start, settled)?;
        if last {
            return Ok(total);
        }
        data.drain(..settled);
        start += settled as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_is_seen_whole_once_and_offsets_are_the_file_s() {
        // A pattern at every distance from a chunk boundary.
        let pat = b"0123456789abcdef0123456789abcdef";
        let mut file = vec![b'.'; 3 * CHUNK + 77];
        let at: Vec<usize> = (0..40)
            .map(|k| CHUNK - 20 + k * 3)
            .chain([0, 2 * CHUNK - 1])
            .collect();
        for &a in &at {
            file[a..a + pat.len()].copy_from_slice(pat);
        }
        let mut found = std::collections::BTreeSet::new();
        let read = windows(&file[..], pat.len() - 1, |w, off, settled| {
            for i in 0..settled.min(w.len().saturating_sub(pat.len() - 1)) {
                if &w[i..i + pat.len()] == pat {
                    found.insert(off as usize + i);
                }
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(read, file.len() as u64);
        let expect: std::collections::BTreeSet<usize> = (0..file.len() - pat.len() + 1)
            .filter(|&i| &file[i..i + pat.len()] == pat)
            .collect();
        assert_eq!(found, expect);
    }
}
