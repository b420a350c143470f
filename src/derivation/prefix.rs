//! Conda prefixes in derivations: the placeholder prefix an export
//! derivation builds into, and the environment variables that mark one.
//!
//! An export derivation (built by `cbuild export`) is an ordinary
//! derivation whose `$out` is not a store path but [`PREFIX`]: a
//! 255-character path that installers later replace by wherever the package
//! is installed, as conda-build's `_h_env_placehold...` prefix is. Its other
//! outputs get prefixes of the same length ([`output_prefix`]), so that a
//! build can still tell them apart; the build step swaps them for
//! [`PREFIX`] afterwards, byte for byte, since every output of one package
//! set installs into the same prefix.

use super::base32;

/// Length of the placeholder prefix: as long as conda-build's, so that an
/// install prefix up to this long fits where a binary holds the placeholder.
pub const PREFIX_LEN: usize = 255;

/// The placeholder prefix of an export build's `out` (and of every output,
/// once built). It lies under `/.cbuild`, where the sandbox can bind it.
pub const PREFIX: &str = concat!(
    "/.cbuild/_h_env_placehold_placehold_placehold_placehold_placehold_plac",
    "ehold_placehold_placehold_placehold_placehold_placehold_placehold_plac",
    "ehold_placehold_placehold_placehold_placehold_placehold_placehold_plac",
    "ehold_placehold_placehold_placehold_placehold",
);

/// Environment variable of an export derivation that lists, separated by
/// spaces, the outputs (placeholders until resolved, then store paths) laid
/// into the prefix before the build: its host inputs' exported contents.
/// Its presence marks a derivation as an export derivation.
pub const LAYERS_ENV: &str = "CBUILD_EXPORT_LAYERS";

/// The prefix output `output` of an export derivation is built in: [`PREFIX`]
/// for `out`, else [`PREFIX`] with its last 12 characters replaced by `_` and
/// 11 base-32 characters of `BLAKE3("cbuild-output-prefix:" output)`.
pub fn output_prefix(output: &str) -> String {
    if output == "out" {
        return PREFIX.to_string();
    }
    let h = blake3::hash(format!("cbuild-output-prefix:{output}").as_bytes());
    let tag = base32::encode(&h.as_bytes()[..10]);
    format!("{}_{}", &PREFIX[..PREFIX_LEN - 12], &tag[..11])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_have_the_placeholder_length() {
        assert_eq!(PREFIX.len(), PREFIX_LEN);
        assert_eq!(output_prefix("out"), PREFIX);
        let dev = output_prefix("dev");
        assert_eq!(dev.len(), PREFIX_LEN);
        assert_ne!(dev, PREFIX);
        assert_ne!(dev, output_prefix("lib"));
        // No prefix is a prefix of another path component's worth.
        assert!(!dev.starts_with(PREFIX) && !PREFIX.starts_with(&dev));
        // One path component is at most 255 bytes.
        assert!(PREFIX.rsplit('/').next().is_some_and(|c| c.len() < 255));
    }
}
