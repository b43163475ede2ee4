//! Commits: signed versions of a root.
//!
//! ```text
//! "CNPC" 0x03
//! string root                      the root's name: a ref cannot show another root's commit
//! u64 generation                   1 for a root's first commit, its parent's + 1 after
//! 32-byte tree id
//! u8 has_parent, [32-byte parent commit id]
//! i64 timestamp                    unix seconds
//! string subject                   u32 length + UTF-8
//! u32 count, strings               the package specs the user asked for
//! u32 count, strings               how they were resolved (`from=REPO`, `essential`…)
//! u32 count, per package:          what the root was built from, in assembly order
//!   string name, version, arch; 32-byte archive hash; 32-byte package id;
//!   u32 count, strings             maintainer scripts it carried
//! u32 count, per extension:        further facts, sorted by key, keys unique
//!   string key; u32 length + bytes value
//! 32-byte signer                   ed25519 public key
//! 64-byte signature                ed25519 over every byte before it
//! ```
//!
//! The root's name and the generation are signed, so a compromised server or proxy can
//! neither point one root's ref at another root's commit nor replay an older commit to
//! a host that already follows a newer one. New facts about a commit (what configuring
//! the packages did, an image's configuration, RPM epochs…) are **extensions**: a key
//! in [`CommitBody::extensions`] whose value that feature defines (JSON, by
//! convention), not a new version of this encoding.

use crate::codec::{DecodeError, Reader, Writer};
pub use crate::codec::{EXTENSION_KEY_MAX, valid_extension_key};
use crate::id::{ArchiveHash, CommitId, PackageId, TreeId};
use crate::root_name::{RootName, RootNameError};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use std::collections::BTreeMap;

const MAGIC: &[u8; 4] = b"CNPC";
const VERSION: u8 = 3;

/// One package a root was built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackageRef {
    /// Package name.
    pub name: String,
    /// Package version.
    pub version: String,
    /// Package architecture (empty for tar and directory imports).
    pub arch: String,
    /// SHA-256 of the archive it was imported from.
    pub archive: ArchiveHash,
    /// The package record in the store.
    pub package: PackageId,
    /// The maintainer scripts the package carried (`postinst`…), which assembling
    /// does not run.
    pub scripts: Vec<String>,
}

/// Everything a commit says, before it is signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitBody {
    /// The root this commit is a version of.
    pub root: RootName,
    /// 1 for a root's first commit, the parent's generation + 1 for every later one
    /// (a rollback too: history only grows), so a host can refuse to go backwards.
    pub generation: u64,
    /// The root directory.
    pub tree: TreeId,
    /// The previous version of this root, if any.
    pub parent: Option<CommitId>,
    /// When it was made, unix seconds.
    pub timestamp: i64,
    /// One line saying what it is.
    pub subject: String,
    /// The package specs as requested (e.g. `bash`, `libc6=2.36-9`).
    pub requested: Vec<String>,
    /// How the request was turned into packages, so that an upgrade can repeat it:
    /// `from=REPO` per repository resolved from, and flags such as `essential`,
    /// `recommends`, `allow-overwrite`, `subtree=PATH`.
    pub options: Vec<String>,
    /// The packages it was assembled from, in order.
    pub packages: Vec<PackageRef>,
    /// Further signed facts, by key (see the module docs); keys are 1 to
    /// [`EXTENSION_KEY_MAX`] characters of `a-z 0-9 . -`.
    pub extensions: BTreeMap<String, Vec<u8>>,
}

/// A signed commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    /// What it says.
    pub body: CommitBody,
    /// The public key that signed it.
    pub signer: [u8; 32],
    /// ed25519 signature over the encoding up to and including `signer`.
    pub signature: [u8; 64],
}

/// Why a commit's signature is not acceptable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// Signed by a key other than the trusted one.
    #[error("commit is signed by key {signer}, not by the trusted key {trusted}")]
    UntrustedKey {
        /// Hex of the signing key.
        signer: String,
        /// Hex of the trusted key.
        trusted: String,
    },
    /// The signature does not verify.
    #[error("commit signature does not verify")]
    Invalid,
}

impl CommitBody {
    fn encode_signed_part(&self, signer: &[u8; 32]) -> Writer {
        let mut w = Writer::with_header(MAGIC, VERSION);
        w.string(self.root.as_str());
        w.u64(self.generation);
        w.id(&self.tree.0);
        match &self.parent {
            Some(p) => {
                w.u8(1);
                w.id(&p.0);
            }
            None => w.u8(0),
        }
        w.i64(self.timestamp);
        w.string(&self.subject);
        w.strings(&self.requested);
        w.strings(&self.options);
        w.u32(self.packages.len() as u32);
        for p in &self.packages {
            w.string(&p.name);
            w.string(&p.version);
            w.string(&p.arch);
            w.id(&p.archive.0);
            w.id(&p.package.0);
            w.strings(&p.scripts);
        }
        w.extensions(&self.extensions);
        w.raw(signer);
        w
    }

    /// Signs the body with `key`.
    pub fn sign(self, key: &SigningKey) -> Commit {
        let signer = key.verifying_key().to_bytes();
        let message = self.encode_signed_part(&signer).into_bytes();
        let signature = key.sign(&message).to_bytes();
        Commit {
            body: self,
            signer,
            signature,
        }
    }
}

