//! Object ids: SHA-256 digests, with a distinct newtype per kind of object so the
//! compiler keeps a tree id from being used where a blob id is meant.

use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// A SHA-256 digest naming an object in the store.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId([u8; 32]);

/// Why a string is not an object id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    /// The string is not exactly 64 characters long.
    #[error("object id {0:?} is not 64 hex characters")]
    Length(String),
    /// The string has characters other than lowercase hex digits.
    #[error("object id {0:?} is not lowercase hex")]
    NotHex(String),
}

impl ObjectId {
    /// Wraps raw digest bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        ObjectId(bytes)
    }

    /// The SHA-256 of `data`.
    pub fn of(data: &[u8]) -> Self {
        ObjectId(Sha256::digest(data).into())
    }

    /// The raw digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The full lowercase hex form (64 characters).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex characters, for people reading listings.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl FromStr for ObjectId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, IdError> {
        if s.len() != 64 {
            return Err(IdError::Length(s.to_string()));
        }
        // Only the lowercase form is canonical: two spellings of one id would make two
        // file names, two refs, two cache entries.
        if !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(IdError::NotHex(s.to_string()));
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| IdError::NotHex(s.to_string()))?;
        Ok(ObjectId(bytes))
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({})", self.to_hex())
    }
}

/// Incremental SHA-256 for content that arrives in pieces (streamed files).
#[derive(Default, Clone)]
pub struct Hasher(Sha256);

impl Hasher {
    /// A hasher that has seen no bytes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds more bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> ObjectId {
        ObjectId(self.0.finalize().into())
    }
}

/// Hashing is writing: `std::io::copy(&mut file, &mut hasher)` hashes a whole file.
impl std::io::Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub ObjectId);

        impl $name {
            /// The id of the object whose encoded bytes are `data`.
            pub fn of(data: &[u8]) -> Self {
                $name(ObjectId::of(data))
            }

            /// The untyped id, as used for paths in the store.
            pub fn object(&self) -> ObjectId {
                self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                s.parse().map($name)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.to_hex())
            }
        }

        impl From<$name> for ObjectId {
            fn from(id: $name) -> ObjectId {
                id.0
            }
        }
    };
}

typed_id!(
    /// Id of a blob: the plain SHA-256 of a regular file's content.
    BlobId
);
typed_id!(
    /// Id of an encoded [`crate::Tree`].
    TreeId
);
typed_id!(
    /// Id of an encoded [`crate::Commit`].
    CommitId
);
typed_id!(
    /// Id of an encoded [`crate::Package`] record.
    PackageId
);
typed_id!(
    /// SHA-256 of an archive file as it was imported (a `.deb`, a tarball). Not an
    /// object in the store: it keys the package refs so an archive is imported once.
    ArchiveHash
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_id_is_plain_sha256() {
        // sha256("hello\n"), as printed by sha256sum.
        assert_eq!(
            BlobId::of(b"hello\n").to_string(),
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
    }

    #[test]
    fn parse_rejects_uppercase_and_bad_length() {
        let id = ObjectId::of(b"x");
        assert_eq!(id.to_hex().parse::<ObjectId>().unwrap(), id);
        assert!(matches!(
            id.to_hex().to_uppercase().parse::<ObjectId>(),
            Err(IdError::NotHex(_))
        ));
        assert!(matches!("abc".parse::<ObjectId>(), Err(IdError::Length(_))));
        assert!(matches!(
            "g".repeat(64).parse::<ObjectId>(),
            Err(IdError::NotHex(_))
        ));
    }
}
