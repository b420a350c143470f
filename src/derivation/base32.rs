//! The lowercase base-32 alphabet of store path hash parts.
//!
//! The alphabet is Nix's (`0-9` and the letters without `e o u t`, so that
//! no hash spells a word); unlike Nix, bits are taken most significant first
//! from the first byte, the ordinary big-endian reading. 20 bytes (160 bits)
//! give exactly 32 characters.

/// The 32 symbols, in value order.
pub const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Encodes `bytes`; the length must be a multiple of 5 bytes.
pub fn encode(bytes: &[u8]) -> String {
    debug_assert!(
        bytes.len().is_multiple_of(5),
        "base32 input is whole 40-bit groups"
    );
    let mut out = String::with_capacity(bytes.len() * 8 / 5);
    for chunk in bytes.chunks(5) {
        let mut v: u64 = 0;
        for &b in chunk {
            v = (v << 8) | u64::from(b);
        }
        for k in (0..8).rev() {
            out.push(ALPHABET[((v >> (k * 5)) & 31) as usize] as char);
        }
    }
    out
}

/// Each byte's value in the alphabet, or 0xff for a foreign byte: decoding
/// runs for every store path parsed, thousands in an evaluation.
const VALUE: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < ALPHABET.len() {
        t[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// Whether `c` is one of the 32 symbols.
pub fn is_symbol(c: u8) -> bool {
    VALUE[c as usize] != 0xff
}

/// Decodes what [`encode`] wrote; `None` on a foreign character or a length
/// that is not a multiple of 8.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(8) {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    for chunk in text.as_bytes().chunks(8) {
        let mut v: u64 = 0;
        for &c in chunk {
            let d = VALUE[c as usize];
            if d == 0xff {
                return None;
            }
            v = (v << 5) | u64::from(d);
        }
        for k in (0..5).rev() {
            out.push((v >> (k * 8)) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(encode(&[0; 5]), "00000000");
        assert_eq!(encode(&[0xff; 5]), "zzzzzzzz");
        assert_eq!(encode(&[0, 0, 0, 0, 1]), "00000001");
        assert_eq!(encode(&[0x80, 0, 0, 0, 0]), "h0000000");
    }

    proptest::proptest! {
        #[test]
        fn round_trips(groups in proptest::collection::vec(proptest::prelude::any::<[u8; 5]>(), 0..6)) {
            let bytes: Vec<u8> = groups.concat();
            proptest::prop_assert_eq!(decode(&encode(&bytes)), Some(bytes));
        }
    }
}
