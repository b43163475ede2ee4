//! Key policy: which keys of a certificate may make data signatures (primary or signing
//! subkey, self-signed, back-signed, not revoked), until when, and over which hashes.

use super::SignatureError;
use pgp::composed::SignedPublicKey;
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{PublicKey, PublicSubkey, RevocationCode, Signature, SignatureType};
use pgp::types::{KeyDetails, Tag, Timestamp};
use std::time::SystemTime;

/// One key that may have made a data signature: a primary key or a signing subkey.
#[derive(Debug)]
pub(super) struct Signer {
    pub(super) key: SignerKey,
    /// When it stops being valid: its own expiry or its primary key's, whichever is first.
    pub(super) expires: Option<SystemTime>,
    /// Why it may not sign at all, found when the keyring was loaded.
    pub(super) unusable: Option<Unusable>,
}

#[derive(Debug)]
pub(super) enum SignerKey {
    Primary(PublicKey),
    Subkey(PublicSubkey),
}

/// Why a key may not sign data whatever the time.
#[derive(Debug, Clone)]
pub(super) enum Unusable {
    /// Revoked by its owner, for this reason.
    Revoked(String),
    /// Why else, as a predicate of the key ("has no valid self-signature").
    Other(String),
}

impl Unusable {
    fn error(&self, key_id: String) -> SignatureError {
        match self.clone() {
            Unusable::Revoked(reason) => SignatureError::KeyRevoked { key_id, reason },
            Unusable::Other(reason) => SignatureError::KeyUnusable { key_id, reason },
        }
    }
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unusable::Revoked(reason) => write!(f, "is revoked ({reason})"),
            Unusable::Other(reason) => f.write_str(reason),
        }
    }
}

impl SignerKey {
    pub(super) fn details(&self) -> &dyn KeyDetails {
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

impl Signer {
    /// Whether this key made `signature` over `data` and may be trusted for it `now`.
    pub(super) fn check(
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
        if let Some(unusable) = &self.unusable {
            return Err(unusable.error(key_id));
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
pub(super) fn rank(error: &SignatureError) -> u8 {
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
pub(super) fn strong_hash(hash: HashAlgorithm) -> bool {
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
pub(super) fn signers_of(cert: &SignedPublicKey) -> Vec<Signer> {
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
        (None, None) => Some(Unusable::Other("has no valid self-signature".into())),
        (None, Some(_)) => None,
    };
    let mut signers = vec![Signer {
        key: SignerKey::Primary(primary.clone()),
        expires: primary_expires,
        unusable: primary_unusable.clone().or_else(|| {
            // Without key flags (old keys) any signing-capable primary key may sign.
            let flags_forbid =
                self_signature.is_some_and(|s| has_key_flags(s) && !s.key_flags().sign());
            flags_forbid.then(|| Unusable::Other("is marked for certification only".into()))
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
                "lacks a valid back signature to its primary key".into(),
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
pub(super) fn issued_by(signature: &Signature, key: &(impl KeyDetails + ?Sized)) -> bool {
    let ids = signature.issuer_key_id();
    let fingerprints = signature.issuer_fingerprint();
    (ids.is_empty() && fingerprints.is_empty())
        || ids.iter().any(|&id| *id == key.legacy_key_id())
        || fingerprints.iter().any(|&f| *f == key.fingerprint())
}

/// How a signature names its issuer: long key ids as gpg and apt print them, or the
/// fingerprint where it gives no key id.
pub(super) fn issuer_names(signature: &Signature) -> Vec<String> {
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

pub(super) fn key_id(key: &(impl KeyDetails + ?Sized)) -> String {
    hex::encode_upper(key.legacy_key_id())
}
