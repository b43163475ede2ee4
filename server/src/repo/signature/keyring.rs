//! A keyring: the keys a repository's metadata must be signed by, and the check of
//! signatures over data against them.

use super::SignatureError;
use super::cleartext::{Cleartext, parse_signatures, release_text};
use super::policy::{Signer, issued_by, issuer_names, key_id, rank, signers_of};
use pgp::composed::{Deserializable, SignedPublicKey};
use pgp::packet::Signature;
use std::path::Path;
use std::time::SystemTime;

/// More signatures than any repository makes: each is tried against every matching key,
/// so a mirror must not make us try thousands.
pub(super) const MAX_SIGNATURES: usize = 32;

/// Public keys a repository's metadata must be signed by: an OpenPGP keyring file,
/// binary (`.gpg`, as in /usr/share/keyrings) or ASCII-armored (`.asc`), one or many keys.
#[derive(Debug)]
pub struct Keyring {
    signers: Vec<Signer>,
}

impl Keyring {
    /// Reads a keyring file; the error names the file, and a file with no key that may
    /// sign is an error.
    pub fn load(path: &Path) -> Result<Keyring, SignatureError> {
        let bytes = std::fs::read(path).map_err(|source| SignatureError::ReadKeyring {
            path: path.to_owned(),
            source,
        })?;
        Keyring::from_bytes(&bytes).map_err(|e| SignatureError::BadKeyring {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Parses keyring bytes, binary or ASCII-armored.
    pub fn from_bytes(bytes: &[u8]) -> Result<Keyring, SignatureError> {
        let bad = |reason: String| SignatureError::BadKeyringBytes(reason);
        let keys = parse_keys(bytes).map_err(|e| bad(format!("not an OpenPGP keyring: {e}")))?;
        if keys.is_empty() {
            return Err(bad("holds no public key".into()));
        }
        let signers: Vec<Signer> = keys.iter().flat_map(signers_of).collect();
        if signers.iter().all(|s| s.unusable.is_some()) {
            let why: Vec<String> = signers
                .iter()
                .filter_map(|s| {
                    Some(format!(
                        "key {} {}",
                        key_id(s.key.details()),
                        s.unusable.as_ref()?
                    ))
                })
                .collect();
            return Err(bad(format!("no usable signing key ({})", why.join("; "))));
        }
        Ok(Keyring { signers })
    }

    /// Checks an InRelease file (cleartext-signed); returns the signed text,
    /// dash-unescaped, every line ended by `\n`: the Release file to parse, as its
    /// publisher wrote it save for blanks at line ends, which OpenPGP does not sign.
    pub fn verify_cleartext(&self, inrelease: &[u8]) -> Result<String, SignatureError> {
        let message = Cleartext::parse(inrelease)?;
        self.verify_any(&message.signatures, message.signed.as_bytes())?;
        Ok(release_text(&message.signed))
    }

    /// Checks a Release file against a detached signature (Release.gpg, armored or
    /// binary).
    pub fn verify_detached(&self, release: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
        let signatures = parse_signatures(signature, "detached signature")?;
        self.verify_any(&signatures, release)
    }

    /// Accepts `data` if any one of `signatures` verifies with a valid keyring key;
    /// otherwise reports the most telling failure (an altered file before an unknown key).
    fn verify_any(&self, signatures: &[Signature], data: &[u8]) -> Result<(), SignatureError> {
        let count = signatures.len();
        if !(1..=MAX_SIGNATURES).contains(&count) {
            return Err(SignatureError::Malformed {
                what: "signature block",
                reason: format!("it holds {count} signatures, expected 1 to {MAX_SIGNATURES}"),
            });
        }
        let now = SystemTime::now();
        let mut unknown = Vec::new();
        let mut worst: Option<SignatureError> = None;
        for signature in signatures {
            let mut candidates = self
                .signers
                .iter()
                .filter(|s| issued_by(signature, s.key.details()))
                .peekable();
            if candidates.peek().is_none() {
                unknown.extend(issuer_names(signature));
                continue;
            }
            for signer in candidates {
                match signer.check(signature, data, now) {
                    Ok(()) => {
                        tracing::debug!(key = %key_id(signer.key.details()), "signature verified");
                        return Ok(());
                    }
                    Err(e) => {
                        if worst.as_ref().is_none_or(|w| rank(&e) > rank(w)) {
                            worst = Some(e);
                        }
                    }
                }
            }
        }
        unknown.sort();
        unknown.dedup();
        Err(worst.unwrap_or(SignatureError::UnknownKey { key_ids: unknown }))
    }
}

/// Every key in keyring bytes. A binary keyring is one stream of packets; an armored one
/// may be several armor blocks one after another (`cat a.asc b.asc`), and the pgp crate
/// reads only the first of them, so each block is read on its own.
fn parse_keys(bytes: &[u8]) -> Result<Vec<SignedPublicKey>, String> {
    let binary = bytes.first().is_some_and(|b| b & 0x80 != 0);
    let blocks = if binary {
        vec![bytes]
    } else {
        let text = std::str::from_utf8(bytes).map_err(|e| format!("armored but not text ({e})"))?;
        let blocks = text.split_inclusive("-----END PGP PUBLIC KEY BLOCK-----");
        blocks
            .filter(|b| !b.trim().is_empty())
            .map(str::as_bytes)
            .collect()
    };
    let mut keys = Vec::new();
    for block in blocks {
        let (parsed, _) = SignedPublicKey::from_reader_many(block).map_err(|e| e.to_string())?;
        for key in parsed {
            keys.push(key.map_err(|e| e.to_string())?);
        }
    }
    Ok(keys)
}
