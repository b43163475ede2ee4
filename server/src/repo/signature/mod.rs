//! OpenPGP signatures on a Debian repository's metadata.
//!
//! A repository publishes `dists/SUITE/InRelease` (the Release file, cleartext-signed) or
//! `Release` with a detached `Release.gpg`. Either is trusted only if one of its
//! signatures verifies with a key of the [`Keyring`] the user named: the primary key or a
//! signing subkey, neither revoked nor expired, over a hash no weaker than SHA-256.
//! Debian signs with several keys at once, so one good signature from a keyring key is
//! enough; the others may come from keys the keyring does not hold.
//!
//! Only the signed text is ever returned: an InRelease file with anything but whitespace
//! before its `BEGIN` line or after its signature block is refused rather than trimmed,
//! so no two readers of one file can disagree on what was signed.
//!
//! ```no_run
//! # fn main() -> Result<(), canopy_server::repo::signature::SignatureError> {
//! use canopy_server::repo::signature::Keyring;
//! let keyring = Keyring::load("/usr/share/keyrings/debian-archive-keyring.gpg".as_ref())?;
//! let inrelease = std::fs::read("InRelease").unwrap();
//! let release = keyring.verify_cleartext(&inrelease)?;
//! assert!(release.starts_with("Origin: Debian"));
//! # Ok(()) }
//! ```
//!
//! - [`Keyring`] (`keyring`): reading a keyring, checking signatures over data;
//! - `policy`: which keys of a certificate may sign, until when, with which hashes;
//! - `cleartext`: InRelease files (the cleartext signature framework) taken apart.

mod cleartext;
mod keyring;
mod policy;
#[cfg(test)]
mod tests;

pub use cleartext::cleartext_unverified;
pub use keyring::Keyring;

use std::path::PathBuf;
use std::time::SystemTime;

/// Why a repository's metadata or a keyring was refused.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// The keyring file cannot be read.
    #[error("cannot read keyring {}: {source}", path.display())]
    ReadKeyring {
        /// The keyring file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The keyring file holds no key that may sign, or is not an OpenPGP keyring.
    #[error("keyring {}: {reason}", path.display())]
    BadKeyring {
        /// The keyring file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Keyring bytes given without a file are not a usable keyring.
    #[error("{0}")]
    BadKeyringBytes(String),
    /// The input is not what it should be: not a cleartext-signed message, a corrupt
    /// signature block, no signature at all.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being read ("InRelease", "detached signature").
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Non-blank text outside the signed part of an InRelease file.
    #[error(
        "InRelease has text {place}, outside the signed part: refusing it rather than guess \
         what was signed"
    )]
    OutsideSignedPart {
        /// "before the BEGIN line" or "after the signature block".
        place: &'static str,
    },
    /// No signature was made by a key in the keyring.
    #[error("{}", unknown_key_message(key_ids))]
    UnknownKey {
        /// The issuers the signatures name (long key ids, else fingerprints; upper-case hex).
        key_ids: Vec<String>,
    },
    /// A signature by a keyring key does not match the data: altered or corrupt.
    #[error("bad signature by key {key_id}: the signed data was altered or is corrupt")]
    BadSignature {
        /// The signing (sub)key.
        key_id: String,
    },
    /// The signature uses a hash algorithm too weak to trust.
    #[error(
        "signature by key {key_id} uses {hash}, which is too weak: SHA-256 or stronger is required"
    )]
    WeakHash {
        /// The signing (sub)key.
        key_id: String,
        /// The hash algorithm's name.
        hash: String,
    },
    /// The signing key expired.
    #[error(
        "signature by key {key_id}, which expired at {}",
        humantime::format_rfc3339_seconds(*expired)
    )]
    KeyExpired {
        /// The signing (sub)key.
        key_id: String,
        /// When it expired.
        expired: SystemTime,
    },
    /// The signing key was revoked by its owner.
    #[error("signature by key {key_id}, which is revoked ({reason})")]
    KeyRevoked {
        /// The signing (sub)key.
        key_id: String,
        /// The reason its owner gave.
        reason: String,
    },
    /// The signing key may not sign data (not certified for signing, broken binding).
    #[error("signature by key {key_id}, which may not sign data: it {reason}")]
    KeyUnusable {
        /// The signing (sub)key.
        key_id: String,
        /// Why not, as a predicate ("is marked for certification only").
        reason: String,
    },
    /// The signature itself carries an expiry time that has passed.
    #[error(
        "signature by key {key_id} expired at {}",
        humantime::format_rfc3339_seconds(*expired)
    )]
    SignatureExpired {
        /// The signing (sub)key.
        key_id: String,
        /// When the signature expired.
        expired: SystemTime,
    },
}

/// The message for signatures by no keyring key, naming their issuers.
fn unknown_key_message(key_ids: &[String]) -> String {
    match key_ids {
        [] => "signed by a key that does not name itself; no key in the keyring verifies it".into(),
        [one] => format!("signed by key {one}, which is not in the keyring"),
        many => format!(
            "signed by keys {}, none of which is in the keyring",
            many.join(", ")
        ),
    }
}
