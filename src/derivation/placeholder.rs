//! Placeholders: the strings that stand for output paths nobody knows yet.
//!
//! Outputs are content-addressed, so a derivation cannot name its own output
//! path, nor its inputs' outputs, when it is hashed. It names them by
//! placeholders instead; building substitutes the real paths (issue 3/7's
//! resolution step).
//!
//! - Its own output `o`: `/` + base32(BLAKE3(`cbuild-self-output:` o)[..20]).
//! - Output `o` of an input with derivation hash `h`:
//!   `/` + base32(BLAKE3(`cbuild-input-output:` hex(h) `:` o)[..20]).
//!
//! Both are 33 characters, start with `/` so that `"${x}/bin"` looks like a
//! path, and never contain a store directory, so they do not depend on where
//! the store is.

use super::base32;
use super::hash::DrvHash;

fn make(text: &str) -> String {
    let h = blake3::hash(text.as_bytes());
    format!("/{}", base32::encode(&h.as_bytes()[..20]))
}

/// The placeholder for this derivation's own output `output` (the value of
/// `$out` and friends in its environment).
pub fn own_output(output: &str) -> String {
    make(&format!("cbuild-self-output:{output}"))
}

/// The placeholder for output `output` of the input derivation `drv`.
pub fn input_output(drv: &DrvHash, output: &str) -> String {
    make(&format!("cbuild-input-output:{}:{output}", drv.to_hex()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_distinct_and_stable() {
        let h = DrvHash([1; 32]);
        assert_eq!(own_output("out").len(), 33);
        assert_ne!(own_output("out"), own_output("lib"));
        assert_ne!(
            input_output(&h, "out"),
            input_output(&DrvHash([2; 32]), "out")
        );
        assert_eq!(input_output(&h, "out"), input_output(&h, "out"));
    }
}
