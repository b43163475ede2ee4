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
//! # fn main() -> Result<(), canopy_server::signature::SignatureError> {
//! use canopy_server::signature::Keyring;
//! let keyring = Keyring::load("/usr/share/keyrings/debian-archive-keyring.gpg".as_ref())?;
//! let inrelease = std::fs::read("InRelease").unwrap();
//! let release = keyring.verify_cleartext(&inrelease)?;
//! assert!(release.starts_with("Origin: Debian"));
//! # Ok(()) }
//! ```

use pgp::composed::{CleartextSignedMessage, Deserializable, DetachedSignature, SignedPublicKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{PublicKey, PublicSubkey, RevocationCode, Signature, SignatureType};
use pgp::types::{KeyDetails, Tag, Timestamp};
use std::path::{Path, PathBuf};
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
    #[error("signature by key {key_id}, which may not sign: {reason}")]
    KeyUnusable {
        /// The signing (sub)key.
        key_id: String,
        /// Why not.
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

/// Public keys a repository's metadata must be signed by: an OpenPGP keyring file,
/// binary (`.gpg`, as in /usr/share/keyrings) or ASCII-armored (`.asc`), one or many keys.
#[derive(Debug)]
pub struct Keyring {
    signers: Vec<Signer>,
}

/// One key that may have made a data signature: a primary key or a signing subkey.
#[derive(Debug)]
struct Signer {
    key: SignerKey,
    /// When it stops being valid: its own expiry or its primary key's, whichever is first.
    expires: Option<SystemTime>,
    /// Why it may not sign at all, found when the keyring was loaded.
    unusable: Option<Unusable>,
}

#[derive(Debug)]
enum SignerKey {
    Primary(PublicKey),
    Subkey(PublicSubkey),
}

#[derive(Debug, Clone)]
enum Unusable {
    Revoked(String),
    Other(String),
}

impl SignerKey {
    fn details(&self) -> &dyn KeyDetails {
        match self {
            SignerKey::Primary(key) => key,
            SignerKey::Subkey(key) => key,
        }
    }

    fn verify(&self, signature: &Signature, data: &[u8]) -> pgp::errors::Result<()> {
        match self {
            SignerKey::Primary(key) => signature.verify(key, data),
            SignerKey::Subkey(key) => signature.verify(key, data),
        }
    }
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
        let (keys, _) = SignedPublicKey::from_reader_many(bytes)
            .map_err(|e| bad(format!("not an OpenPGP keyring: {e}")))?;
        let keys = keys
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("not an OpenPGP keyring: {e}")))?;
        if keys.is_empty() {
            return Err(bad("holds no public key".into()));
        }
        let signers: Vec<Signer> = keys.iter().flat_map(signers_of).collect();
        if signers.iter().all(|s| s.unusable.is_some()) {
            let why: Vec<String> = signers
                .iter()
                .filter_map(|s| {
                    let reason = match s.unusable.as_ref()? {
                        Unusable::Revoked(reason) => format!("revoked ({reason})"),
                        Unusable::Other(reason) => reason.clone(),
                    };
                    Some(format!("key {}: {reason}", key_id(s.key.details())))
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
        let message = parse_cleartext(inrelease)?;
        let signed = message.signed_text();
        self.verify_any(message.signatures(), signed.as_bytes())?;
        Ok(release_text(&signed))
    }

    /// Checks a Release file against a detached signature (Release.gpg, armored or
    /// binary).
    pub fn verify_detached(&self, release: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
        let malformed = |e: pgp::errors::Error| SignatureError::Malformed {
            what: "detached signature",
            reason: e.to_string(),
        };
        let (signatures, _) = DetachedSignature::from_reader_many(signature).map_err(malformed)?;
        let signatures = signatures
            .map(|s| s.map(|s| s.signature))
            .collect::<Result<Vec<_>, _>>()
            .map_err(malformed)?;
        self.verify_any(&signatures, release)
    }

    /// Accepts `data` if any one of `signatures` verifies with a valid keyring key;
    /// otherwise reports the most telling failure (an altered file before an unknown key).
    fn verify_any(&self, signatures: &[Signature], data: &[u8]) -> Result<(), SignatureError> {
        if signatures.is_empty() {
            return Err(SignatureError::Malformed {
                what: "signature block",
                reason: "it holds no signature".into(),
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

impl Signer {
    /// Whether this key made `signature` over `data` and may be trusted for it `now`.
    fn check(
        &self,
        signature: &Signature,
        data: &[u8],
        now: SystemTime,
    ) -> Result<(), SignatureError> {
        let key_id = key_id(self.key.details());
        let hash = signature.hash_alg();
        if !hash.is_some_and(strong_hash) {
            let hash = hash.map_or("an unknown hash".into(), |h| h.to_string());
            return Err(SignatureError::WeakHash { key_id, hash });
        }
        // A key or certification signature is no statement about data, even if its bytes
        // happened to verify over them.
        let data_signature = matches!(
            signature.typ(),
            Some(SignatureType::Binary | SignatureType::Text)
        );
        if !data_signature || self.key.verify(signature, data).is_err() {
            return Err(SignatureError::BadSignature { key_id });
        }
        match &self.unusable {
            Some(Unusable::Revoked(reason)) => {
                let reason = reason.clone();
                return Err(SignatureError::KeyRevoked { key_id, reason });
            }
            Some(Unusable::Other(reason)) => {
                let reason = reason.clone();
                return Err(SignatureError::KeyUnusable { key_id, reason });
            }
            None => {}
        }
        if let Some(expired) = self.expires.filter(|&at| at <= now) {
            return Err(SignatureError::KeyExpired { key_id, expired });
        }
        let signature_expiry = signature
            .created()
            .and_then(|created| lifetime_end(created, signature.signature_expiration_time()));
        if let Some(expired) = signature_expiry.filter(|&at| at <= now) {
            return Err(SignatureError::SignatureExpired { key_id, expired });
        }
        Ok(())
    }
}

/// How much a failure says about the file: among several signatures the most telling
/// failure is reported.
fn rank(error: &SignatureError) -> u8 {
    match error {
        SignatureError::BadSignature { .. } => 5,
        SignatureError::KeyRevoked { .. } => 4,
        SignatureError::KeyUnusable { .. } => 3,
        SignatureError::KeyExpired { .. } | SignatureError::SignatureExpired { .. } => 2,
        SignatureError::WeakHash { .. } => 1,
        _ => 0,
    }
}

/// SHA-1 and older hashes admit forged collisions; the SHA-2 and SHA-3 families do not.
fn strong_hash(hash: HashAlgorithm) -> bool {
    matches!(
        hash,
        HashAlgorithm::Sha224
            | HashAlgorithm::Sha256
            | HashAlgorithm::Sha384
            | HashAlgorithm::Sha512
            | HashAlgorithm::Sha3_256
            | HashAlgorithm::Sha3_512
    )
}

/// The keys of one certificate that may have signed data, each with what limits it.
fn signers_of(cert: &SignedPublicKey) -> Vec<Signer> {
    let primary = &cert.primary_key;
    let revoked = cert
        .details
        .revocation_signatures
        .iter()
        .find(|s| s.verify_key(primary).is_ok())
        .map(revocation_reason);
    // The newest valid self-signature states the primary key's flags and expiry.
    let certifications = cert.details.users.iter().flat_map(|user| {
        user.signatures.iter().filter(move |s| {
            is_certification(s)
                && issued_by(s, primary)
                && s.verify_certification(primary, Tag::UserId, &user.id)
                    .is_ok()
        })
    });
    let direct = cert
        .details
        .direct_signatures
        .iter()
        .filter(|s| s.verify_key(primary).is_ok());
    let self_signature = newest(certifications.chain(direct));
    let primary_expires =
        self_signature.and_then(|s| lifetime_end(primary.created_at(), s.key_expiration_time()));
    let primary_unusable = match (&revoked, self_signature) {
        (Some(reason), _) => Some(Unusable::Revoked(reason.clone())),
        (None, None) => Some(Unusable::Other("no valid self-signature".into())),
        (None, Some(_)) => None,
    };
    let mut signers = vec![Signer {
        key: SignerKey::Primary(primary.clone()),
        expires: primary_expires,
        unusable: primary_unusable.clone().or_else(|| {
            // Without key flags (old keys) any signing-capable primary key may sign.
            let flags_forbid =
                self_signature.is_some_and(|s| has_key_flags(s) && !s.key_flags().sign());
            flags_forbid.then(|| Unusable::Other("it is marked for certification only".into()))
        }),
    }];
    for sub in &cert.public_subkeys {
        let revoked = sub.signatures.iter().find(|s| {
            s.typ() == Some(SignatureType::SubkeyRevocation)
                && s.verify_subkey_binding(primary, &sub.key).is_ok()
        });
        let bindings = sub.signatures.iter().filter(|s| {
            s.typ() == Some(SignatureType::SubkeyBinding)
                && s.verify_subkey_binding(primary, &sub.key).is_ok()
        });
        let Some(binding) = newest(bindings) else {
            continue;
        };
        // Encryption and authentication subkeys are not signers.
        if !binding.key_flags().sign() {
            continue;
        }
        // A signing subkey must also sign its primary key back, or anyone could bind
        // someone else's signing key to their certificate.
        let back_signed = binding
            .embedded_signature()
            .is_some_and(|back| back.verify_primary_key_binding(&sub.key, primary).is_ok());
        let unusable = primary_unusable.clone().or_else(|| match revoked {
            Some(revocation) => Some(Unusable::Revoked(revocation_reason(revocation))),
            None if !back_signed => Some(Unusable::Other(
                "its binding to its primary key lacks a valid back signature".into(),
            )),
            None => None,
        });
        let expires = [
            primary_expires,
            lifetime_end(sub.key.created_at(), binding.key_expiration_time()),
        ]
        .into_iter()
        .flatten()
        .min();
        signers.push(Signer {
            key: SignerKey::Subkey(sub.key.clone()),
            expires,
            unusable,
        });
    }
    signers
}

fn is_certification(signature: &Signature) -> bool {
    matches!(
        signature.typ(),
        Some(
            SignatureType::CertGeneric
                | SignatureType::CertPersona
                | SignatureType::CertCasual
                | SignatureType::CertPositive
        )
    )
}

fn has_key_flags(signature: &Signature) -> bool {
    signature.config().is_some_and(|c| {
        c.hashed_subpackets()
            .any(|p| matches!(p.data, pgp::packet::SubpacketData::KeyFlags(_)))
    })
}

fn newest<'a>(signatures: impl Iterator<Item = &'a Signature>) -> Option<&'a Signature> {
    signatures.max_by_key(|s| s.created())
}

/// The end of a lifetime that starts at `start`; no lifetime, or a zero one, is forever.
fn lifetime_end(start: Timestamp, lifetime: Option<pgp::types::Duration>) -> Option<SystemTime> {
    let lifetime = lifetime.filter(|l| l.as_secs() != 0)?;
    Some(SystemTime::from(start) + std::time::Duration::from(lifetime))
}

fn revocation_reason(revocation: &Signature) -> String {
    let code = match revocation.revocation_reason_code() {
        Some(RevocationCode::KeySuperseded) => "superseded",
        Some(RevocationCode::KeyCompromised) => "compromised",
        Some(RevocationCode::KeyRetired) => "retired",
        _ => "no reason given",
    };
    match revocation.revocation_reason_string() {
        Some(text) if !text.is_empty() => {
            format!("{code}: {}", String::from_utf8_lossy(text).trim())
        }
        _ => code.to_string(),
    }
}

/// Whether `signature` names `key` as its issuer, by key id or fingerprint; a signature
/// that names no issuer could be anyone's.
fn issued_by(signature: &Signature, key: &(impl KeyDetails + ?Sized)) -> bool {
    let ids = signature.issuer_key_id();
    let fingerprints = signature.issuer_fingerprint();
    (ids.is_empty() && fingerprints.is_empty())
        || ids.iter().any(|&id| *id == key.legacy_key_id())
        || fingerprints.iter().any(|&f| *f == key.fingerprint())
}

/// How a signature names its issuer: long key ids as gpg and apt print them, or the
/// fingerprint where it gives no key id.
fn issuer_names(signature: &Signature) -> Vec<String> {
    let ids: Vec<String> = signature
        .issuer_key_id()
        .into_iter()
        .map(hex::encode_upper)
        .collect();
    if !ids.is_empty() {
        return ids;
    }
    signature
        .issuer_fingerprint()
        .into_iter()
        .map(|f| hex::encode_upper(f.as_bytes()))
        .collect()
}

fn key_id(key: &(impl KeyDetails + ?Sized)) -> String {
    hex::encode_upper(key.legacy_key_id())
}

/// Without a keyring (the user passed --no-verify-signature): the text of an InRelease
/// file, signature not checked. Refuses input that is not a cleartext-signed message.
pub fn cleartext_unverified(inrelease: &[u8]) -> Result<String, SignatureError> {
    Ok(release_text(&parse_cleartext(inrelease)?.signed_text()))
}

const BEGIN: &str = "-----BEGIN PGP SIGNED MESSAGE-----";
const END: &str = "-----END PGP SIGNATURE-----";

/// Parses a cleartext-signed message, refusing text around it.
fn parse_cleartext(inrelease: &[u8]) -> Result<CleartextSignedMessage, SignatureError> {
    let malformed = |reason: String| SignatureError::Malformed {
        what: "InRelease",
        reason,
    };
    let text =
        std::str::from_utf8(inrelease).map_err(|e| malformed(format!("not UTF-8 text ({e})")))?;
    let begin = if text.trim_start().starts_with(BEGIN) {
        text.find(BEGIN)
    } else {
        text.find(&format!("\n{BEGIN}")).map(|at| at + 1)
    }
    .ok_or_else(|| malformed(format!("not a cleartext-signed message (no {BEGIN} line)")))?;
    if !text[..begin].trim().is_empty() {
        return Err(SignatureError::OutsideSignedPart {
            place: "before the BEGIN line",
        });
    }
    let end = text
        .rfind(END)
        .ok_or_else(|| malformed(format!("no signature block (no {END} line)")))?;
    if !text[end + END.len()..].trim().is_empty() {
        return Err(SignatureError::OutsideSignedPart {
            place: "after the signature block",
        });
    }
    let armored = &text[begin..end + END.len()];
    let (message, _) =
        CleartextSignedMessage::from_string(armored).map_err(|e| malformed(e.to_string()))?;
    Ok(message)
}

/// The signed text as the Release file it was made from: OpenPGP hashes it with CRLF line
/// ends and without the last line's end, a Release file has LF after every line.
fn release_text(signed: &str) -> String {
    let mut text = signed.replace("\r\n", "\n");
    if !text.is_empty() {
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    //! Keys and signatures made at test time by gpg, the tool repositories sign with.

    use super::*;
    use proptest::prelude::*;
    use std::process::Command;
    use std::sync::OnceLock;

    /// A Release file with what cleartext signing must get right: a line gpg dash-escapes
    /// because it looks like armor, one starting with a dash, blanks at a line's end.
    const RELEASE: &str = "Origin: Test\nLabel: Test\nSuite: stable\n\
        -----BEGIN PGP SIGNATURE----- in the text\n- starts with a dash\n\
        Description: blanks at the end   \n";
    /// What a verified RELEASE reads as: the blanks at the end are not signed.
    const SIGNED: &str = "Origin: Test\nLabel: Test\nSuite: stable\n\
        -----BEGIN PGP SIGNATURE----- in the text\n- starts with a dash\n\
        Description: blanks at the end\n";

    /// A throwaway gpg home; its agent is stopped when it is dropped.
    struct Gpg {
        home: tempfile::TempDir,
    }

    impl Gpg {
        fn new() -> Gpg {
            Gpg {
                home: tempfile::Builder::new().prefix("gpg").tempdir().unwrap(),
            }
        }

        fn run(&self, args: &[&str]) -> Vec<u8> {
            let out = Command::new("gpg")
                .arg("--homedir")
                .arg(self.home.path())
                .args(["--batch", "--yes", "--pinentry-mode", "loopback"])
                .args(["--passphrase", ""])
                .args(args)
                .output()
                .expect("gpg runs (Debian package gnupg)");
            assert!(
                out.status.success(),
                "gpg {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        }

        /// A new key; `usage` is gpg's ("sign", or "cert" for a primary key that only
        /// certifies its subkeys).
        fn key(&self, uid: &str, algo: &str, usage: &str, extra: &[&str]) {
            self.run(&[extra, &["--quick-gen-key", uid, algo, usage, "never"]].concat());
        }

        fn fingerprint(&self, uid: &str) -> String {
            self.colons(uid, "fpr", 9)
        }

        /// The long key id of `uid`'s primary key (`pub`) or first subkey (`sub`).
        fn key_id(&self, uid: &str, kind: &str) -> String {
            self.colons(uid, kind, 4)
        }

        fn colons(&self, uid: &str, kind: &str, field: usize) -> String {
            let listing = self.run(&["--with-colons", "--list-keys", uid]);
            let listing = String::from_utf8(listing).unwrap();
            let line = listing.lines().find(|l| l.starts_with(&format!("{kind}:")));
            line.unwrap().split(':').nth(field).unwrap().to_string()
        }

        /// gpg's output for `args` over `data`, passed as a file.
        fn over(&self, data: &[u8], args: &[&str]) -> Vec<u8> {
            let input = self.home.path().join("input");
            std::fs::write(&input, data).unwrap();
            self.run(&[args, &["--output", "-", input.to_str().unwrap()]].concat())
        }

        fn clearsign(&self, signers: &[&str], extra: &[&str]) -> Vec<u8> {
            let users = signers.iter().flat_map(|s| ["--local-user", s]);
            let args: Vec<&str> = users.chain(extra.iter().copied()).collect();
            self.over(RELEASE.as_bytes(), &[&args[..], &["--clearsign"]].concat())
        }

        fn export(&self, uids: &[&str], armor: bool) -> Vec<u8> {
            let armor: &[&str] = if armor { &["--armor"] } else { &[] };
            self.run(&[armor, &["--export"], uids].concat())
        }

        /// Imports the revocation certificate gpg made along with the key.
        fn revoke(&self, uid: &str) {
            let dir = self.home.path().join("openpgp-revocs.d");
            let path = dir.join(format!("{}.rev", self.fingerprint(uid)));
            // gpg puts a colon before the armor so the certificate is not imported by mistake.
            let certificate = std::fs::read_to_string(&path)
                .unwrap()
                .replace(":-----", "-----");
            std::fs::write(&path, certificate).unwrap();
            self.run(&["--import", path.to_str().unwrap()]);
        }
    }

    impl Drop for Gpg {
        fn drop(&mut self) {
            let _ = Command::new("gpgconf")
                .arg("--homedir")
                .arg(self.home.path())
                .args(["--kill", "gpg-agent"])
                .status();
        }
    }

    /// Everything gpg made, made once for all tests: keyrings and signed files.
    struct Fixture {
        /// Keyrings by name, binary export.
        rsa: Vec<u8>,
        rsa_armored: Vec<u8>,
        ed: Vec<u8>,
        ed_armored: Vec<u8>,
        /// rsa, ed and sub in one armored export.
        three_armored: Vec<u8>,
        sub: Vec<u8>,
        old: Vec<u8>,
        revoked: Vec<u8>,
        /// Signed by the RSA key, by ed25519, by a signing subkey, by a key in no keyring.
        by_rsa: Vec<u8>,
        by_ed: Vec<u8>,
        by_sub: Vec<u8>,
        by_other: Vec<u8>,
        /// Signed by "other" and by ed.
        by_other_and_ed: Vec<u8>,
        by_rsa_sha1: Vec<u8>,
        /// Signed in 2020 by a key that expired in 2021.
        by_old: Vec<u8>,
        /// Signed by a key revoked afterwards.
        by_revoked: Vec<u8>,
        detached_rsa_armored: Vec<u8>,
        detached_ed_binary: Vec<u8>,
        detached_other: Vec<u8>,
        other_id: String,
        ed_id: String,
        sub_id: String,
        sub_primary_id: String,
    }

    fn fixture() -> &'static Fixture {
        static FIXTURE: OnceLock<Fixture> = OnceLock::new();
        FIXTURE.get_or_init(|| {
            let gpg = Gpg::new();
            // RSA 2048 rather than Debian's 4096: same code, a fraction of the key
            // generation time on a busy machine.
            gpg.key("rsa@test", "rsa2048", "sign", &[]);
            gpg.key("ed@test", "ed25519", "sign", &[]);
            gpg.key("other@test", "ed25519", "sign", &[]);
            gpg.key("revoked@test", "ed25519", "sign", &[]);
            gpg.key("sub@test", "ed25519", "cert", &[]);
            let sub_fpr = gpg.fingerprint("sub@test");
            gpg.run(&["--quick-add-key", &sub_fpr, "ed25519", "sign", "never"]);
            let past: &[&str] = &["--faked-system-time", "20200101T000000!"];
            gpg.run(
                &[
                    past,
                    &["--quick-gen-key", "old@test", "ed25519", "sign", "1y"],
                ]
                .concat(),
            );
            let by_revoked = gpg.clearsign(&["revoked@test"], &[]);
            gpg.revoke("revoked@test");
            Fixture {
                rsa: gpg.export(&["rsa@test"], false),
                rsa_armored: gpg.export(&["rsa@test"], true),
                ed: gpg.export(&["ed@test"], false),
                ed_armored: gpg.export(&["ed@test"], true),
                three_armored: gpg.export(&["rsa@test", "ed@test", "sub@test"], true),
                sub: gpg.export(&["sub@test"], false),
                old: gpg.export(&["old@test"], false),
                revoked: gpg.export(&["revoked@test"], false),
                by_rsa: gpg.clearsign(&["rsa@test"], &[]),
                by_ed: gpg.clearsign(&["ed@test"], &[]),
                by_sub: gpg.clearsign(&["sub@test"], &[]),
                by_other: gpg.clearsign(&["other@test"], &[]),
                by_other_and_ed: gpg.clearsign(&["other@test", "ed@test"], &[]),
                by_rsa_sha1: gpg.clearsign(&["rsa@test"], &["--digest-algo", "SHA1"]),
                by_old: gpg.clearsign(
                    &["old@test"],
                    &[past, &["--digest-algo", "SHA512"]].concat(),
                ),
                by_revoked,
                detached_rsa_armored: gpg.over(
                    RELEASE.as_bytes(),
                    &["--local-user", "rsa@test", "--armor", "--detach-sign"],
                ),
                detached_ed_binary: gpg.over(
                    RELEASE.as_bytes(),
                    &["--local-user", "ed@test", "--detach-sign"],
                ),
                detached_other: gpg.over(
                    RELEASE.as_bytes(),
                    &["--local-user", "other@test", "--detach-sign"],
                ),
                other_id: gpg.key_id("other@test", "pub"),
                ed_id: gpg.key_id("ed@test", "pub"),
                sub_id: gpg.key_id("sub@test", "sub"),
                sub_primary_id: gpg.key_id("sub@test", "pub"),
            }
        })
    }

    fn keyring(parts: &[&[u8]]) -> Keyring {
        Keyring::from_bytes(&parts.concat()).unwrap()
    }

    fn text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).unwrap()
    }

    #[test]
    fn rsa_and_ed25519_signatures_verify_with_binary_and_armored_keyrings() {
        let f = fixture();
        for (ring, signed) in [
            (&f.rsa, &f.by_rsa),
            (&f.rsa_armored, &f.by_rsa),
            (&f.ed, &f.by_ed),
            (&f.ed_armored, &f.by_ed),
            (&f.three_armored, &f.by_rsa),
            (&f.three_armored, &f.by_ed),
            (&f.three_armored, &f.by_sub),
        ] {
            let release = keyring(&[ring]).verify_cleartext(signed).unwrap();
            assert_eq!(release, SIGNED);
        }
    }

    #[test]
    fn a_signing_subkey_verifies_and_is_named_when_the_text_is_altered() {
        let f = fixture();
        let ring = keyring(&[&f.sub]);
        assert_eq!(ring.verify_cleartext(&f.by_sub).unwrap(), SIGNED);
        let altered = text(&f.by_sub).replace("Label: Test", "Label: Tesu");
        let err = ring.verify_cleartext(altered.as_bytes()).unwrap_err();
        assert!(
            matches!(&err, SignatureError::BadSignature { key_id } if *key_id == f.sub_id),
            "{err}"
        );
        assert_ne!(f.sub_id, f.sub_primary_id, "gpg signed with the subkey");
    }

    #[test]
    fn one_signature_by_a_keyring_key_among_several_is_enough() {
        let f = fixture();
        let release = keyring(&[&f.ed])
            .verify_cleartext(&f.by_other_and_ed)
            .unwrap();
        assert_eq!(release, SIGNED);
        let err = keyring(&[&f.rsa])
            .verify_cleartext(&f.by_other_and_ed)
            .unwrap_err();
        let SignatureError::UnknownKey { key_ids } = &err else {
            panic!("{err}")
        };
        assert_eq!(key_ids.len(), 2, "{err}");
        assert!(
            key_ids.contains(&f.other_id) && key_ids.contains(&f.ed_id),
            "{err}"
        );
    }

    #[test]
    fn altered_text_is_refused() {
        let f = fixture();
        let ring = keyring(&[&f.ed, &f.rsa]);
        for (from, to) in [
            ("Suite: stable", "Suite: stablf"),
            ("Suite: stable\n", "Suite: stable\nExtra: line\n"),
            ("- - starts with a dash", "- starts with a dash"),
        ] {
            let altered = text(&f.by_ed).replacen(from, to, 1);
            assert_ne!(altered.as_bytes(), f.by_ed);
            let err = ring.verify_cleartext(altered.as_bytes()).unwrap_err();
            assert!(
                matches!(err, SignatureError::BadSignature { .. }),
                "{from:?}: {err}"
            );
            assert!(err.to_string().contains(&f.ed_id), "{err}");
        }
    }

    #[test]
    fn a_key_outside_the_keyring_is_refused_with_its_id() {
        let f = fixture();
        let err = keyring(&[&f.rsa, &f.ed])
            .verify_cleartext(&f.by_other)
            .unwrap_err();
        assert!(matches!(err, SignatureError::UnknownKey { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!("signed by key {}, which is not in the keyring", f.other_id)
        );
    }

    #[test]
    fn sha1_signatures_are_refused() {
        let f = fixture();
        let err = keyring(&[&f.rsa])
            .verify_cleartext(&f.by_rsa_sha1)
            .unwrap_err();
        assert!(matches!(err, SignatureError::WeakHash { .. }), "{err}");
        assert!(err.to_string().contains("SHA1"), "{err}");
    }

    #[test]
    fn an_expired_key_is_refused_with_its_expiry() {
        let f = fixture();
        let err = keyring(&[&f.old]).verify_cleartext(&f.by_old).unwrap_err();
        let SignatureError::KeyExpired { expired, .. } = &err else {
            panic!("{err}")
        };
        // Made at 2020-01-01 with a lifetime of one year, which gpg counts as 365 days.
        let made = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_577_836_800);
        assert_eq!(expired.duration_since(made).unwrap().as_secs(), 365 * 86400);
        assert!(
            err.to_string().contains("expired at 2020-12-31T00:00:00Z"),
            "{err}"
        );
    }

    #[test]
    fn a_revoked_key_is_refused_and_a_keyring_of_revoked_keys_does_not_load() {
        let f = fixture();
        let err = keyring(&[&f.revoked, &f.ed])
            .verify_cleartext(&f.by_revoked)
            .unwrap_err();
        assert!(matches!(err, SignatureError::KeyRevoked { .. }), "{err}");
        let err = Keyring::from_bytes(&f.revoked).unwrap_err();
        assert!(err.to_string().contains("no usable signing key"), "{err}");
        assert!(err.to_string().contains("revoked"), "{err}");
    }

    #[test]
    fn detached_signatures_verify_armored_and_binary() {
        let f = fixture();
        let ring = keyring(&[&f.rsa, &f.ed]);
        let release = RELEASE.as_bytes();
        ring.verify_detached(release, &f.detached_rsa_armored)
            .unwrap();
        ring.verify_detached(release, &f.detached_ed_binary)
            .unwrap();
        let both = [&f.detached_other[..], &f.detached_ed_binary].concat();
        ring.verify_detached(release, &both).unwrap();

        let altered = RELEASE.replace("stable", "stablf");
        let err = ring
            .verify_detached(altered.as_bytes(), &f.detached_ed_binary)
            .unwrap_err();
        assert!(matches!(err, SignatureError::BadSignature { .. }), "{err}");
        let err = ring
            .verify_detached(release, &f.detached_other)
            .unwrap_err();
        assert!(err.to_string().contains(&f.other_id), "{err}");
        for garbage in [&b""[..], b"not a signature", &f.by_ed, &f.ed] {
            let err = ring.verify_detached(release, garbage).unwrap_err();
            assert!(matches!(err, SignatureError::Malformed { .. }), "{err}");
        }
    }

    #[test]
    fn text_outside_the_signed_part_is_refused() {
        let f = fixture();
        let ring = keyring(&[&f.ed]);
        let signed = text(&f.by_ed);
        for (input, place) in [
            (format!("Origin: Evil\n{signed}"), "before"),
            (format!("{signed}Origin: Evil\n"), "after"),
            (
                format!("{signed}\n-----BEGIN PGP SIGNED MESSAGE-----\n"),
                "after",
            ),
        ] {
            for result in [
                ring.verify_cleartext(input.as_bytes()),
                cleartext_unverified(input.as_bytes()),
            ] {
                let err = result.unwrap_err();
                assert!(
                    matches!(&err, SignatureError::OutsideSignedPart { place: p } if p.starts_with(place)),
                    "{err}"
                );
            }
        }
        // Blank lines around the message are no text.
        let padded = format!("\n \n{signed}\n\n");
        assert_eq!(ring.verify_cleartext(padded.as_bytes()).unwrap(), SIGNED);
    }

    #[test]
    fn cleartext_unverified_returns_the_text_and_refuses_what_is_not_cleartext_signed() {
        let f = fixture();
        assert_eq!(cleartext_unverified(&f.by_other).unwrap(), SIGNED);
        for input in [
            RELEASE.as_bytes(),
            &b""[..],
            &f.detached_rsa_armored,
            &f.detached_ed_binary,
            &f.ed_armored,
        ] {
            let err = cleartext_unverified(input).unwrap_err();
            assert!(matches!(err, SignatureError::Malformed { .. }), "{err}");
        }
    }

    #[test]
    fn truncated_or_corrupt_messages_are_errors() {
        let f = fixture();
        let ring = keyring(&[&f.ed]);
        let signed = text(&f.by_ed);
        let end = signed.find(END).unwrap();
        for cut in (0..end).step_by(7) {
            assert!(
                ring.verify_cleartext(&f.by_ed[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        // Damage inside the armored signature: wrong base64, a bad checksum, no signature.
        let armor = signed.find("-----BEGIN PGP SIGNATURE-----").unwrap();
        let body = signed[armor..].find("\n\n").unwrap() + armor + 2;
        let corrupt = [
            format!("{}!!!!{}", &signed[..body], &signed[body + 4..]),
            format!("{}AAAA{}", &signed[..body], &signed[body + 4..]),
            format!(
                "{}{}",
                &signed[..body],
                &signed[signed.find(END).unwrap()..]
            ),
        ];
        for input in corrupt {
            let err = ring.verify_cleartext(input.as_bytes()).unwrap_err();
            assert!(
                matches!(
                    err,
                    SignatureError::Malformed { .. } | SignatureError::BadSignature { .. }
                ),
                "{err}"
            );
        }
    }

    #[test]
    fn keyring_errors_name_the_file() {
        let f = fixture();
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.gpg");
        let err = Keyring::load(&missing).unwrap_err();
        assert!(matches!(err, SignatureError::ReadKeyring { .. }), "{err}");
        assert!(err.to_string().contains("missing.gpg"), "{err}");
        for (name, bytes) in [
            ("empty.gpg", &b""[..]),
            ("garbage.gpg", b"\x99\x01\x02garbage"),
            ("text.asc", b"hello\n"),
            ("signed.asc", &f.by_ed),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let err = Keyring::load(&path).unwrap_err();
            assert!(
                matches!(err, SignatureError::BadKeyring { .. }),
                "{name}: {err}"
            );
            assert!(err.to_string().contains(name), "{err}");
        }
        let path = dir.path().join("good.gpg");
        std::fs::write(&path, &f.rsa).unwrap();
        let ring = Keyring::load(&path).unwrap();
        assert_eq!(ring.verify_cleartext(&f.by_rsa).unwrap(), SIGNED);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let ring = keyring(&[&fixture().ed]);
            prop_assert!(cleartext_unverified(&bytes).is_err());
            prop_assert!(ring.verify_cleartext(&bytes).is_err());
            prop_assert!(ring.verify_detached(RELEASE.as_bytes(), &bytes).is_err());
            let _ = Keyring::from_bytes(&bytes);
        }

        #[test]
        fn a_changed_byte_never_panics_nor_verifies_other_text(at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let f = fixture();
            let mut input = f.by_ed.clone();
            let at = at.index(input.len());
            input[at] = byte;
            if let Ok(release) = keyring(&[&f.ed]).verify_cleartext(&input) {
                prop_assert_eq!(release, SIGNED);
            }
        }
    }
}
