//! Where a mention of a path stands on its own: the one rule `audit` and
//! `export` share for `/build`, `/home`, `/tmp` and the like, so that
//! `Doc/build/html`, `https://example.org/project/build/` and
//! `./root/is/nested` are not taken for the build directory or a home.

/// Bytes that continue a path, a word or a URL on either side of a
/// mention.
fn continues(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"._-+/~%@".contains(&c)
}

/// Whether the mention at `data[start..end]` (a needle such as `/build` or
/// `/home/`) is a path of its own: not the tail of a longer path, word or
/// URL (the byte before it continues none), and, for a needle that does
/// not end in `/`, not the head of a longer name (`/buildx`).
pub fn stands_alone(data: &[u8], start: usize, end: usize) -> bool {
    let before = start.checked_sub(1).and_then(|i| data.get(i).copied());
    if before.is_some_and(continues) {
        return false;
    }
    if data.get(start..end).is_some_and(|n| n.ends_with(b"/")) {
        return true;
    }
    !data.get(end).is_some_and(|&c| c != b'/' && continues(c))
}

#[cfg(test)]
mod tests {
    use super::stands_alone;

    fn at(hay: &str, needle: &str) -> bool {
        let start = hay.find(needle).unwrap();
        stands_alone(hay.as_bytes(), start, start + needle.len())
    }

    #[test]
    fn paths_of_their_own_are_mentions_and_parts_of_longer_ones_are_not() {
        for (hay, needle) in [
            ("cc -ffile-prefix-map=/build=.", "/build"),
            ("\"/build/src/a.c\"", "/build"),
            ("PATH=/usr/bin:/build/bin", "/build"),
            ("/build", "/build"),
            ("see /home/ann/x", "/home/"),
            ("'/root/.cache'", "/root/"),
        ] {
            assert!(at(hay, needle), "{hay}");
        }
        for (hay, needle) in [
            ("Doc/build/html", "/build"),
            ("https://example.org/project/build/", "/build"),
            ("./root/is/nested", "/root/"),
            ("/buildx/y", "/build"),
            ("cmake/build", "/build"),
            ("/var/tmp/x", "/tmp/"),
        ] {
            assert!(!at(hay, needle), "{hay}");
        }
    }
}