impl Commit {
    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = self.body.encode_signed_part(&self.signer);
        w.raw(&self.signature);
        w.into_bytes()
    }

    /// The id: SHA-256 of the canonical encoding.
    pub fn id(&self) -> CommitId {
        CommitId::of(&self.encode())
    }

    /// Decodes a canonical encoding. The signature is not checked here: see [`Commit::verify`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::with_header(bytes, MAGIC, VERSION, "commit")?;
        let root = r.string("root name")?;
        let root: RootName = root
            .parse()
            .map_err(|e: RootNameError| DecodeError::invalid("root name", e.to_string()))?;
        let generation = r.u64()?;
        if generation == 0 {
            return Err(DecodeError::invalid("generation", "generations start at 1"));
        }
        let tree = TreeId(r.id()?);
        let parent = if r.flag("parent flag")? {
            Some(CommitId(r.id()?))
        } else {
            None
        };
        let timestamp = r.i64()?;
        let subject = r.string("subject")?;
        let requested = r.strings("requested package")?;
        let options = r.strings("option")?;
        // name, version, arch and script count (16) + two ids (64).
        let n = r.count(80)?;
        let mut packages = Vec::with_capacity(n);
        for _ in 0..n {
            packages.push(PackageRef {
                name: r.string("package name")?,
                version: r.string("package version")?,
                arch: r.string("package architecture")?,
                archive: ArchiveHash(r.id()?),
                package: PackageId(r.id()?),
                scripts: r.strings("script name")?,
            });
        }
        let extensions = r.extensions()?;
        let signer = r.raw::<32>()?;
        let signature = r.raw::<64>()?;
        r.finish()?;
        Ok(Commit {
            body: CommitBody {
                root,
                generation,
                tree,
                parent,
                timestamp,
                subject,
                requested,
                options,
                packages,
                extensions,
            },
            signer,
            signature,
        })
    }

    /// Checks that `trusted` signed this commit.
    pub fn verify(&self, trusted: &VerifyingKey) -> Result<(), SignatureError> {
        if self.signer != trusted.to_bytes() {
            return Err(SignatureError::UntrustedKey {
                signer: hex::encode(self.signer),
                trusted: hex::encode(trusted.to_bytes()),
            });
        }
        let message = self.body.encode_signed_part(&self.signer).into_bytes();
        trusted
            .verify_strict(&message, &Signature::from_bytes(&self.signature))
            .map_err(|_| SignatureError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ObjectId;
    use proptest::prelude::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn arb_body() -> impl Strategy<Value = CommitBody> {
        let id = any::<[u8; 32]>().prop_map(ObjectId::from_bytes);
        let pkg = (
            ".{0,8}",
            ".{0,8}",
            "[a-z0-9]{0,5}",
            id.clone(),
            id.clone(),
            proptest::collection::vec("[a-z]{0,8}", 0..2),
        )
            .prop_map(|(name, version, arch, a, p, scripts)| PackageRef {
                name,
                version,
                arch,
                archive: ArchiveHash(a),
                package: PackageId(p),
                scripts,
            });
        let head = (
            "[a-z0-9][a-z0-9._+-]{0,8}",
            1..u64::MAX,
            id.clone(),
            proptest::option::of(id),
            any::<i64>(),
        );
        (
            head,
            ".{0,20}",
            proptest::collection::vec(".{0,8}", 0..3),
            proptest::collection::vec(".{0,8}", 0..3),
            proptest::collection::vec(pkg, 0..4),
            proptest::collection::btree_map(
                "[a-z][a-z0-9.-]{0,10}",
                proptest::collection::vec(any::<u8>(), 0..12),
                0..3,
            ),
        )
            .prop_map(
                |(
                    (root, generation, t, parent, timestamp),
                    subject,
                    requested,
                    options,
                    packages,
                    extensions,
                )| CommitBody {
                    root: root.parse().unwrap(),
                    generation,
                    tree: TreeId(t),
                    parent: parent.map(CommitId),
                    timestamp,
                    subject,
                    requested,
                    options,
                    packages,
                    extensions,
                },
            )
    }

    proptest! {
        #[test]
        fn round_trip_verify_and_canonical(body in arb_body(), pos in any::<usize>(), byte in any::<u8>()) {
            let c = body.sign(&key(7));
            let bytes = c.encode();
            let back = Commit::decode(&bytes).unwrap();
            prop_assert_eq!(&back, &c);
            prop_assert!(back.verify(&key(7).verifying_key()).is_ok());
            let mut m = bytes.clone();
            let i = pos % m.len();
            prop_assume!(m[i] != byte);
            m[i] = byte;
            if let Ok(d) = Commit::decode(&m) {
                prop_assert_eq!(d.encode(), m);
                prop_assert_ne!(d.id(), c.id());
                // A changed byte anywhere breaks the signature or the signer.
                prop_assert!(d.verify(&key(7).verifying_key()).is_err());
            }
        }
    }

    #[test]
    fn extension_keys_are_checked() {
        for good in ["configure", "oci.config", "rpm-evr", "a1"] {
            assert!(valid_extension_key(good), "{good}");
        }
        for bad in ["", "Configure", "1a", "a b", "a/b", &"a".repeat(65)] {
            assert!(!valid_extension_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn other_key_is_refused() {
        let body = CommitBody {
            root: "web".parse().unwrap(),
            generation: 1,
            tree: TreeId(ObjectId::of(b"t")),
            parent: None,
            timestamp: 1,
            subject: "s".into(),
            requested: vec![],
            options: vec![],
            packages: vec![],
            extensions: BTreeMap::new(),
        };
        let c = body.sign(&key(1));
        assert!(matches!(
            c.verify(&key(2).verifying_key()),
            Err(SignatureError::UntrustedKey { .. })
        ));
    }
}
